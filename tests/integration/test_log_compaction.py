"""Log compaction on a real 3-node cluster: a consumer reading a compacted topic from the
beginning sees the latest value of every key at its original offset; every replica holds
the same bytes; a follower killed with SIGKILL while compaction goes on catches up to the
same bytes after its restart; tombstones go after delete.retention.ms."""

from __future__ import annotations

import shutil

import grpc
import pytest

from raftka.client import PartitionReader
from raftka.v1 import broker_pb2, errors_pb2
from raftka.v1.recordbatch import build_batch, decode_batches

from tests.harness import Cluster, error_info, wait_for

TOPIC = "compacted"
CONFIGS = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
           "min.compaction.lag.ms": "0", "delete.retention.ms": "0"}


def _produce_versions(cluster: Cluster, rounds: int, start: int,
                      latest: dict[bytes, tuple[int, bytes | None]]) -> None:
    """``rounds`` batches of 20 records over 50 keys, remembering each key's last offset."""
    for r in range(start, start + rounds):
        records = [(b"key%02d" % ((r * 7 + i) % 50), b"v%d-%d" % (r, i)) for i in range(20)]
        response = cluster.produce(TOPIC, 0, build_batch(records, compression="lz4"))
        for i, (k, v) in enumerate(records):
            latest[k] = (response.base_offset + i, v)


def _dirty_ratios(cluster: Cluster) -> dict[int, float]:
    """Each answering node's own replica's dirty ratio (a restarted node answers once it
    serves again)."""
    out = {}
    for nid in cluster.responsive():
        try:
            md = cluster.broker(nid).Metadata(broker_pb2.MetadataRequest(topics=[TOPIC]),
                                              timeout=5)
        except grpc.RpcError:
            continue
        if md.topics and md.topics[0].partitions:
            out[nid] = md.topics[0].partitions[0].dirty_ratio
    return out


def _wait_compacted(cluster: Cluster, nodes: list[int]) -> None:
    """Every listed replica finished its pass up to the end of the log (dirty ratio 0)."""
    wait_for(lambda: all(_dirty_ratios(cluster).get(n, 1.0) == 0.0 for n in nodes), 60,
             f"replicas {nodes} to compact everything")


def _read_from_beginning(cluster: Cluster) -> list[tuple[int, bytes | None, bytes | None]]:
    bootstrap = ",".join(cluster.peers.values())
    hw = cluster.replica_position(cluster.wait_leader(TOPIC, 0), TOPIC, 0).high_watermark
    out = []
    with PartitionReader(bootstrap, TOPIC, 0, offset="earliest") as reader:
        while reader.position is None or reader.position < hw:
            out.extend((r.offset, r.key, r.value) for r in reader.poll(1.0))
    return out


def _expected(latest: dict[bytes, tuple[int, bytes | None]]) -> list[tuple]:
    return sorted((o, k, v) for k, (o, v) in latest.items())


def test_compacted_topic_keeps_latest_values_on_identical_replicas(cluster: Cluster) -> None:
    cluster.create_topic(TOPIC, configs=CONFIGS)
    with pytest.raises(grpc.RpcError) as err:  # a compacted topic needs keys
        cluster.produce(TOPIC, 0, build_batch([(None, b"no key")]))
    assert error_info(err.value).code == errors_pb2.INVALID_REQUEST

    latest: dict[bytes, tuple[int, bytes | None]] = {}
    for key in (b"gone1", b"gone2"):  # keys deleted later
        response = cluster.produce(TOPIC, 0, build_batch([(key, b"soon deleted")]))
        latest[key] = (response.base_offset, b"soon deleted")
    _produce_versions(cluster, 40, 0, latest)  # 800 records, 16 versions of each key
    _wait_compacted(cluster, [1, 2, 3])
    assert _read_from_beginning(cluster) == _expected(latest)
    raw = decode_batches(cluster.fetch_all(TOPIC, 0))
    assert [(r.offset, r.key, r.value) for r in raw] == _expected(latest)
    cluster.assert_replicas_agree(TOPIC, 0)

    # a follower dies hard; the others go on producing and compacting
    leader = cluster.wait_leader(TOPIC, 0)
    follower = next(n for n in (1, 2, 3) if n != leader)
    cluster.kill(follower)
    _produce_versions(cluster, 30, 40, latest)
    for key in (b"gone1", b"gone2"):  # tombstones
        response = cluster.produce(TOPIC, 0, build_batch([(key, None)], compression="none"))
        latest[key] = (response.base_offset, None)
    live = [n for n in (1, 2, 3) if n != follower]
    _wait_compacted(cluster, live)
    assert _read_from_beginning(cluster) == _expected(latest)

    cluster.start(follower)
    _wait_compacted(cluster, [1, 2, 3])
    cluster.assert_replicas_agree(TOPIC, 0)

    # with every replica back, a later round removes the tombstones (delete.retention.ms=0)
    _produce_versions(cluster, 2, 70, latest)
    _wait_compacted(cluster, [1, 2, 3])
    _produce_versions(cluster, 2, 72, latest)
    _wait_compacted(cluster, [1, 2, 3])
    del latest[b"gone1"], latest[b"gone2"]
    assert _read_from_beginning(cluster) == _expected(latest)
    cluster.assert_replicas_agree(TOPIC, 0)


def test_a_replica_rebuilt_from_an_empty_log_gets_the_compacted_log(cluster: Cluster) -> None:
    """A new replica (here: a follower whose log store was moved aside, so it starts from
    nothing) receives the leader's already compacted entries, tombstones already removed,
    and ends up byte-identical to the others: no superseded value comes back."""
    cluster.create_topic(TOPIC, configs=CONFIGS)
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    _produce_versions(cluster, 20, 0, latest)
    for key in (b"key00", b"key01", b"key02"):
        response = cluster.produce(TOPIC, 0, build_batch([(key, None)], compression="none"))
        latest[key] = (response.base_offset, None)
    _wait_compacted(cluster, [1, 2, 3])
    for start in (20, 22):  # two more rounds: the second removes the tombstones
        _produce_versions(cluster, 2, start, latest)
        _wait_compacted(cluster, [1, 2, 3])
    latest = {k: v for k, v in latest.items() if v[1] is not None}
    assert _read_from_beginning(cluster) == _expected(latest)

    leader = cluster.wait_leader(TOPIC, 0)
    victim = next(n for n in (1, 2, 3) if n != leader)
    cluster.kill(victim)
    store = cluster.root / f"node-{victim}" / "raft"
    shutil.move(store, store.with_name("raft.moved-aside"))
    cluster.start(victim)
    cluster.assert_replicas_agree(TOPIC, 0, timeout=60)  # the rebuilt one's bytes too
    raw = decode_batches(cluster.fetch_all(TOPIC, 0))
    assert [(r.offset, r.key, r.value) for r in raw] == _expected(latest)
