"""Kafka RecordBatch v2 (magic 2): the one module that knows the batch bytes.

Clients build batches with :class:`BatchBuilder` (``append`` / ``extend`` / ``build``) or
:func:`build_batch`. The node validates them with :func:`parse_header`,
:func:`validate_batch` (exactly one batch) or :func:`split_batches` (a concatenation):
header and CRC only; :func:`validate_records` additionally checks that the records decode
(what a reader will do), which the node runs once per produced batch (~0.1 µs a record,
compiled). It assigns offsets
with :func:`assign_offsets`, :func:`set_base_offset` or :func:`with_base_offset` (and the
leader epoch with :func:`set_partition_leader_epoch`), which rewrite fields the CRC does not
cover. Consumers decode with :func:`decode_records` / :func:`decode_batches` (or the lighter
:func:`raw_records`), through aiokafka's compiled reader. The bytes are
exactly Kafka's, so a Kafka-protocol listener can serve them unchanged.

Batch layout (big-endian, 61-byte header)::

    off  size  field
      0     8  baseOffset             int64   offset of the first record (set by the leader)
      8     4  batchLength            int32   bytes after this field = total size - 12
     12     4  partitionLeaderEpoch   int32   -1 from producers (set by the leader)
     16     1  magic                  int8    always 2
     17     4  crc                    uint32  CRC-32C (Castagnoli) of bytes 21..end
     21     2  attributes             int16   bits 0-2 codec (0 none, 1 gzip, 2 snappy,
                                              3 lz4, 4 zstd), bit 3 timestamp type
                                              (0 create, 1 log-append), bit 4
                                              transactional, bit 5 control batch
     23     4  lastOffsetDelta        int32   recordCount - 1
     27     8  baseTimestamp          int64   timestamp of the first record (ms)
     35     8  maxTimestamp           int64   largest record timestamp (ms)
     43     8  producerId             int64   -1 unless idempotent/transactional
     51     2  producerEpoch          int16   -1 unless idempotent/transactional
     53     4  baseSequence           int32   -1 unless idempotent/transactional
     57     4  recordCount            int32   never compressed
     61     -  records                        the whole section is compressed with the codec;
                                              lz4 = LZ4 *frame* format, independent blocks;
                                              gzip, snappy, zstd (read, never written:
                                              Kafka clients send them) = one gzip member,
                                              snappy-java's xerial framing or one raw
                                              snappy block, one zstd frame

Record layout (varint = zigzag LEB128 as in protobuf's sint32/sint64)::

    length          varint   bytes after this field
    attributes      int8     unused, 0
    timestampDelta  varlong  timestamp - baseTimestamp
    offsetDelta     varint   offset - baseOffset
    keyLength       varint   -1 = null key
    key             bytes
    valueLength     varint   -1 = null value
    value           bytes
    headersCount    varint
    headers         [headerKeyLength varint, headerKey utf-8,
                     headerValueLength varint (-1 = null), headerValue bytes]

All failures to validate or decode raise :class:`CorruptBatchError` (a ``ValueError``)
with a message that says what was wrong and what to do about it.
"""

from __future__ import annotations

import struct
import zlib as _zlib
from collections.abc import Iterable, Sequence
from time import time_ns as _time_ns
from typing import NamedTuple, Protocol

import cramjam as _cramjam
import lz4.frame as _lz4frame
from aiokafka.errors import CorruptRecordException as _CorruptRecord
from aiokafka.record.default_records import DefaultRecordBatch as _CompiledBatch
from crc32c import crc32c as _crc32c

try:  # optional (pyproject's ext-modules, built when a C compiler is there): see below
    from raftka.v1._records import decode as _compiled_decode
except ImportError:  # pragma: no cover - exercised by the fallback tests
    _compiled_decode = None
try:  # separately: an extension built before validate() existed still decodes
    from raftka.v1._records import validate as _compiled_validate
except ImportError:  # pragma: no cover - exercised by the fallback tests
    _compiled_validate = None

__all__ = [
    "CODEC_LZ4",
    "CODEC_NONE",
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "BatchBuilder",
    "BatchHeader",
    "CorruptBatchError",
    "Header",
    "Record",
    "assign_offsets",
    "build_batch",
    "build_control_batch",
    "control_type",
    "CONTROL_ABORT",
    "CONTROL_COMMIT",
    "COMPILED_DECODER",
    "decode_batches",
    "decode_columns",
    "decode_records",
    "decode_tuples",
    "parse_header",
    "raw_records",
    "rebuild_batch",
    "set_base_offset",
    "set_partition_leader_epoch",
    "split_batches",
    "validate_batch",
    "validate_records",
    "with_base_offset",
    "with_partition_leader_epoch",
]

MAGIC = 2
HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes batchLength does not count
_CRC_START = 21  # the CRC covers attributes .. end of batch
_LOD_OFFSET = 23
_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # 49: a batch with no records

CODEC_NONE = 0
CODEC_GZIP = 1  # read (Kafka clients produce it), never written here
CODEC_SNAPPY = 2  # read, never written: Kafka clients produce it
CODEC_LZ4 = 3
CODEC_ZSTD = 4  # read, never written: Kafka clients produce it
_READABLE_CODECS = (CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD)
_CODEC_MASK = 0x07
_TIMESTAMP_TYPE_MASK = 0x08
_TRANSACTIONAL_MASK = 0x10
_CONTROL_MASK = 0x20
_CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_COMPRESSIONS = {"none": CODEC_NONE, "lz4": CODEC_LZ4}

_HEADER = struct.Struct(">qiibIhiqqqhii")
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. recordCount (first CRC-covered bytes)
_PREFIX = struct.Struct(">qiibI")  # baseOffset .. crc
_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")
assert _HEADER.size == HEADER_SIZE

