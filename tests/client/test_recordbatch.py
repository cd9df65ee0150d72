"""RecordBatch v2: round trips, header fields, offset rewrite, corruption detection, Kafka
byte-compatibility (hand-built golden bytes; kafka-python as an oracle when installed)."""

from __future__ import annotations

import random
import struct

import pytest
from crc32c import crc32c

from raftka.v1.recordbatch import (
    HEADER_SIZE,
    BatchBuilder,
    BatchHeader,
    CorruptBatchError,
    Record,
    assign_offsets,
    build_batch,
    decode_batches,
    decode_records,
    parse_header,
    set_base_offset,
    set_partition_leader_epoch,
    split_batches,
    validate_batch,
    validate_records,
    with_base_offset,
    with_partition_leader_epoch,
)

COMPRESSIONS = ["none", "lz4"]
TS = 1_700_000_000_000


def _crc32c_reference(data: bytes) -> int:
    """Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), independent of the
    crc32c package, to check the golden bytes from first principles."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _recrc(batch: bytes | bytearray) -> bytes:
    """Recompute the CRC after a deliberate edit of a CRC-covered field."""
    out = bytearray(batch)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def _patch(batch: bytes, fmt: str, offset: int, value: int, fix_crc: bool = True) -> bytes:
    out = bytearray(batch)
    struct.pack_into(fmt, out, offset, value)
    return _recrc(out) if fix_crc else bytes(out)


def _sample_records(n: int) -> list[Record]:
    rng = random.Random(n)
    out = []
    for i in range(n):
        key = None if i % 4 == 0 else b"" if i % 4 == 1 else b"key-%d" % i
        value = None if i % 5 == 0 else b"" if i % 5 == 1 else rng.randbytes(rng.randrange(1, 300))
        headers: tuple[tuple[str, bytes | None], ...] = ()
        if i % 3 == 0:
            headers = (("trace", b"abc"), ("ключ", None), ("empty", b""))
        out.append(Record(key, value, headers, TS + i * 7))
    return out


def _build(records: list[Record], compression: str = "lz4", **kw: int) -> bytes:
    b = BatchBuilder(compression, **kw)
    for r in records:
        assert b.append(r.key, r.value, r.headers, r.timestamp_ms)
    return b.build()


# --------------------------------------------------------------------------- golden bytes

# One record, key b"k", value b"v", no headers, timestamp 1000 ms, uncompressed, written
# field by field from Kafka's documented RecordBatch v2 / Record layout.
_GOLDEN_RECORDS = bytes(
    [
        0x10,  # record length varint: zigzag(8) = 16 (8 bytes follow)
        0x00,  # record attributes int8
        0x00,  # timestampDelta varlong 0
        0x00,  # offsetDelta varint 0
        0x02,  # keyLength varint: zigzag(1) = 2
        ord("k"),
        0x02,  # valueLength varint 1
        ord("v"),
        0x00,  # headers count varint 0
    ]
)
_GOLDEN_CRC_COVERED = (
    bytes.fromhex("0000")  # attributes: no compression, CreateTime, not transactional
    + bytes.fromhex("00000000")  # lastOffsetDelta 0
    + bytes.fromhex("00000000000003e8")  # baseTimestamp 1000
    + bytes.fromhex("00000000000003e8")  # maxTimestamp 1000
    + bytes.fromhex("ffffffffffffffff")  # producerId -1
    + bytes.fromhex("ffff")  # producerEpoch -1
    + bytes.fromhex("ffffffff")  # baseSequence -1
    + bytes.fromhex("00000001")  # recordCount 1
    + _GOLDEN_RECORDS
)
_GOLDEN_CRC = 0x716A6189  # CRC-32C of _GOLDEN_CRC_COVERED
_GOLDEN = (
    bytes.fromhex("0000000000000000")  # baseOffset 0
    + bytes.fromhex("0000003a")  # batchLength 58 = 61 - 12 + 9
    + bytes.fromhex("ffffffff")  # partitionLeaderEpoch -1
    + bytes.fromhex("02")  # magic 2
    + _GOLDEN_CRC.to_bytes(4, "big")
    + _GOLDEN_CRC_COVERED
)


def test_crc32c_reference_check_value() -> None:
    assert _crc32c_reference(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"123456789") == 0xE3069283


def test_golden_batch_matches_spec_bytes() -> None:
    assert _crc32c_reference(_GOLDEN_CRC_COVERED) == _GOLDEN_CRC
    b = BatchBuilder("none")
    assert b.append(b"k", b"v", (), 1000)
    built = b.build()
    assert built == _GOLDEN
    assert len(built) == HEADER_SIZE + len(_GOLDEN_RECORDS)
    h = parse_header(built)
    assert h.crc == _GOLDEN_CRC
    assert decode_records(_GOLDEN) == [Record(b"k", b"v", (), 1000, 0)]


def test_golden_record_with_null_key_and_headers() -> None:
    # null key, value b"", one header ("h" -> b"x") and one null-valued header ("n" -> null)
    body = bytes(
        [0x00, 0x00, 0x00]  # attributes, timestampDelta, offsetDelta
        + [0x01]  # keyLength -1 (null)
        + [0x00]  # valueLength 0
        + [0x04]  # headers count 2
        + [0x02, ord("h"), 0x02, ord("x")]  # "h" -> b"x"
        + [0x02, ord("n"), 0x01]  # "n" -> null
    )
    records = bytes([len(body) * 2]) + body
    covered = (
        bytes.fromhex("0000" "00000000")
        + (5).to_bytes(8, "big") * 2
        + bytes.fromhex("0000000000000007" "0003" "0000000b" "00000001")  # pid 7, epoch 3, seq 11
        + records
    )
    expected = (
        bytes(8)
        + (49 + len(records)).to_bytes(4, "big")
        + b"\xff\xff\xff\xff\x02"
        + _crc32c_reference(covered).to_bytes(4, "big")
        + covered
    )
    b = BatchBuilder("none", producer_id=7, producer_epoch=3, base_sequence=11)
    b.append(None, b"", (("h", b"x"), ("n", None)), 5)
    assert b.build() == expected
    assert decode_records(expected) == [Record(None, b"", (("h", b"x"), ("n", None)), 5, 0)]


def test_lz4_records_are_a_kafka_compatible_lz4_frame() -> None:
    batch = _build([Record(None, b"abc" * 100, (), TS)] * 50, "lz4")
    h = parse_header(batch)
    assert h.compression == "lz4" and h.attributes == 3
    frame = batch[HEADER_SIZE:]
    assert frame[:4] == bytes.fromhex("04224d18")  # LZ4 frame magic (little-endian 0x184D2204)
    # FLG: version 01, independent blocks (Kafka rejects linked blocks), no checksums, no size
    assert frame[4] == 0x60
    assert frame[5] == 0x40  # BD: 64 KiB max block size, as Kafka's own producer writes
    assert frame[-4:] == bytes(4)  # end mark


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip_mixed_records(compression: str) -> None:
    records = _sample_records(500)
    batch = _build(records, compression)
    out = decode_records(batch)
    assert len(out) == len(records)
    for i, (got, want) in enumerate(zip(out, records, strict=True)):
        assert got == want._replace(offset=i)
    assert [r.offset for r in out] == list(range(500))


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_null_versus_empty_keys_and_values(compression: str) -> None:
    recs = [
        Record(None, None, (), TS),
        Record(b"", b"", (), TS),
        Record(None, b"", (), TS),
        Record(b"", None, (), TS),
    ]
    out = decode_records(_build(recs, compression))
    assert [(r.key, r.value) for r in out] == [(None, None), (b"", b""), (None, b""), (b"", None)]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_big_values_and_keys(compression: str) -> None:
    rng = random.Random(7)
    recs = [
        Record(
            rng.randbytes(20_000), rng.randbytes(1_000_000), (("h" * 10_000, b"v" * 70_000),), TS
        ),
        Record(b"small", b"x" * 16_384, (), TS + 1),  # at the varint-table boundary
        Record(b"k" * 8192, b"y" * 8191, (), TS + 2),
    ]
    b = BatchBuilder(compression, max_bytes=4 << 20)
    for r in recs:
        assert b.append(r.key, r.value, r.headers, r.timestamp_ms)
    out = decode_records(b.build())
    assert out == [r._replace(offset=i) for i, r in enumerate(recs)]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("n", [1, 10_000])
def test_record_counts(compression: str, n: int) -> None:
    b = BatchBuilder(compression)
    for i in range(n):
        assert b.append(None, b"%d" % i, (), TS + i)
    assert len(b) == n
    batch = b.build()
    h = parse_header(batch)
    assert h.record_count == n and h.last_offset_delta == n - 1
    out = decode_records(batch)
    assert [r.value for r in out] == [b"%d" % i for i in range(n)]
    assert [r.offset for r in out] == list(range(n))
    assert [r.timestamp_ms for r in out] == [TS + i for i in range(n)]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_timestamps_out_of_order_and_far_apart(compression: str) -> None:
    stamps = [TS, TS - 5, TS + 10**9, 0, TS + 1, 2**62]
    batch = build_batch([Record(None, b"v", (), t) for t in stamps], compression)
    h = parse_header(batch)
    assert h.base_timestamp == TS  # the first record's timestamp, as Kafka does
    assert h.max_timestamp == 2**62
    assert [r.timestamp_ms for r in decode_records(batch)] == stamps


def test_default_timestamp_is_now() -> None:
    import time

    before = time.time_ns() // 1_000_000
    b = BatchBuilder("none")
    b.append(b"k", b"v")
    b.append(b"k", b"v")
    after = time.time_ns() // 1_000_000
    out = decode_records(b.build())
    assert all(before <= r.timestamp_ms <= after for r in out)  # type: ignore[operator]


def test_header_fields() -> None:
    b = BatchBuilder("lz4", producer_id=12345, producer_epoch=7, base_sequence=99)
    for i in range(10):
        b.append(b"k", b"v" * 50, (), TS + i)
    batch = b.build(base_offset=1000)
    h = parse_header(batch)
    assert isinstance(h, BatchHeader)
    assert h.base_offset == 1000 and h.last_offset == 1009 and h.next_offset == 1010
    assert h.size == len(batch) and h.batch_length == len(batch) - 12
    assert h.partition_leader_epoch == -1
    assert h.magic == 2
    assert h.compression == "lz4"
    assert not h.is_transactional and not h.is_control and not h.is_log_append_time
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (12345, 7, 99)
    assert (h.base_timestamp, h.max_timestamp) == (TS, TS + 9)
    assert h.record_count == 10 and h.last_offset_delta == 9
    assert validate_batch(batch) == h


def test_empty_builder_builds_an_empty_batch() -> None:
    batch = BatchBuilder("lz4").build()
    h = parse_header(batch)
    assert h.record_count == 0 and h.compression == "none" and len(batch) == HEADER_SIZE
    assert decode_records(batch) == []


def test_incompressible_lz4_batch_falls_back_to_uncompressed() -> None:
    rng = random.Random(1)
    batch = build_batch([(None, rng.randbytes(1000)) for _ in range(20)], "lz4")
    assert parse_header(batch).compression == "none"
    assert len(decode_records(batch)) == 20


def test_build_batch_accepts_records_and_tuples() -> None:
    batch = build_batch(
        [Record(b"a", b"1", (), 5), (b"b", b"2"), (None, b"3", (("x", b"y"),), 9)], "none"
    )
    out = decode_records(batch)
    assert [(r.key, r.value, r.headers) for r in out] == [
        (b"a", b"1", ()),
        (b"b", b"2", ()),
        (None, b"3", (("x", b"y"),)),
    ]
    assert out[0].timestamp_ms == 5 and out[2].timestamp_ms == 9


def test_extend_matches_append_and_stops_at_the_limit() -> None:
    records = _sample_records(300)
    b = BatchBuilder("lz4")
    assert b.extend(records) == 300
    assert b.build() == _build(records, "lz4")
    small = BatchBuilder("none", max_bytes=2_000)
    taken = small.extend((None, b"x" * 100, (), TS) for _ in range(100))
    assert 10 < taken < 20 and len(small) == taken
    assert small.extend([(None, b"x" * 100)]) == 0  # still full
    assert small.extend([(None, b"")]) <= 1
    assert len(decode_records(small.build())) == len(small)
    clock = BatchBuilder("none")
    assert clock.extend([(b"a", b"1"), (b"b", b"2")]) == 2
    stamps = {r.timestamp_ms for r in decode_records(clock.build())}
    assert len(stamps) == 1  # one clock read per extend call


def test_builder_keeps_going_after_build() -> None:
    b = BatchBuilder("lz4")
    b.append(b"k", b"v1", (), TS)
    first = b.build()
    b.append(b"k", b"v2", (), TS + 1)
    assert [r.value for r in decode_records(first)] == [b"v1"]
    assert [r.value for r in decode_records(b.build(7))] == [b"v1", b"v2"]
    assert decode_records(b.build(7))[1].offset == 8


def test_bad_builder_arguments() -> None:
    with pytest.raises(ValueError, match="unsupported compression 'gzip'"):
        BatchBuilder("gzip")
    with pytest.raises(TypeError, match="header keys must be str"):
        BatchBuilder().append(b"k", b"v", ((b"bytes-key", b"v"),))  # type: ignore[arg-type]
    b = BatchBuilder(producer_epoch=70_000)
    b.append(b"k", b"v")
    with pytest.raises(ValueError, match="out of range"):
        b.build()


# --------------------------------------------------------------------------- size limit


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_size_limit(compression: str) -> None:
    b = BatchBuilder(compression, max_bytes=10_000)
    accepted = 0
    while b.append(None, b"x" * 100, (), TS):
        accepted += 1
    assert 80 < accepted < 100
    assert 10_000 - 110 < b.size_in_bytes <= 10_000  # full: no room for another record
    batch = b.build()
    assert len(batch) <= 10_000
    out = decode_records(batch)
    assert len(out) == len(b) and all(r.value != b"" for r in out)


def test_rejected_append_leaves_builder_unchanged() -> None:
    b = BatchBuilder("none", max_bytes=200)
    assert b.append(b"k", b"v" * 50, (), TS)
    before = (len(b), b.size_in_bytes, b.build())
    assert not b.append(b"k", b"v" * 200, (), TS + 100)
    assert (len(b), b.size_in_bytes, b.build()) == before


def test_first_record_is_accepted_even_if_over_limit() -> None:
    b = BatchBuilder("none", max_bytes=100)
    assert b.append(None, b"z" * 1000, (), TS)
    assert not b.append(None, b"", (), TS)
    assert decode_records(b.build())[0].value == b"z" * 1000


# --------------------------------------------------------------------------- offsets


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_with_base_offset_keeps_crc_valid(compression: str) -> None:
    batch = _build(_sample_records(20), compression)
    moved = with_base_offset(batch, 5_000_000_000)
    assert moved[8:] == batch[8:]
    h = parse_header(moved)
    assert h.base_offset == 5_000_000_000 and h.crc == parse_header(batch).crc
    assert [r.offset for r in decode_records(moved)] == list(range(5_000_000_000, 5_000_000_020))


def test_set_base_offset_in_place_and_leader_epoch() -> None:
    batch = _build(_sample_records(5), "lz4")
    buf = bytearray(b"\x00" * 10 + batch)
    set_base_offset(buf, 42, offset=10)
    set_partition_leader_epoch(buf, 9, offset=10)
    h = parse_header(buf, 10)
    assert (h.base_offset, h.partition_leader_epoch) == (42, 9)
    assert decode_records(buf, 10)[0].offset == 42
    mv = memoryview(buf)[10:]
    set_base_offset(mv, 43)
    assert parse_header(buf, 10).base_offset == 43
    other = with_partition_leader_epoch(batch, 3)
    assert parse_header(other).partition_leader_epoch == 3 and other[16:] == batch[16:]
    with pytest.raises(ValueError, match="int64"):
        set_base_offset(bytearray(batch), 2**63)


def test_assign_offsets_over_a_concatenation() -> None:
    batches = [build_batch([(None, b"%d" % i)] * n, "lz4") for i, n in enumerate([3, 1, 5])]
    buf = bytearray(b"".join(batches))
    spans = split_batches(buf)
    assert assign_offsets(buf, 100, spans, partition_leader_epoch=4) == 109
    assert [parse_header(buf, s).base_offset for s, _ in spans] == [100, 103, 104]
    assert all(parse_header(buf, s).partition_leader_epoch == 4 for s, _ in spans)
    assert [r.offset for r in decode_batches(buf)] == list(range(100, 109))


# --------------------------------------------------------------------------- corruption


@pytest.fixture(scope="module")
def small_batch() -> bytes:
    return build_batch(
        [Record(b"key", b"value-%d" % i, (("h", b"1"),), TS + i) for i in range(6)], "none"
    )


def test_every_bit_flip_after_the_crc_field_is_detected(small_batch: bytes) -> None:
    for pos in range(21, len(small_batch)):
        for bit in range(8):
            bad = bytearray(small_batch)
            bad[pos] ^= 1 << bit
            with pytest.raises(CorruptBatchError, match="CRC mismatch: stored 0x[0-9a-f]{8}, comp"):
                parse_header(bad)


def test_bit_flips_in_lz4_batch_are_detected() -> None:
    batch = _build(_sample_records(30), "lz4")
    rng = random.Random(3)
    for _ in range(300):
        bad = bytearray(batch)
        bad[rng.randrange(21, len(batch))] ^= 1 << rng.randrange(8)
        with pytest.raises(CorruptBatchError, match="CRC mismatch"):
            parse_header(bad)


def test_crc_field_corruption_detected(small_batch: bytes) -> None:
    bad = bytearray(small_batch)
    bad[18] ^= 0x01
    with pytest.raises(CorruptBatchError, match="corrupted in transit or built wrongly"):
        parse_header(bad)


@pytest.mark.parametrize("magic", [0, 1, 3, 255])
def test_wrong_magic(small_batch: bytes, magic: int) -> None:
    bad = bytearray(small_batch)
    bad[16] = magic
    signed = struct.unpack("b", bytes([magic]))[0]
    with pytest.raises(CorruptBatchError, match=rf"unsupported magic {signed} \(expected 2\)"):
        parse_header(bad)


def test_truncated_buffers(small_batch: bytes) -> None:
    for cut in range(len(small_batch)):
        with pytest.raises(CorruptBatchError, match="truncated"):
            parse_header(small_batch[:cut])
        with pytest.raises(CorruptBatchError, match="truncated"):
            decode_records(small_batch[:cut])


def test_batch_length_too_big(small_batch: bytes) -> None:
    bad = _patch(small_batch, ">i", 8, len(small_batch) - 12 + 1, fix_crc=False)
    with pytest.raises(CorruptBatchError, match="batchLength .* only .* remain"):
        parse_header(bad)
    huge = _patch(small_batch, ">i", 8, 2**31 - 1, fix_crc=False)
    with pytest.raises(CorruptBatchError, match="truncated in transit or its length field"):
        parse_header(huge)


def test_batch_length_too_small(small_batch: bytes) -> None:
    shorter = _patch(small_batch, ">i", 8, len(small_batch) - 12 - 1, fix_crc=False)
    with pytest.raises(CorruptBatchError, match="CRC mismatch"):
        parse_header(shorter)
    with pytest.raises(CorruptBatchError):
        validate_batch(shorter)
    for tiny in (48, 0, -1, -(2**31)):
        bad = _patch(small_batch, ">i", 8, tiny, fix_crc=False)
        with pytest.raises(CorruptBatchError, match="smaller than the 49-byte header"):
            parse_header(bad)


def test_validate_batch_rejects_trailing_bytes(small_batch: bytes) -> None:
    with pytest.raises(CorruptBatchError, match="buffer holds"):
        validate_batch(small_batch + b"\x00")


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_unknown_codecs_are_named(small_batch: bytes, codec: int) -> None:
    bad = _patch(small_batch, ">h", 21, codec)
    expected = rf"unknown compression codec {codec}; Kafka's are none \(0\), gzip \(1\)"
    with pytest.raises(CorruptBatchError, match=expected):
        parse_header(bad)
    with pytest.raises(CorruptBatchError, match="unknown compression codec"):
        decode_records(bad)
    with pytest.raises(CorruptBatchError, match="unknown compression codec"):
        decode_records(bad, verify=False)


def test_last_offset_delta_mismatch(small_batch: bytes) -> None:
    # below recordCount - 1: never valid; above: a compacted batch's header may say that,
    # a produced one may not (validate_records, which the broker runs at produce)
    for lod in (0, 4, -1):
        bad = _patch(small_batch, ">i", 23, lod)
        with pytest.raises(CorruptBatchError, match=f"lastOffsetDelta {lod} is below"):
            parse_header(bad)
    for lod in (6, 2**31 - 1):
        bad = _patch(small_batch, ">i", 23, lod)
        assert parse_header(bad).last_offset_delta == lod
        with pytest.raises(CorruptBatchError, match=f"lastOffsetDelta {lod} does not match"):
            validate_records(bad)


def test_negative_record_count(small_batch: bytes) -> None:
    bad = _patch(small_batch, ">i", 57, -3)
    with pytest.raises(CorruptBatchError, match="negative recordCount"):
        parse_header(bad)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_record_count_disagreeing_with_records(compression: str) -> None:
    batch = _build(_sample_records(10), compression)
    fewer = _patch(_patch(batch, ">i", 57, 9), ">i", 23, 8)
    with pytest.raises(CorruptBatchError, match="unconsumed bytes after all records"):
        decode_records(fewer)
    more = _patch(_patch(batch, ">i", 57, 11), ">i", 23, 10)
    with pytest.raises(CorruptBatchError, match="records section does not decode"):
        decode_records(more)


def test_garbage_records_never_raise_anything_but_corrupt_batch_error() -> None:
    """Random damage with a *valid* CRC (a buggy producer): decoding fails cleanly."""
    rng = random.Random(11)
    plain = _build(_sample_records(40), "none")
    compressed = _build(_sample_records(40), "lz4")
    outcomes = {"ok": 0, "corrupt": 0}
    for i in range(3000):
        bad = bytearray(plain if i % 2 else compressed)
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(HEADER_SIZE, len(bad))] = rng.randrange(256)
        if rng.random() < 0.2:  # also truncate / extend the records section
            cut = rng.randrange(HEADER_SIZE, len(bad))
            bad = bad[:cut] if rng.random() < 0.5 else bad + rng.randbytes(rng.randrange(1, 20))
            struct.pack_into(">i", bad, 8, len(bad) - 12)
        bad = bytearray(_recrc(bad))
        try:
            decode_records(bad)
            outcomes["ok"] += 1
        except CorruptBatchError:
            outcomes["corrupt"] += 1
    assert outcomes["corrupt"] > 500 and outcomes["ok"] > 500  # damage inside values decodes


def test_bad_lz4_frames() -> None:
    import lz4.frame

    batch = _build(_sample_records(10), "lz4")
    header = bytearray(batch[:HEADER_SIZE])

    def with_section(section: bytes) -> bytes:
        out = header + section
        struct.pack_into(">i", out, 8, len(out) - 12)
        return _recrc(out)

    junk = with_section(b"\x04\x22\x4d\x18" + random.Random(1).randbytes(100))
    with pytest.raises(CorruptBatchError, match="lz4 frame does not decompress"):
        decode_records(junk)
    raw = bytes(_build(_sample_records(10), "none")[HEADER_SIZE:])
    frame = bytearray(lz4.frame.compress(raw, block_linked=False, store_size=True))
    assert decode_records(with_section(bytes(frame)))[0].offset == 0  # content size is fine
    frame[6:14] = (2**62).to_bytes(8, "little")  # claims 4 EiB: must not try to allocate it
    with pytest.raises(CorruptBatchError, match="lz4 frame claims 4611686018427387904"):
        decode_records(with_section(bytes(frame)))


def test_random_garbage_is_not_a_batch() -> None:
    rng = random.Random(5)
    for _ in range(500):
        junk = rng.randbytes(rng.randrange(0, 200))
        with pytest.raises(CorruptBatchError):
            parse_header(junk)
        with pytest.raises(CorruptBatchError):
            decode_records(junk)


def test_corrupt_batch_error_is_a_value_error() -> None:
    assert issubclass(CorruptBatchError, ValueError)


# --------------------------------------------------------------------------- split_batches


def test_split_batches_over_concatenation() -> None:
    batches = [
        build_batch([(b"k", b"v" * i)] * (i + 1), "lz4" if i % 2 else "none") for i in range(5)
    ]
    buf = b"".join(batches)
    spans = split_batches(buf)
    assert [buf[s:e] for s, e in spans] == batches
    assert split_batches(memoryview(buf)) == spans
    assert split_batches(b"") == []
    assert len(decode_batches(buf)) == sum(range(1, 6))


@pytest.mark.parametrize("tail", [b"\x00", b"\x00" * 60, b"garbage!" * 10])
def test_split_batches_trailing_garbage(tail: bytes) -> None:
    batches = [build_batch([(b"k", b"v")] * 3, "lz4") for _ in range(3)]
    buf = b"".join(batches)
    with pytest.raises(CorruptBatchError, match=f"record batch at byte {len(buf)}: "):
        split_batches(buf + tail)


def test_split_batches_truncated_last_batch_and_corrupt_middle() -> None:
    batches = [build_batch([(b"k", b"v")] * 3, "none") for _ in range(3)]
    buf = b"".join(batches)
    with pytest.raises(CorruptBatchError, match=f"at byte {2 * len(batches[0])}: .*truncated"):
        split_batches(buf[:-1])
    bad = bytearray(buf)
    bad[len(batches[0]) + 40] ^= 0xFF
    with pytest.raises(CorruptBatchError, match=f"at byte {len(batches[0])}: CRC mismatch"):
        split_batches(bad)


# --------------------------------------------------------------------------- interop oracle


def test_interop_with_kafka_python() -> None:
    """kafka-python (if installed) reads our batches and we read its batches."""
    import kafka.record.default_records as dr
    for compression, codec in (("none", 0), ("lz4", 3)):
        records = _sample_records(200)
        ours = _build(records, compression, partition_leader_epoch=0)
        theirs = dr.DefaultRecordBatch(bytearray(ours))
        assert theirs.validate_crc()
        got = list(theirs)
        assert [(r.offset, r.timestamp, r.key, r.value) for r in got] == [
            (i, r.timestamp_ms, r.key, r.value) for i, r in enumerate(records)
        ]
        assert [tuple(tuple(h) for h in r.headers) for r in got] == [r.headers for r in records]

        kb = dr.DefaultRecordBatchBuilder(
            magic=2,
            compression_type=codec,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 20,
        )
        for i, r in enumerate(records):
            kb.append(
                i, timestamp=r.timestamp_ms, key=r.key, value=r.value, headers=list(r.headers)
            )
        kbytes = bytes(kb.build())
        parse_header(kbytes)
        assert decode_records(kbytes) == [r._replace(offset=i) for i, r in enumerate(records)]
        if compression == "none":
            assert kbytes == ours  # byte-identical uncompressed batches


# --------------------------------------------------------------------------- validate_records
# What the node checks at produce: the records decode exactly as a reader will decode them.


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("n", [1, 2, 17, 1000])
def test_validate_records_accepts_what_the_builder_builds(compression: str, n: int) -> None:
    batch = _build(_sample_records(n), compression)
    validate_records(batch)
    validate_records(batch * 2, len(batch), parse_header(batch * 2, len(batch)))
    validate_records(with_base_offset(batch, 1234))  # deltas count from any base offset
    validate_records(_GOLDEN)


def test_validate_records_rejects_a_sound_crc_over_undecodable_records() -> None:
    """The bug of issue 12: a producer's CRC is right but its records section is not."""
    bad = bytearray(_GOLDEN)
    bad[HEADER_SIZE] = 0x7E  # record length 63: past the end of the section
    bad = bytearray(_recrc(bad))
    parse_header(bad)  # the header check alone lets it through
    with pytest.raises(CorruptBatchError, match="CRC is right but its records do not decode"):
        validate_records(bad)
    with pytest.raises(CorruptBatchError, match=f"at byte {len(_GOLDEN)}: its CRC is right"):
        validate_records(_GOLDEN + bytes(bad), len(_GOLDEN))


