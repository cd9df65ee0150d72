"""``python -m bench.grpc_floor [--seconds 15] [--rate 1000] [--clients ...] [--no-fsync]
[--followers 2]``: the latency floor of an acks=all write when every hop is gRPC in Python
and the nodes do no work.

Raftka's acks=all path is four gRPC hops: client -> leader (Produce), leader -> followers
and back (the Raft stream), leader -> client (the answer), with a follower's fsync in
between. This bench builds that skeleton and nothing else: three server processes on
uvloop and ``grpc.aio``, as the nodes run them. The leader forwards each request's bytes on
a long-lived bidirectional stream to both followers (a writer task per stream, as the Raft
transport has) and answers at the first ack; a follower appends the bytes to a file and
``fdatasync``-s it on its loop thread (the quickest a follower can persist) before it acks.
No Raft, no storage engine, no record parsing, no leader WAL, no metrics. What it shows is
what the transport alone costs in latency and CPU: Raftka's path cannot be faster while
its client API and Raft transport are gRPC in Python.

Clients, one 100-byte record due every 1/rate s, latency from the moment it was due:

- ``stream``: a ``grpc.aio`` bidirectional stream, one message per record at once
  (pipelined; answers in order);
- ``batched``: what Raftka's ``Producer`` does with ``linger_ms=0`` (``client/_sender.py``
  rule 5): one unary call in flight, the records that came meanwhile go together in the
  next call as soon as it returns;
- ``aio``: a ``grpc.aio`` channel on uvloop, one unary call per record at once;
- ``threaded``: a synchronous ``grpc`` channel, ``stub.future()`` per record at once;
- ``serial`` (not by default): one blocking call at a time, latency from the call's start
  (what ``make bench``'s raw Produce RPC row measures); it falls behind the rate when a call
  takes longer than 1/rate s.

Each line also gives the CPU each process used per record. Compare with NATS JetStream's
w3 of the same session (``python -m bench --only raftka,nats-go,w3``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from bench._common import free_ports, pace, percentiles_ms, proc_cpu_seconds

FRONT = "/floor.Front/Produce"
FRONT_STREAM = "/floor.Front/ProduceStream"
PEER = "/floor.Peer/Stream"
VALUE = b"x" * 100


def _identity(b: bytes) -> bytes:
    return b


# --------------------------------------------------------------------------- servers
async def _follower(port: int, path: Path, fsync: bool) -> None:
    import grpc

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def stream(requests, _context):
        async for payload in requests:
            os.write(fd, payload)
            if fsync:
                os.fdatasync(fd)
            yield payload[:8]

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("floor.Peer", {
        "Stream": grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=_identity, response_serializer=_identity)})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _leader(port: int, follower_ports: list[int]) -> None:
    """Forwards each request on every follower's stream; answers at the first ack. Acks
    come back in order on each stream, so a FIFO of waiters per stream matches them; a
    writer task per stream serialises its writes, as the node's Raft transport does."""
    import collections

    import grpc

    loop = asyncio.get_running_loop()
    streams = []
    tasks = []  # the loop keeps only weak references to tasks
    for fport in follower_ports:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{fport}")
        call = channel.stream_stream(PEER, request_serializer=_identity,
                                     response_deserializer=_identity)(wait_for_ready=True)
        waiters: collections.deque = collections.deque()
        outbox: asyncio.Queue = asyncio.Queue()
        streams.append((outbox, waiters))

        async def write_all(call=call, outbox=outbox):
            # one write at a time: a grpc.aio stream refuses overlapping writes
            while True:
                await call.write(await outbox.get())
        tasks.append(loop.create_task(write_all()))

        async def read_acks(call=call, waiters=waiters):
            async for _ack in call:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
        tasks.append(loop.create_task(read_acks()))

    def forward(payload: bytes) -> asyncio.Future:
        fut = loop.create_future()
        for outbox, waiters in streams:
            waiters.append(fut)
            outbox.put_nowait(payload)
        if not streams:
            fut.set_result(None)
        return fut

    async def produce(payload: bytes, _context) -> bytes:
        await forward(payload)
        return payload[:8]

    async def produce_stream(requests, _context):
        """Requests are forwarded as they come; answers go back in order."""
        answers: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            async for payload in requests:
                answers.put_nowait(forward(payload))
            answers.put_nowait(None)
        reader = loop.create_task(read())
        try:
            while (fut := await answers.get()) is not None:
                await fut
                yield b"ok"
        finally:
            reader.cancel()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("floor.Front", {
        "Produce": grpc.unary_unary_rpc_method_handler(
            produce, request_deserializer=_identity, response_serializer=_identity),
        "ProduceStream": grpc.stream_stream_rpc_method_handler(
            produce_stream, request_deserializer=_identity, response_serializer=_identity),
    })])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# --------------------------------------------------------------------------- clients