_INT32_MAX = 2**31 - 1
_tuple_new = tuple.__new__
_DEFAULT_MAX_BYTES = 1 << 20

Header = tuple[str, bytes | None]


class CorruptBatchError(ValueError):
    """A buffer is not a valid RecordBatch v2 (bad CRC, length, magic, codec or records)."""


class Record(NamedTuple):
    """One record. ``offset`` and ``timestamp_ms`` are always set on decoded records;
    when building, ``timestamp_ms=None`` means "now" and ``offset`` is ignored."""

    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    timestamp_ms: int | None = None
    offset: int = -1


class BatchHeader(NamedTuple):
    """The 61-byte batch header, as stored."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> str:
        code = self.attributes & _CODEC_MASK
        return _CODEC_NAMES.get(code, f"unknown({code})")

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & _TIMESTAMP_TYPE_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_MASK)


# --------------------------------------------------------------------------- varints


def _zigzag_varint(n: int) -> bytes:
    """Zigzag + LEB128 encoding of a signed 64-bit integer."""
    if not -(2**63) <= n < 2**63:
        raise ValueError(f"value {n} does not fit a signed 64-bit varlong")
    z = ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Encoded zigzag varints of 0 .. _VT-1 (1 to 3 bytes): one list lookup per field instead of
# a loop. Covers offset deltas, small timestamp deltas and key/value lengths below 16 KiB.
_VT = 1 << 14
_VARINT: list[bytes] = [_zigzag_varint(i) for i in range(_VT)]
_NULL = b"\x01"  # zigzag(-1)
_ZERO = b"\x00"


# --------------------------------------------------------------------------- building


def _encode_headers(headers: Sequence[Header]) -> bytes:
    n = len(headers)
    parts = [_VARINT[n] if n < _VT else _zigzag_varint(n)]
    for hk, hv in headers:
        if not isinstance(hk, str):
            raise TypeError(f"record header keys must be str, got {type(hk).__name__}")
        kb = hk.encode("utf-8")
        parts.append(_VARINT[len(kb)] if len(kb) < _VT else _zigzag_varint(len(kb)))
        parts.append(kb)
        if hv is None:
            parts.append(_NULL)
        else:
            parts.append(_VARINT[len(hv)] if len(hv) < _VT else _zigzag_varint(len(hv)))
            parts.append(hv)
    return b"".join(parts)


class BatchBuilder:
    """Accumulates records into one RecordBatch v2.

    ``max_bytes`` bounds the *uncompressed* batch size (header included). ``append``
    returns False, adding nothing, when the record would push the batch over it; an empty
    builder always accepts its first record, so a record bigger than the limit still gets
    a batch of its own (the broker enforces the hard maximum). With ``compression="lz4"``
    the records section is an LZ4 frame with independent 64 KiB blocks, as Kafka writes;
    if compressing would not shrink it, the batch is written uncompressed instead (codec
    none, which every reader accepts), so ``len(build()) <= max_bytes`` whenever more than
    one record was appended.
    """

    __slots__ = (
        "_buf",
        "_codec",
        "_count",
        "_base_ts",
        "_max_ts",
        "_max_bytes",
        "_producer_id",
        "_producer_epoch",
        "_base_sequence",
        "_partition_leader_epoch",
        "_attributes",
    )

    def __init__(
        self,
        compression: str = "lz4",
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
        max_bytes: int = _DEFAULT_MAX_BYTES,
        partition_leader_epoch: int = -1,
        transactional: bool = False,
    ) -> None:
        if transactional and producer_id < 0:
            raise ValueError("a transactional batch needs a producer id (>= 0)")
        self._attributes = _TRANSACTIONAL_MASK if transactional else 0
        try:
            self._codec = _COMPRESSIONS[compression]
        except KeyError:
            raise ValueError(
                f"unsupported compression {compression!r}: use 'lz4' or 'none'"
            ) from None
        if max_bytes < HEADER_SIZE:
            raise ValueError(f"max_bytes must be at least {HEADER_SIZE} (the batch header)")
        # the header is written in place at build(); records follow it directly
        self._buf = bytearray(HEADER_SIZE)
        self._count = 0
        self._base_ts = -1
        self._max_ts = -1
        self._max_bytes = max_bytes
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._partition_leader_epoch = partition_leader_epoch

    def __len__(self) -> int:
        return self._count

    @property
    def size_in_bytes(self) -> int:
        """Current uncompressed batch size, header included."""
        return len(self._buf)

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Header] = (),
        timestamp_ms: int | None = None,
    ) -> bool:
        """Add one record; False (and nothing added) if it would exceed ``max_bytes``."""
        if timestamp_ms is None:
            timestamp_ms = _time_ns() // 1_000_000
        n = self._count
        if n:
            d = timestamp_ms - self._base_ts
            tsd = _VARINT[d] if 0 <= d < _VT else _zigzag_varint(d)
            od = _VARINT[n] if n < _VT else _zigzag_varint(n)
        else:
            tsd = od = _ZERO
        if key is None:
            kp = _NULL
            key = b""
        else:
            kl = len(key)
            kp = _VARINT[kl] if kl < _VT else _zigzag_varint(kl)
        if value is None:
            vp = _NULL
            value = b""
        else:
            vl = len(value)
            vp = _VARINT[vl] if vl < _VT else _zigzag_varint(vl)
        hb = _encode_headers(headers) if headers else _ZERO
        body = b"".join((_ZERO, tsd, od, kp, key, vp, value, hb))
        bl = len(body)
        lp = _VARINT[bl] if bl < _VT else _zigzag_varint(bl)
        buf = self._buf
        if n:
            if len(buf) + len(lp) + bl > self._max_bytes:
                return False
            if n >= _INT32_MAX:
                return False
            if timestamp_ms > self._max_ts:
                self._max_ts = timestamp_ms
        else:
            self._base_ts = self._max_ts = timestamp_ms
        buf += lp
        buf += body
        self._count = n + 1
        return True

    def extend(self, records: Iterable[Record | Sequence[object]]) -> int:
        """Append many records (Records or (key, value[, headers[, timestamp_ms]]) tuples)
        in one call, without a method call per record. Stops at the first record that
        does not fit ``max_bytes`` and returns how many were appended."""
        buf = self._buf
        n = self._count
        base_ts = self._base_ts
        max_ts = self._max_ts
        limit = self._max_bytes
        start = n
        now = -1
        vt = _VT
        varint = _VARINT
        try:
            for r in records:
                if len(r) == 2:
                    key, value = r  # type: ignore[misc]
                    headers: Sequence[Header] = ()
                    ts = None
                else:
                    key, value, headers, ts = r[:4]  # type: ignore[misc]
                if ts is None:
                    if now < 0:  # one clock read per call: the records arrive together
                        now = _time_ns() // 1_000_000
                    ts = now
                if n:
                    d = ts - base_ts
                    tsd = varint[d] if 0 <= d < vt else _zigzag_varint(d)
                    od = varint[n] if n < vt else _zigzag_varint(n)
                else:
                    tsd = od = _ZERO
                if key is None:
                    kp = _NULL
                    key = b""
                else:
                    kl = len(key)
                    kp = varint[kl] if kl < vt else _zigzag_varint(kl)
                if value is None:
                    vp = _NULL
                    value = b""
                else:
                    vl = len(value)
                    vp = varint[vl] if vl < vt else _zigzag_varint(vl)
                hb = _encode_headers(headers) if headers else _ZERO
                body = b"".join((_ZERO, tsd, od, kp, key, vp, value, hb))
                bl = len(body)
                lp = varint[bl] if bl < vt else _zigzag_varint(bl)
                if n:
                    if len(buf) + len(lp) + bl > limit or n >= _INT32_MAX:
                        break
                    if ts > max_ts:
                        max_ts = ts
                else:
                    base_ts = max_ts = ts
                buf += lp
                buf += body
                n += 1
        finally:
            self._count = n
            self._base_ts = base_ts
            self._max_ts = max_ts
        return n - start

    def build(self, base_offset: int = 0) -> bytes:
        """The finished batch (the builder stays usable; more appends extend it)."""
        n = self._count
        buf = self._buf
        codec = self._codec
        if codec == CODEC_LZ4 and n:
            packed = _lz4frame.compress(
                memoryview(buf)[HEADER_SIZE:],
                block_size=_lz4frame.BLOCKSIZE_MAX64KB,
                block_linked=False,  # Kafka rejects dependent blocks
                content_checksum=False,
                store_size=False,
            )
            if len(packed) < len(buf) - HEADER_SIZE:
                out = bytearray(HEADER_SIZE)
                out += packed
            else:
                out = buf  # incompressible: store it plain (the header is rewritten each build)
                codec = CODEC_NONE
        else:
            out = buf
            codec = CODEC_NONE
        try:
            _TAIL.pack_into(
                out,
                _CRC_START,
                codec | self._attributes,
                n - 1,
                self._base_ts,
                self._max_ts,
                self._producer_id,
                self._producer_epoch,
                self._base_sequence,
                n,
            )
            crc = _crc32c(memoryview(out)[_CRC_START:])
            _PREFIX.pack_into(
                out,
                0,
                base_offset,
                len(out) - LOG_OVERHEAD,
                self._partition_leader_epoch,
                MAGIC,
                crc,
            )
        except struct.error as e:
            raise ValueError(f"record batch header field out of range: {e}") from None
        return bytes(out)


def build_batch(
    records: Iterable[Record | Sequence[object]],
    compression: str = "lz4",
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    transactional: bool = False,
) -> bytes:
    """One batch holding all ``records`` (Records or (key, value[, headers[, ts]]) tuples)."""
    b = BatchBuilder(
        compression,
        producer_id,
        producer_epoch,
        base_sequence,
        max_bytes=2**31 - 1,
        transactional=transactional,
    )
    b.extend(records)
    return b.build(base_offset)


# --------------------------------------------------------------------------- control batches

CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")  # version 0 | type (0 abort, 1 commit)
_CONTROL_VALUE = struct.Struct(">hi")  # version 0 | coordinator epoch


def build_control_batch(producer_id: int, producer_epoch: int, commit: bool,
                        coordinator_epoch: int, timestamp_ms: int,
                        base_offset: int = 0) -> bytes:
    """A transaction marker exactly as Kafka writes it: a batch with the transactional and
    control bits set, the producer's id and epoch, baseSequence -1, no compression, and
    one record whose key is ``version int16 (0) | type int16 (0 abort, 1 commit)`` and whose
    value is ``version int16 (0) | coordinator epoch int32``."""
    if producer_id < 0 or producer_epoch < 0:
        raise ValueError("a transaction marker needs a producer id and epoch (>= 0)")
    b = BatchBuilder("none", producer_id, producer_epoch, -1, max_bytes=2**31 - 1,
                     transactional=True)
    b.append(_CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT),
             _CONTROL_VALUE.pack(0, coordinator_epoch), timestamp_ms=timestamp_ms)
    b._attributes |= _CONTROL_MASK
    return b.build(base_offset)


def control_type(key: bytes | None) -> int | None:
    """The marker type (CONTROL_ABORT / CONTROL_COMMIT) of a control record's key, or None
    if the key is not a transaction marker's."""
    if key is None or len(key) < _CONTROL_KEY.size:
        return None
    version, kind = _CONTROL_KEY.unpack_from(key, 0)
    return kind if version == 0 and kind in (CONTROL_ABORT, CONTROL_COMMIT) else None