def test_validate_records_rejects_offset_deltas_out_of_sequence() -> None:
    batch = bytearray(_build([Record(b"k", b"v", (), TS), Record(b"k", b"w", (), TS)], "none"))
    second = HEADER_SIZE + 1 + batch[HEADER_SIZE] // 2  # after the first record's length + body
    assert batch[second + 3] == 2  # the second record's offsetDelta: zigzag(1)
    batch[second + 3] = 4  # offsetDelta 2: decodes, but readers would see offsets 0 and 2
    batch = bytearray(_recrc(batch))
    assert [r.offset for r in decode_records(batch)] == [0, 2]
    with pytest.raises(CorruptBatchError, match="record 1 has offsetDelta 2"):
        validate_records(batch)


def test_validate_records_rejects_a_record_count_that_does_not_match() -> None:
    batch = _build(_sample_records(10), "none")
    with pytest.raises(CorruptBatchError):
        validate_records(_patch(_patch(batch, ">i", 57, 11), ">i", 23, 10))
    with pytest.raises(CorruptBatchError):
        validate_records(_patch(_patch(batch, ">i", 57, 9), ">i", 23, 8))


def test_validate_records_checks_the_crc_unless_given_the_header() -> None:
    with pytest.raises(CorruptBatchError, match="CRC mismatch"):
        validate_records(_patch(_GOLDEN, ">q", 27, 5, fix_crc=False))


