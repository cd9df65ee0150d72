"""A node's damaged Raft log: refused at start with one clear line; an ordinary kill -9 is not
refused; the documented recovery (move the log aside, restart) brings the node back whole."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from raftka.v1.recordbatch import Record, build_batch
from raftka.raft import Entry, EntryKind, HardState
from raftka.raft.rocksdb import RocksLogDB

from tests.harness import REPO, Cluster, free_ports, wait_for
from tests.rocks_wal import damage_middle_record


def _batch(value: bytes) -> bytes:
    return build_batch([Record(None, value)], compression="lz4")


def _node_command(cluster: Cluster, node_id: int) -> list[str]:
    """What ``Cluster.start`` runs, to run it in the foreground."""
    return [
        sys.executable, "-m", "raftka.node", "--id", str(node_id), "--listen", cluster.peers[node_id],
        "--peers", ",".join(f"{k}={v}" for k, v in sorted(cluster.peers.items())),
        "--data-dir", str(cluster.root / f"node-{node_id}"), "--tick-ms", str(cluster.tick_ms),
        "--log-level", "info",
    ]


def _serving_count(cluster: Cluster, node_id: int) -> int:
    log = (cluster.root / f"node-{node_id}.log").read_text(errors="replace")
    return log.count(f"raftka node {node_id} serving on")


def _make_lead(cluster: Cluster, topic: str, node_id: int) -> None:
    """Restart whichever other replica leads until ``node_id`` does (reads then go to it)."""
    def leads() -> bool:
        current = cluster.partition_leader(topic, 0)
        if current == node_id:
            return True
        if current:
            cluster.terminate(current)
            cluster.start(current)
        return False
    wait_for(leads, 30, f"node {node_id} to lead {topic}/0", interval=0.5)


def test_node_killed_during_writes_restarts_without_refusal(cluster: Cluster) -> None:
    cluster.create_topic("crashy")
    leader = cluster.wait_leader("crashy", 0)
    victim = next(n for n in cluster.live() if n != leader)
    acked: list[bytes] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            value = b"c%d-" % i + bytes(64 << 10)  # 64 KiB records: WAL writes in flight
            try:
                cluster.produce("crashy", 0, _batch(value))
            except Exception as exc:  # noqa: BLE001 - reported below; the leader never moves
                failures.append(exc)
                return
            acked.append(value)
            i += 1

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    try:
        for round_number in range(1, 3):
            wait_for(lambda: len(acked) >= 10 * round_number or failures, 20,
                     "acknowledged writes")
            cluster.kill(victim)  # kill -9 while the leader replicates to it
            cluster.start(victim)
            wait_for(lambda: _serving_count(cluster, victim) == round_number + 1, 20,
                     f"node {victim} to restart")
    finally:
        stop.set()
        writer.join(20)
    assert not failures, failures
    assert cluster.procs[victim].poll() is None, "the restarted node keeps running"
    cluster.assert_acknowledged("crashy", 0, acked)
    cluster.assert_replicas_agree("crashy", 0)  # the twice-killed follower caught up whole


def _produce_one_write_each(cluster: Cluster, topic: str, follower: int,
                            values: list[bytes]) -> None:
    """Produce each value and wait until ``follower`` applied it, so that each reaches its
    log in a write of its own (a follower that lags gets many entries in one write: too
    few WAL records to damage one in the middle)."""
    for value in values:
        hw = cluster.produce(topic, 0, _batch(value)).last_offset + 1
        wait_for(lambda: _high_watermark(cluster, follower, topic) >= hw,
                 20, f"node {follower} to apply offset {hw - 1}")


def _high_watermark(cluster: Cluster, node: int, topic: str) -> int:
    """-1 while the node does not answer (still starting after the previous test's restart)."""
    try:
        return cluster.replica_position(node, topic, 0).high_watermark
    except grpc.RpcError as e:
        if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise
        return -1


def test_damaged_wal_refuses_start_in_one_line_and_moving_it_aside_recovers(cluster: Cluster) -> None:
    cluster.create_topic("precious")
    leader = cluster.wait_leader("precious", 0)
    victim = next(n for n in cluster.live() if n != leader)
    _produce_one_write_each(cluster, "precious", victim, [b"p%d" % i for i in range(20)])
    cluster.kill(victim)  # kill -9: its synced records are still only in the WAL
    store = cluster.root / f"node-{victim}" / "raft"
    damage_middle_record(store)

    started = subprocess.run(_node_command(cluster, victim), cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 1, started.stderr
    assert "Traceback" not in started.stderr, started.stderr
    errors = [line for line in started.stderr.splitlines() if "level=ERROR" in line]
    assert len(errors) == 1, started.stderr
    (line,) = errors
    assert f"node {victim} cannot start: raft log store {store} is damaged in its " \
        "write-ahead log" in line
    assert "checksum mismatch" in line and "move" in line and "aside" in line

    # The recovery node/README.md describes: move the log aside, start the node again.
    shutil.move(store, store.with_name("raft.damaged"))
    for i in range(20, 25):
        cluster.produce("precious", 0, _batch(b"p%d" % i))
    cluster.start(victim)
    wait_for(lambda: _serving_count(cluster, victim) == 2, 20, f"node {victim} to start")
    # Restarting the other replicas until it leads resets every leader's view of it (see
    # the next test for why that is needed); it can only lead with every committed entry.
    _make_lead(cluster, "precious", victim)
    cluster.assert_acknowledged("precious", 0, [b"p%d" % i for i in range(25)])
    cluster.assert_replicas_agree("precious", 0)  # and its log is the others', offset by offset


def test_a_node_whose_log_was_moved_aside_catches_up_without_a_leader_change(
        cluster: Cluster) -> None:
    """node/README.md's recovery, step 4: the node, started with an empty log, gets its
    groups' entries from their leaders like any lagging follower: no leader restarts."""
    cluster.create_topic("precious")
    leader = cluster.wait_leader("precious", 0)
    victim = next(n for n in cluster.live() if n != leader)
    _produce_one_write_each(cluster, "precious", victim, [b"p%d" % i for i in range(20)])
    cluster.kill(victim)
    store = cluster.root / f"node-{victim}" / "raft"
    shutil.move(store, store.with_name("raft.damaged"))
    cluster.start(victim)
    cluster.assert_replicas_agree("precious", 0, timeout=30)


def test_damaged_sst_block_of_the_controller_log_refuses_start_in_one_line(tmp_path: Path) -> None:
    """RocksDB opens a DB whose SST data block is damaged (blocks are checked when read); the
    node reads its controller log (group 1) at start and refuses it the same way."""
    store = tmp_path / "node-1" / "raft"
    with RocksLogDB(store) as db:
        for index in range(1, 100):
            db.save_many([(1, HardState(1, 1, index - 1),
                           [Entry(1, index, EntryKind.NORMAL, bytes(200))], None)])
    (sst,) = store.glob("*.sst")
    data = bytearray(sst.read_bytes())
    data[100] ^= 0xFF  # the first data block: group 1's hard state and first entries
    sst.write_bytes(bytes(data))
    (port,) = free_ports(1)
    started = subprocess.run(
        [sys.executable, "-m", "raftka.node", "--id", "1", "--listen", f"127.0.0.1:{port}",
         "--peers", f"1=127.0.0.1:{port}", "--data-dir", str(tmp_path / "node-1")],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert started.returncode == 1, started.stderr
    assert "Traceback" not in started.stderr, started.stderr
    (line,) = [line for line in started.stderr.splitlines() if "level=ERROR" in line]
    assert "node 1 cannot start: corrupt raft storage in group 1" in line
    assert "block checksum mismatch" in line and f"move {store} aside" in line
