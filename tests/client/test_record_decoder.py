"""The readers' decoders (``decode_tuples`` / ``decode_columns``): the compiled one
(``raftka.v1._records``, C) and its fallback (aiokafka's reader) give the same records,
and on corrupt bytes both raise CorruptBatchError (the C one never crashes the process)."""

from __future__ import annotations

import random
import struct

import pytest

from raftka.client._types import ConsumedRecord
from raftka.v1 import recordbatch as rb
from raftka.v1.recordbatch import CorruptBatchError, Record, build_batch

TS = 1_700_000_000_000
CORRUPTIONS = 150

needs_compiled = pytest.mark.skipif(
    not rb.COMPILED_DECODER,
    reason="raftka.v1._records did not build here (no C compiler): the fallback is tested")


def _records(rng: random.Random, n: int) -> list[Record]:
    out = []
    for i in range(n):
        key = None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 40))
        value = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 300))
        headers = tuple((f"h{j}-é", None if rng.random() < 0.3 else rng.randbytes(j))
                        for j in range(rng.choice((0, 0, 1, 3))))
        out.append(Record(key, value, headers, TS + rng.randrange(-5000, 5000)))
    return out


def _expected(batch: bytes, first: int) -> list[ConsumedRecord]:
    """From the reference decoder every other path of the client used before."""
    return [ConsumedRecord("t", 3, r.offset, r.key, r.value, r.headers, r.timestamp_ms)
            for r in rb.decode_records(batch) if r.offset >= first]