# --------------------------------------------------------------------------- validating


def _corrupt(offset: int, msg: str) -> CorruptBatchError:
    where = f"record batch at byte {offset}: " if offset else "record batch: "
    return CorruptBatchError(where + msg)


def parse_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> BatchHeader:
    """Parse and validate the batch starting at ``offset`` (header fields and CRC).

    The batch may be followed by more bytes (see :func:`split_batches`); records are not
    decoded. Raises CorruptBatchError.
    """
    avail = len(buf) - offset
    if avail < HEADER_SIZE:
        raise _corrupt(
            offset,
            f"truncated: a batch header needs {HEADER_SIZE} bytes but only {max(avail, 0)} "
            "remain; the buffer was cut short or is not a record batch",
        )
    h: BatchHeader = _tuple_new(BatchHeader, _HEADER.unpack_from(buf, offset))
    if h.magic != MAGIC:
        raise _corrupt(
            offset,
            f"unsupported magic {h.magic} (expected {MAGIC}); the producer uses the old "
            "v0/v1 message format or the bytes are not a RecordBatch v2 (use a Kafka "
            "0.11+ style client)",
        )
    bl = h.batch_length
    if bl < _MIN_BATCH_LENGTH:
        raise _corrupt(
            offset,
            f"batchLength {bl} is smaller than the {_MIN_BATCH_LENGTH}-byte header it must "
            "cover; the length field is corrupt",
        )
    end = offset + LOG_OVERHEAD + bl
    if end > len(buf):
        raise _corrupt(
            offset,
            f"batchLength {bl} says the batch is {bl + LOG_OVERHEAD} bytes but only {avail} "
            "remain; the batch was truncated in transit or its length field is corrupt",
        )
    crc = _crc32c(memoryview(buf)[offset + _CRC_START : end])
    if crc != h.crc:
        raise _corrupt(
            offset,
            f"CRC mismatch: stored 0x{h.crc:08x}, computed 0x{crc:08x}; the batch was "
            "corrupted in transit or built wrongly (the CRC-32C covers attributes..end)",
        )
    codec = h.attributes & _CODEC_MASK
    if codec != CODEC_NONE and codec not in _READABLE_CODECS:
        raise _corrupt(
            offset,
            f"unknown compression codec {codec}; Kafka's are none (0), gzip (1), snappy (2), "
            "lz4 (3) and zstd (4): the attributes field is corrupt",
        )
    count = h.record_count
    if count < 0:
        raise _corrupt(offset, f"negative recordCount {count}; the header is corrupt")
    if count and h.last_offset_delta < count - 1:
        # A compacted batch (rebuild_batch) keeps its lastOffsetDelta with fewer records;
        # a produced one must match exactly (validate_records checks that).
        raise _corrupt(
            offset,
            f"lastOffsetDelta {h.last_offset_delta} is below recordCount {count} - 1; "
            "the producer built an inconsistent batch",
        )
    return h


