"""The disk nemesis applies node/README.md's recovery, without root: node processes are small
stand-ins (no network namespaces) that refuse to start on a damaged log with one ERROR line,
as a real node does, or start on a truncated one. The real thing runs in the jepsen-like
runs; node/README.md's recovery itself is tested on a real cluster in
tests/integration/test_storage_damage.py."""

from __future__ import annotations

import subprocess
import time
import sys
from pathlib import Path

import pytest

from rkjepsen import netcluster
from rkjepsen.nemesis import Nemesis

WAL = b"".join(b"record %04d synced\n" % i for i in range(40))

# A stand-in node: keeps a one-file "log" in <data>/raft. A WAL that is a prefix of what it
# wrote is taken for a torn tail (started anyway); any other difference refuses the start.
FAKE_NODE = r"""
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a node stopping on damage: exit 1
node, data, mode = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
wal_bytes = bytes.fromhex(sys.argv[4])
store = data / "raft"
wal = store / "000004.log"
if wal.exists():
    got = wal.read_bytes()
    if not wal_bytes.startswith(got):
        if mode == "traceback":
            print("Traceback (most recent call last):\n  RuntimeError: bad", file=sys.stderr)
            sys.exit(3)
        print(f"ts=0 level=ERROR logger=raftka.server msg=node {node} cannot start: raft log "
              f"store {store} is damaged in its write-ahead log (checksum mismatch); To "
              f"recover: keep the node stopped, move {store} aside", file=sys.stderr, flush=True)
        sys.exit(1)
else:
    store.mkdir(parents=True, exist_ok=True)
    wal.write_bytes(wal_bytes)
print(f"raftka node {node} serving on fake", file=sys.stderr, flush=True)
time.sleep(120)
"""


class LocalCluster(netcluster.NetCluster):
    """NetCluster's process bookkeeping with stand-in nodes and no network."""

    def __init__(self, size: int, workdir: Path, mode: str = "one-line") -> None:
        super().__init__(size, workdir)
        self.mode = mode

    def start(self, node_id: int) -> None:
        log = open(self.log_path(node_id), "ab")
        self.log_offsets[node_id] = log.tell()
        self.procs[node_id] = subprocess.Popen(
            [sys.executable, "-c", FAKE_NODE, str(node_id), str(self.data_dir(node_id)),
             self.mode, WAL.hex()], stdout=log, stderr=log)
        log.close()

    def close(self) -> None:
        for node in list(self.procs):
            self.kill(node)


class Events:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def event(self, type_, process, f, value=None):
        self.events.append((f, value))

    def of(self, f: str) -> list[dict]:
        return [v for name, v in self.events if name == f]


class Replication:
    """Stand-in for the nodes' Metadata: leaders report high watermark 7 of one partition;
    a node that came back reports ``victim_hw`` (7: caught up)."""

    def __init__(self, victim_hw: int = 7) -> None:
        self.victim_hw = victim_hw
        self.victim: int | None = None

    def __call__(self, node: int, leaders_only: bool):
        if leaders_only:
            return {("jepsen", 0): (7, (1, 2, 3), 2)} if node != self.victim else {}
        return {("jepsen", 0): (self.victim_hw if node == self.victim else 7, (1, 2, 3), 2)}


@pytest.fixture
def make(tmp_path: Path):
    made: list[LocalCluster] = []

    def _make(mode: str = "one-line", victim_hw: int = 7):
        cluster = LocalCluster(3, tmp_path, mode)
        made.append(cluster)
        cluster.start_all()
        replication = Replication(victim_hw)
        events = Events()
        nemesis = Nemesis(cluster, events, ["disk"], 1.0, 5, lambda key: 0, 1,
                          high_watermarks=replication)
        for node in cluster.node_ns:
            assert nemesis._await_start(node) == "serving"
        return cluster, nemesis, events, replication

    yield _make
    for cluster in made:
        cluster.close()


def _disk_fault(nemesis: Nemesis, replication: Replication, kind: str) -> int:
    fid = nemesis._start_fault("disk", kind)
    replication.victim = nemesis._active[fid][1]["nodes"][0]
    return fid


def test_a_refused_start_moves_the_log_aside_and_restarts_the_node_empty(make) -> None:
    cluster, nemesis, events, replication = make()
    fid = _disk_fault(nemesis, replication, "flip-bits")
    victim = replication.victim
    nemesis._stop_fault(fid)
    assert nemesis.errors == []
    (refused,) = events.of("disk-refused")
    assert refused["node"] == victim and refused["exit_code"] == 1
    assert f"node {victim} cannot start: raft log store" in refused["error_line"]
    aside = cluster.data_dir(victim) / f"raft.damaged-{fid}"
    assert refused["moved_to"] == str(aside)
    assert aside.joinpath("000004.log").read_bytes() != WAL  # the damaged log, kept
    assert cluster.data_dir(victim).joinpath("raft", "000004.log").read_bytes() == WAL
    assert cluster.running(victim)
    assert [e["node"] for e in events.of("disk-caught-up")] == [victim]
    assert events.of("disk-accepted") == []


def test_a_truncated_wal_that_the_node_accepts_is_recorded_and_waited_for(make) -> None:
    cluster, nemesis, events, replication = make()
    fid = _disk_fault(nemesis, replication, "truncate-wal")
    nemesis._stop_fault(fid)
    assert nemesis.errors == []
    assert [e["node"] for e in events.of("disk-accepted")] == [replication.victim]
    assert events.of("disk-refused") == []
    assert [e["node"] for e in events.of("disk-caught-up")] == [replication.victim]
    assert not (cluster.data_dir(replication.victim) / f"raft.damaged-{fid}").exists()


