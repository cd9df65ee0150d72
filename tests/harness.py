"""Real multi-process Raftka clusters on loopback, for integration tests and benchmarks.

``Cluster`` starts N ``python -m raftka.node`` processes on free ports with data in
the test's tmp dir, waits (bounded polling, never a fixed sleep) until a controller leader
is elected, and on teardown stops every process it started.

Processes: every node runs in its own process group and every process ever started is
remembered until it has exited, so ``stop_all`` (the fixtures call it in ``finally``, also
when a test fails or a fixture errors) kills each one by process group, including a node
whose graceful ``terminate`` timed out. ``live()`` are the started, not killed nodes;
``responsive()`` those of them that are not paused (SIGSTOP): the leader lookups ask only
these, so a paused node neither costs a timeout nor answers with its stale view.

Data safety (``tests/safety.py``): ``assert_acknowledged`` checks a partition's log
against the acknowledgements; ``assert_replicas_agree`` compares every responsive
replica's content, offset by offset, through the ``Debug`` service.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
import zlib
from pathlib import Path
from typing import Callable, Iterator

import grpc

from raftka.v1.recordbatch import decode_batches
from raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    debug_pb2,
    debug_pb2_grpc,
    errors_pb2,
)

from tests.safety import assert_log_matches_acks, check_replicas

REPO = Path(__file__).resolve().parents[1]


# Ports for test clusters come from a band of this process's own, below the kernel's
# ephemeral range (32768-60999 here): a port the kernel handed out for "bind to 0" and that
# was released again could be taken, before the node bound it, by any outgoing connection
# or by another pytest-xdist worker's cluster (a node then failed to start in CI).
_BAND_BASE, _BAND_SIZE, _BANDS = 12_000, 1_500, 13  # 12000-31499


@functools.cache
def _band() -> range:
    """This process's band: the first from its preferred one that no other process on the
    machine holds (an exclusive lock on a file per band, held until the process exits).
    Preferred: xdist workers of one session take consecutive bands from an offset of the
    session's own; a process without xdist starts from its pid. Without the locks two
    concurrent sessions (a developer's and a helper's) shared a band one time in 13, and a
    node that found its port taken exited while the other session's node answered there."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker[2:].isdigit():
        session = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
        preferred = int(worker[2:]) + zlib.crc32(session.encode())
    else:
        preferred = os.getpid()
    locks = Path(tempfile.gettempdir()) / "raftka-test-port-bands"
    locks.mkdir(exist_ok=True)
    index = preferred % _BANDS
    for step in range(_BANDS):
        candidate = (preferred + step) % _BANDS
        fd = os.open(locks / f"{candidate}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        index = candidate  # the fd stays open (and locked) for the process's life
        break
    start = _BAND_BASE + index * _BAND_SIZE
    return range(start, start + _BAND_SIZE)


_next_port = [0]  # cursor into the band: ports are not handed out again soon


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now, from this process's band."""
    band = _band()
    ports: list[int] = []
    for _ in range(len(band)):
        port = band[_next_port[0] % len(band)]
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (or still in TIME_WAIT for a listener)
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} free ports left in {band}")


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive loopback ports free now, from this process's band
    (for tools that take a base port: ``raftka dev --base-port``). The cursor moves past the
    whole range, so later ``free_ports`` calls never hand out a port inside it."""
    band = _band()
    for _ in range(len(band)):
        start = _next_port[0] % len(band)
        if start + count > len(band):
            _next_port[0] += len(band) - start  # wrap: a range never straddles the band's end
            continue
        ports = [band[start + i] for i in range(count)]
        _next_port[0] += count
        free = True
        for port in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return ports[0]
    raise RuntimeError(f"no {count} consecutive free ports left in {band}")


class LineReader:
    """Lines of a child's text stream read on a thread, so that a test waits for a line with
    a deadline: a bare ``readline()`` blocks for ever on a child that hangs without writing
    or exiting (one held a CI run until its time limit)."""

    def __init__(self, stream) -> None:
        import queue
        import threading

        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self._lines.put(line)
        self._lines.put("")  # end of stream

    def readline(self, deadline: float) -> str:
        """The next line, or "" at the end of the stream or once ``deadline``
        (time.monotonic()) has passed."""
        import queue

        try:
            return self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return ""


def error_info(exc: grpc.RpcError) -> errors_pb2.ErrorInfo | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "raftka-error-bin":
            return errors_pb2.ErrorInfo.FromString(value)
    return None


def _accepts(address: str) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


_CLUSTERS: weakref.WeakSet[Cluster] = weakref.WeakSet()


@contextlib.contextmanager
def running_cluster(root: Path, size: int = 3, **kwargs) -> Iterator[Cluster]:
    """A started cluster (``Cluster``'s keyword arguments), stopped on the way out; the
    nodes' logs are printed when the body fails (pytest shows them with the failure)."""
    c = Cluster(root, size, **kwargs)
    try:
        c.start_all()
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop_all()


def module_cluster(root: Path, request, settle: Callable[[Cluster], None] | None = None,
                   **kwargs) -> Iterator[Cluster]:
    """The body of a module-scoped cluster fixture (``yield from`` it): one 3-node cluster
    for the module's tests, ``settle``d after its start; the nodes' logs are printed when
    any test of the module failed (needs a conftest hook that keeps ``item.rep_call``)."""
    c = Cluster(root, 3, **kwargs)
    try:
        c.start_all()
        if settle is not None:
            settle(c)
        yield c
    finally:
        c.stop_all()
        if any(getattr(item, "rep_call", None) is not None and item.rep_call.failed
               for item in request.session.items if item.module is request.module):
            print(c.logs())


@atexit.register
def _stop_every_cluster() -> None:
    for cluster in list(_CLUSTERS):
        cluster.stop_all()


class Cluster:
    def __init__(self, root: Path, size: int, tick_ms: int = 50,
                 extra_args: tuple[str, ...] = (), metrics: bool = False,
                 node_args: Callable[[int], list[str]] | None = None,
                 channel_credentials: grpc.ChannelCredentials | None = None,
                 kafka: bool = False, balancer: bool = False) -> None:
        """``metrics``: every node serves Prometheus metrics (``metrics_url``).
        ``balancer``: the nodes run the automatic balancer (off by default, so that no test
        sees replicas or leaders move that it did not move itself).
        ``node_args(node_id)``: more flags for one node (its own certificate);
        ``channel_credentials``: TLS for the harness's own channels (``channel``);
        ``kafka``: every node serves the Kafka protocol (``kafka_bootstrap``)."""
        self.node_args = node_args
        self.channel_credentials = channel_credentials
        self.root = root
        self.size = size
        self.tick_ms = tick_ms
        self.extra_args = tuple(extra_args)  # more `python -m raftka.node` flags for every node
        if not balancer:
            self.extra_args = ("--no-balancer", *self.extra_args)
        ports = free_ports(size * (1 + bool(metrics) + bool(kafka)))  # all distinct
        self.peers = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(size)}
        self.metrics = ({i + 1: f"127.0.0.1:{ports[size + i]}" for i in range(size)}
                        if metrics else {})
        self.kafka = ({i + 1: f"127.0.0.1:{ports[-size + i]}" for i in range(size)}
                      if kafka else {})
        self.procs: dict[int, subprocess.Popen] = {}  # running (maybe paused), by node id
        self.paused: set[int] = set()
        self._started: list[subprocess.Popen] = []  # every process, until it has exited
        self._log_start: dict[int, int] = {}  # a node's log size when it was last started
        self._channels: dict[int, grpc.Channel] = {}
        _CLUSTERS.add(self)  # stop_all at interpreter exit, whatever happened before

    # -------------------------------------------------------------- processes
    def start(self, node_id: int) -> None:
        if node_id in self.procs:
            raise RuntimeError(f"node {node_id} is already running (pid "
                               f"{self.procs[node_id].pid}); stop it first")
        cmd = [
            sys.executable, "-m", "raftka.node", "--id", str(node_id), "--listen", self.peers[node_id],
            "--peers", ",".join(f"{k}={v}" for k, v in sorted(self.peers.items())),
            "--data-dir", str(self.root / f"node-{node_id}"), "--tick-ms", str(self.tick_ms),
            "--log-level", "info", *self.extra_args,
            *(self.node_args(node_id) if self.node_args is not None else ()),
        ]
        if node_id in self.metrics:
            cmd += ["--metrics-listen", self.metrics[node_id]]
        if node_id in self.kafka:
            cmd += ["--kafka-listen", self.kafka[node_id], "--kafka-peers",
                    ",".join(f"{k}={v}" for k, v in sorted(self.kafka.items()))]
        log_path = self.root / f"node-{node_id}.log"
        self._log_start[node_id] = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log,
                                    start_new_session=True)  # its own process group
        self._started.append(proc)
        self.procs[node_id] = proc

    def wait_serving(self, node_id: int, timeout: float = 30.0) -> None:
        """Until the node's own process says it serves on its address. Whoever answers on
        the port may be someone else: a node that could not bind it (taken meanwhile, e.g.
        by a concurrent test session's node) exits, and another cluster's node answered in
        its place, so a test ran against the wrong cluster."""
        proc, path = self.procs[node_id], self.root / f"node-{node_id}.log"

        def serving() -> bool:
            with open(path, "rb") as f:
                f.seek(self._log_start.get(node_id, 0))
                text = f.read()
            if b" serving on " in text:
                return True
            if proc.poll() is not None:
                tail = text.decode(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"node {node_id} exited with {proc.returncode} before "
                                   "serving; its log ends:\n" + "\n".join(tail))
            return False

        wait_for(serving, timeout, f"node {node_id} to serve on {self.peers[node_id]}")

    def start_all(self) -> None:
        for nid in self.peers:
            self.start(nid)
        for nid in self.peers:
            self.wait_serving(nid)
        self.wait_healthy()
        for nid in self.responsive():  # every node, not only a majority, before the test
            wait_for(lambda nid=nid: self._answers_metadata(nid), 30,
                     f"node {nid} to answer Metadata")
        for nid in self.metrics:  # a node binds it before serving gRPC: wait for each
            wait_for(lambda nid=nid: _accepts(self.metrics[nid]), 30,
                     f"node {nid}'s metrics endpoint")

    def kill(self, node_id: int) -> None:
        """kill -9 (SIGKILL) of the node's process group; returns once it is gone."""
        proc = self.procs.pop(node_id)
        self.paused.discard(node_id)
        _kill_group(proc)

    def terminate(self, node_id: int, timeout: float = 15.0) -> int:
        """SIGTERM (graceful stop); its exit code. A node that does not exit within
        ``timeout`` is killed and the test fails: it is never left running."""
        proc = self.procs[node_id]
        self.resume(node_id)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise AssertionError(f"node {node_id} did not exit within {timeout:.0f}s of "
                                 "SIGTERM; killed it") from None
        finally:
            if proc.poll() is not None:
                self.procs.pop(node_id, None)
        return code

    def pause(self, node_id: int) -> None:
        os.killpg(self.procs[node_id].pid, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        if node_id in self.paused:
            os.killpg(self.procs[node_id].pid, signal.SIGCONT)
            self.paused.discard(node_id)

    def stop_all(self) -> None:
        """Kill every process this cluster ever started that has not exited, by process
        group; never raises, so a fixture's ``finally`` always gets through it."""
        for proc in self._started:
            if proc.poll() is None:  # never signal a reaped pid: it may be reused
                _kill_group(proc)
        self._started = [p for p in self._started if p.returncode is None]
        self.procs.clear()
        self.paused.clear()
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def logs(self) -> str:
        out = []
        for p in sorted(self.root.glob("node-*.log")):
            out.append(f"==== {p.name}\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    # -------------------------------------------------------------- rpc
    def channel(self, node_id: int) -> grpc.Channel:
        ch = self._channels.get(node_id)
        if ch is None:
            options = [
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 300),
            ]
            ch = (grpc.secure_channel(self.peers[node_id], self.channel_credentials,
                                      options=options)
                  if self.channel_credentials is not None
                  else grpc.insecure_channel(self.peers[node_id], options=options))
            self._channels[node_id] = ch
        return ch

    @property
    def kafka_bootstrap(self) -> str:
        """Every node's Kafka listener, as Kafka clients' bootstrap.servers."""
        return ",".join(self.kafka[n] for n in sorted(self.kafka))

    def metrics_url(self, node_id: int) -> str:
        return f"http://{self.metrics[node_id]}/metrics"

    def counter_sums(self, pattern: str) -> dict[str, float]:
        """Counters of every node's metrics page (``metrics=True``) summed by name:
        ``pattern`` (multi-line regex) captures a name and a value per line."""
        import urllib.request  # noqa: PLC0415 - only the tests with metrics need it
        total: dict[str, float] = {}
        for node in self.metrics:
            with urllib.request.urlopen(self.metrics_url(node), timeout=10) as response:
                text = response.read().decode()
            for name, value in re.findall(pattern, text, re.M):
                total[name] = total.get(name, 0.0) + float(value)
        return total

    def broker(self, node_id: int) -> broker_pb2_grpc.BrokerStub:
        return broker_pb2_grpc.BrokerStub(self.channel(node_id))

    def admin(self, node_id: int) -> admin_pb2_grpc.AdminStub:
        return admin_pb2_grpc.AdminStub(self.channel(node_id))

    def live(self) -> list[int]:
        """Nodes started and not killed or stopped (paused ones included)."""
        return sorted(self.procs)

    def responsive(self) -> list[int]:
        """Live nodes that are not paused."""
        return sorted(n for n in self.procs if n not in self.paused)

    def _answers_metadata(self, node_id: int) -> bool:
        """Whether the node serves and has caught up with the controller log (a channel
        that failed to connect while the node started answers UNAVAILABLE until gRPC's
        reconnect backoff ends)."""
        try:
            self.broker(node_id).Metadata(broker_pb2.MetadataRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return True

    def controller_leader(self) -> int:
        for nid in self.responsive():
            try:
                md = self.broker(nid).Metadata(broker_pb2.MetadataRequest(), timeout=1)
            except grpc.RpcError:
                continue
            if md.controller_id and md.controller_id in self.responsive():
                return md.controller_id
        return 0

    def wait_healthy(self, timeout: float = 30.0) -> int:
        leader = wait_for(self.controller_leader, timeout, "a controller leader")
        for nid in self.responsive():
            if nid in self.kafka:
                wait_for(lambda: _accepts(self.kafka[nid]), timeout,
                         f"node {nid}'s Kafka listener")
        return leader

    def create_topic(self, name: str, partitions: int = 1, replicas: int = 3,
                     configs: dict[str, str] | None = None) -> None:
        def attempt():
            leader = self.controller_leader()
            if not leader:
                return False
            try:
                self.admin(leader).CreateTopic(admin_pb2.CreateTopicRequest(
                    name=name, partitions=partitions, replication_factor=replicas,
                    configs=configs or {}), timeout=10)
                return True
            except grpc.RpcError as exc:
                info = error_info(exc)
                if info is not None and info.code == errors_pb2.TOPIC_EXISTS:
                    return True
                if info is not None and not info.retriable:
                    raise
                return False
        wait_for(attempt, 20, f"topic {name} to be created")
        for p in range(partitions):
            self.wait_preferred_leader(name, p)
        # Followers of the controller learn the commit at its next message, so a node that
        # holds no replica may answer UNKNOWN_TOPIC for a moment after the replicas agree
        wait_for(lambda: {n for n, _ in self._partition_views(name, 0)}
                 == set(self.responsive()), 10, f"every node to know topic {name}")

    def _partition_views(self, topic: str, partition: int):
        """(node id, that node's PartitionInfo) from every responsive node that answers."""
        for nid in self.responsive():
            try:
                md = self.broker(nid).Metadata(broker_pb2.MetadataRequest(topics=[topic]),
                                               timeout=1)
            except grpc.RpcError:
                continue
            yield nid, md.topics[0].partitions[partition]

    def preferred_replica(self, topic: str, partition: int) -> int:
        for _, info in self._partition_views(topic, partition):
            return info.replicas[0]
        return 0

    def wait_preferred_leader(self, topic: str, partition: int, timeout: float = 20.0) -> int:
        """A new partition may first elect any replica; the brokers then hand leadership to
        the preferred one. Tests start from that settled state."""
        preferred = self.preferred_replica(topic, partition)
        if preferred not in self.responsive():
            return self.wait_leader(topic, partition, timeout)
        return wait_for(lambda: self.partition_leader(topic, partition) == preferred and
                        preferred, timeout, f"{topic}/{partition} led by node {preferred}")

    def partition_leader(self, topic: str, partition: int) -> int:
        """The leader as reported by a responsive replica that is itself that leader (with
        the newest term, when two claim it: one of them is deposed and does not know)."""
        best = (-1, 0)
        for nid, info in self._partition_views(topic, partition):
            if info.leader_id == nid and info.leader_term > best[0]:
                best = (info.leader_term, nid)
        return best[1]

    def wait_leader(self, topic: str, partition: int, timeout: float = 20.0) -> int:
        return wait_for(lambda: self.partition_leader(topic, partition), timeout,
                        f"a leader for {topic}/{partition}")

    def produce(self, topic: str, partition: int, batch: bytes, acks: int = broker_pb2.ACKS_ALL,
                timeout: float = 10.0) -> broker_pb2.ProduceResponse:
        leader = self.wait_leader(topic, partition)
        return self.broker(leader).Produce(broker_pb2.ProduceRequest(
            topic=topic, partition=partition, acks=acks, record_batches=batch,
            timeout_ms=int(timeout * 1000)), timeout=timeout + 2)

    def fetch_all(self, topic: str, partition: int, start: int = 0) -> bytes:
        """Every committed batch from ``start`` to the high watermark, from the leader. A
        leadership that moves meanwhile (a preferred-leader handover after a restart)
        restarts the read at the new leader."""
        for attempt in range(5):
            leader = self.wait_leader(topic, partition)
            out, offset = [], start
            try:
                while True:
                    r = self.broker(leader).Fetch(broker_pb2.FetchRequest(
                        topic=topic, partition=partition, offset=offset,
                        max_bytes=4 << 20), timeout=10)
                    if r.record_batches:
                        out.append(r.record_batches)
                    offset = r.next_offset
                    if offset >= r.high_watermark:
                        return b"".join(out)
            except grpc.RpcError as exc:
                info = error_info(exc)
                if attempt == 4 or info is None or info.code != errors_pb2.NOT_LEADER:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def values(self, topic: str, partition: int, start: int = 0) -> list[tuple[int, bytes]]:
        """(offset, value) of every committed record from ``start``, from the leader."""
        return [(r.offset, r.value) for r in decode_batches(self.fetch_all(topic, partition,
                                                                           start))]

    def replica_position(self, node_id: int, topic: str,
                         partition: int) -> debug_pb2.ReplicaDigestResponse:
        """Node ``node_id``'s own replica: log start, high watermark, last offset, role
        (the Debug service's ReplicaDigest without ranges)."""
        return debug_pb2_grpc.DebugStub(self.channel(node_id)).ReplicaDigest(
            debug_pb2.ReplicaDigestRequest(topic=topic, partition=partition,
                                           positions_only=True), timeout=5)

    # -------------------------------------------------------------- data safety
    def assert_acknowledged(self, topic: str, partition: int, sent: list[bytes],
                            acked=None) -> None:
        """The partition's log holds exactly the acknowledged records: see
        ``tests.safety.assert_log_matches_acks`` (``acked`` defaults to all of ``sent``)."""
        assert_log_matches_acks(self.values(topic, partition), sent, acked,
                                where=f"{topic}/{partition}")

    def assert_replicas_agree(self, topic: str, partition: int, timeout: float = 30.0) -> None:
        """Every responsive replica holds the same records at the same offsets up to the
        high watermark (after waiting, bounded, for them to reach the same one)."""
        check = check_replicas({n: self.peers[n] for n in self.responsive()}, topic,
                               partition, timeout)
        if check.problem:
            raise AssertionError(check.problem)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group led by ``proc`` (a node started in its own session) and
    reap it. SIGCONT first: a stopped process dies of SIGKILL anyway, but its group's
    other members would stay stopped."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
