"""RecordBatch v2 codec speed: the client's per-record Python work and the broker's check.

- build: 1000 records of 100 B JSON-like values into one batch (lz4 and none), with and
  without caller-supplied timestamps (the default takes the clock once per record);
- parse_header: header + CRC-32C of a ~100 KiB batch, the broker's only per-batch work;
- split_batches over 16 concatenated ~100 KiB batches;
- decode: 1000-record batches back into Records.

Rates come from the median round and are reported in extra_info (see conftest.py).
bench/README.md: kafka-python (pure Python) builds 369k-477k records/s and decodes 218k/s.
"""

from __future__ import annotations

import random

import pytest

from raftka.v1.recordbatch import BatchBuilder, decode_records, parse_header, split_batches

RECORDS = 1000
MIB = 1 << 20
TS = 1_700_000_000_000


def _values(n: int = RECORDS) -> list[bytes]:
    rng = random.Random(42)
    out = []
    for _ in range(n):
        head = b'{"user_id": %d, "event": "%s", "page": "/p/%d", "ms": %d, "ok": true, "pad": "' % (
            rng.randrange(10**6),
            rng.choice([b"click", b"view", b"purchase"]),
            rng.randrange(1000),
            rng.randrange(10**4),
        )
        out.append((head + b"x" * 100)[:98] + b'"}')
    assert all(len(v) == 100 for v in out)
    return out


VALUES = _values()


def _report_records(benchmark, records: int) -> None:
    median_s = benchmark.stats.stats.median
    benchmark.extra_info["records_per_round"] = records
    benchmark.extra_info["records_per_second"] = round(records / median_s)
    benchmark.extra_info["ns_per_record"] = round(median_s / records * 1e9)


def _report_bytes(benchmark, nbytes: int) -> None:
    median_s = benchmark.stats.stats.median
    benchmark.extra_info["bytes_per_round"] = nbytes
    benchmark.extra_info["mb_per_second"] = round(nbytes / median_s / 1e6, 1)


def _build(compression: str, timestamps: bool) -> bytes:
    b = BatchBuilder(compression)
    append = b.append
    if timestamps:
        for v in VALUES:
            append(None, v, (), TS)
    else:
        for v in VALUES:
            append(None, v)
    return b.build()


@pytest.mark.parametrize("timestamps", [False, True], ids=["clock", "given-ts"])
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_build_1000x100B(benchmark, compression: str, timestamps: bool) -> None:
    batch = benchmark.pedantic(
        _build, args=(compression, timestamps), rounds=200, iterations=1, warmup_rounds=10
    )
    assert parse_header(batch).record_count == RECORDS
    _report_records(benchmark, RECORDS)
    benchmark.extra_info["batch_bytes"] = len(batch)


@pytest.fixture(scope="module")
def big_batch() -> bytes:
    """~100 KiB uncompressed batch (1000 x 100 B values)."""
    return _build("none", True)


def test_parse_header_and_crc_100KiB(benchmark, big_batch: bytes) -> None:
    h = benchmark.pedantic(
        parse_header, args=(big_batch,), rounds=2000, iterations=10, warmup_rounds=50
    )
    assert h.size == len(big_batch)
    _report_bytes(benchmark, len(big_batch))


def test_split_batches_16x100KiB(benchmark, big_batch: bytes) -> None:
    buf = big_batch * 16
    spans = benchmark.pedantic(
        split_batches, args=(buf,), rounds=300, iterations=1, warmup_rounds=10
    )
    assert len(spans) == 16
    _report_bytes(benchmark, len(buf))


@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_decode_1000x100B(benchmark, compression: str) -> None:
    batch = _build(compression, True)
    records = benchmark.pedantic(
        decode_records, args=(batch,), rounds=200, iterations=1, warmup_rounds=10
    )
    assert len(records) == RECORDS and records[-1].value == VALUES[-1]
    _report_records(benchmark, RECORDS)


@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_build_extend_1000x100B(benchmark, compression: str) -> None:
    """The bulk path: one call, one clock read for the whole batch."""
    records = [(None, v) for v in VALUES]

    def build() -> bytes:
        b = BatchBuilder(compression)
        b.extend(records)
        return b.build()

    batch = benchmark.pedantic(build, rounds=200, iterations=1, warmup_rounds=10)
    assert parse_header(batch).record_count == RECORDS
    _report_records(benchmark, RECORDS)
