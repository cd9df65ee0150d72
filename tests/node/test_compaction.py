"""Log compaction: the record-level rules (node/_compaction.py), the laws that keep replicas
identical, and a PartitionReplica over a real RocksDB log compacting in the background."""

from __future__ import annotations

import asyncio
import random

import pytest

from raftka.node._compaction import CompactionCommand, compact_entry, decode_control, index_keys
from raftka.node._errors import BrokerError, Code
from raftka.node._host import Group
from raftka.node._partition import (
    _HEADER,
    ENTRY_MAGIC,
    HEADER_SIZE,
    PartitionConfig,
    PartitionReplica,
)
from raftka.raft import Config, ConfState, RawNode, Role
from raftka.raft.rocksdb import RocksLogDB
from raftka.v1.recordbatch import (
    build_batch,
    decode_batches,
    parse_header,
    raw_records,
    split_batches,
)

from tests.node.single_voter import count_log_reads

# ------------------------------------------------------------------ record level


def _entry(base: int, records: list[tuple[bytes | None, bytes | None]], at_ms: int,
           producer_id: int = -1, compression: str = "none", per_batch: int = 0) -> bytes:
    """Entry data as the leader writes it: the 34-byte header + batches from ``base``."""
    per_batch = per_batch or len(records)
    parts, offset = [], base
    for i in range(0, len(records), per_batch):
        chunk = records[i:i + per_batch]
        parts.append(build_batch(chunk, compression=compression, producer_id=producer_id,
                                 producer_epoch=0 if producer_id >= 0 else -1,
                                 base_sequence=offset if producer_id >= 0 else -1,
                                 base_offset=offset))
        offset += len(chunk)
    body = b"".join(parts)
    return _HEADER.pack(ENTRY_MAGIC, 1, base, offset - 1, at_ms, 0) + body


def _compact_log(log: list[bytes], below: int, horizon: int,
                 tombstones_below: int | None = None) -> list[bytes]:
    tombstones_below = below if tombstones_below is None else tombstones_below
    latest: dict[bytes, int] = {}
    for data in log:
        index_keys(data, HEADER_SIZE, below, latest)
    out = []
    for data in log:
        at = _HEADER.unpack_from(data, 0)[4]
        result = compact_entry(data, HEADER_SIZE, at, below, tombstones_below, horizon, latest)
        out.append(data if result.data is None else result.data)
    return out


def _records(log: list[bytes]) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(r.offset, r.key, r.value) for data in log
            for r in decode_batches(data[HEADER_SIZE:])]


def test_keeps_the_last_record_of_every_key_at_its_offset() -> None:
    log = [_entry(0, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")], 100),
           _entry(3, [(b"c", b"1"), (b"b", b"2")], 200),
           _entry(5, [(b"a", b"3")], 300)]
    out = _compact_log(log, below=5, horizon=0)
    assert _records(out) == [(2, b"a", b"2"), (3, b"c", b"1"), (4, b"b", b"2"),
                             (5, b"a", b"3")], "a@5 is at the point: never touched"
    for before, after in zip(log, out):  # the entry headers (offsets, time) stay
        assert before[:HEADER_SIZE] == after[:HEADER_SIZE]
    # the batches keep their base offset and last offset delta
    heads = [parse_header(out[0], HEADER_SIZE)]
    assert (heads[0].base_offset, heads[0].last_offset, heads[0].record_count) == (0, 2, 1)


def test_tombstones_go_only_after_the_horizon() -> None:
    log = [_entry(0, [(b"a", b"1"), (b"b", b"1")], 100),
           _entry(2, [(b"a", None)], 200),
           _entry(3, [(b"b", b"2")], 300)]
    young = _compact_log(log, below=4, horizon=150)
    assert _records(young) == [(2, b"a", None), (3, b"b", b"2")]
    old = _compact_log(young, below=4, horizon=250)
    assert _records(old) == [(3, b"b", b"2")]
    assert _records(_compact_log(log, below=4, horizon=250)) == _records(old)
    assert old[1] == log[1][:HEADER_SIZE], "an entry left with no batch keeps its header"
    # only below the tombstone point
    assert _records(_compact_log(young, 4, 250, tombstones_below=2)) == _records(young)


def test_records_without_key_are_kept() -> None:
    log = [_entry(0, [(None, b"x"), (b"a", b"1"), (None, b"y"), (b"a", b"2")], 100)]
    assert _records(_compact_log(log, 4, 10**12)) == [(0, None, b"x"), (2, None, b"y"),
                                                       (3, b"a", b"2")]


def test_an_idempotent_batch_emptied_stays_as_an_empty_batch() -> None:
    log = [_entry(10, [(b"a", b"1"), (b"a", b"2")], 100, producer_id=7),
           _entry(12, [(b"a", b"3")], 200, producer_id=7),
           _entry(13, [(b"a", b"4")], 200)]
    out = _compact_log(log, below=14, horizon=0)
    assert _records(out) == [(13, b"a", b"4")]
    for data, (base, last) in zip(out[:2], [(10, 11), (12, 12)]):
        (start, end), = split_batches(data[HEADER_SIZE:])
        h = parse_header(data, HEADER_SIZE)
        assert (h.record_count, h.base_offset, h.last_offset) == (0, base, last)
        assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 0, base)
        assert raw_records(data, HEADER_SIZE) == []
    assert out[2] == log[2]
    assert len(out[0]) == HEADER_SIZE + 61


