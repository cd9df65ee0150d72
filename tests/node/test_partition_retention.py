"""Retention of a replica restarted over its log: a partition written to before a restart
and never since must still age out. Retention visits only the replicas that list
themselves as holding data, and reads their offset index first; both used to be rebuilt
only by applying new entries, so after a restart such a partition kept its data forever."""

from __future__ import annotations

import asyncio

from raftka.node._partition import PartitionConfig
from raftka.node._watchlist import ReplicaWatchlist
from raftka.raft import ConfState, MemoryStorage
from raftka.v1.recordbatch import Record, build_batch
from tests.node.single_voter import drive, start_replica

T0 = 1_000_000


def test_a_restarted_replica_lists_itself_and_ages_out_what_it_held_before() -> None:
    async def scenario() -> None:
        clock = [T0]
        config = PartitionConfig(retention_ms=1000)
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = start_replica(storage, 1, config=config, clock_ms=lambda: clock[0])
        node.campaign()
        drive(replica, node, storage)
        for value in (b"a", b"b", b"c"):
            replica.submit(build_batch([Record(None, value)], compression="none"), acks=-1)
            drive(replica, node, storage)
        assert replica.high_watermark == 3

        watchlist: ReplicaWatchlist = ReplicaWatchlist()
        restarted, _ = start_replica(storage, 2, config=config, clock_ms=lambda: clock[0],
                                     restart=True, data_watchlist=watchlist)
        assert restarted.high_watermark == 3
        assert list(watchlist.visit(lambda r: r.holds_data)) == [restarted], \
            "listed for retention without a new write"
        clock[0] = T0 + 10_000  # everything is past retention.ms
        point = restarted.retention_point()
        assert point is not None, "retention drops what was written before the restart"
        assert point[0] == storage.last_index(), "up to the last record's entry"

    asyncio.run(scenario())
