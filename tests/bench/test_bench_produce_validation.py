"""What checking records at produce costs the partition leader (issue 12).

Before, a produced batch got its header and CRC checked (``parse_header``); now its
records are also decoded once (``validate_records``, aiokafka's compiled reader), so a
batch whose CRC is right but whose records are not is refused instead of stored. Both are
timed here on the same batches: 1,000 and 10,000 records of 100 B JSON-like values, lz4
(what our producer sends) and uncompressed. ns_per_record of the two is the price.
"""

from __future__ import annotations

import pytest

from raftka.v1.recordbatch import BatchBuilder, parse_header, validate_records
from tests.bench.test_bench_recordbatch import TS, VALUES


def _batch(compression: str, records: int) -> bytes:
    b = BatchBuilder(compression, max_bytes=1 << 30)
    values = (VALUES * (records // len(VALUES) + 1))[:records]
    b.extend([(None, v, (), TS) for v in values])
    return b.build()


def _report(benchmark, records: int, nbytes: int) -> None:
    median_s = benchmark.stats.stats.median
    benchmark.extra_info["records_per_round"] = records
    benchmark.extra_info["batch_bytes"] = nbytes
    benchmark.extra_info["ns_per_record"] = round(median_s / records * 1e9, 1)
    benchmark.extra_info["records_per_second"] = round(records / median_s)


@pytest.mark.parametrize("records", [1000, 10_000])
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_produce_check_header_and_crc(benchmark, compression: str, records: int) -> None:
    """What the leader did per batch before: header fields and CRC-32C."""
    batch = _batch(compression, records)
    header = benchmark.pedantic(parse_header, args=(batch,), rounds=300, iterations=5,
                                warmup_rounds=10)
    assert header.record_count == records
    _report(benchmark, records, len(batch))


@pytest.mark.parametrize("records", [1000, 10_000])
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_produce_check_header_crc_and_records(benchmark, compression: str, records: int) -> None:
    """What it does now: the same plus every record decoded (lz4 decompressed first)."""
    batch = _batch(compression, records)

    def check() -> None:
        validate_records(batch, 0, parse_header(batch))

    benchmark.pedantic(check, rounds=100, iterations=1, warmup_rounds=5)
    _report(benchmark, records, len(batch))
