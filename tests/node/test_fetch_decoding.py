"""Fetch with ``decode_records`` over stored batches that do not decode (issue 12): never
INTERNAL. The records before such a batch are delivered; a fetch that starts at it gets
CORRUPT_BATCH naming its offsets, and fetching from the offset after it goes on."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c

from raftka.v1 import broker_pb2, errors_pb2
from raftka.v1.recordbatch import HEADER_SIZE, build_batch, with_base_offset
from raftka.node._errors import BrokerError
from raftka.node._services import _add_decoded_records


def _batch(base: int, values: list[bytes], compression: str = "none") -> bytes:
    return with_base_offset(build_batch([(None, v) for v in values], compression), base)


def _undecodable(base: int, count: int) -> bytes:
    """A batch whose header and CRC are right but whose records section is garbage."""
    good = bytearray(_batch(base, [b"x" * 20] * count))
    good[HEADER_SIZE] = 0x7E  # the first record claims 63 bytes
    struct.pack_into(">I", good, 17, crc32c(bytes(good[21:])))
    return bytes(good)


def _fetch(data: bytes, offset: int, read_end: int) -> broker_pb2.FetchResponse:
    """What Fetch's ``_read`` builds: next_offset from the node's entry headers."""
    response = broker_pb2.FetchResponse(next_offset=read_end, high_watermark=read_end)
    _add_decoded_records(response, data, offset, "t/0")
    return response


LOG = _batch(0, [b"a", b"b", b"c"]) + _undecodable(3, 2) + _batch(5, [b"f", b"g"], "lz4")


def test_records_before_a_corrupt_batch_are_delivered_and_the_next_fetch_starts_at_it() -> None:
    response = _fetch(LOG, 0, 7)
    assert [(r.offset, r.value) for r in response.records] == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert response.next_offset == 3


def test_a_fetch_at_a_corrupt_batch_names_its_offsets_and_where_to_go_on() -> None:
    with pytest.raises(BrokerError) as caught:
        _fetch(LOG[len(_batch(0, [b"a", b"b", b"c"])):], 3, 7)
    err = caught.value
    assert err.code == errors_pb2.CORRUPT_BATCH
    assert err.metadata == {"first_offset": "3", "last_offset": "4", "next_offset": "5"}
    assert "offsets 3..4 do not decode" in err.message and "fetch from offset 5" in err.message
    detail = err.rich_status()  # what goes on the wire (grpc-status-details-bin)
    assert detail.code == 3  # INVALID_ARGUMENT, never INTERNAL (13)


def test_the_fetch_after_the_corrupt_batch_reads_on() -> None:
    response = _fetch(_batch(5, [b"f", b"g"], "lz4"), 6, 7)
    assert [(r.offset, r.value) for r in response.records] == [(6, b"g")]
    assert response.next_offset == 7


def test_a_batch_with_a_damaged_header_names_the_rest_of_the_read() -> None:
    damaged = bytearray(_batch(0, [b"a", b"b"]))
    damaged[-1] ^= 0xFF  # CRC mismatch: its own offsets cannot be trusted
    with pytest.raises(BrokerError) as caught:
        _fetch(bytes(damaged), 0, 2)
    assert caught.value.code == errors_pb2.CORRUPT_BATCH
    assert caught.value.metadata["next_offset"] == "2"