def validate_batch(buf: bytes | bytearray | memoryview) -> BatchHeader:
    """Validate a buffer that must hold exactly one batch (no trailing bytes)."""
    h = parse_header(buf)
    if h.size != len(buf):
        raise CorruptBatchError(
            f"record batch: batchLength {h.batch_length} says the batch is {h.size} bytes but "
            f"the buffer holds {len(buf)}; the length field is corrupt or extra bytes were "
            "appended"
        )
    return h


def split_batches(buf: bytes | bytearray | memoryview) -> list[tuple[int, int]]:
    """(start, end) of every batch in a concatenation, each header and CRC validated.

    The whole buffer must be batches: trailing bytes that are not a complete valid batch
    raise CorruptBatchError naming their position. No records are decoded.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    n = len(buf)
    while pos < n:
        h = parse_header(buf, pos)
        end = pos + h.batch_length + LOG_OVERHEAD
        spans.append((pos, end))
        pos = end
    return spans


# --------------------------------------------------------------------------- rewriting


def set_base_offset(buf: bytearray | memoryview, base_offset: int, offset: int = 0) -> None:
    """Write baseOffset in place (the CRC does not cover it, so it stays valid)."""
    if len(buf) - offset < LOG_OVERHEAD:
        raise CorruptBatchError("record batch: too short to hold a baseOffset field")
    try:
        _I64.pack_into(buf, offset, base_offset)
    except struct.error:
        raise ValueError(f"base offset {base_offset} does not fit int64") from None


def with_base_offset(batch: bytes | bytearray | memoryview, base_offset: int) -> bytes:
    """A copy of ``batch`` with baseOffset replaced (no CRC recompute needed)."""
    out = bytearray(batch)
    set_base_offset(out, base_offset)
    return bytes(out)


def set_partition_leader_epoch(
    buf: bytearray | memoryview, epoch: int, offset: int = 0
) -> None:
    """Write partitionLeaderEpoch in place (outside the CRC)."""
    if len(buf) - offset < 16:
        raise CorruptBatchError("record batch: too short to hold a partitionLeaderEpoch field")
    try:
        _I32.pack_into(buf, offset + 12, epoch)
    except struct.error:
        raise ValueError(f"partition leader epoch {epoch} does not fit int32") from None


def with_partition_leader_epoch(batch: bytes | bytearray | memoryview, epoch: int) -> bytes:
    """A copy of ``batch`` with partitionLeaderEpoch replaced."""
    out = bytearray(batch)
    set_partition_leader_epoch(out, epoch)
    return bytes(out)


def assign_offsets(
    buf: bytearray | memoryview,
    base_offset: int,
    spans: Sequence[tuple[int, int]],
    partition_leader_epoch: int | None = None,
) -> int:
    """Give consecutive offsets to the already-validated batches at ``spans`` (as returned
    by :func:`split_batches`), in place; returns the next free offset."""
    nxt = base_offset
    for start, _end in spans:
        _I64.pack_into(buf, start, nxt)
        if partition_leader_epoch is not None:
            _I32.pack_into(buf, start + 12, partition_leader_epoch)
        nxt += _I32.unpack_from(buf, start + _LOD_OFFSET)[0] + 1
    return nxt


def rebuild_batch(batch: bytes | bytearray | memoryview, offset: int, header: BatchHeader,
                  records: Sequence[RawRecord]) -> bytes:
    """The batch at ``offset`` rewritten to hold only ``records`` (a subset of its own, as
    :func:`raw_records` decoded them, in order): log compaction. Every header field but
    attributes' codec, batchLength, CRC and recordCount is kept, so the batch keeps its
    baseOffset, lastOffsetDelta, timestamps and producer id/epoch/base sequence: offsets
    and the idempotent producer state are unchanged, and records keep their own offset
    and timestamp (their deltas are no longer 0, 1, 2, ...: readers use the deltas). An
    empty ``records`` gives an empty batch (61 bytes, recordCount 0), which Kafka's
    readers skip.

    The result depends only on the header and ``records``: the records section is lz4
    compressed if that makes it smaller, else stored plain (whatever the original codec
    was), so rebuilding an already rebuilt batch with the same records gives the same
    bytes, on every replica."""
    base_offset, base_ts = header.base_offset, header.base_timestamp
    varint = _VARINT
    buf = bytearray()
    for r in records:
        d = r.timestamp - base_ts
        tsd = varint[d] if 0 <= d < _VT else _zigzag_varint(d)
        n = r.offset - base_offset
        od = varint[n] if 0 <= n < _VT else _zigzag_varint(n)
        key, value = r.key, r.value
        if key is None:
            kp, key = _NULL, b""
        else:
            kp = varint[len(key)] if len(key) < _VT else _zigzag_varint(len(key))
        if value is None:
            vp, value = _NULL, b""
        else:
            vp = varint[len(value)] if len(value) < _VT else _zigzag_varint(len(value))
        hb = _encode_headers(r.headers) if r.headers else _ZERO
        body = b"".join((_ZERO, tsd, od, kp, key, vp, value, hb))
        bl = len(body)
        buf += varint[bl] if bl < _VT else _zigzag_varint(bl)
        buf += body
    codec = CODEC_NONE
    section: bytes | bytearray = buf
    if buf:
        packed = _lz4frame.compress(bytes(buf), block_size=_lz4frame.BLOCKSIZE_MAX64KB,
                                    block_linked=False, content_checksum=False,
                                    store_size=False)
        if len(packed) < len(buf):
            section, codec = packed, CODEC_LZ4
    out = bytearray(HEADER_SIZE)
    out += section
    attributes = (header.attributes & ~_CODEC_MASK) | codec
    _TAIL.pack_into(out, _CRC_START, attributes, header.last_offset_delta, base_ts,
                    header.max_timestamp, header.producer_id, header.producer_epoch,
                    header.base_sequence, len(records))
    crc = _crc32c(memoryview(out)[_CRC_START:])
    _PREFIX.pack_into(out, 0, base_offset, len(out) - LOG_OVERHEAD,
                      header.partition_leader_epoch, MAGIC, crc)
    return bytes(out)


# --------------------------------------------------------------------------- decoding
# Records are decoded by aiokafka's compiled (Cython) RecordBatch v2 reader: per-record
# varint parsing is the consumer's hot loop, and in pure Python it capped a reader near
# 0.4-0.9M records/s on this machine against ~3M/s compiled (bench/README.md). We decompress
# lz4 ourselves (with the size guard below) and hand it the uncompressed section behind a
# copy of the header whose codec bits are cleared; the CRC was checked (or skipped on
# purpose) before, on the original bytes.


class RawRecord(Protocol):
    """A decoded record as :func:`raw_records` returns it (aiokafka's record type)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]


# The most a batch's records section may decompress to: the largest message gRPC carries
# between our nodes and clients (64 MiB), so nothing that decompresses beyond it can be a
# batch anyone could have fetched whole.
DECOMPRESSED_BYTES_MAX = 64 << 20
LZ4_FIRST_OUTPUT_BYTES = 4 << 20  # see _lz4_decompress


def _lz4_decompress(section: memoryview) -> bytes:
    # A frame may declare its content size (FLG bit 3; 8 bytes little-endian after FLG/BD).
    # LZ4 cannot expand more than ~255x, so a larger claim is corruption, and trusting it
    # would make the decompressor try to allocate it.
    bound = DECOMPRESSED_BYTES_MAX
    if len(section) >= 14 and section[4] & 0x08:
        declared = int.from_bytes(section[6:14], "little")
        if declared > 255 * len(section) + 65536:
            raise CorruptBatchError(
                f"record batch: lz4 frame claims {declared} decompressed bytes from "
                f"{len(section)} compressed; the batch is corrupt"
            )
        # The output buffer is allocated at max_length up front: bounding by the declared
        # size (plus one byte, to notice a frame that holds more than it claims) keeps a
        # 100 KiB batch from costing a 64 MiB allocation (~25 us a batch on the read path).
        bound = min(bound, declared + 1)
    # A frame that does not declare its size can still expand ~255x: a 1 MiB batch of
    # zeros would become 255 MiB in memory while the broker checks it. Stop at the bound.
    # Neither our client nor librdkafka declares the size, and the output buffer of each
    # call is allocated at its max_length up front: a first call of the whole 64 MiB bound
    # took ~2 ms a batch on a loaded machine (a fresh mapping whose pages fault in, every
    # time), against ~0.17 ms for a 4 MiB buffer, which the allocator reuses. So the output
    # comes in pieces, LZ4_FIRST_OUTPUT_BYTES first, then doubling, up to the bound.
    decompressor = _lz4frame.LZ4FrameDecompressor()
    try:
        plain = decompressor.decompress(section, max_length=min(bound, LZ4_FIRST_OUTPUT_BYTES))
        if not decompressor.eof and not decompressor.needs_input and len(plain) < bound:
            parts = [plain]
            total = len(plain)
            while not decompressor.eof and not decompressor.needs_input and total < bound:
                more = decompressor.decompress(b"", max_length=min(bound - total, total))
                if not more:
                    break
                parts.append(more)
                total += len(more)
            plain = b"".join(parts)
    except (RuntimeError, ValueError, MemoryError) as e:
        raise CorruptBatchError(
            f"record batch: lz4 frame does not decompress ({e!r}); the batch is corrupt"
        ) from None
    if not decompressor.eof:
        if bound < DECOMPRESSED_BYTES_MAX and len(plain) >= bound:
            raise CorruptBatchError(
                f"record batch: lz4 frame holds more than the {bound - 1} bytes it declares; "
                "the batch is corrupt"
            )
        if len(plain) >= DECOMPRESSED_BYTES_MAX:
            raise CorruptBatchError(
                f"record batch: its records decompress to more than {DECOMPRESSED_BYTES_MAX} "
                f"bytes (from {len(section)} compressed); send smaller batches"
            )
        raise CorruptBatchError("record batch: lz4 frame is truncated; the batch is corrupt")
    return plain


def _gzip_decompress(section: memoryview) -> bytes:
    # Bounded like lz4: at most DECOMPRESSED_BYTES_MAX come out, whatever the input claims.
    decompressor = _zlib.decompressobj(16 + _zlib.MAX_WBITS)  # a gzip member
    try:
        plain = decompressor.decompress(section, DECOMPRESSED_BYTES_MAX)
    except _zlib.error as e:
        raise CorruptBatchError(
            f"record batch: gzip section does not decompress ({e}); the batch is corrupt"
        ) from None
    if decompressor.unconsumed_tail:
        raise CorruptBatchError(
            f"record batch: its records decompress to more than {DECOMPRESSED_BYTES_MAX} "
            f"bytes (from {len(section)} compressed); send smaller batches"
        )
    if not decompressor.eof:
        raise CorruptBatchError("record batch: gzip section is truncated; the batch is corrupt")
    return plain


# What aiokafka's compiled reader raises on a records section that does not decode (bad
# varints or lengths, a header key that is not UTF-8, bytes left over or missing).
_DECODE_ERRORS = (_CorruptRecord, UnicodeDecodeError, IndexError, ValueError, OverflowError,
                  struct.error)


def _plain_batch(batch: bytes | bytearray | memoryview, offset: int,
                 verify: bool) -> tuple[BatchHeader, bytes]:
    """The header of the batch at ``offset`` and the batch's bytes with the records section
    decompressed (codec bits cleared), ready for the compiled reader. ``verify``: the
    header and CRC are checked first (``parse_header``)."""
    h, data, start, end = _records_section(batch, offset,
                                           parse_header(batch, offset) if verify else None)
    if h.attributes & _CODEC_MASK == CODEC_NONE:
        return h, bytes(memoryview(batch)[offset:end])
    header = bytearray(memoryview(batch)[offset : offset + HEADER_SIZE])
    header[22] &= 0xFF ^ _CODEC_MASK  # attributes' low byte: codec "none"
    return h, bytes(header) + data


_XERIAL_MAGIC = b"\x82SNAPPY\x00"  # snappy-java's framing, what the Java client sends


def _snappy_decompress(section: memoryview) -> bytes:
    """Kafka's snappy: snappy-java's xerial framing (16-byte header, then blocks of
    big-endian int32 length + raw snappy) or one raw snappy block (librdkafka may send
    either). Every block's declared length (its varint preamble) is checked against the
    bound before cramjam allocates it."""
    if bytes(section[:8]) == _XERIAL_MAGIC and len(section) >= 16:
        blocks, pos = [], 16
        while pos < len(section):
            if pos + 4 > len(section):
                raise CorruptBatchError("record batch: snappy block length is truncated; "
                                        "the batch is corrupt")
            size = int.from_bytes(section[pos : pos + 4], "big", signed=True)
            if size < 0 or pos + 4 + size > len(section):
                raise CorruptBatchError(f"record batch: snappy block of {size} bytes at "
                                        f"{pos} overruns the section; the batch is corrupt")
            blocks.append(section[pos + 4 : pos + 4 + size])
            pos += 4 + size
    else:
        blocks = [section]
    out, total = [], 0
    for block in blocks:
        declared, shift, i = 0, 0, 0
        while True:  # the raw block's preamble: its uncompressed length, a varint
            if i >= len(block) or i > 4:
                raise CorruptBatchError("record batch: snappy block has no valid length "
                                        "preamble; the batch is corrupt")
            byte = block[i]
            declared |= (byte & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if not byte & 0x80:
                break
        total += declared
        if total > DECOMPRESSED_BYTES_MAX:
            raise CorruptBatchError(
                f"record batch: its records decompress to more than {DECOMPRESSED_BYTES_MAX} "
                f"bytes (from {len(section)} compressed); send smaller batches")
        try:
            out.append(bytes(_cramjam.snappy.decompress_raw(block)))
        except _cramjam.DecompressionError as e:
            raise CorruptBatchError(f"record batch: snappy section does not decompress "
                                    f"({e}); the batch is corrupt") from None
    return out[0] if len(out) == 1 else b"".join(out)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_declared_size(section: memoryview) -> int | None:
    """The Frame_Content_Size of a zstd frame header (RFC 8878 3.1.1.1), None if absent."""
    if len(section) < 6 or bytes(section[:4]) != _ZSTD_MAGIC:
        raise CorruptBatchError("record batch: the zstd section is not a zstd frame; the "
                                "batch is corrupt")
    fhd = section[4]
    fcs_flag, single_segment, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    if pos + size > len(section):
        raise CorruptBatchError("record batch: zstd frame header is truncated; the batch "
                                "is corrupt")
    value = int.from_bytes(section[pos : pos + size], "little")
    return value + 256 if size == 2 else value


def _zstd_decompress(section: memoryview) -> bytes:
    """Into a buffer the size the frame declares (one byte more, to notice a frame that
    holds more than it claims), or the bound when it declares none: never more."""
    declared = _zstd_declared_size(section)
    if declared is not None and declared > DECOMPRESSED_BYTES_MAX:
        raise CorruptBatchError(
            f"record batch: its records decompress to {declared} bytes, more than "
            f"{DECOMPRESSED_BYTES_MAX}; send smaller batches")
    out = bytearray(DECOMPRESSED_BYTES_MAX if declared is None else declared + 1)
    try:
        n = _cramjam.zstd.decompress_into(bytes(section), out)
    except _cramjam.DecompressionError as e:
        raise CorruptBatchError(f"record batch: zstd section does not decompress into "
                                f"{len(out)} bytes ({e}); the batch is corrupt or its "
                                "records exceed the bound") from None
    if declared is not None and n != declared:
        raise CorruptBatchError(f"record batch: zstd frame declares {declared} bytes but "
                                f"holds {n}; the batch is corrupt")
    return bytes(memoryview(out)[:n])


_DECOMPRESSORS = {CODEC_LZ4: _lz4_decompress, CODEC_GZIP: _gzip_decompress,
                  CODEC_SNAPPY: _snappy_decompress, CODEC_ZSTD: _zstd_decompress}


def raw_records(
    batch: bytes | bytearray | memoryview, offset: int = 0, verify: bool = True
) -> list[RawRecord]:
    """The records of the batch at ``offset`` as light objects (``offset``, ``timestamp``,
    ``key``, ``value``, ``headers`` as a list of (str, bytes | None)), with absolute offsets
    and timestamps, lz4 decompressed. ``verify=False`` skips the CRC check only. The
    cheapest way to read records: readers build their own record type from these."""
    h, plain = _plain_batch(batch, offset, verify)
    try:
        records = list(_CompiledBatch(plain))
    except _DECODE_ERRORS as e:
        raise CorruptBatchError(
            f"record batch: the records section does not decode ({e}); the batch is corrupt"
        ) from None
    if len(records) != h.record_count:
        raise CorruptBatchError(
            f"record batch: {len(records)} records decoded where the header announces "
            f"{h.record_count}; recordCount or the records section is corrupt"
        )
    return records


def validate_records(batch: bytes | bytearray | memoryview, offset: int = 0,
                     header: BatchHeader | None = None) -> None:
    """Check that the batch at ``offset`` decodes as every reader will decode it: the
    records section decompresses, each record parses and the section holds exactly
    ``recordCount`` records whose offset deltas run 0, 1, 2, ... Header and CRC are
    checked first unless ``header`` (from :func:`parse_header` on the same bytes) is given.

    The node runs this once per produced batch, so that a batch whose CRC is right but
    whose records are not (a producer's encoder bug) is refused at the door instead of
    failing every reader later. With ``raftka.v1._records`` (C) it walks the records
    without building any object (as strict as its decoder, which is at least as strict
    as aiokafka's reader), ~10 ns a record; without it, aiokafka's compiled reader builds
    a record object per record and a comprehension takes their offsets (~0.1 µs a record
    quiet, several times that on a loaded machine). ~2 ns for the header and CRC alone.
    Raises CorruptBatchError naming the batch's byte position in ``batch``."""
    if header is None:
        header = parse_header(batch, offset)
    count = header.record_count
    if header.last_offset_delta != count - 1:
        raise _corrupt(
            offset,
            f"lastOffsetDelta {header.last_offset_delta} does not match recordCount {count} "
            f"(expected {count - 1}); the producer built an inconsistent batch",
        )
    if _compiled_validate is not None:
        _, data, start, end = _records_section(batch, offset)
    else:
        _, plain = _plain_batch(batch, offset, verify=False)
    try:
        if _compiled_validate is not None:
            _compiled_validate(data, start, end, count)  # the count and deltas included
            return
        # offsets only: the reader builds each record (key/value bytes) in compiled code;
        # nothing per record happens in Python besides appending its offset
        offsets = [r.offset for r in _CompiledBatch(plain)]
    except _DECODE_ERRORS as e:
        raise _corrupt(
            offset,
            f"its CRC is right but its records do not decode ({e}); the producer's "
            "encoder wrote a wrong records section (varint lengths, UTF-8 header keys, "
            "recordCount, offset deltas 0, 1, 2, ...): fix it or use a Kafka client library",
        ) from None
    if len(offsets) != count:
        raise _corrupt(
            offset,
            f"{len(offsets)} records decoded where recordCount says {count}; the producer "
            "built an inconsistent batch",
        )
    base = header.base_offset
    if offsets != list(range(base, base + count)):
        wrong = next(i for i, o in enumerate(offsets) if o != base + i)
        raise _corrupt(
            offset,
            f"record {wrong} has offsetDelta {offsets[wrong] - base} (expected {wrong}); "
            "a batch's records must have offset deltas 0, 1, 2, ...",
        )


def decode_records(
    batch: bytes | bytearray | memoryview, offset: int = 0, verify: bool = True
) -> list[Record]:
    """Decode the records of the batch at ``offset`` (decompressing lz4), with absolute
    offsets and timestamps. ``verify=False`` skips the CRC check only."""
    new = _tuple_new
    return [new(Record, (r.key, r.value, tuple(r.headers) if r.headers else (),
                         r.timestamp, r.offset))
            for r in raw_records(batch, offset, verify)]


def decode_batches(buf: bytes | bytearray | memoryview) -> list[Record]:
    """Decode every record of a concatenation of batches, in order."""
    out: list[Record] = []
    for start, _end in split_batches(buf):
        out.extend(decode_records(buf, start, verify=False))
    return out


# ------------------------------------------------------------------ client fast paths
#
# What a reader hands its application: one tuple-subclass object per record, or one list
# per column for the batch API. ``raftka.v1._records`` (C, optional: built by ``pip
# install`` where a compiler is available) builds them straight from the records section,
# without an intermediate object per record; without it the same results come from
# aiokafka's compiled reader and a comprehension (~3x the time per record). Both check the
# same things and raise CorruptBatchError.

COMPILED_DECODER = _compiled_decode is not None


def _records_section(batch: bytes | bytearray | memoryview, offset: int,
                     header: BatchHeader | None = None
                     ) -> tuple[BatchHeader, bytes | bytearray | memoryview, int, int]:
    """(header, data, start, end): the batch at ``offset``'s records section, uncompressed,
    as ``data[start:end]``. An uncompressed batch is not copied. No CRC check (the reader
    checked it when it split the fetch) unless the caller did it: ``header``, from
    ``parse_header`` on the same bytes."""
    h = header
    if h is None:
        if len(batch) - offset < HEADER_SIZE:
            raise CorruptBatchError(
                f"record batch: truncated, a batch header needs {HEADER_SIZE} bytes")
        h = BatchHeader._make(_HEADER.unpack_from(batch, offset))
        if h.magic != MAGIC or h.batch_length < _MIN_BATCH_LENGTH:
            parse_header(batch, offset)  # raises
    end = offset + h.size
    if end > len(batch):
        parse_header(batch, offset)  # raises the truncation error
    codec = h.attributes & _CODEC_MASK
    if codec == CODEC_NONE:
        return h, batch, offset + HEADER_SIZE, end
    decompress = _DECOMPRESSORS.get(codec)
    if decompress is None:
        parse_header(batch, offset)  # raises: unknown codec
        raise AssertionError("unreachable")
    plain = decompress(memoryview(batch)[offset + HEADER_SIZE : end])
    return h, plain, 0, len(plain)


def _compiled(h: BatchHeader, data: bytes | bytearray | memoryview, start: int, end: int,
              first: int, cls: type | None, topic: object, partition: object) -> object:
    assert _compiled_decode is not None
    append_ts = h.max_timestamp if h.attributes & _TIMESTAMP_TYPE_MASK else None
    try:
        return _compiled_decode(data, start, end, h.record_count, h.base_offset,
                                h.base_timestamp, append_ts, first, cls, topic, partition)
    except (ValueError, OverflowError) as e:  # UnicodeDecodeError is a ValueError
        raise CorruptBatchError(
            f"record batch at offset {h.base_offset}: the records section does not decode "
            f"({e}); the batch is corrupt") from None


def decode_tuples(batch: bytes | bytearray | memoryview, offset: int, cls: type,
                  topic: object, partition: object, first: int = -1) -> list:
    """The records at or above offset ``first`` of the batch at ``offset`` as
    ``cls(topic, partition, offset, key, value, headers, timestamp_ms)`` (``cls`` a
    7-field tuple subclass such as the client's ConsumedRecord; headers a tuple of
    (str, bytes | None)). No CRC check: the caller did it (``parse_header``)."""
    if _compiled_decode is not None:
        h, data, start, end = _records_section(batch, offset)
        return _compiled(h, data, start, end, first, cls, topic, partition)  # type: ignore[return-value]
    new, none = _tuple_new, ()
    return [new(cls, (topic, partition, r.offset, r.key, r.value,
                      tuple(hs) if (hs := r.headers) else none, r.timestamp))
            for r in raw_records(batch, offset, verify=False) if r.offset >= first]


def decode_columns(batch: bytes | bytearray | memoryview, offset: int, first: int = -1
                   ) -> tuple[list[int], list[bytes | None], list[bytes | None], list[int],
                              list[tuple[Header, ...]]]:
    """The records at or above offset ``first`` of the batch at ``offset`` as five lists:
    (offsets, keys, values, timestamps_ms, headers), headers a tuple per record. No CRC
    check: the caller did it (``parse_header``)."""
    if _compiled_decode is not None:
        h, data, start, end = _records_section(batch, offset)
        return _compiled(h, data, start, end, first, None, None, None)  # type: ignore[return-value]
    records = [r for r in raw_records(batch, offset, verify=False) if r.offset >= first]
    return ([r.offset for r in records], [r.key for r in records],
            [r.value for r in records], [r.timestamp for r in records],
            [tuple(r.headers) if r.headers else () for r in records])
