"""The Kafka listener at the byte level: what it advertises, and what it does with requests
that are malformed, truncated, too large or for APIs it does not serve (an answer the
protocol defines, or a closed connection; never a stopped node)."""

from __future__ import annotations

import io
import socket
import struct

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from raftka.node._kafka import SUPPORTED
from raftka.node._kafka._codec import build
from tests.harness import Cluster


def _connect(cluster: Cluster, node: int = 1) -> socket.socket:
    host, port = cluster.kafka[node].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _request(api_key: int, version: int, correlation_id: int, values: dict) -> bytes:
    schema = load_request_schema(api_key, version)
    header_cls = schema.__header_schema__
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, build(header_cls, {
        "request_api_key": api_key, "request_api_version": version,
        "correlation_id": correlation_id, "client_id": "wire-test"}))
    entity_writer(schema)(buf, build(schema, values))
    data = buf.getvalue()
    return struct.pack(">i", len(data)) + data


def _read_frame(s: socket.socket) -> bytes:
    size = struct.unpack(">i", _read_exactly(s, 4))[0]
    return _read_exactly(s, size)


def _read_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def _answer(frame: bytes, api_key: int, version: int):
    schema = load_response_schema(api_key, version)
    header, used = entity_reader(schema.__header_schema__)(frame, 0)
    body, _ = entity_reader(schema)(frame, used)
    return header, body


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionError:
        return True


def _metadata_works(cluster: Cluster, node: int) -> bool:
    with _connect(cluster, node) as s:
        s.sendall(_request(3, 12, 99, {"topics": None}))
        header, body = _answer(_read_frame(s), 3, 12)
    return header.correlation_id == 99 and len(body.brokers) == 3


def test_api_versions_advertises_exactly_the_served_versions(kafka_cluster: Cluster) -> None:
    with _connect(kafka_cluster) as s:
        s.sendall(_request(18, 3, 7, {"client_software_name": "t",
                                      "client_software_version": "1"}))
        header, body = _answer(_read_frame(s), 18, 3)
    assert header.correlation_id == 7
    assert body.error_code == ErrorCode.none
    assert {k.api_key: (k.min_version, k.max_version) for k in body.api_keys} == {
        key: (lo, hi) for key, (_, lo, hi) in SUPPORTED.items()}


def test_api_versions_at_an_unknown_version_gets_unsupported_version_and_the_list(
        kafka_cluster: Cluster) -> None:
    # KIP-511: a client newer than the broker sends its newest ApiVersions; the answer is
    # v0 with UNSUPPORTED_VERSION and the broker's versions, and the connection stays open
    frame = struct.pack(">hhih", 18, 99, 5, 1) + b"x" + b"\0\0\0"
    with _connect(kafka_cluster) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        header, body = _answer(_read_frame(s), 18, 0)
        assert header.correlation_id == 5
        assert body.error_code == ErrorCode.unsupported_version
        assert any(k.api_key == 0 for k in body.api_keys)
        s.sendall(_request(18, 0, 6, {}))
        header, body = _answer(_read_frame(s), 18, 0)
        assert header.correlation_id == 6 and body.error_code == ErrorCode.none


def test_malformed_truncated_unknown_and_oversized_requests_close_only_their_connection(
        kafka_cluster: Cluster) -> None:
    good = _request(3, 12, 1, {"topics": None})
    bad = [
        struct.pack(">ihhi", 8, 3, 12, 1),  # a header without its client id and tags
        struct.pack(">i", 3) + b"\0\0\0",  # shorter than any request header
        struct.pack(">i", len(good) - 7) + good[4:-3],  # the body cut short
        struct.pack(">ihhi", 8, 9999, 0, 1),  # an API key nobody knows
        struct.pack(">ihhi", 8, 0, 99, 1),  # Produce at a version this node does not serve
        struct.pack(">i", 1 << 30),  # a size beyond the limit
        struct.pack(">i", -5),  # a negative size
        struct.pack(">i", 40) + b"\xff" * 40,  # noise
    ]
    for data in bad:
        with _connect(kafka_cluster) as s:
            s.sendall(data)
            assert _closed(s), data
    for node in (1, 2, 3):  # every node still serves
        assert _metadata_works(kafka_cluster, node)
    log = kafka_cluster.logs()
    assert "Traceback" not in log
    assert "closing the connection" in log


def test_pipelined_requests_are_answered_in_order(kafka_cluster: Cluster) -> None:
    with _connect(kafka_cluster) as s:
        s.sendall(b"".join(_request(3, 12, cid, {"topics": None}) if cid % 2 else
                           _request(18, 3, cid, {"client_software_name": "t",
                                                 "client_software_version": "1"})
                           for cid in range(1, 41)))
        ids = [struct.unpack_from(">i", _read_frame(s))[0] for _ in range(40)]
    assert ids == list(range(1, 41))


def test_every_served_api_version_answers_a_minimal_request(kafka_cluster: Cluster) -> None:
    """Each API at each advertised version, with every field at its default (empty names,
    no topics): an answer with the request's correlation id, never a closed connection.
    (Produce with acks=1: acks=0 is answered with silence by design.)"""
    special = {0: {"acks": 1, "timeout": 1000}, 1: {"max_wait": 0}}
    with _connect(kafka_cluster) as s:
        cid = 1000
        for api_key, (name, low, high) in sorted(SUPPORTED.items()):
            for version in range(low, high + 1):
                cid += 1
                s.sendall(_request(api_key, version, cid, special.get(api_key, {})))
                header, _ = _answer(_read_frame(s), api_key, version)
                assert header.correlation_id == cid, (name, version)
    assert "Traceback" not in kafka_cluster.logs()
