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
        if outcomes[1] == "corrupt":
            # the compiled decoder is at least as strict (it checks every length
            # against the bytes left), never looser
            assert outcomes[0] == "corrupt", bad.hex()
        elif outcomes[0] != "corrupt":
            assert outcomes[0] == outcomes[1], bad.hex()


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
