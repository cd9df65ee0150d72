"""Fuzz targets: each takes arbitrary bytes and raises only on a bug (an exception other than
the parser's own refusal). Kept free of atheris so that test_fuzz.py replays regression
inputs without it."""

from __future__ import annotations

import struct

from google.protobuf.message import DecodeError

from raftka.node._kafka import SUPPORTED
from raftka.node._kafka._codec import MalformedRequest, fixed_header, parse_request
from raftka.node._transport import MalformedPeerBatch, decode_batch
from raftka.v1 import raft_pb2
from raftka.v1 import recordbatch as rb

_API_VERSIONS = sorted((key, v) for key, (_, lo, hi) in SUPPORTED.items()
                       for v in range(lo, hi + 1))


def _with_valid_frame(data: bytes) -> bytes:
    """The bytes as a batch whose batchLength, magic and CRC are right, so the fuzzer
    reaches the records section instead of stopping at the CRC every time."""
    if len(data) < rb.HEADER_SIZE:
        return data
    out = bytearray(data)
    struct.pack_into(">i", out, 8, len(out) - rb.LOG_OVERHEAD)
    out[16] = rb.MAGIC
    struct.pack_into(">I", out, 17, rb._crc32c(bytes(out[21:])))
    return bytes(out)


def recordbatch(data: bytes) -> None:
    for buf in (data, _with_valid_frame(data)):
        for check in (rb.split_batches, rb.validate_records, rb.decode_records,
                      lambda b: rb.raw_records(b, verify=False), rb.decode_batches,
                      lambda b: rb.decode_tuples(b, 0, tuple, "t", 0),  # C when built
                      lambda b: rb.decode_columns(b, 0)):
            try:
                check(buf)
            except rb.CorruptBatchError:
                pass


def kafka_request(data: bytes) -> None:
    """The first two bytes pick a supported (API, version); the rest is the frame after
    the size prefix, its fixed header patched to that API and version."""
    if len(data) < 2:
        return
    api_key, version = _API_VERSIONS[int.from_bytes(data[:2], "big") % len(_API_VERSIONS)]
    frame = bytearray(data[2:])
    if len(frame) >= 4:
        struct.pack_into(">hh", frame, 0, api_key, version)
    try:
        fixed_header(bytes(frame))
        parse_request(bytes(frame), api_key, version)
    except MalformedRequest:
        pass


def raft_batch(data: bytes) -> None:
    try:
        batch = raft_pb2.RaftBatch.FromString(data)
    except DecodeError:
        return
    try:
        decode_batch(batch)
    except MalformedPeerBatch:
        pass


TARGETS = {"recordbatch": recordbatch, "kafka_request": kafka_request,
           "raft_batch": raft_batch}