@pytest.fixture(params=["compiled", "fallback"])
def decoder(request, monkeypatch):
    if request.param == "compiled":
        if not rb.COMPILED_DECODER:
            pytest.skip("raftka.v1._records did not build here")
    else:
        monkeypatch.setattr(rb, "_compiled_decode", None)
    return request.param


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_decoders_match_the_reference_decoder(decoder, compression):
    rng = random.Random(20)
    for n in (1, 2, 17, 500):
        batch = rb.with_base_offset(build_batch(_records(rng, n), compression=compression),
                                    1000)
        for first in (-1, 1000, 1000 + n // 2, 1000 + n):
            want = _expected(batch, first)
            got = rb.decode_tuples(batch, 0, ConsumedRecord, "t", 3, first)
            assert got == want
            assert all(type(r) is ConsumedRecord for r in got)
            offsets, keys, values, timestamps, headers = rb.decode_columns(batch, 0, first)
            assert list(zip(offsets, keys, values, headers, timestamps)) == [
                (r.offset, r.key, r.value, r.headers, r.timestamp_ms) for r in want]


def test_a_batch_in_the_middle_of_a_buffer_and_log_append_time(decoder):
    a = build_batch([Record(b"k", b"a", (), TS)], compression="none")
    b = bytearray(rb.with_base_offset(build_batch(
        [Record(None, b"b", (), TS + 1), Record(None, b"c", (), TS + 2)],
        compression="none"), 7))
    # attributes bit 3: log-append time, every record takes maxTimestamp (not the CRC's
    # business here: the decoders do not check it)
    b[22] |= 0x08
    struct.pack_into(">q", b, 35, TS + 99)
    buf = bytes(a) + bytes(b)
    got = rb.decode_tuples(buf, len(a), ConsumedRecord, "t", 0)
    assert [(r.offset, r.value, r.timestamp_ms) for r in got] == [(7, b"b", TS + 99),
                                                                   (8, b"c", TS + 99)]


def _corruptions(rng: random.Random, batch: bytes) -> list[bytes]:
    """Damaged copies: flipped bytes, truncations, a wrong recordCount (header intact, so
    the decoders reach the records section; the CRC is not checked by them)."""
    out = []
    for _ in range(CORRUPTIONS):
        b = bytearray(batch)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(rb.HEADER_SIZE, len(b))
            b[i] = rng.randrange(256)
        out.append(bytes(b))
    for cut in range(rb.HEADER_SIZE, len(batch), max(1, len(batch) // 40)):
        b = bytearray(batch[:cut])
        struct.pack_into(">i", b, 8, len(b) - rb.LOG_OVERHEAD)  # batchLength says so
        out.append(bytes(b))
    for count in (0, 1, 3, 2**31 - 1, -1):
        b = bytearray(batch)
        struct.pack_into(">i", b, 57, count)
        out.append(bytes(b))
    return out


@needs_compiled
def test_corrupt_records_raise_the_same_way_in_both_decoders(monkeypatch):
    rng = random.Random(7)
    batch = build_batch(_records(rng, 5), compression="none")
    for bad in _corruptions(rng, batch):
        outcomes = []
        for compiled in (True, False):
            if not compiled:
                monkeypatch.setattr(rb, "_compiled_decode", None)
            try:
                outcomes.append(rb.decode_tuples(bad, 0, ConsumedRecord, "t", 0))
            except CorruptBatchError:
                outcomes.append("corrupt")
            monkeypatch.undo()
        # the same verdict and records: a stricter reader would refuse batches the node
        # accepted (next test), a looser one would hand out what the node refuses
        assert outcomes[0] == outcomes[1], bad.hex()


def _batch_of_one_record(record_body: bytes) -> bytes:
    """A batch (CRC right) whose one record is ``record_body`` after its length."""
    header = bytearray(rb.HEADER_SIZE)
    struct.pack_into(">hiqqqhii", header, 21, 0, 0, TS, TS, -1, -1, -1, 1)
    out = header + rb._zigzag_varint(len(record_body)) + record_body
    crc = rb._crc32c(memoryview(out)[21:])
    struct.pack_into(">qiibI", out, 0, 0, len(out) - rb.LOG_OVERHEAD, -1, rb.MAGIC, crc)
    return bytes(out)


@pytest.mark.parametrize("field", ["key", "value", "header value"])
def test_a_batch_the_node_accepts_decodes_for_every_reader(decoder, field):
    """Kafka's readers (and aiokafka's, the node's produce check) take any negative
    length of a key, value or header value as null, not only -1. A reader that refused it
    would be stuck on the partition for good: the node stored the batch, and a reader
    never skips a batch it cannot decode."""
    z = rb._zigzag_varint
    key, value, header_value = (z(-7) if field == f else z(-1)
                                for f in ("key", "value", "header value"))
    batch = _batch_of_one_record(b"\x00" + z(0) + z(0) + key + value + z(1) + z(1) + b"h"
                                 + header_value)
    rb.validate_records(batch)  # what the node checks before it appends a produced batch
    assert rb.decode_tuples(batch, 0, ConsumedRecord, "t", 0) == [
        ConsumedRecord("t", 0, 0, None, None, (("h", None),), TS)]
    assert rb.decode_columns(batch, 0) == ([0], [None], [None], [TS], [(("h", None),)])


@needs_compiled
def test_compiled_decoder_refuses_bad_arguments():
    batch = build_batch([Record(None, b"x")], compression="none")
    with pytest.raises(TypeError):
        rb._compiled_decode(batch, 61, len(batch), 1, 0, TS, None, -1, dict, "t", 0)
    with pytest.raises(ValueError):
        rb._compiled_decode(batch, 61, len(batch) + 1, 1, 0, TS, None, -1, None, None, None)
    with pytest.raises(ValueError):  # a varint of 11 bytes
        rb._compiled_decode(b"\xff" * 11, 0, 11, 1, 0, TS, None, -1, None, None, None)


def test_the_compiled_decoder_is_built_where_a_c_compiler_is_there():
    """`pip install` (editable or a wheel) builds raftka.v1._records when it can: with a
    compiler on this machine, its absence is a build regression, not the fallback."""
    import shutil
    import sysconfig
    from pathlib import Path

    has_headers = (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()
    if not (shutil.which("cc") or shutil.which("gcc")) or not has_headers:
        pytest.skip("no C compiler or Python headers here: the fallback decoder is used")
    assert rb.COMPILED_DECODER


def test_a_timestamp_delta_that_overflows_int64_wraps_in_both_decoders(decoder):
    """The node does not check timestamps: a producer may write a delta that takes the
    timestamp past int64. Both decoders wrap it as int64 arithmetic does (the compiled
    one by unsigned addition: signed overflow would be undefined behaviour in C)."""
    z = rb._zigzag_varint
    header = bytearray(rb.HEADER_SIZE)
    struct.pack_into(">hiqqqhii", header, 21, 0, 0, 2**63 - 1, 2**63 - 1, -1, -1, -1, 1)
    body = b"\x00" + z(2**62) + z(0) + z(-1) + z(-1) + z(0)
    out = header + z(len(body)) + body
    struct.pack_into(">I", out, 17, rb._crc32c(memoryview(out)[21:]))
    struct.pack_into(">qii", out, 0, 0, len(out) - rb.LOG_OVERHEAD, -1)
    out[16] = rb.MAGIC
    rb.validate_records(bytes(out))
    [record] = rb.decode_tuples(bytes(out), 0, ConsumedRecord, "t", 0)
    assert record.timestamp_ms == (2**63 - 1 + 2**62) - 2**64


@needs_compiled
def test_the_compiled_records_check_is_never_looser_than_aiokafkas(monkeypatch):
    """validate_records with raftka.v1._records (the node's produce-time check) against
    its fallback (aiokafka's reader): valid batches pass both; a damaged batch the
    fallback refuses, the compiled check refuses too (it is as strict as the compiled
    decoder, which is at least as strict as aiokafka's reader), so whatever the node
    accepts every reader decodes."""
    rng = random.Random(9)
    refused = 0
    for compression in ("none", "lz4"):
        batch = build_batch(_records(rng, 6), compression=compression)
        rb.validate_records(batch)
        for bad in _corruptions(rng, batch):
            bad = _fix_crc(bad)
            outcomes = []
            for compiled in (True, False):
                if not compiled:
                    monkeypatch.setattr(rb, "_compiled_validate", None)
                try:
                    rb.validate_records(bad)
                    outcomes.append("ok")
                except CorruptBatchError:
                    outcomes.append("corrupt")
                monkeypatch.undo()
            if outcomes[1] == "corrupt":
                assert outcomes[0] == "corrupt", bad.hex()
                refused += 1
            if outcomes[0] == "ok":
                rb.decode_tuples(bad, 0, ConsumedRecord, "t", 0)  # every reader decodes it
                rb.decode_records(bad)
    assert refused > 100


def _fix_crc(batch: bytes) -> bytes:
    """The batch with its CRC computed over its (damaged) bytes, so the check reaches the
    records section."""
    out = bytearray(batch)
    struct.pack_into(">I", out, 17, rb._crc32c(bytes(out[21:])))
    return bytes(out)


@needs_compiled
def test_compiled_records_are_outside_the_collectors_lists():
    """A decoded record (and its headers) can be in no cycle, so the compiled decoder
    untracks it: tracked, a backlog's records made every collection walk them (more CPU
    than the decoding). A tuple subclass whose instances carry a __dict__ stays tracked."""
    import gc

    class WithDict(tuple):
        pass

    batch = build_batch([Record(b"k", b"v", (("h", b"x"), ("g", None)), TS)] * 3,
                        compression="none")
    records = rb.decode_tuples(batch, 0, ConsumedRecord, "t", 3, -1)
    assert len(records) == 3
    for record in records:
        assert not gc.is_tracked(record)
        assert not gc.is_tracked(record.headers)
        assert not any(gc.is_tracked(pair) for pair in record.headers)
    assert records[0] == ConsumedRecord("t", 3, 0, b"k", b"v", (("h", b"x"), ("g", None)), TS)
    kept = rb._compiled_decode(batch, 61, len(batch), 3, 0, TS, None, -1, WithDict, "t", 3)
    assert all(gc.is_tracked(record) for record in kept)
    tracked_topic = ["a list is tracked"]
    kept = rb._compiled_decode(batch, 61, len(batch), 3, 0, TS, None, -1, ConsumedRecord,
                               tracked_topic, 3)
    assert all(gc.is_tracked(record) for record in kept)