def test_compaction_is_idempotent_and_byte_identical() -> None:
    log = [_entry(0, [(b"k%d" % (i % 7), b"v%d" % i) for i in range(50)], 100,
                  compression="lz4", per_batch=10)]
    once = _compact_log(log, 50, 0)
    twice = _compact_log(once, 50, 0)
    assert once == twice
    latest = {}
    assert index_keys(once[0], HEADER_SIZE, 50, latest) == 7
    assert compact_entry(once[0], HEADER_SIZE, 100, 50, 50, 0, latest).data is None


def test_control_entry_round_trip() -> None:
    command = CompactionCommand(123, 100, 456, 789)
    assert decode_control(command.encode()) == command
    assert decode_control(b"R" + bytes(33)) is None
    assert decode_control(b"") is None


@pytest.mark.parametrize("seed", range(30))
def test_any_mix_of_compactions_ends_at_the_last_one(seed: int) -> None:
    """The law replicas rely on: with parameters that never decrease, whatever earlier
    compactions a replica's entries went through (all, some, none, out of order, some
    entries only), applying the last one gives the same bytes as applying it alone.
    Tombstones are kept here (the mixed states are arbitrary); their removal has its own
    precondition (_compaction.py) and test below."""
    rng = random.Random(seed)
    log, offset = [], 0
    for i in range(rng.randint(3, 12)):
        n = rng.randint(1, 8)
        recs = [(b"k%d" % rng.randint(0, 5), None if rng.random() < 0.2 else b"v%d" % rng.random())
                for _ in range(n)]
        log.append(_entry(offset, recs, 100 * i, producer_id=rng.choice([-1, 3]),
                          compression=rng.choice(["none", "lz4"]),
                          per_batch=rng.randint(1, n) if rng.random() < 0.5 else 0))
        offset += n
    steps = sorted((rng.randint(0, offset), 0) for _ in range(4))
    below, horizon = steps[0]
    params = []
    for b, h in steps:  # componentwise maximum, as replicas apply them
        below, horizon = max(below, b), max(horizon, h)
        params.append((below, horizon))
    reference = _compact_log(log, *params[-1])
    mixed = list(log)
    for b, h in rng.sample(params, k=rng.randint(0, len(params))):
        compacted = _compact_log(mixed, b, h)
        # a lagging replica: some of its entries come already compacted, some not
        mixed = [c if rng.random() < 0.5 else m for c, m in zip(compacted, mixed)]
    assert _compact_log(mixed, *params[-1]) == reference


@pytest.mark.parametrize("seed", range(30))
def test_tombstone_rounds_in_any_interleaving_end_the_same(seed: int) -> None:
    """Rounds as the leader runs them: round k has (X_k, Y_k = X_{k-1}, H_k). A replica
    that holds every entry below Y_k itself (the precondition the leader checks) may
    have run any earlier rounds or none, on any of its entries, and may receive entries
    at or above Y_k from a leader that ran round k on them: it ends where the leader is."""
    rng = random.Random(seed)
    log, offset = [], 0
    for i in range(rng.randint(4, 12)):
        n = rng.randint(1, 6)
        recs = [(b"k%d" % rng.randint(0, 4), None if rng.random() < 0.3 else b"v%d" % i)
                for _ in range(n)]
        log.append(_entry(offset, recs, 100 * i, producer_id=rng.choice([-1, 3])))
        offset += n
    ends = [_HEADER.unpack_from(d, 0)[3] + 1 for d in log]
    points = sorted(rng.sample(ends, k=min(3, len(ends))))
    rounds, prev = [], 0
    for i, x in enumerate(points):
        rounds.append((x, prev, 400 * (i + 1)))
        prev = x
    leader = list(log)
    for x, y, h in rounds:
        leader = _compact_log(leader, x, h, tombstones_below=y)
    x, y, h = rounds[-1]
    replica = list(log)
    for rx, ry, rh in rng.sample(rounds[:-1], k=rng.randint(0, len(rounds) - 1)):
        done = _compact_log(replica, rx, rh, tombstones_below=ry)
        replica = [d if rng.random() < 0.5 else r for d, r in zip(done, replica)]
    # entries at or above Y come from the leader after its last round, maybe
    replica = [lead if _HEADER.unpack_from(r, 0)[2] >= y and rng.random() < 0.5 else r
               for lead, r in zip(leader, replica)]
    assert _compact_log(replica, x, h, tombstones_below=y) == leader


