"""Client units that need no broker: Kafka-compatible partitioning, the error table and
its parsing of gRPC trailers, metadata merging, fetch decoding, and CLI argument rules."""

from __future__ import annotations

import concurrent.futures
import os
import random
import threading
import subprocess
import sys
from collections import Counter

import grpc
import pytest
from crc32c import crc32c

from raftka.client import (
    BrokerNotAvailableError,
    CorruptBatchError,
    NoQuorumError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    TopicExistsError,
    UnknownTopicError,
    default_partition,
    error_class_for_code,
    error_from_rpc,
    murmur2,
    parse_bootstrap,
)
from raftka.client import cli
from raftka.v1 import recordbatch
from raftka.client._cluster import (
    BOOTSTRAP_ENV,
    DEFAULT_BOOTSTRAP,
    Cluster,
    ClusterMetadata,
    _merge,
    channel_options,
    resolve_bootstrap,
)
from raftka.client._producer import _Group, _RecordFuture, parse_acks
from raftka.client._retry import Backoff
from raftka.client._reader import PartitionReader
from raftka.client._types import PartitionDescription, TopicDescription, TopicPartition
from raftka.v1 import broker_pb2, errors_pb2

# --------------------------------------------------------------------------- murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Kafka's own expectations).
KAFKA_UTILS_TEST_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}

# Values of Kafka's Utils.murmur2, as pinned by Akka's Murmur2Spec (its Kafka port).
KAFKA_MURMUR2_MORE = {
    b"1": -1993445489,
    b"12": 126087238,
    b"123": -267702483,
    b"1234": -1614185708,
    b"12345": -1188365604,
}


@pytest.mark.parametrize("data,expected", sorted({**KAFKA_UTILS_TEST_MURMUR2,
                                                  **KAFKA_MURMUR2_MORE}.items()))