def _produce_call(channel):
    """The leader's unary Produce on a ``grpc`` or ``grpc.aio`` channel."""
    return channel.unary_unary(FRONT, request_serializer=_identity,
                               response_deserializer=_identity)


async def _paced(rate: float, total: int):
    """Yields the due time of each of ``total`` records, sleeping until it is due (an
    asyncio client's pacer; ``bench._common.pace`` is the threads' one)."""
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield due


def _wait_ready(address: str) -> None:
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = _produce_call(channel)
        deadline = time.monotonic() + 20
        while True:
            try:
                call(VALUE, timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _run_threaded(address: str, rate: float, secs: float) -> list[float]:
    import grpc

    latencies: list[float] = []
    with grpc.insecure_channel(address) as channel:
        call = _produce_call(channel)
        pending = []

        def send(n: int, due: float) -> None:
            for i in range(n):
                t0 = due + i / rate
                fut = call.future(VALUE, timeout=10)
                fut.add_done_callback(
                    lambda f, t0=t0: latencies.append(time.perf_counter() - t0))
                pending.append(fut)
        pace(rate, secs, send)
        for fut in pending:
            fut.result()
    return latencies


def _run_serial(address: str, rate: float, secs: float) -> list[float]:
    import grpc

    latencies: list[float] = []
    with grpc.insecure_channel(address) as channel:
        call = _produce_call(channel)

        def send(n: int, _due: float) -> None:
            for _ in range(n):
                t0 = time.perf_counter()
                call(VALUE, timeout=10)
                latencies.append(time.perf_counter() - t0)
        pace(rate, secs, send)
    return latencies


def _run_batched(address: str, rate: float, secs: float) -> list[float]:
    """Raftka's Producer with ``linger_ms=0``: one call in flight; the records that came
    meanwhile go together in the next call, at once when it returns."""
    import grpc

    latencies: list[float] = []
    queued: list[float] = []
    cond = threading.Condition()
    done = [False]

    def sender() -> None:
        with grpc.insecure_channel(address) as channel:
            call = _produce_call(channel)
            while True:
                with cond:
                    while not queued and not done[0]:
                        cond.wait()
                    if not queued:
                        return
                    batch = queued[:]
                    queued.clear()
                call(VALUE * len(batch), timeout=10)
                now = time.perf_counter()
                latencies.extend(now - t0 for t0 in batch)

    thread = threading.Thread(target=sender)
    thread.start()

    def send(n: int, due: float) -> None:
        with cond:
            queued.extend(due + i / rate for i in range(n))
            cond.notify()
    pace(rate, secs, send)
    with cond:
        done[0] = True
        cond.notify()
    thread.join()
    return latencies


def _run_aio(address: str, rate: float, secs: float) -> list[float]:
    import grpc
    import uvloop

    latencies: list[float] = []

    async def main() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            call = _produce_call(channel)

            async def one(t0: float) -> None:
                await call(VALUE, timeout=10)
                latencies.append(time.perf_counter() - t0)
            tasks = [asyncio.create_task(one(due))
                     async for due in _paced(rate, int(rate * secs))]
            await asyncio.gather(*tasks)
    uvloop.run(main())
    return latencies


def _run_stream(address: str, rate: float, secs: float) -> list[float]:
    """One record per message on one bidirectional stream, at once (pipelined), from a
    ``grpc.aio`` client on uvloop; answers come back in order."""
    import collections

    import grpc
    import uvloop

    latencies: list[float] = []

    async def main() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.stream_stream(FRONT_STREAM, request_serializer=_identity,
                                         response_deserializer=_identity)()
            due_times: collections.deque = collections.deque()
            total = int(rate * secs)

            async def read() -> None:
                for _ in range(total):
                    await call.read()
                    latencies.append(time.perf_counter() - due_times.popleft())
            reader = asyncio.create_task(read())
            async for due in _paced(rate, total):
                due_times.append(due)
                await call.write(VALUE)
            await reader
            await call.done_writing()
    uvloop.run(main())
    return latencies


# --------------------------------------------------------------------------- driver
def _spawn(role: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--role", role, *args],
                            cwd=Path(__file__).resolve().parents[1])


RUNNERS = {"stream": _run_stream, "batched": _run_batched, "aio": _run_aio,
           "threaded": _run_threaded, "serial": _run_serial}


@contextlib.contextmanager
def skeleton(followers: int = 2, fsync: bool = True) -> Iterator[tuple[str, list]]:
    """The leader and its followers, running: yields the leader's address and the
    processes (followers first, the leader last)."""
    leader_port, *follower_ports = free_ports(1 + followers)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="raftka-floor-") as root:
        try:
            for i, port in enumerate(follower_ports):
                extra = [] if fsync else ["--no-fsync"]
                procs.append(_spawn("follower", "--port", str(port),
                                    "--file", str(Path(root) / f"wal-{i}"), *extra))
            procs.append(_spawn("leader", "--port", str(leader_port),
                                "--peers", ",".join(map(str, follower_ports))))
            address = f"127.0.0.1:{leader_port}"
            _wait_ready(address)
            yield address, procs
        finally:
            for proc in procs:
                proc.kill()
            for proc in procs:
                proc.wait()