# ------------------------------------------------------------------ a replica over RocksDB

NOW = 10_000_000


def _start(db: RocksLogDB, config: PartitionConfig, clock: list[int],
           seed: int = 1) -> tuple[PartitionReplica, RawNode, object]:
    storage = db.group(2)
    if storage.last_index() == 0 and storage.snapshot().meta.conf_state == ConfState():
        storage.bootstrap(ConfState(frozenset({1})))
    applied = storage.hard_state().commit
    node = RawNode(Config(1, election_tick=10, heartbeat_tick=1, applied=applied), storage,
                   random.Random(seed))
    replica = PartitionReplica("t", 0, 2, config, lambda _gid: None,
                               clock_ms=lambda: clock[0])
    replica.attach(Group(2, node, storage, replica))  # type: ignore[arg-type]
    return replica, node, storage


def _drive(replica: PartitionReplica, node: RawNode, storage) -> None:
    replica.before_ready()
    while node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.committed_entries:
            replica.apply(rd.committed_entries)
        node.advance(rd)
        replica.on_ready(rd)


def _read_all(replica: PartitionReplica) -> list[tuple[int, bytes | None, bytes | None]]:
    out, offset = [], replica.log_start_offset
    while offset < replica.high_watermark:
        data, offset = replica.read(offset, 1 << 20)
        out.extend((r.offset, r.key, r.value) for r in decode_batches(data))
    return out


COMPACT = PartitionConfig(cleanup_policy="compact", min_cleanable_dirty_ratio=0.0,
                          delete_retention_ms=1000)


def test_a_replica_compacts_in_the_background_and_survives_a_restart(tmp_path) -> None:
    async def scenario() -> None:
        clock = [NOW]
        db = RocksLogDB(tmp_path / "db")
        replica, node, storage = _start(db, COMPACT, clock)
        node.campaign()
        _drive(replica, node, storage)
        assert node.role == Role.LEADER
        expected: dict[bytes, tuple[int, bytes | None]] = {}
        seq = 0
        for round_ in range(20):
            records = [(b"key%d" % ((round_ * 3 + i) % 10), b"v%d" % (round_ * 5 + i))
                       for i in range(5)]
            batch = build_batch(records, compression="lz4", producer_id=9, producer_epoch=0,
                                base_sequence=seq)
            future = replica.submit(batch, acks=-1)
            _drive(replica, node, storage)
            base, _ = future.result()
            for i, (k, v) in enumerate(records):
                expected[k] = (base + i, v)
            seq += 5
            clock[0] += 10
        # a tombstone for key0
        future = replica.submit(build_batch([(b"key0", None)], compression="none"), acks=-1)
        _drive(replica, node, storage)
        expected[b"key0"] = (future.result()[0], None)
        hw = replica.high_watermark
        before = _read_all(replica)
        assert replica.dirty_ratio == 1.0
        assert replica.maybe_propose_compaction()
        assert not replica.maybe_propose_compaction(), "one in flight at a time"
        _drive(replica, node, storage)
        assert replica.compaction_below_offset == hw and replica.compaction_pending
        assert await replica.run_compaction()
        assert not replica.compaction_pending and replica.compaction_runs == 1
        after = _read_all(replica)
        assert sorted((o, k, v) for k, (o, v) in expected.items()) == after
        assert set(after) <= set(before), "same records at the same offsets, fewer"
        assert replica.compacted_records_removed == len(before) - len(after)
        assert replica.compacted_bytes_removed > 0
        assert replica.dirty_ratio == 0.0
        assert replica.high_watermark == hw

        # the tombstone goes once it is older than delete.retention.ms, in a round after the
        # one that compacted past it
        clock[0] += 5000
        more = replica.submit(build_batch([(b"key1", b"new")], compression="none"), acks=-1)
        _drive(replica, node, storage)
        assert replica.dirty_ratio > 0.0
        assert replica.maybe_propose_compaction()
        _drive(replica, node, storage)
        assert await replica.run_compaction()
        final = _read_all(replica)
        assert (expected[b"key0"][0], b"key0", None) not in final
        assert final[-1] == (more.result()[0], b"key1", b"new")
        assert [k for _, k, _ in final].count(b"key1") == 1

        # the idempotent producer's state is unchanged by compaction: a retry of its
        # last batch is a duplicate answered with the original offsets, even after a restart
        table_before = replica.producers.encode()
        db.close()
        db = RocksLogDB(tmp_path / "db")
        replica2, node2, storage2 = _start(db, COMPACT, clock, seed=2)
        assert replica2.producers.encode() == table_before
        assert replica2.compaction_below_offset == replica.compaction_below_offset
        assert _read_all(replica2) == final
        node2.campaign()
        _drive(replica2, node2, storage2)
        retry = replica2.submit(build_batch(records, compression="lz4", producer_id=9,
                                            producer_epoch=0, base_sequence=seq - 5), acks=-1)
        _drive(replica2, node2, storage2)
        assert retry.result() == (expected[records[-1][0]][0] - 4, expected[records[-1][0]][0])
        assert replica2.high_watermark == replica.high_watermark
        db.close()

    asyncio.run(scenario())