def test_murmur2_matches_kafka_java_client(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_murmur2_covers_every_tail_length_and_returns_a_java_int() -> None:
    # tails of 0..3 bytes after the 4-byte blocks take different switch branches
    for n in range(0, 12):
        h = murmur2(bytes(range(n)))
        assert -(2**31) <= h < 2**31
    assert murmur2(b"") == murmur2(bytearray()) == murmur2(memoryview(b""))


def test_murmur2_agrees_with_kafka_python_on_random_keys() -> None:
    kafka_default = pytest.importorskip("kafka.partitioner.default")
    rng = random.Random(7)
    for _ in range(500):
        key = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        # kafka-python returns the same 32 bits, possibly as an unsigned number
        assert murmur2(key) & 0xFFFFFFFF == kafka_default.murmur2(key) & 0xFFFFFFFF


def test_default_partition_is_kafkas_to_positive_modulo() -> None:
    for key, h in KAFKA_UTILS_TEST_MURMUR2.items():
        for n in (1, 2, 3, 7, 12, 100):
            assert default_partition(key, n) == (h & 0x7FFFFFFF) % n


def test_default_partition_is_stable_and_spreads_keys() -> None:
    keys = [f"user-{i}".encode() for i in range(12000)]
    first = [default_partition(k, 12) for k in keys]
    assert first == [default_partition(k, 12) for k in keys]  # same key, same partition
    counts = Counter(first)
    assert set(counts) == set(range(12))
    assert min(counts.values()) > 800  # 1000 expected per partition


def test_default_partition_rejects_no_partitions() -> None:
    with pytest.raises(ValueError):
        default_partition(b"k", 0)


# --------------------------------------------------------------------------- errors


class FakeRpcError(grpc.RpcError):
    """What a sync stub raises: a grpc.RpcError that is also a grpc.Call."""

    def __init__(self, code: grpc.StatusCode, details: str = "",
                 trailing: list[tuple[str, bytes | str]] | None = None) -> None:
        self._code = code
        self._details = details
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> list[tuple[str, bytes | str]] | None:
        return self._trailing


def rpc_error(code: grpc.StatusCode, info: errors_pb2.ErrorInfo | None,
              details: str = "details") -> FakeRpcError:
    trailing: list[tuple[str, bytes | str]] = [("other-key", "x")]
    if info is not None:
        trailing.append(("raftka-error-bin", info.SerializeToString()))
    return FakeRpcError(code, details, trailing)


def test_every_error_code_has_its_own_class() -> None:
    codes = [v for v in errors_pb2.ErrorCode.values() if v != errors_pb2.ERROR_CODE_UNSPECIFIED]
    classes = {error_class_for_code(c) for c in codes}
    assert RaftkaError not in classes
    assert len(classes) == len(codes)
    for c in codes:
        assert error_class_for_code(c).code == c


@pytest.mark.parametrize("code,status,retriable,invalid_metadata", [
    (errors_pb2.NOT_LEADER, grpc.StatusCode.FAILED_PRECONDITION, True, True),
    (errors_pb2.UNKNOWN_TOPIC, grpc.StatusCode.NOT_FOUND, True, True),
    (errors_pb2.UNKNOWN_PARTITION, grpc.StatusCode.NOT_FOUND, True, True),
    (errors_pb2.CORRUPT_BATCH, grpc.StatusCode.INVALID_ARGUMENT, False, False),
    (errors_pb2.OFFSET_OUT_OF_RANGE, grpc.StatusCode.OUT_OF_RANGE, False, False),
    (errors_pb2.TOPIC_EXISTS, grpc.StatusCode.ALREADY_EXISTS, False, False),
    (errors_pb2.REQUEST_TOO_LARGE, grpc.StatusCode.RESOURCE_EXHAUSTED, False, False),
    (errors_pb2.NO_QUORUM, grpc.StatusCode.UNAVAILABLE, True, True),
    (errors_pb2.LEADER_NOT_AVAILABLE, grpc.StatusCode.UNAVAILABLE, True, True),
    (errors_pb2.INVALID_REQUEST, grpc.StatusCode.INVALID_ARGUMENT, False, False),
    (errors_pb2.INVALID_CONFIG, grpc.StatusCode.INVALID_ARGUMENT, False, False),
    (errors_pb2.SHUTTING_DOWN, grpc.StatusCode.UNAVAILABLE, True, True),
    (errors_pb2.NOT_ENOUGH_REPLICAS, grpc.StatusCode.FAILED_PRECONDITION, False, False),
    (errors_pb2.INTERNAL_ERROR, grpc.StatusCode.INTERNAL, False, False),
])
def test_error_from_rpc_maps_the_trailer_code_to_its_class(
    code: int, status: grpc.StatusCode, retriable: bool, invalid_metadata: bool
) -> None:
    info = errors_pb2.ErrorInfo(code=code, message="what happened")  # retriable unset
    err = error_from_rpc(rpc_error(status, info), "Produce t/0")
    assert type(err) is error_class_for_code(code)
    assert err.code == code
    assert err.grpc_code == status
    assert err.retriable is retriable
    assert err.invalid_metadata is invalid_metadata
    assert "what happened" in str(err) and "Produce t/0" in str(err)
    assert errors_pb2.ErrorCode.Name(code) in str(err)


def test_not_leader_carries_the_leader() -> None:
    info = errors_pb2.ErrorInfo(code=errors_pb2.NOT_LEADER, message="not the leader",
                                retriable=True, leader_id=2, leader_address="10.0.0.2:7002")
    err = error_from_rpc(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, info))
    assert isinstance(err, NotLeaderError)
    assert (err.leader_id, err.leader_address) == (2, "10.0.0.2:7002")
    assert "10.0.0.2:7002" in str(err)


def test_not_leader_without_a_known_leader() -> None:
    info = errors_pb2.ErrorInfo(code=errors_pb2.NOT_LEADER, message="election")
    err = error_from_rpc(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, info))
    assert isinstance(err, NotLeaderError)
    assert (err.leader_id, err.leader_address) == (0, "")
    assert err.retriable