def test_validate_records_passes_exactly_what_readers_decode() -> None:
    """Random damage under a valid CRC: whatever validate_records accepts, decode_records
    reads with consecutive offsets; whatever it refuses, it refuses with CorruptBatchError."""
    rng = random.Random(12)
    plain = _build(_sample_records(30), "none")
    compressed = _build(_sample_records(30), "lz4")
    seen = {"ok": 0, "refused": 0}
    for i in range(3000):
        bad = bytearray(plain if i % 2 else compressed)
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(HEADER_SIZE, len(bad))] = rng.randrange(256)
        bad = bytearray(_recrc(bad))
        try:
            validate_records(bad)
        except CorruptBatchError:
            seen["refused"] += 1
            continue
        seen["ok"] += 1
        records = decode_records(bad)
        assert [r.offset for r in records] == list(range(len(records)))
    assert seen["refused"] > 500 and seen["ok"] > 500


def test_an_lz4_section_that_decompresses_beyond_the_bound_is_refused_without_inflating_it(
        monkeypatch) -> None:
    """A frame without a declared size can expand ~255x; the decoder stops at the bound."""
    from raftka.v1 import recordbatch as rb

    builder = rb.BatchBuilder(compression="lz4")
    builder.append(None, b"\0" * (2 << 20))
    batch = builder.build()
    rb.validate_records(batch)  # within the bound: fine
    monkeypatch.setattr(rb, "DECOMPRESSED_BYTES_MAX", 1 << 20)
    with pytest.raises(rb.CorruptBatchError, match="decompress to more than"):
        rb.validate_records(batch)


