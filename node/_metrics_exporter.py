"""The metrics exporter: a child process of a node that serves its Prometheus metrics.

Why a process of its own: formatting the exposition text is per-series Python work (about
30 ms of it for a node with 100 partition replicas). Done in a thread of the node, that
thread holds the GIL while the event loop waits for it, and a produce answered during a
scrape waited up to CPython's 5 ms switch interval again and again: with a scrape every
second the produce p99 at 1,000 records/s doubled (bench/scrape_overhead.py). Here the node
only takes a snapshot of plain numbers on its event loop and pickles it (``NodeCollector.
payload``); this process builds the metric families and the text, on its own core.

Protocol over the inherited socket (a ``socketpair`` made by the node, never a port): this
process first writes one line, ``ok HOST:PORT`` once it listens or ``error MESSAGE``; then,
per scrape, it sends a 4-byte request number and the node answers with the same number, a
4-byte length and the pickled payload (``_metrics.decode_payload``). An answer to an older
request (one that timed out: the node was stalled or stopped) is skipped.

Lifetime: the process exits when the node does (the socket reaches end-of-file, Linux's
parent-death signal, or its parent changes). The node restarts it if it dies.

Only ``/metrics`` is served (``/`` too, as Prometheus' default path is ``/metrics`` but
people type the bare address); any other path is a 404 naming the right one.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ._metrics import SNAPSHOT_TIMEOUT_S, decode_payload, parse_listen

prometheus_client.disable_created_metrics()

HEADER = struct.Struct(">II")  # request number, payload length
PR_SET_PDEATHSIG = 1


class NodeStateCollector(Collector):
    """Asks the node for its snapshot at every scrape (one scrape at a time)."""

    def __init__(self, sock: socket.socket, timeouts: Counter) -> None:
        self.sock = sock
        self.timeouts = timeouts
        self._lock = threading.Lock()
        self._request = 0

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            payload = self._ask()
        if payload is not None:
            yield from decode_payload(payload)

    def _ask(self) -> bytes | None:
        self._request = (self._request + 1) & 0xFFFFFFFF
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        try:
            self.sock.settimeout(SNAPSHOT_TIMEOUT_S)
            self.sock.sendall(struct.pack(">I", self._request))
            while True:
                number, size = HEADER.unpack(self._read(HEADER.size, deadline))
                payload = self._read(size, deadline)
                if number == self._request:
                    return payload
                # the answer to a request that timed out earlier: skip it
        except (TimeoutError, socket.timeout):
            self.timeouts.inc()
            print(f"metrics exporter: the node gave no snapshot within "
                  f"{SNAPSHOT_TIMEOUT_S:.0f} s (stalled or stopped?)", file=sys.stderr)
            return None
        except (ConnectionError, EOFError):
            os._exit(0)  # the node is gone

    def _read(self, n: int, deadline: float) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(min(n - len(chunks), 1 << 20))
            if not chunk:
                raise EOFError
            chunks += chunk
        return bytes(chunks)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per scrape on the node's log would drown it


def _only_metrics(app: Any) -> Any:
    def serve(environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO", "/") in ("/metrics", "/"):
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: this server serves Prometheus metrics at /metrics\n"]
    return serve


def _die_with_parent(node_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the parent check below still ends this process
    if os.getppid() != node_pid:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftka.node._metrics_exporter")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--node-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.node_pid)
    sock = socket.socket(fileno=args.fd)
    registry = CollectorRegistry(auto_describe=False)
    timeouts = Counter(
        "raftka_scrape_snapshot_timeouts", "Scrapes that got no snapshot of the node's state "
        f"within {SNAPSHOT_TIMEOUT_S:.0f} s (its event loop stalled, or it is stopped): they "
        "carry only the process numbers.", registry=registry)
    # process_* series of the node (not of this exporter), read from /proc by its pid
    ProcessCollector(pid=lambda: args.node_pid, registry=registry)
    PlatformCollector(registry=registry)
    registry.register(NodeStateCollector(sock, timeouts))
    try:
        host, port = parse_listen(args.listen)

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        httpd = make_server(host, port, _only_metrics(prometheus_client.make_wsgi_app(registry)),
                            Server, handler_class=_QuietHandler)
    except (OSError, ValueError) as exc:
        sock.sendall(f"error {exc}\n".encode())
        return 2
    bound = httpd.server_address[1]
    address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    sock.sendall(f"ok {address}\n".encode())
    while os.getppid() == args.node_pid:  # the node died without closing the socket
        time.sleep(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
