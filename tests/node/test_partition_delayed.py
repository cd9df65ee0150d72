"""Delayed delivery in a PartitionReplica over a real single-voter RawNode (in memory), with
an injected clock: scheduled entries are durable but invisible, released once when due (in
time order), exactly once across a restart and a leader change (a release that committed
but was not applied, and one that never reached the log), rebuilt by a restart's replay,
dropped by a snapshot install, kept by retention; bad delivery times are refused."""

from __future__ import annotations

import asyncio
import random

import pytest

from raftka.v1.recordbatch import Record, build_batch, decode_batches
from raftka.node._delayed import (
    DelayedState,
    MemoryScheduleIndex,
    RocksScheduleStore,
    encode_release_tag,
    encode_scheduled,
)
from raftka.node._errors import BrokerError, Code
from raftka.node._host import Group
from raftka.node._partition import PartitionConfig, PartitionReplica
from raftka.raft import Config, ConfState, MemoryStorage, RawNode, Role, Snapshot, SnapshotMeta
from tests.node.single_voter import drive as _drive

T0 = 1_000_000


def _records(*values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="none")


def _replica(storage: MemoryStorage, clock: list[int], seed: int,
             config: PartitionConfig | None = None) -> tuple[PartitionReplica, RawNode]:
    """A replica as the broker starts it (``applied`` = the stored commit index; ``attach``
    replays the log)."""
    node = RawNode(Config(1, election_tick=10, heartbeat_tick=1,
                          applied=storage.hard_state().commit), storage, random.Random(seed))
    replica = PartitionReplica("t", 0, 2, config or PartitionConfig(), lambda _gid: None,
                               clock_ms=lambda: clock[0])
    replica.attach(Group(2, node, storage, replica))  # type: ignore[arg-type]
    return replica, node


def _leader(storage: MemoryStorage, clock: list[int], seed: int,
            config: PartitionConfig | None = None) -> tuple[PartitionReplica, RawNode]:
    replica, node = _replica(storage, clock, seed, config)
    node.campaign()
    _drive(replica, node, storage)
    assert node.role == Role.LEADER
    return replica, node


def _values(replica: PartitionReplica) -> list[bytes]:
    data, _ = replica.read(replica.log_start_offset, 1 << 20)
    return [r.value for r in decode_batches(data)]


def test_delayed_records_are_invisible_until_due_then_released_once_in_time_order() -> None:
    async def scenario() -> None:
        clock = [T0]
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _leader(storage, clock, 1)
        late = replica.submit(_records(b"late"), acks=-1, deliver_at_ms=T0 + 9000)
        early = replica.submit(_records(b"early1", b"early2"), acks=-1,
                               deliver_at_ms=T0 + 5000)
        now = replica.submit(_records(b"now"), acks=-1)
        past = replica.submit(_records(b"past"), acks=-1, deliver_at_ms=T0 - 1)
        _drive(replica, node, storage)
        assert late.result() == (-1, -1) and early.result() == (-1, -1)
        assert now.result() == (0, 0) and past.result() == (1, 1), "a past time: at once"
        assert _values(replica) == [b"now", b"past"]
        assert replica.delayed_pending == 2
        assert replica._release_timer is not None, "armed for the first due time"
        assert replica._release_timer_at == T0 + 5000

        clock[0] = T0 + 4999
        _drive(replica, node, storage)
        assert _values(replica) == [b"now", b"past"], "nothing before its time"
        clock[0] = T0 + 9500  # both due: released in time order, not log order
        _drive(replica, node, storage)
        assert _values(replica) == [b"now", b"past", b"early1", b"early2", b"late"]
        assert replica.delayed_pending == 0 and replica.high_watermark == 5
        _drive(replica, node, storage)
        _drive(replica, node, storage)
        assert replica.high_watermark == 5, "never released twice"
        after = replica.submit(_records(b"after"), acks=-1)
        _drive(replica, node, storage)
        assert after.result() == (5, 5), "offsets continue after the releases"

        restarted, _ = _replica(storage, clock, 2)  # the replay rebuilds the same state
        assert restarted.delayed_pending == 0 and restarted.high_watermark == 6

    asyncio.run(scenario())