def test_an_lz4_section_larger_than_the_first_output_piece_decodes_whole(monkeypatch) -> None:
    """The output of a frame without a declared size comes in pieces (the first
    LZ4_FIRST_OUTPUT_BYTES, then doubling): a records section spanning several pieces
    decodes whole, and the bound still holds when it is reached in a later piece."""
    from raftka.v1 import recordbatch as rb

    monkeypatch.setattr(rb, "LZ4_FIRST_OUTPUT_BYTES", 64 << 10)
    records = [(b"k%d" % i, bytes([i % 251]) * 3000) for i in range(200)]  # ~600 KiB
    batch = rb.build_batch(records, "lz4")
    assert rb.parse_header(batch).compression == "lz4"
    decoded = rb.decode_records(batch)
    assert [(r.key, r.value) for r in decoded] == records
    rb.validate_records(batch)
    monkeypatch.setattr(rb, "DECOMPRESSED_BYTES_MAX", 300 << 10)
    with pytest.raises(rb.CorruptBatchError, match="decompress to more than"):
        rb.validate_records(batch)


def _gzipped(batch: bytes, section: bytes | None = None) -> bytes:
    """``batch`` (uncompressed) with its records section gzipped as a Kafka client sends
    it (or ``section`` in its place): codec bits 1, batchLength and CRC fixed."""
    import gzip

    packed = gzip.compress(batch[HEADER_SIZE:]) if section is None else section
    out = bytearray(batch[:HEADER_SIZE]) + packed
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, (struct.unpack_from(">h", out, 21)[0] & ~7) | 1)
    return _recrc(out)