def measure(address: str, procs: list, client: str, rate: float, secs: float) -> dict:
    """One client's run against a running skeleton: ``percentiles_ms`` plus the rate and
    the CPU each process used per record (microseconds)."""
    cpu0 = [proc_cpu_seconds(proc.pid) for proc in procs]
    client0 = time.process_time()
    latencies = RUNNERS[client](address, rate, secs)
    n = max(1, len(latencies))
    return {**percentiles_ms(latencies), "rate": rate,
            "cpu_us_per_record": {
                "leader": round((proc_cpu_seconds(procs[-1].pid) - cpu0[-1]) / n * 1e6),
                "followers": [round((proc_cpu_seconds(p.pid) - c0) / n * 1e6)
                              for p, c0 in zip(procs[:-1], cpu0[:-1])],
                "client": round((time.process_time() - client0) / n * 1e6)}}


def run(client: str, rate: float, secs: float) -> dict:
    """``measure`` on a skeleton of its own (two followers, fsync on): ``make bench``'s
    w3 floor rows."""
    with skeleton() as (address, procs):
        return measure(address, procs, client, rate, secs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--clients", default="stream,batched,aio,threaded",
                    help=f"any of {','.join(RUNNERS)}")
    ap.add_argument("--no-fsync", action="store_true", help="followers skip the fdatasync")
    ap.add_argument("--followers", type=int, default=2,
                    help="0: the leader answers at once (one gRPC hop there and back)")
    ap.add_argument("--role", choices=("leader", "follower"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--peers", default="", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        import uvloop
        if args.role == "follower":
            uvloop.run(_follower(args.port, Path(args.file), not args.no_fsync))
        else:
            uvloop.run(_leader(args.port, [int(p) for p in args.peers.split(",") if p]))
        return

    with skeleton(args.followers, not args.no_fsync) as (address, procs):
        for client in args.clients.split(","):
            r = measure(address, procs, client, args.rate, args.seconds)
            cpu = r["cpu_us_per_record"]
            print(f"{client}: {r['count']} records at {args.rate:.0f}/s, {args.followers} "
                  f"followers, fsync {'off' if args.no_fsync else 'on'}: p50 {r['p50_ms']:.2f} "
                  f"p99 {r['p99_ms']:.2f} p99.9 {r['p999_ms']:.2f} ms "
                  f"(load {os.getloadavg()[0]:.2f}); CPU per record: leader "
                  f"{cpu['leader']} us, followers "
                  f"{' '.join(map(str, cpu['followers'])) or '-'} us, client "
                  f"{cpu['client']} us", flush=True)


if __name__ == "__main__":
    main()