def test_broker_may_mark_an_error_retriable_but_not_the_reverse() -> None:
    info = errors_pb2.ErrorInfo(code=errors_pb2.INTERNAL_ERROR, message="m", retriable=True)
    assert error_from_rpc(rpc_error(grpc.StatusCode.INTERNAL, info)).retriable
    info = errors_pb2.ErrorInfo(code=errors_pb2.NO_QUORUM, message="m", retriable=False)
    assert error_from_rpc(rpc_error(grpc.StatusCode.UNAVAILABLE, info)).retriable


@pytest.mark.parametrize("status,cls", [
    (grpc.StatusCode.UNAVAILABLE, BrokerNotAvailableError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, RequestTimedOutError),
])
def test_without_a_trailer_unavailable_and_deadline_are_retriable_with_refresh(
    status: grpc.StatusCode, cls: type[RaftkaError]
) -> None:
    for trailing in (None, [], [("unrelated", "x")]):
        err = error_from_rpc(FakeRpcError(status, "connection refused", trailing))
        assert type(err) is cls
        assert err.retriable and err.invalid_metadata
        assert err.code == errors_pb2.ERROR_CODE_UNSPECIFIED
        assert "connection refused" in str(err)


def test_other_statuses_without_a_trailer_are_not_retried() -> None:
    for status in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED,
                   grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                   grpc.StatusCode.PERMISSION_DENIED):
        err = error_from_rpc(FakeRpcError(status, "x"))
        assert isinstance(err, RaftkaError) and not err.retriable


def test_a_garbled_trailer_falls_back_to_the_status() -> None:
    err = error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down",
                                      [("raftka-error-bin", b"\xff\xff\xff not protobuf")]))
    assert isinstance(err, BrokerNotAvailableError)


def test_a_code_newer_than_the_client_keeps_its_number_and_retriable_flag() -> None:
    info = errors_pb2.ErrorInfo(code=99, message="from the future", retriable=True)
    err = error_from_rpc(rpc_error(grpc.StatusCode.UNAVAILABLE, info))
    assert type(err) is RaftkaError
    assert err.code == 99 and err.retriable and err.invalid_metadata
    assert "from the future" in str(err)


def test_error_classes_fit_the_builtin_hierarchy() -> None:
    corrupt = error_from_rpc(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.ErrorInfo(
        code=errors_pb2.CORRUPT_BATCH, message="bad CRC")))
    assert isinstance(corrupt, CorruptBatchError)
    assert isinstance(corrupt, recordbatch.CorruptBatchError)  # one except clause for both
    assert isinstance(RaftkaTimeoutError("t"), TimeoutError)
    assert issubclass(TopicExistsError, RaftkaError)


# --------------------------------------------------------------------------- connection


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("a:1, b:2,,a:1 ") == ["a:1", "b:2"]
    assert parse_bootstrap(["127.0.0.1:7001", "[::1]:7002"]) == ["127.0.0.1:7001", "[::1]:7002"]
    for bad in ("", " , ", "host", "host:", ":7001", "h:0", "h:65536", "h:port", "[::1:7001"):
        with pytest.raises(ValueError):
            parse_bootstrap(bad)