def test_a_compaction_check_below_the_dirty_ratio_reads_no_log(tmp_path) -> None:
    """The leader asks every second, for every compacted partition, whether a compaction
    is due. Below ``min.cleanable.dirty.ratio`` the answer is no without a log read (the
    ratio comes from counts kept in memory); it used to bisect the log first."""
    async def scenario() -> None:
        clock = [NOW]
        db = RocksLogDB(tmp_path / "db")
        config = PartitionConfig(cleanup_policy="compact", min_cleanable_dirty_ratio=0.5)
        replica, node, storage = _start(db, config, clock)
        node.campaign()
        _drive(replica, node, storage)
        for round_ in range(20):
            replica.submit(build_batch([(b"key%d" % (round_ % 4), b"v%d" % round_)],
                                       compression="none"), acks=-1)
            _drive(replica, node, storage)
            clock[0] += 10
        assert replica.maybe_propose_compaction()  # no pass yet: the ratio reads 1.0
        _drive(replica, node, storage)
        assert await replica.run_compaction()
        replica.submit(build_batch([(b"key9", b"new")], compression="none"), acks=-1)
        _drive(replica, node, storage)
        assert 0.0 < replica.dirty_ratio < 0.5
        reads = count_log_reads(node)
        for _ in range(3):
            assert not replica.maybe_propose_compaction()
        assert reads == []
        db.close()

    asyncio.run(scenario())


def test_a_compacted_topic_refuses_records_without_key(tmp_path) -> None:
    async def scenario() -> None:
        db = RocksLogDB(tmp_path / "db")
        replica, node, storage = _start(db, COMPACT, [NOW])
        node.campaign()
        _drive(replica, node, storage)
        with pytest.raises(BrokerError) as err:
            replica.submit(build_batch([(b"k", b"1"), (None, b"2")]), acks=-1)
        assert err.value.code == Code.INVALID_REQUEST and "has no key" in str(err.value)
        assert replica.submit(build_batch([(b"k", b"1")]), acks=-1) is not None
        db.close()

    asyncio.run(scenario())


def test_a_delete_topic_proposes_no_compaction(tmp_path) -> None:
    async def scenario() -> None:
        db = RocksLogDB(tmp_path / "db")
        replica, node, storage = _start(db, PartitionConfig(), [NOW])
        node.campaign()
        _drive(replica, node, storage)
        replica.submit(build_batch([(None, b"1")]), acks=-1)
        _drive(replica, node, storage)
        assert not replica.maybe_propose_compaction()
        assert replica.dirty_ratio == 0.0
        db.close()

    asyncio.run(scenario())


def test_topic_configs_parse() -> None:
    # from_topic_configs reads normalized configs (_topic_configs.normalize_configs)
    cfg = PartitionConfig.from_topic_configs({
        "cleanup.policy": "compact,delete", "delete.retention.ms": "5",
        "min.cleanable.dirty.ratio": "0.25", "min.compaction.lag.ms": "7"})
    assert (cfg.cleanup_policy, cfg.delete_retention_ms, cfg.min_cleanable_dirty_ratio,
            cfg.min_compaction_lag_ms) == ("compact,delete", 5, 0.25, 7)
    assert cfg.compact and cfg.delete
    assert not PartitionConfig.from_topic_configs({}).compact