def test_gzip_batches_from_kafka_clients_decode_like_uncompressed_ones() -> None:
    records = _sample_records(40)
    plain = build_batch(records, "none")
    gz = _gzipped(plain)
    assert parse_header(gz).attributes & 7 == 1
    validate_records(gz)
    assert decode_records(gz) == decode_records(plain)


def test_gzip_sections_that_are_truncated_corrupt_or_too_large_are_refused() -> None:
    import gzip

    plain = build_batch(_sample_records(10), "none")
    whole = gzip.compress(plain[HEADER_SIZE:])
    with pytest.raises(CorruptBatchError, match="gzip section is truncated"):
        decode_records(_gzipped(plain, whole[:-12]))
    with pytest.raises(CorruptBatchError, match="gzip section does not decompress"):
        decode_records(_gzipped(plain, b"\x1f\x8b" + b"\x00" * 30))
    bomb = gzip.compress(b"\0" * (65 << 20), compresslevel=1)  # ~64 KiB expanding to 65 MiB
    with pytest.raises(CorruptBatchError, match="decompress to more than"):
        decode_records(_gzipped(plain, bomb))


def _recoded(batch: bytes, codec: int, section: bytes) -> bytes:
    """``batch`` with its records section replaced by ``section`` and the codec bits set."""
    out = bytearray(batch[:HEADER_SIZE]) + section
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, (struct.unpack_from(">h", out, 21)[0] & ~7) | codec)
    return _recrc(out)


