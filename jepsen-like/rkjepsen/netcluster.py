"""A real Raftka cluster whose nodes live in network namespaces on a private bridge.

Layout (jepsen-like/README.md, "Fault injection on this kind of machine"; every name carries the run id, so parallel runs never collide)::

    netns rkj<id>-sw:  bridge br0, one veth end per host: p1..pN (nodes), pc (client)
    netns rkj<id>-nI:  eth0 = 10.77.0.I/24, node I listens on 10.77.0.I:7001
    netns rkj<id>-c:   eth0 = 10.77.0.250/24, the harness's clients (this process joins it)

Nothing is added to the root namespace and nothing routes outside the bridge.

Partitions are nftables rules in the bridge namespace (table ``bridge rkj``, chain ``drops``
on the forward hook): a rule ``iifname "pA" oifname "pB" drop`` drops every frame from
host A to host B (ARP passes, so neighbour caches stay warm and healing is instant). The
whole rule set is replaced in one ``nft -f`` transaction, so a fault starts atomically.

Node processes are ``ip netns exec NS python -m raftka.node ...``: ``ip`` execs the node in the
same process, so the recorded PID is the node's and ``kill -9`` / SIGSTOP hit it directly.
Nodes run in their own session: a Ctrl-C in the terminal reaches only the harness, which
then tears everything down itself (``close()``, idempotent, also called from atexit).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_PORT = 7001
KAFKA_PORT = 9092  # with kafka=True: every node's Kafka listener (jepsen --client kafka)
CLIENT_HOST = 250
_CLONE_NEWNET = 0x40000000
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


class HarnessError(RuntimeError):
    """The harness cannot run here; the message says why and what to do."""


def check_privileges(need_nft: bool = True) -> None:
    """Refuse to run, with a clear message, without root, iproute2 or nftables."""
    problems = []
    if os.geteuid() != 0:
        problems.append("it must run as root (it creates network namespaces)")
    if shutil.which("ip") is None:
        problems.append("iproute2 (`ip`) is missing: apt-get install iproute2")
    if need_nft and shutil.which("nft") is None:
        problems.append("nftables (`nft`) is missing: `make jepsen-deps` or "
                        "apt-get install nftables")
    if problems:
        raise HarnessError("jepsen-like cannot run here: " + "; ".join(problems))


def _run(args: list[str], input_text: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(args, input=input_text, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HarnessError(f"`{' '.join(args)}` failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def enter_netns(name: str) -> None:
    """Move this process into network namespace ``name``. Call it before any thread
    starts (threads created later inherit it; gRPC's threads must be in it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise HarnessError(f"setns({name}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetCluster:
    """N node namespaces + bridge + client namespace, node processes, and faults."""

    def __init__(self, size: int, workdir: Path, *, run_id: str | None = None,
                 faketime: bool = False, tick_ms: int = 50, kafka: bool = False) -> None:
        self.size = size
        self.workdir = workdir
        self.run_id = run_id or secrets.token_hex(3)
        self.prefix = f"rkj{self.run_id}"
        self.sw = f"{self.prefix}-sw"
        self.client_ns = f"{self.prefix}-c"
        self.node_ns = {i: f"{self.prefix}-n{i}" for i in range(1, size + 1)}
        self.addresses = {i: f"10.77.0.{i}:{NODE_PORT}" for i in range(1, size + 1)}
        self.faketime = faketime
        self.tick_ms = tick_ms
        self.kafka_addresses = {i: f"10.77.0.{i}:{KAFKA_PORT}" for i in self.addresses} \
            if kafka else {}
        # the first nodes' --peers, fixed for the run (restarts pass the same list even after
        # the membership nemesis added or removed nodes: rkjepsen/membership.py)
        self.peers = ",".join(f"{i}={a}" for i, a in sorted(self.addresses.items()))
        self.joined: set[int] = set()  # nodes started with --join instead of --peers
        self.retired: set[int] = set()  # removed from the cluster: never started again
        self.procs: dict[int, subprocess.Popen] = {}
        self.log_offsets: dict[int, int] = {}  # node -> size of its log at its last start
        self.paused: set[int] = set()
        self.expected_exits: set[int] = set()  # nodes the nemesis watches itself
        self._created: list[str] = []
        self._closed = False

    @property
    def bootstrap(self) -> str:
        return ",".join(self.addresses[i] for i in sorted(self.addresses))

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(self.kafka_addresses[i] for i in sorted(self.kafka_addresses))

    # ------------------------------------------------------------------ network

    def create_network(self) -> None:
        _run(["ip", "netns", "add", self.sw])
        self._created.append(self.sw)
        _run(["ip", "-n", self.sw, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.sw, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.sw, "link", "set", "br0", "up"])
        hosts = [(str(i), ns, i) for i, ns in self.node_ns.items()]
        hosts.append(("c", self.client_ns, CLIENT_HOST))
        for tag, ns, host in hosts:
            self._add_host(tag, ns, host)
        self.heal()  # creates the (empty) table and chain

    def _add_host(self, tag: str, ns: str, host: int) -> None:
        _run(["ip", "netns", "add", ns])
        self._created.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.sw, "link", "add", f"p{tag}", "type", "veth", "peer",
              "name", "eth0", "netns", ns])
        _run(["ip", "-n", self.sw, "link", "set", f"p{tag}", "master", "br0", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"10.77.0.{host}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def add_node(self, node_id: int) -> None:
        """A namespace for a new node that will join with --join (not started here). The
        maps are replaced, not changed in place: other threads iterate them."""
        if node_id in self.node_ns or not 1 <= node_id < CLIENT_HOST:
            raise HarnessError(f"cannot add node {node_id}")
        ns = f"{self.prefix}-n{node_id}"
        self._add_host(str(node_id), ns, node_id)
        self.joined.add(node_id)
        self.addresses = {**self.addresses, node_id: f"10.77.0.{node_id}:{NODE_PORT}"}
        self.node_ns = {**self.node_ns, node_id: ns}

    def retire(self, node_id: int) -> None:
        """Forget a node the cluster removed: no fault picks it, nothing restarts it, it is
        no longer in the bootstrap list. Its namespace stays until ``close``."""
        self.retired.add(node_id)
        self.node_ns = {i: ns for i, ns in self.node_ns.items() if i != node_id}
        self.addresses = {i: a for i, a in self.addresses.items() if i != node_id}

    def set_drops(self, links: set[tuple[int, int]]) -> None:
        """Replace the partition: drop every frame from node a to node b for each (a, b)
        in ``links``; the empty set heals everything."""
        lines = [
            "table bridge rkj {",
            "  chain drops { type filter hook forward priority 0; policy accept; }",
            "}",
            "flush chain bridge rkj drops",
        ]
        for a, b in sorted(links):
            lines.append(f'add rule bridge rkj drops iifname "p{a}" oifname "p{b}" '
                         f"ether type != arp drop")
        _run(["ip", "netns", "exec", self.sw, "nft", "-f", "-"], "\n".join(lines) + "\n")

    def heal(self) -> None:
        self.set_drops(set())

    def dropped_links(self) -> str:
        return _run(["ip", "netns", "exec", self.sw, "nft", "list", "chain", "bridge", "rkj",
                     "drops"], check=False)

    # ------------------------------------------------------------------ nodes

    def data_dir(self, node_id: int) -> Path:
        return self.workdir / f"node-{node_id}"

    def faketime_file(self, node_id: int) -> Path:
        return self.workdir / f"faketime-{node_id}"

    def log_path(self, node_id: int) -> Path:
        return self.workdir / f"node-{node_id}.log"

    def log_since_start(self, node_id: int) -> str:
        """What node ``node_id`` logged since its last ``start`` (stdout and stderr)."""
        try:
            with open(self.log_path(node_id), "rb") as fh:
                fh.seek(self.log_offsets.get(node_id, 0))
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, node_id: int) -> None:
        if node_id in self.retired:
            return  # removed from the cluster (a fault's undo may still name it)
        if node_id in self.procs:
            raise HarnessError(f"node {node_id} is already running")
        if node_id in self.joined:  # any other member will do; ignored once it has joined
            members = ",".join(a for i, a in sorted(self.addresses.items()) if i != node_id)
            membership = ["--join", members]
        else:
            membership = ["--peers", self.peers]
        log = open(self.log_path(node_id), "ab")
        self.log_offsets[node_id] = log.tell()
        cmd = ["ip", "netns", "exec", self.node_ns[node_id], sys.executable, "-m", "raftka.node",
               "--id", str(node_id), "--listen", self.addresses[node_id], *membership,
               "--data-dir", str(self.data_dir(node_id)), "--tick-ms", str(self.tick_ms),
               "--log-level", "info"]
        if self.kafka_addresses:
            cmd += ["--kafka-listen", self.kafka_addresses[node_id], "--kafka-peers",
                    ",".join(f"{i}={a}" for i, a in sorted(self.kafka_addresses.items()))]
        env = dict(os.environ)
        if self.faketime:
            # Wall clock only (NTP-style skew); monotonic clocks, which drive Raft's ticks,
            # stay true. The offset file is re-read at most once a second.
            ft = self.faketime_file(node_id)
            if not ft.exists():
                ft.write_text("+0s\n")
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE=str(ft),
                       FAKETIME_CACHE_DURATION="1", DONT_FAKE_MONOTONIC="1")
        self.procs[node_id] = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log,
                                               env=env, start_new_session=True)
        log.close()

    def start_all(self) -> None:
        for i in sorted(self.node_ns):
            self.start(i)

    def alive(self) -> list[int]:
        return sorted(i for i, p in self.procs.items() if p.poll() is None)

    def running(self, node_id: int) -> bool:
        p = self.procs.get(node_id)
        return p is not None and p.poll() is None

    def kill(self, node_id: int) -> None:
        """kill -9, reaped at once."""
        proc = self.procs.pop(node_id, None)
        self.paused.discard(node_id)
        if proc is None:
            return
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def pause(self, node_id: int) -> None:
        proc = self.procs.get(node_id)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        proc = self.procs.get(node_id)
        self.paused.discard(node_id)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)

    def skew_clock(self, node_id: int, offset_s: float) -> None:
        if not self.faketime:
            raise HarnessError("clock faults need the cluster started with faketime=True")
        self.faketime_file(node_id).write_text(f"{offset_s:+.0f}s\n")

    def exited(self) -> dict[int, int]:
        """Nodes that exited on their own (not killed by us): id -> return code."""
        return {i: p.returncode for i, p in list(self.procs.items())  # nemesis thread
                if p.poll() is not None and i not in self.expected_exits}

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop every node we started (by PID) and delete every namespace we created.
        Idempotent; safe to call from signal handlers' cleanup paths and atexit."""
        if self._closed:
            return
        self._closed = True
        for i in list(self.procs):
            self.resume(i)
            self.kill(i)
        for name in reversed(self._created):
            for pid in _run(["ip", "netns", "pids", name], check=False).split():
                if int(pid) == os.getpid():
                    continue  # the harness itself lives in the client namespace
                try:  # anything else in a namespace of ours was started by this run
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run(["ip", "netns", "del", name], check=False)
        self._created.clear()


def leftover_namespaces(prefix: str = "rkj") -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith(prefix)]


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)
