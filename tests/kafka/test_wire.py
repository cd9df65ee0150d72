"""The Kafka listener at the byte level: what it advertises, and what it does with requests
that are malformed, truncated, too large or for APIs it does not serve (an answer the
protocol defines, or a closed connection; never a stopped node)."""

from __future__ import annotations

import io
import socket
import struct
import uuid

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from raftka.node._kafka import SUPPORTED
from raftka.node._kafka._apis import SHARE_APIS, TXN_APIS
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
        key: (lo, hi) for key, (_, lo, hi) in {**SUPPORTED, **TXN_APIS, **SHARE_APIS}.items()}


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
        for api_key, (name, low, high) in sorted({**SUPPORTED, **TXN_APIS, **SHARE_APIS}.items()):
            for version in range(low, high + 1):
                cid += 1
                s.sendall(_request(api_key, version, cid, special.get(api_key, {})))
                header, _ = _answer(_read_frame(s), api_key, version)
                assert header.correlation_id == cid, (name, version)
    assert "Traceback" not in kafka_cluster.logs()


def test_errors_clients_act_on_come_with_the_kafka_codes(kafka_cluster: Cluster) -> None:
    """Produce, Fetch and ListOffsets at a node that is not the partition's leader answer
    NOT_LEADER_OR_FOLLOWER; an unknown topic UNKNOWN_TOPIC_OR_PARTITION; a fetch beyond the
    end OFFSET_OUT_OF_RANGE; a group asked at a node that does not coordinate it
    NOT_COORDINATOR (what makes clients refresh metadata or find the coordinator again)."""
    from raftka.v1.recordbatch import Record, build_batch

    kafka_cluster.create_topic("wire-errors", partitions=1)
    leader = kafka_cluster.wait_preferred_leader("wire-errors", 0)
    follower = next(n for n in kafka_cluster.peers if n != leader)
    batch = build_batch([Record(b"k", b"v", (), 1_700_000_000_000)], "none")
    produce = {"acks": -1, "timeout": 10000, "topic_data": [
        {"name": "wire-errors", "partition_data": [{"index": 0, "records": batch}]},
        {"name": "no-such-topic", "partition_data": [{"index": 0, "records": batch}]}]}
    with _connect(kafka_cluster, follower) as s:
        s.sendall(_request(0, 9, 1, produce))
        _, answer = _answer(_read_frame(s), 0, 9)
        codes = {t.name: t.partition_responses[0].error_code for t in answer.responses}
        assert codes == {"wire-errors": ErrorCode.not_leader_or_follower,
                         "no-such-topic": ErrorCode.unknown_topic_or_partition}
        s.sendall(_request(1, 12, 2, {"max_wait": 0, "max_bytes": 1 << 20, "topics": [
            {"topic": "wire-errors", "partitions": [
                {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}]}))
        _, answer = _answer(_read_frame(s), 1, 12)
        assert answer.responses[0].partitions[0].error_code == \
            ErrorCode.not_leader_or_follower
        s.sendall(_request(2, 6, 3, {"replica_id": -1, "topics": [
            {"name": "wire-errors", "partitions": [{"partition_index": 0, "timestamp": -1}]}]}))
        _, answer = _answer(_read_frame(s), 2, 6)
        assert answer.topics[0].partitions[0].error_code == ErrorCode.not_leader_or_follower
    with _connect(kafka_cluster, leader) as s:
        s.sendall(_request(0, 9, 4, produce))
        _, answer = _answer(_read_frame(s), 0, 9)
        assert answer.responses[0].partition_responses[0].error_code == ErrorCode.none
        s.sendall(_request(1, 12, 5, {"max_wait": 0, "max_bytes": 1 << 20, "topics": [
            {"topic": "wire-errors", "partitions": [
                {"partition": 0, "fetch_offset": 99, "partition_max_bytes": 1 << 20}]}]}))
        _, answer = _answer(_read_frame(s), 1, 12)
        assert answer.responses[0].partitions[0].error_code == ErrorCode.offset_out_of_range
    # the group's coordinator, and a node that is not it
    with _connect(kafka_cluster) as s:
        s.sendall(_request(10, 3, 6, {"key": "wire-g", "key_type": 0}))
        _, answer = _answer(_read_frame(s), 10, 3)
        coordinator = answer.node_id
    other = next(n for n in kafka_cluster.peers if n != coordinator)
    with _connect(kafka_cluster, other) as s:
        s.sendall(_request(9, 7, 7, {"group_id": "wire-g", "topics": None}))
        _, answer = _answer(_read_frame(s), 9, 7)
        assert answer.error_code == ErrorCode.not_coordinator


def _share_coordinator(cluster: Cluster, group: str) -> int:
    """The node coordinating ``group`` (FindCoordinator v4)."""
    with _connect(cluster) as s:
        s.sendall(_request(10, 4, 1, {"key_type": 0, "coordinator_keys": [group]}))
        _, found = _answer(_read_frame(s), 10, 4)
    [coordinator] = found.coordinators
    return next(n for n, a in cluster.kafka.items() if a.endswith(f":{coordinator.port}"))


def test_share_sessions_follow_kip_932_epochs(kafka_cluster: Cluster) -> None:
    """ShareFetch (78) without a session, at the wrong epoch, and with acknowledgements in
    the opening request: the KIP-932 errors, a kio-built request each."""
    base = {"group_id": "wire-share", "member_id": "m-1", "max_wait": 0, "min_bytes": 1,
            "max_records": 10, "batch_size": 10, "topics": [], "forgotten_topics_data": []}

    def fetch(s: socket.socket, cid: int, epoch: int, **extra):
        s.sendall(_request(78, 1, cid, {**base, "share_session_epoch": epoch, **extra}))
        header, body = _answer(_read_frame(s), 78, 1)
        assert header.correlation_id == cid
        return body

    with _connect(kafka_cluster) as s:
        assert fetch(s, 1, 3).error_code == ErrorCode.share_session_not_found
        assert fetch(s, 2, 0).error_code == ErrorCode.none  # opens: next epoch is 1
        assert fetch(s, 3, 2).error_code == ErrorCode.invalid_share_session_epoch
        assert fetch(s, 4, 1).error_code == ErrorCode.none
        opening_with_acks = fetch(s, 5, 0, topics=[{
            "topic_id": uuid.uuid4(), "partitions": [{
                "partition_index": 0, "acknowledgement_batches": [
                    {"first_offset": 0, "last_offset": 0, "acknowledge_types": [1]}]}]}])
        assert opening_with_acks.error_code == ErrorCode.invalid_request
    assert "Traceback" not in kafka_cluster.logs()


def test_share_group_heartbeat_assigns_every_partition_and_describe_lists_the_member(
        kafka_cluster: Cluster) -> None:
    """ShareGroupHeartbeat (76) and ShareGroupDescribe (77) at the group's coordinator:
    a member joins with its own id, gets every partition (topics by id) at epoch 1, keeps
    the epoch while nothing changes, is described, and leaves with epoch -1."""
    kafka_cluster.create_topic("wire-share", partitions=2)
    group = "wire-share-group"
    node = _share_coordinator(kafka_cluster, group)
    with _connect(kafka_cluster, node) as s:
        s.sendall(_request(3, 12, 9, {"topics": [{"name": "wire-share",
                                                  "topic_id": uuid.UUID(int=0)}]}))
        _, metadata = _answer(_read_frame(s), 3, 12)
        topic_id = metadata.topics[0].topic_id

        def heartbeat(cid: int, epoch: int, topics):
            s.sendall(_request(76, 1, cid, {"group_id": group, "member_id": "m-1",
                                            "member_epoch": epoch,
                                            "subscribed_topic_names": topics}))
            header, body = _answer(_read_frame(s), 76, 1)
            assert header.correlation_id == cid and body.error_code == ErrorCode.none, body
            return body

        joined = heartbeat(1, 0, ["wire-share"])
        assert joined.member_epoch == 1
        assert [(tp.topic_id, sorted(tp.partitions))
                for tp in joined.assignment.topic_partitions] == [(topic_id, [0, 1])]
        assert heartbeat(2, 1, None).member_epoch == 1  # null: the same subscription
        s.sendall(_request(77, 1, 3, {"group_ids": [group, "no-such-share-group"],
                                      "include_authorized_operations": False}))
        _, described = _answer(_read_frame(s), 77, 1)
        ours, unknown = described.groups
        assert ours.error_code == ErrorCode.none and unknown.error_code != ErrorCode.none
        [member] = ours.members
        assert (member.member_id, member.subscribed_topic_names) == ("m-1", ("wire-share",))
        assert heartbeat(4, -1, None).member_epoch == -1


def test_closing_a_share_session_in_share_fetch_releases_what_the_member_holds(
        kafka_cluster: Cluster) -> None:
    """KIP-932: a ShareFetch at epoch -1 closes the session and releases the member's
    acquired records at once, as a ShareAcknowledge at epoch -1 does: another member gets
    them now, not when the acquisition lock (30 s) expires."""
    from raftka.v1.recordbatch import Record, build_batch

    topic = "wire-share-close"
    kafka_cluster.create_topic(topic, partitions=1)
    leader = kafka_cluster.wait_leader(topic, 0)
    group = "wire-share-close"
    node = _share_coordinator(kafka_cluster, group)
    with _connect(kafka_cluster, node) as s:
        for cid, member in enumerate(("m-1", "m-2")):  # both join: the group exists
            s.sendall(_request(76, 1, cid, {"group_id": group, "member_id": member,
                                            "member_epoch": 0,
                                            "subscribed_topic_names": [topic]}))
            _, joined = _answer(_read_frame(s), 76, 1)
            assert joined.error_code == ErrorCode.none, joined
    with _connect(kafka_cluster, leader) as s:
        s.sendall(_request(3, 12, 1, {"topics": [{"name": topic,
                                                  "topic_id": uuid.UUID(int=0)}]}))
        _, metadata = _answer(_read_frame(s), 3, 12)
        topic_id = metadata.topics[0].topic_id

        def fetch(cid: int, member: str, epoch: int):
            topics = [{"topic_id": topic_id, "partitions": [{"partition_index": 0}]}] \
                if epoch == 0 else []
            s.sendall(_request(78, 1, cid, {
                "group_id": group, "member_id": member, "max_wait": 2000,
                "min_bytes": 1, "max_records": 10, "batch_size": 10,
                "share_session_epoch": epoch, "topics": topics,
                "forgotten_topics_data": []}))
            _, body = _answer(_read_frame(s), 78, 1)
            assert body.error_code == ErrorCode.none, body
            return [(a.first_offset, a.last_offset) for t in body.responses
                    for p in t.partitions for a in p.acquired_records]

        assert fetch(1, "m-1", 0) == []  # a new share group starts at the end (KIP-932)
        kafka_cluster.produce(topic, 0, build_batch(
            [Record(None, b"v%d" % i, (), 1_700_000_000_000) for i in range(3)], "none"))
        assert fetch(2, "m-1", 1) == [(0, 2)]
        fetch(3, "m-1", -1)  # closes the session
        assert fetch(4, "m-2", 0) == [(0, 2)], "released by the close"
    assert "Traceback" not in kafka_cluster.logs()
