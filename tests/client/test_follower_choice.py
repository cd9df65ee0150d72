"""Which replica a partition reader fetches from (follower fetching, client/_reader.py):
the choice alone, over installed metadata, without I/O."""

from __future__ import annotations

import time

import pytest

from raftka.client._cluster import ClusterMetadata, ClusterState
from raftka.client._reader import FOLLOWER_AVOID_S, PartitionReaderCore
from raftka.client._types import PartitionDescription, TopicDescription

BROKERS = {1: "n1:7001", 2: "n2:7001", 3: "n3:7001", 4: "n4:7001"}
RACKS = {1: "a", 2: "b", 3: "c", 4: "b"}


def reader(read_from: str, rack: str | None = None, leader: int = 1,
           replicas: tuple[int, ...] = (1, 2, 3)) -> PartitionReaderCore:
    state = ClusterState("n1:7001")
    partition = PartitionDescription(0, leader, replicas, 10, 0, 1)
    state._install(ClusterMetadata(
        brokers=dict(BROKERS), controller_id=1,
        topics={"t": TopicDescription("t", (partition,), len(replicas), {})},
        fetched_at=time.monotonic(), source="n1:7001", racks=dict(RACKS)))
    return PartitionReaderCore(state, "t", 0, 0, read_from=read_from, rack=rack)


def test_nearest_reads_the_replica_in_its_rack():
    r = reader("nearest", rack="b")
    assert r._replica_address(BROKERS[1]) == (2, BROKERS[2])
    assert r._fetch_request(5, 100).allow_follower


def test_nearest_reads_the_leader_when_it_is_in_the_rack_or_no_replica_is():
    assert reader("nearest", rack="a")._replica_address(BROKERS[1]) == (None, BROKERS[1])
    # node 4 is in rack b too, but holds no replica of the partition
    r = reader("nearest", rack="b", replicas=(1, 3, 4))
    assert r._replica_address(BROKERS[1]) == (4, BROKERS[4])
    assert reader("nearest", rack="z")._replica_address(BROKERS[1]) == (None, BROKERS[1])


def test_leader_reads_never_ask_followers():
    r = reader("leader")
    assert not r._fetch_request(5, 100).allow_follower


def test_any_keeps_its_replica_and_an_avoided_one_is_skipped_until_its_time_passes():
    r = reader("any")
    first = r._replica_address(BROKERS[1])
    assert all(r._replica_address(BROKERS[1]) == first for _ in range(20)), "not sticky"
    r = reader("nearest", rack="b")
    r._avoid_replica(2)
    assert r._replica_address(BROKERS[1]) == (None, BROKERS[1])  # the leader meanwhile
    r._avoid[2] = time.monotonic() - 1  # FOLLOWER_AVOID_S later
    assert r._replica_address(BROKERS[1]) == (2, BROKERS[2])
    assert FOLLOWER_AVOID_S > 0


def test_any_spreads_readers_over_every_replica():
    chosen = {reader("any")._replica_address(BROKERS[1])[0] for _ in range(200)}
    assert chosen == {None, 2, 3}  # None: the leader, read as a leader


@pytest.mark.parametrize("read_from, rack", [("closest", None), ("nearest", None),
                                             ("nearest", "")])
def test_bad_choices_are_refused(read_from, rack):
    with pytest.raises(ValueError):
        reader(read_from, rack)
