"""Synced append and read rates of the RocksDB Raft log store (raftka.raft.rocksdb).

Every write round is durable when it returns (WriteBatch without sync + flush_wal(True)).
Rates are derived from the median round and reported in extra_info (see conftest.py):
entries/s and MiB/s of entry data. No timing asserts: compare ratios within one run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import rocksdict

from raftka.raft import Entry, EntryKind, HardState
from raftka.raft.rocksdb import RocksLogDB

MIB = 1 << 20


@pytest.fixture
def db(tmp_path: Path) -> Iterator[RocksLogDB]:
    d = RocksLogDB(tmp_path / "db")
    yield d
    d.close()


def report(benchmark, entries: int, entry_size_bytes: int) -> None:
    median_s = benchmark.stats.stats.median
    benchmark.extra_info["entries_per_round"] = entries
    benchmark.extra_info["entries_per_second"] = round(entries / median_s)
    benchmark.extra_info["mib_per_second"] = round(entries * entry_size_bytes / MIB / median_s, 1)


@pytest.mark.parametrize("per_save", [1, 16])
def test_synced_append_64k_entries(benchmark, db: RocksLogDB, per_save: int) -> None:
    """One group; each save appends ``per_save`` 64 KiB entries and syncs once."""
    group = db.group(1)
    data = os.urandom(64 * 1024)
    rounds, warmup = (300 if per_save == 1 else 60), 5
    saves = iter([
        (HardState(1, 1, lo - 1), [Entry(1, i, EntryKind.NORMAL, data) for i in range(lo, lo + per_save)])
        for lo in range(1, (rounds + warmup) * per_save + 1, per_save)
    ])

    def save_once() -> None:
        hs, batch = next(saves)
        group.save(hs, batch, None)

    benchmark.pedantic(save_once, rounds=rounds, iterations=1, warmup_rounds=warmup)
    report(benchmark, per_save, len(data))


def test_synced_save_many_100_groups_x_10_small_entries(benchmark, db: RocksLogDB) -> None:
    """Group commit: 100 groups x 10 entries of 100 B in one WriteBatch and one sync."""
    groups, per_group, data = 100, 10, b"r" * 100
    rounds, warmup = 60, 3
    saves = iter([
        [
            (g, HardState(1, 1, lo - 1), [Entry(1, i, EntryKind.NORMAL, data) for i in range(lo, lo + per_group)], None)
            for g in range(groups)
        ]
        for lo in range(1, (rounds + warmup) * per_group + 1, per_group)
    ])

    def save_once() -> None:
        db.save_many(next(saves))

    benchmark.pedantic(save_once, rounds=rounds, iterations=1, warmup_rounds=warmup)
    report(benchmark, groups * per_group, len(data))


@pytest.mark.parametrize("count, size_bytes", [(16, 64 * 1024), (1000, 100)])
def test_read_recent_entries(benchmark, db: RocksLogDB, count: int, size_bytes: int) -> None:
    """entries(lo, hi) of just-written entries (one range iteration, CRC-checked)."""
    group = db.group(1)
    data = os.urandom(size_bytes)
    group.save(None, [Entry(1, i, EntryKind.NORMAL, data) for i in range(1, count + 1)], None)

    def read() -> None:
        if len(group.entries(1, count + 1)) != count:
            raise RuntimeError("short read")

    benchmark.pedantic(read, rounds=200, iterations=1, warmup_rounds=5)
    report(benchmark, count, size_bytes)


@pytest.mark.parametrize("count, size_bytes", [(1, 64 * 1024), (16, 64 * 1024), (1000, 100)])
def test_baseline_raw_rocksdict_synced_batch(benchmark, tmp_path: Path, count: int, size_bytes: int) -> None:
    """The floor: the same bytes through bare rocksdict (no framing, CRC or metadata)."""
    raw = rocksdict.Rdict(str(tmp_path / "raw"), rocksdict.Options(raw_mode=True))
    options = rocksdict.WriteOptions()
    options.sync = False
    data = os.urandom(size_bytes)
    state = {"next": 0}

    def write_once() -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        n = state["next"]
        for i in range(n, n + count):
            batch.put(i.to_bytes(8, "big"), data)
        raw.write(batch, options)
        raw.flush_wal(True)
        state["next"] = n + count

    benchmark.pedantic(write_once, rounds=300 if count == 1 else 60, iterations=1, warmup_rounds=5)
    report(benchmark, count, size_bytes)
    raw.close()