def test_snappy_and_zstd_batches_from_kafka_clients_decode_like_uncompressed_ones() -> None:
    """Sections compressed by aiokafka's codec module (an independent encoder): snappy in
    snappy-java's xerial framing (the Java client) and as one raw block, zstd."""
    from aiokafka.codec import snappy_encode, zstd_encode

    plain = build_batch(_sample_records(300), "none")
    section = plain[HEADER_SIZE:]
    for codec, packed in ((2, snappy_encode(section, xerial_compatible=True,
                                            xerial_blocksize=4096)),
                          (2, snappy_encode(section, xerial_compatible=False)),
                          (4, zstd_encode(section))):
        batch = _recoded(plain, codec, packed)
        assert parse_header(batch).attributes & 7 == codec
        validate_records(batch)
        assert decode_records(batch) == decode_records(plain)


def test_snappy_and_zstd_sections_that_are_corrupt_or_too_large_are_refused() -> None:
    import cramjam

    plain = build_batch(_sample_records(10), "none")
    section = plain[HEADER_SIZE:]
    raw = bytes(cramjam.snappy.compress_raw(section))
    with pytest.raises(CorruptBatchError, match="snappy section does not decompress"):
        decode_records(_recoded(plain, 2, raw[:-5]))
    with pytest.raises(CorruptBatchError, match="overruns the section"):
        decode_records(_recoded(plain, 2, b"\x82SNAPPY\x00" + bytes(8) + b"\x00\x00\x10\x00"))
    # a block that claims 65 MiB is refused before anything is allocated for it
    claim = bytes([0x80, 0x80, 0x80, 0x21])  # varint 65 MiB + ...
    with pytest.raises(CorruptBatchError, match="decompress to more than"):
        decode_records(_recoded(plain, 2, claim + raw[1:]))
    zst = bytes(cramjam.zstd.compress(section))
    with pytest.raises(CorruptBatchError, match="zstd section does not decompress"):
        decode_records(_recoded(plain, 4, zst[:-3]))
    with pytest.raises(CorruptBatchError, match="not a zstd frame"):
        decode_records(_recoded(plain, 4, b"garbage-garbage"))
    bomb = bytes(cramjam.zstd.compress(b"\0" * (65 << 20)))  # a few KiB declaring 65 MiB
    with pytest.raises(CorruptBatchError, match="more than"):
        decode_records(_recoded(plain, 4, bomb))
