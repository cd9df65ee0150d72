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
from tests.node.single_voter import count_log_reads, drive, start_replica

T0 = 1_000_000


def _leader(retention_ms: int, clock: list[int], **configs: object):
    """A single-voter partition that leads, with ``retention.ms`` (and other ``configs``)
    and a clock to move."""
    config = PartitionConfig(retention_ms=retention_ms, **configs)  # type: ignore[arg-type]
    storage = MemoryStorage(ConfState(frozenset({1})))
    replica, node = start_replica(storage, 1, config=config, clock_ms=lambda: clock[0])
    node.campaign()
    drive(replica, node, storage)
    return config, storage, replica, node


def test_a_restarted_replica_lists_itself_and_ages_out_what_it_held_before() -> None:
    async def scenario() -> None:
        clock = [T0]
        config, storage, replica, node = _leader(1000, clock)
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


def test_retention_reads_the_log_only_once_while_nothing_is_old_enough() -> None:
    """Retention and the compaction point ask every maintenance pass whether a prefix of
    the log is old enough. While the first data entry is too young the answer is no, and
    that entry (committed, fixed until the log start moves) is kept in memory: the log is
    not bisected every pass (at millions of records a partition the reads stalled the
    event loop for tens of ms). Once it is old enough the cut is the same as bisecting."""
    async def scenario() -> None:
        clock = [T0]
        _, storage, replica, node = _leader(10_000, clock)
        for i in range(64):
            clock[0] = T0 + i * 100
            replica.submit(build_batch([Record(None, b"%d" % i)], compression="none"),
                           acks=-1)
            drive(replica, node, storage)
        reads = count_log_reads(node)
        clock[0] = T0 + 9_000  # the oldest record is 9 s old: nothing to drop
        assert replica.retention_point() is None
        first_pass = len(reads)
        for _ in range(5):
            assert replica.retention_point() is None
        assert len(reads) == first_pass <= 1, reads
        clock[0] = T0 + 10_000 + 3_050  # records 0..30 (appended up to T0+3,000) are old
        point = replica.retention_point()
        assert point is not None
        assert point[0] == replica._find_index(30)  # the entry of the last old record
        assert replica.offset_for_time(T0 + 3_050) == 31
        replica.compacted(point[0], point[1])
        assert replica.log_start_offset == 31

    asyncio.run(scenario())


def test_a_byte_limit_costs_no_log_read_while_the_log_is_under_it() -> None:
    """``retention.bytes`` compares the applied tail's byte count with the limit: the count
    is kept as entries apply, not read from the tail entry each pass (a log read on the
    event loop every 2 s for every partition with a limit). Over the limit, the cut keeps
    the newest entries within it."""
    async def scenario() -> None:
        clock = [T0]
        config, storage, replica, node = _leader(-1, clock, retention_bytes=1 << 30,
                                                 cleanup_policy="compact,delete")
        sizes = []
        for i in range(64):
            batch = build_batch([Record(b"k%d" % (i % 8), b"%d" % i)], compression="none")
            sizes.append(len(batch))
            replica.submit(batch, acks=-1)
            drive(replica, node, storage)
        assert replica.stored_bytes() == sum(sizes)
        reads = count_log_reads(node)
        for _ in range(5):
            assert replica.retention_point() is None
            assert 0.0 < replica.dirty_ratio <= 1.0
        assert len(reads) <= 1, reads  # the first data entry, once (kept in memory)
        limit = sum(sizes[-10:])  # exactly the newest 10 batches
        replica.config = PartitionConfig(retention_ms=-1, retention_bytes=limit,
                                         cleanup_policy="compact,delete")
        point = replica.retention_point()
        assert point is not None
        replica.compacted(point[0], point[1])
        assert replica.log_start_offset == 54, "whole entries go while the rest holds the limit"
        assert replica.stored_bytes() == limit

    asyncio.run(scenario())