def test_a_pending_record_survives_a_restart_and_is_released_by_the_new_leader() -> None:
    async def scenario() -> None:
        clock = [T0]
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _leader(storage, clock, 3)
        f = replica.submit(_records(b"x"), acks=-1, deliver_at_ms=T0 + 1000)
        _drive(replica, node, storage)
        assert f.result() == (-1, -1)

        restarted, node = _replica(storage, clock, 4)
        assert restarted.delayed_pending == 1 and _values(restarted) == []
        node.campaign()
        clock[0] = T0 + 1000
        _drive(restarted, node, storage)
        _drive(restarted, node, storage)
        assert _values(restarted) == [b"x"] and restarted.delayed_pending == 0

    asyncio.run(scenario())


def test_a_release_committed_but_not_applied_by_a_dead_leader_is_not_released_again() -> None:
    async def scenario() -> None:
        clock = [T0]
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _leader(storage, clock, 5)
        replica.submit(_records(b"once"), acks=-1, deliver_at_ms=T0 + 10)
        _drive(replica, node, storage)
        clock[0] = T0 + 10
        replica.before_ready()  # the release (tag + data entry) is proposed and persisted,
        rd = node.ready()  # then the leader dies before applying it
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        assert replica.high_watermark == 0

        second, node = _replica(storage, clock, 6)
        assert second.delayed_pending == 1, "the release is not applied here yet"
        held: list = []
        node.campaign()
        _drive(second, node, storage, held)  # the new term: earlier entries not applied
        second.before_ready()
        assert not node.has_ready() or not any(
            e.data[:1] == b"E" for e in node.ready().entries), \
            "a new leader releases nothing before it applied its own term's first entry"
        second.apply(held)
        for _ in range(3):
            _drive(second, node, storage)
        assert _values(second) == [b"once"] and second.delayed_pending == 0

    asyncio.run(scenario())


def test_a_release_lost_before_it_reached_the_log_is_released_by_the_next_leader() -> None:
    async def scenario() -> None:
        clock = [T0]
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _leader(storage, clock, 7)
        replica.submit(_records(b"lost-release"), acks=-1, deliver_at_ms=T0 + 10)
        _drive(replica, node, storage)
        clock[0] = T0 + 10
        replica.before_ready()  # proposed, never persisted: the node dies now
        assert replica.delayed.in_flight, "proposed once in this term"
        replica.before_ready()
        assert node.ready().entries[-1].data[:1] == b"R", "not proposed twice in one term"

        second, node = _leader(storage, clock, 8)
        for _ in range(3):
            _drive(second, node, storage)
        assert _values(second) == [b"lost-release"]

    asyncio.run(scenario())


def test_idempotent_delayed_batches_take_their_sequences_when_scheduled() -> None:
    def batch(seq: int, value: bytes) -> bytes:
        return build_batch([Record(None, value)], compression="none", producer_id=7,
                           producer_epoch=0, base_sequence=seq)

    async def scenario() -> None:
        clock = [T0]
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _leader(storage, clock, 12)
        first = replica.submit(batch(0, b"later"), acks=-1, deliver_at_ms=T0 + 100)
        retry = replica.submit(batch(0, b"later"), acks=-1, deliver_at_ms=T0 + 100)
        _drive(replica, node, storage)
        assert first.result() == (-1, -1) and retry.result() == (-1, -1)
        assert replica.delayed_pending == 1, "a retried delayed batch is not stored twice"
        late_retry = replica.submit(batch(0, b"later"), acks=-1, deliver_at_ms=T0 + 100)
        after = replica.submit(batch(1, b"now"), acks=-1)
        _drive(replica, node, storage)
        assert late_retry.result() == (-1, -1) and after.result() == (0, 0)
        clock[0] = T0 + 100
        for _ in range(2):
            _drive(replica, node, storage)
        assert _values(replica) == [b"now", b"later"]
        again = replica.submit(batch(0, b"later"), acks=-1)  # a retry after its time
        nxt = replica.submit(batch(2, b"next"), acks=-1)
        _drive(replica, node, storage)
        assert again.result() == (-1, -1), "still a duplicate once released"
        assert nxt.result() == (2, 2), "the release did not move the producer's sequence"
        restarted, _ = _replica(storage, clock, 13)
        assert restarted.producers.encode() == replica.producers.encode()

    asyncio.run(scenario())