def test_channel_options_set_keepalive_reconnect_backoff_and_64mib() -> None:
    opts = dict(channel_options())
    assert opts["grpc.keepalive_time_ms"] <= 1000
    assert opts["grpc.min_reconnect_backoff_ms"] == 100
    assert opts["grpc.max_reconnect_backoff_ms"] == 500
    assert opts["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    assert opts["grpc.max_send_message_length"] == 64 * 1024 * 1024


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    b = Backoff(0.1, 0.4)
    delays = [b.next() for _ in range(6)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 0.4 for d in delays) and delays[-1] >= 0.2
    b.reset()
    assert b.next() <= 0.1


def _partition(p: int, leader: int, term: int) -> PartitionDescription:
    return PartitionDescription(p, leader, (1, 2, 3), 0, 0, term)


def test_metadata_merge_never_goes_back_to_an_older_leader_term() -> None:
    old = ClusterMetadata({1: "a", 2: "b", 3: "c"}, 1, {
        "t": TopicDescription("t", (_partition(0, 2, 5), _partition(1, 1, 3)), 3)}, 1.0)
    lagging = ClusterMetadata({1: "a", 2: "b", 3: "c"}, 1, {
        "t": TopicDescription("t", (_partition(0, 1, 4), _partition(1, 3, 4)), 3),
        "u": TopicDescription("u", (_partition(0, 3, 1),), 3)}, 2.0)
    merged = _merge(old, lagging)
    t = merged.topics["t"]
    assert (t.partition(0).leader_id, t.partition(0).leader_term) == (2, 5)  # kept
    assert (t.partition(1).leader_id, t.partition(1).leader_term) == (3, 4)  # newer term
    assert "u" in merged.topics and merged.fetched_at == 2.0
    gone = _merge(old, ClusterMetadata({1: "a"}, 1, {}, 3.0))
    assert gone.topics == {}  # a deleted topic disappears


def test_cluster_needs_no_connection_to_answer_from_its_cache() -> None:
    c = Cluster("127.0.0.1:1,127.0.0.1:2")
    try:
        assert c.leader_address("t", 0) is None
        assert c.candidate_addresses() == ["127.0.0.1:1", "127.0.0.1:2"]
        c.note_failure("127.0.0.1:1")
        assert c.candidate_addresses() == ["127.0.0.1:2", "127.0.0.1:1"]  # failed ones last
        c.note_not_leader("t", 0, NotLeaderError("x", leader_id=2, leader_address="h:2"))
        assert c.leader_address("t", 0) == "h:2"
        c.note_failure("h:2")
        assert c.leader_address("t", 0) is None  # a hint that failed is dropped
    finally:
        c.close()


# --------------------------------------------------------------------------- producer/reader


def test_parse_acks() -> None:
    assert parse_acks("all") == parse_acks(-1) == parse_acks("-1") == broker_pb2.ACKS_ALL
    assert parse_acks("1") == parse_acks(1) == broker_pb2.ACKS_LEADER
    assert parse_acks("0") == parse_acks(0) == broker_pb2.ACKS_NONE
    for bad in ("2", 2, "most", None):
        with pytest.raises(ValueError):
            parse_acks(bad)  # type: ignore[arg-type]


def test_record_futures_behave_like_stdlib_futures() -> None:
    shared = threading.Condition()
    futures = [_RecordFuture(shared) for _ in range(3)]
    assert isinstance(futures[0], concurrent.futures.Future)
    assert futures[0].running() and not futures[0].cancel()  # queued records stay queued
    seen: list[object] = []
    futures[0].add_done_callback(lambda f: seen.append(f.result()))
    timer = threading.Timer(0.05, lambda: (futures[0].set_result((0, 7)),
                                           futures[1].set_exception(UnknownTopicError("x"))))
    timer.start()
    done, not_done = concurrent.futures.wait(futures, timeout=5,
                                             return_when=concurrent.futures.FIRST_EXCEPTION)
    assert set(done) == {futures[0], futures[1]} and not_done == {futures[2]}
    assert futures[0].result(timeout=1) == (0, 7) and seen == [(0, 7)]
    assert isinstance(futures[1].exception(timeout=1), UnknownTopicError)
    with pytest.raises(concurrent.futures.TimeoutError):
        futures[2].result(timeout=0.01)
    futures[2].set_result((0, 9))
    assert list(concurrent.futures.as_completed(futures, timeout=1))
    timer.join()


@pytest.mark.parametrize("wait", ["result", "exception"])
def test_a_record_future_waits_through_wakeups_meant_for_its_batch_mates(wait: str) -> None:
    """The futures of a batch share one Condition, so completing one record wakes whoever
    waits for another: that waiter must wait on, not report a timeout it was never given
    (concurrent.futures.Future.result reports any wake-up without a result as one)."""
    shared = threading.Condition()
    first, second = _RecordFuture(shared), _RecordFuture(shared)
    outcome: list[object] = []

    def waiter() -> None:
        try:
            outcome.append(getattr(second, wait)())  # no timeout: waits until done
        except concurrent.futures.TimeoutError as e:
            outcome.append(e)

    thread = threading.Thread(target=waiter)
    thread.start()

    def waiting() -> bool:
        with shared:
            return bool(shared._waiters)  # type: ignore[attr-defined]

    def poll(predicate, what: str) -> None:  # bounded polling, no fixed sleep
        for _ in range(5000):
            if predicate():
                return
            threading.Event().wait(0.001)
        raise AssertionError(f"timed out waiting for {what}")

    poll(waiting, "the waiter to wait")
    first.set_result((0, 1))  # wakes the waiter of `second` too
    poll(lambda: waiting() or outcome, "the waiter to wait again or give up")
    assert not outcome, f"woken by its batch mate, it reported {outcome[0]!r}"
    second.set_result((0, 2))
    thread.join(5)
    assert outcome == [(0, 2) if wait == "result" else None]


def test_send_many_group_resolves_when_every_batch_is_done() -> None:
    group = _Group(5)
    group.pending = 2  # two batches hold parts of it: records 0..2 and 3..4
    group.part_ok(3, 1, 100, 2)
    assert not group.future.done()
    group.part_ok(0, 1, 40, 3)
    assert group.future.result(0) == [(1, 40), (1, 41), (1, 42), (1, 100), (1, 101)]
    failed = _Group(4)
    failed.pending = 2
    failed.part_failed(NoQuorumError("no quorum"))
    failed.part_ok(2, 0, 10, 2)  # a later success does not undo the failure
    assert isinstance(failed.future.exception(0), NoQuorumError)
    acks0 = _Group(2)
    acks0.pending = 1
    acks0.part_ok(0, 3, -1, 2)
    assert acks0.future.result(0) == [(3, -1), (3, -1)]


def _fetched(batches: list[tuple[int, list[bytes]]], high_watermark: int,
             control_at: int | None = None) -> broker_pb2.FetchResponse:
    parts = []
    for base, values in batches:
        raw = bytearray(recordbatch.build_batch([(None, v) for v in values], base_offset=base))
        if base == control_at:  # flip the control bit and fix the CRC
            raw[21:23] = (int.from_bytes(raw[21:23], "big") | 0x20).to_bytes(2, "big")
            raw[17:21] = crc32c(bytes(raw[21:])).to_bytes(4, "big")
        parts.append(bytes(raw))
    return broker_pb2.FetchResponse(record_batches=b"".join(parts),
                                    high_watermark=high_watermark, log_start_offset=0)


def test_reader_drops_records_below_its_position_and_skips_control_batches() -> None:
    c = Cluster("127.0.0.1:1")
    try:
        reader = PartitionReader(c, "t", 0, offset=3)
        # a fetch from 3 returns the whole batch holding 3 (offsets 2..4), then 5..6,
        # a control batch at 7, and 8
        response = _fetched([(2, [b"c", b"d", b"e"]), (5, [b"f", b"g"]), (7, [b"ctl"]),
                             (8, [b"i"])], high_watermark=9, control_at=7)
        reader._take(response)
        records = reader.poll(0)
        assert [(r.offset, r.value) for r in records] == [
            (3, b"d"), (4, b"e"), (5, b"f"), (6, b"g"), (8, b"i")]
        assert all(r.topic == "t" and r.partition == 0 for r in records)
        assert reader.position == 9 and reader.high_watermark == 9 and reader.at_end
    finally:
        c.close()


def test_reader_refuses_to_skip_past_a_corrupt_first_batch() -> None:
    c = Cluster("127.0.0.1:1")
    try:
        reader = PartitionReader(c, "t", 0, offset=0)
        raw = bytearray(recordbatch.build_batch([(None, b"x")], base_offset=0))
        raw[-1] ^= 0xFF
        with pytest.raises(CorruptBatchError):
            reader._take(broker_pb2.FetchResponse(record_batches=bytes(raw), high_watermark=1))
        assert reader.position == 0
    finally:
        c.close()


def test_reader_hands_out_records_before_a_corrupt_batch_then_stops_at_it() -> None:
    c = Cluster("127.0.0.1:1")
    try:
        reader = PartitionReader(c, "t", 0, offset=0)
        good = recordbatch.build_batch([(None, b"a"), (None, b"b")], base_offset=0)
        # a CRC-valid batch whose records do not decode (a buggy producer)
        bad = bytearray(recordbatch.build_batch([(None, b"c")], base_offset=2))
        bad[57:61] = (2).to_bytes(4, "big")  # recordCount 2, one record present
        bad[23:27] = (1).to_bytes(4, "big")  # lastOffsetDelta to match
        bad[17:21] = crc32c(bytes(bad[21:])).to_bytes(4, "big")
        reader._take(broker_pb2.FetchResponse(record_batches=good + bytes(bad),
                                              high_watermark=4))
        assert [r.value for r in reader.poll(0)] == [b"a", b"b"]
        for _ in range(2):  # never skipped: the position stays at the corrupt batch
            with pytest.raises(CorruptBatchError, match="t/0@2"):
                reader.poll(0)
            assert reader.position == 2
        reader.seek(4)  # the way past it: an explicit seek
        assert reader.position == 4
    finally:
        c.close()


def test_reader_poll_splits_and_tops_up_batches() -> None:
    c = Cluster("127.0.0.1:1")
    try:
        reader = PartitionReader(c, "t", 0, offset=0)
        reader._take(_fetched([(0, [b"a", b"b", b"c"]), (3, [b"d"]), (4, [b"e", b"f"])],
                              high_watermark=6))
        assert [r.offset for r in reader.poll(0, max_records=2)] == [0, 1]
        assert reader.position == 2
        assert [r.offset for r in reader.poll(0, max_records=3)] == [2, 3, 4]
        assert [r.offset for r in reader.poll(0)] == [5]
        assert reader.position == 6 and reader.at_end
    finally:
        c.close()


def _consumer_of(readers: list[PartitionReader], aio: bool = False):
    """A Consumer (threaded or asyncio) whose fetchers are ``readers``, no group, no
    threads: enough for ``_take``."""
    from types import SimpleNamespace

    from raftka.client import Consumer
    from raftka.client.aio import Consumer as AsyncConsumer

    consumer = (AsyncConsumer if aio else Consumer).__new__(AsyncConsumer if aio else Consumer)
    consumer._fetchers = {
        (r.topic, r.partition): SimpleNamespace(tp=TopicPartition(r.topic, r.partition),
                                                reader=r, error=None, wake=lambda: None)
        for r in readers}
    consumer._cond = threading.Condition()
    consumer._rotation = 0
    consumer._positions = {}
    return consumer


@pytest.mark.parametrize("aio", [False, True])
def test_consumer_poll_batches_tops_up_only_with_batches_that_fit(aio) -> None:
    """poll_batches' rule (README, Batch reads): the first batch whole whatever its size,
    then more only while the total stays within max_records, across partitions too."""
    c = Cluster("127.0.0.1:1")
    try:
        readers = []
        for partition in (0, 1, 2):
            reader = PartitionReader(c, "t", partition, offset=0)
            sizes = {0: [60], 1: [60], 2: [30, 30]}[partition]
            base, batches = 0, []
            for n in sizes:
                batches.append((base, [b"v"] * n))
                base += n
            reader._take(_fetched(batches, high_watermark=base))
            readers.append(reader)
        consumer = _consumer_of(readers, aio)
        got = consumer._take(100, batches=True)
        # partition 0's batch (60), not partition 1's (60 more would make 120), then one
        # of partition 2's (90 in all)
        assert [(b.partition, len(b)) for b in got] == [(0, 60), (2, 30)]
        assert consumer._positions == {TopicPartition("t", 0): 60,
                                       TopicPartition("t", 2): 30}
        assert [len(b) for b in consumer._take(10, batches=True)] == [60]  # first: whole
    finally:
        c.close()


class _FakeLeader:
    """Stands in for Cluster: one leader; Fetch answers from a list, and records which
    fetches were started ahead and which were cancelled."""

    def __init__(self, responses: dict[int, broker_pb2.FetchResponse]) -> None:
        self.responses = responses
        self.sync_calls: list[int] = []
        self.started: list[int] = []
        self.cancelled: list[int] = []

    def leader_address(self, topic: str, partition: int) -> str:
        return "leader:1"

    def call_broker(self, address, method, request, timeout_s, what=""):  # noqa: ANN001, ANN201
        self.sync_calls.append(request.offset)
        return self.responses[request.offset]

    def start_broker_call(self, address, method, request, timeout_s,  # noqa: ANN001, ANN201
                          what=""):  # noqa: ANN001
        self.started.append(request.offset)
        fake = self

        class _Future:
            def result(self):  # noqa: ANN201
                return fake.responses[request.offset]

            def cancel(self) -> bool:
                fake.cancelled.append(request.offset)
                return True

        return _Future()

    def close(self) -> None:
        pass


def test_reader_fetches_ahead_while_a_backlog_remains_and_cancels_on_seek() -> None:
    def response(base: int, n: int) -> broker_pb2.FetchResponse:
        r = _fetched([(base, [b"v"] * n)], high_watermark=9)
        r.next_offset = base + n
        return r

    fake = _FakeLeader({0: response(0, 3), 3: response(3, 3), 6: response(6, 3)})
    reader = PartitionReader(c := Cluster("127.0.0.1:1"), "t", 0, offset=0)
    c.close()
    reader._cluster = fake  # type: ignore[assignment]
    assert [r.offset for r in reader.poll(0)] == [0, 1, 2]
    assert fake.sync_calls == [0] and fake.started == [3]  # 3.. asked for while we decode
    assert [r.offset for r in reader.poll(0)] == [3, 4, 5]
    assert fake.sync_calls == [0] and fake.started == [3, 6]
    reader.seek(0)  # the fetch of 6.. is no longer wanted
    assert fake.cancelled == [6]
    assert [r.offset for r in reader.poll(0)] == [0, 1, 2] and fake.sync_calls == [0, 0]
    assert [r.offset for r in reader.poll(0)] == [3, 4, 5]
    assert [r.offset for r in reader.poll(0)] == [6, 7, 8]
    assert fake.started == [3, 6, 3, 6]  # nothing started past the high watermark
    reader.close()


def test_reader_offset_arguments() -> None:
    c = Cluster("127.0.0.1:1")
    try:
        assert PartitionReader(c, "t", 0, "beginning")._start == "earliest"
        assert PartitionReader(c, "t", 0, "end")._start == "latest"
        assert PartitionReader(c, "t", 0, 5).position == 5
        for bad in (-1, "middle", True):
            with pytest.raises((ValueError, TypeError)):
                PartitionReader(c, "t", 0, bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            PartitionReader(c, "t", 0, 5, offset_reset="sometimes")
    finally:
        c.close()


def test_offset_out_of_range_is_not_retried() -> None:
    assert not OffsetOutOfRangeError("x").retriable
    assert NoQuorumError("x").retriable and UnknownTopicError("x").invalid_metadata


# --------------------------------------------------------------------------- CLI


def parse(*argv: str):  # noqa: ANN201 - argparse.Namespace
    return cli.build_parser().parse_args(list(argv))


def test_bootstrap_flag_wins_over_env_and_default() -> None:
    args = parse("topic", "list", "--bootstrap", "h1:1,h2:2")
    assert cli.bootstrap_from_args(args, {BOOTSTRAP_ENV: "e:9"}) == ["h1:1", "h2:2"]
    args = parse("topic", "list", "-b", "h3:3")
    assert cli.bootstrap_from_args(args, {}) == ["h3:3"]


def test_bootstrap_env_wins_over_default() -> None:
    args = parse("cluster", "status")
    assert cli.bootstrap_from_args(args, {BOOTSTRAP_ENV: "e1:9, e2:9"}) == ["e1:9", "e2:9"]


def test_bootstrap_default_is_what_raftka_dev_prints() -> None:
    args = parse("consume", "t")
    assert cli.bootstrap_from_args(args, {}) == [
        "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    assert cli.bootstrap_from_args(args, {BOOTSTRAP_ENV: "   "}) == parse_bootstrap(
        DEFAULT_BOOTSTRAP)  # a blank variable counts as unset
    assert resolve_bootstrap(None, {}) == DEFAULT_BOOTSTRAP


def test_every_client_command_takes_bootstrap() -> None:
    for argv in (["topic", "create", "t"], ["topic", "list"], ["topic", "describe", "t"],
                 ["topic", "delete", "t"], ["cluster", "status"], ["produce", "t"],
                 ["consume", "t"]):
        assert parse(*argv, "--bootstrap", "x:1").bootstrap == "x:1"


def test_topic_create_arguments() -> None:
    args = parse("topic", "create", "orders", "-p", "6", "-r", "3", "-c", "retention.ms=1000",
                 "-c", "retention.bytes = 5", "--json")
    assert (args.name, args.partitions, args.replicas, args.json) == ("orders", 6, 3, True)
    assert dict(args.config) == {"retention.ms": "1000", "retention.bytes": "5"}
    assert parse("topic", "create", "t").replicas is None  # chosen from the node count
    for bad in (["-p", "0"], ["-r", "x"], ["-c", "novalue"], ["-c", "=1"]):
        with pytest.raises(SystemExit):
            parse("topic", "create", "t", *bad)


def test_produce_arguments() -> None:
    args = parse("produce", "t")
    assert (args.acks, args.partition, args.key) == ("all", None, None)
    args = parse("produce", "t", "--acks", "1", "--partition", "2", "--key", "k")
    assert (args.acks, args.partition, args.key) == ("1", 2, "k")
    with pytest.raises(SystemExit):
        parse("produce", "t", "--acks", "2")


def test_consume_arguments() -> None:
    args = parse("consume", "t")
    assert not args.from_beginning and args.offset is None and not args.exit_at_end
    args = parse("consume", "t", "--from-beginning", "--exit-at-end", "--print-offsets")
    assert args.from_beginning and args.exit_at_end and args.print_offsets
    assert parse("consume", "t", "--partition", "1", "--offset", "42").offset == 42
    assert parse("consume", "t", "--offset", "earliest").offset == "earliest"
    with pytest.raises(SystemExit):  # mutually exclusive
        parse("consume", "t", "--from-beginning", "--offset", "3")


def test_cli_errors_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["consume", "t", "--offset", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--partition" in err and "Traceback" not in err
    assert cli.main(["cluster", "status", "--bootstrap", "not-an-address"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("raftka: error: bad bootstrap address") and err.count("\n") == 1


def test_node_and_dev_pass_their_arguments_to_python_m_node() -> None:
    assert cli.node_command(["node", "--id", "1", "--listen", "127.0.0.1:7001"]) == [
        sys.executable, "-m", "raftka.node", "--id", "1", "--listen", "127.0.0.1:7001"]
    assert cli.node_command(["dev", "--nodes", "5", "--help"]) == [
        sys.executable, "-m", "raftka.node.dev", "--nodes", "5", "--help"]
    assert cli.node_command(["topic", "list"]) is None
    assert cli.node_command([]) is None


def test_the_client_never_imports_the_broker_or_the_raft_core() -> None:
    code = ("import sys, client, client.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('node', 'raft')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