def test_a_refusal_without_the_documented_line_is_a_problem(make) -> None:
    cluster, nemesis, events, replication = make(mode="traceback")
    fid = _disk_fault(nemesis, replication, "flip-bits")
    nemesis._stop_fault(fid)
    assert len(nemesis.errors) == 1
    assert "without the one documented ERROR line (exit 3)" in nemesis.errors[0]
    assert "Traceback" in nemesis.errors[0]


def test_a_node_that_does_not_catch_up_is_a_problem(make, monkeypatch) -> None:
    monkeypatch.setattr("rkjepsen.nemesis.CATCH_UP_WAIT_S", 1.0)
    cluster, nemesis, events, replication = make(victim_hw=3)
    fid = _disk_fault(nemesis, replication, "flip-bits")
    nemesis._stop_fault(fid)
    assert len(nemesis.errors) == 1
    assert "did not catch up within 1s" in nemesis.errors[0]
    assert "jepsen/0 3<7" in nemesis.errors[0]
    assert events.of("disk-caught-up") == []


def test_a_later_refusal_is_recovered_before_the_next_fault(make) -> None:
    """Damage the first restart did not read (here: done behind the node's back) refuses a
    later start; the runner hands the exit to the nemesis, which recovers the node."""
    cluster, nemesis, events, replication = make()
    victim = replication.victim = 2
    cluster.kill(victim)
    wal = cluster.data_dir(victim) / "raft" / "000004.log"
    wal.write_bytes(b"X" + WAL[1:])
    cluster.start(victim)
    assert nemesis._await_start(victim) == "exited"
    code = cluster.exited()[victim]
    cluster.procs.pop(victim)
    assert nemesis.take_refusal(victim, code)
    nemesis._recover_refused()
    assert nemesis.errors == []
    (refused,) = events.of("disk-refused")
    assert refused["when"] == "a later start" and cluster.running(victim)
    assert wal.read_bytes() == WAL


def test_an_exit_that_is_not_a_damaged_store_stays_with_the_runner(make) -> None:
    cluster, nemesis, events, replication = make(mode="traceback")
    cluster.kill(3)
    (cluster.data_dir(3) / "raft" / "000004.log").write_bytes(b"X")
    cluster.start(3)
    assert nemesis._await_start(3) == "exited"
    cluster.procs.pop(3)
    assert not nemesis.take_refusal(3, 3)


def test_damage_found_while_running_is_the_same_refusal() -> None:
    """A node that stops on damage its Raft loop found while it ran says so in the one
    documented line ("cannot go on"); the nemesis recovers it like a refused start."""
    from rkjepsen.nemesis import _damaged_store_line
    line = ("ts=0 level=ERROR logger=raftka.node msg=node 4 cannot go on: corrupt raft "
            "storage in group 8 index 91: missing entry inside [first, last] (raft log store "
            "/d/node-4/raft, found while running); To recover: keep the node stopped, move "
            "/d/node-4/raft aside")
    assert _damaged_store_line("raftka node 4 serving on x\n" + line, 4) == line
    assert _damaged_store_line(line, 3) is None, "another node's line"
    assert _damaged_store_line(line + "\n" + line, 4) is None, "exactly one ERROR line"


def test_a_node_that_stops_on_damage_while_caught_up_is_awaited_is_recovered_at_once(
        make, monkeypatch) -> None:
    """Damage the restart did not read, found by the node while the nemesis waits for it
    to catch up: it exits with the documented line ("cannot go on"), and the nemesis
    recovers it at once (log aside, restart) instead of after the whole wait."""
    import threading

    monkeypatch.setattr("rkjepsen.nemesis.CATCH_UP_WAIT_S", 20.0)
    cluster, nemesis, events, replication = make()
    fid = _disk_fault(nemesis, replication, "truncate-wal")  # accepted
    victim = replication.victim
    data = cluster.data_dir(victim)
    # behind until its log was moved aside and it restarted empty
    recovered = lambda: any(data.glob("raft.damaged-*"))  # noqa: E731
    replication.victim_hw = 3
    original = replication.__call__

    def hws(node, leaders_only):
        answer = original(node, leaders_only)
        if node == victim and not leaders_only and recovered():
            answer = {key: (7, *rest[1:]) for key, rest in answer.items()}
        return answer
    nemesis.high_watermarks = hws

    def stops_on_damage() -> None:
        time.sleep(1.0)
        with open(cluster.log_path(victim), "a") as log:
            log.write(f"ts=0 level=ERROR logger=raftka.node msg=node {victim} cannot go on: "
                      f"corrupt raft storage in group 9 index 5 (raft log store {data}/raft, "
                      f"found while running); To recover: keep the node stopped, move "
                      f"{data}/raft aside\n")
        proc = cluster.procs[victim]  # it exits on its own: the runner leaves it to us
        proc.terminate()  # the stand-in exits 1 on it, as a node stopping on damage does
        proc.wait()
        assert victim in cluster.expected_exits and victim not in cluster.exited()
    stopper = threading.Thread(target=stops_on_damage)
    stopper.start()
    started = time.monotonic()
    nemesis._stop_fault(fid)
    stopper.join()
    assert nemesis.errors == []
    assert time.monotonic() - started < 15, "recovered during the wait, not after it"
    (refused,) = events.of("disk-refused")
    assert refused["node"] == victim and "cannot go on" in refused["error_line"]
    assert cluster.running(victim) and [e["node"] for e in events.of("disk-caught-up")] \
        == [victim]