def test_a_tag_pairs_only_with_the_next_entry_of_its_own_term() -> None:
    state = DelayedState(MemoryScheduleIndex())
    state.apply_scheduled(3, encode_scheduled(500, 1, b""))
    state.apply_scheduled(4, encode_scheduled(400, 1, b""))
    assert list(state.index.first()) == [(400, 4), (500, 3)]
    state.apply_tag(10, 2, encode_release_tag([(400, 4)]))
    assert state.apply_data(11, 3) == 0, "a newer term's entry after the tag: truncated"
    assert state.pending_count == 2
    state.apply_tag(12, 3, encode_release_tag([(400, 4)]))
    assert state.apply_data(14, 3) == 0, "not adjacent"
    state.apply_tag(15, 3, encode_release_tag([(400, 4), (500, 3)]))
    assert state.apply_data(16, 3) == 2 and state.pending_count == 0
    assert state.apply_data(17, 3) == 0


def test_snapshot_install_drops_covered_keys_and_retention_keeps_pending_entries() -> None:
    async def scenario() -> None:
        clock = [T0]
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _leader(storage, clock, 9, PartitionConfig(retention_ms=1000))
        replica.submit(_records(b"old"), acks=-1)
        _drive(replica, node, storage)
        replica.submit(_records(b"held"), acks=-1, deliver_at_ms=T0 + 50_000)
        _drive(replica, node, storage)
        pending_index = replica.delayed.index.oldest_index()
        replica.submit(_records(b"newer"), acks=-1)
        _drive(replica, node, storage)
        clock[0] = T0 + 10_000  # every data entry is past retention.ms
        point = replica.retention_point()
        assert point is not None and point[0] < pending_index, \
            "retention cuts only below the pending scheduled entry"

        fresh, _ = _replica(MemoryStorage(ConfState(frozenset({1}))), clock, 10)
        fresh.delayed.index.add((T0, 1))
        fresh.delayed.index.add((T0, pending_index + 100))
        fresh.restore(Snapshot(SnapshotMeta(pending_index + 50, 1,
                                            ConfState(frozenset({1}))), point[1]))
        assert list(fresh.delayed.index.first()) == [(T0, pending_index + 100)]

    asyncio.run(scenario())


@pytest.mark.parametrize("deliver_at, words", [
    (-5, "negative"),
    (T0 + 60_001, "max.delivery.delay.ms"),
])
def test_bad_delivery_times_are_refused_and_nothing_is_written(deliver_at, words) -> None:
    async def scenario() -> None:
        clock = [T0]
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _leader(storage, clock, 11,
                                PartitionConfig(max_delivery_delay_ms=60_000))
        last = node.last_index
        with pytest.raises(BrokerError) as err:
            replica.submit(_records(b"bad"), acks=-1, deliver_at_ms=deliver_at)
        assert err.value.code == Code.INVALID_REQUEST and words in err.value.message
        transactional = build_batch([Record(None, b"i")], compression="none", producer_id=7,
                                    producer_epoch=0, base_sequence=0, transactional=True)
        with pytest.raises(BrokerError) as err:
            replica.submit(transactional, acks=-1, deliver_at_ms=T0 + 1000)
        assert err.value.code == Code.INVALID_REQUEST and "transactional" in err.value.message
        _drive(replica, node, storage)
        assert node.last_index == last and replica.delayed_pending == 0

    asyncio.run(scenario())


def test_rocks_schedule_index_keeps_time_order_and_index_order(tmp_path) -> None:
    store = RocksScheduleStore(tmp_path / "schedule")
    try:
        a, b = store.index(5), store.index(6)
        for key in [(300, 9), (100, 12), (100, 4), (200, 1)]:
            a.add(key)
        a.add((100, 4))  # idempotent
        b.add((50, 2))
        assert list(a.first()) == [(100, 4), (100, 12), (200, 1), (300, 9)]
        assert a.count == 4 and a.oldest_index() == 1
        a.remove([(100, 12), (999, 9)])  # a wrong time removes nothing
        assert a.count == 3
        a.drop_through(4)
        assert list(a.first()) == [(300, 9)] and a.count == 1
        assert list(b.first()) == [(50, 2)], "groups are separate"
        assert list(store.index(5).first()) == [], "a new view starts empty"
    finally:
        store.close()
