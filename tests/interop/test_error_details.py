"""The error contract in gRPC's standard rich error model (issue 12), without a cluster:
what a node puts into ``grpc-status-details-bin`` (and, for older clients, into
``raftka-error-bin``), and how ``error_from_rpc`` reads it back, falling back to the old
trailer when the standard one is absent."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from raftka.v1 import broker_pb2, broker_pb2_grpc, errors_pb2
from raftka.v1.errors import (
    ERROR_DOMAIN,
    ERROR_METADATA_KEY,
    STATUS_DETAILS_KEY,
    CorruptBatchError,
    NotLeaderError,
    RaftkaError,
    UnknownTopicError,
    error_from_rpc,
    rich_status,
)
from raftka.node._errors import BrokerError, Code, abort_with


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: list) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> list:
        return self._trailing


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


def test_the_standard_status_names_the_code_its_domain_and_the_leader() -> None:
    status = BrokerError(Code.NOT_LEADER, "not the leader; the leader is node 2",
                         leader_id=2, leader_address="127.0.0.1:7002").rich_status()
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert status.message == "not the leader; the leader is node 2"
    info = _error_info(status)
    assert (info.reason, info.domain) == ("NOT_LEADER", "raftka.v1")
    assert dict(info.metadata) == {"retriable": "true", "leader_id": "2",
                                   "leader_address": "127.0.0.1:7002"}


def test_errors_without_a_leader_carry_only_retriable_and_their_own_keys() -> None:
    info = _error_info(BrokerError(Code.UNKNOWN_TOPIC, "no such topic").rich_status())
    assert dict(info.metadata) == {"retriable": "true"}
    info = _error_info(BrokerError(Code.CORRUPT_BATCH, "bad", metadata={
        "next_offset": "5"}).rich_status())
    assert dict(info.metadata) == {"retriable": "false", "next_offset": "5"}


def _both_trailers(error: BrokerError) -> list[tuple[str, bytes]]:
    return [(STATUS_DETAILS_KEY, error.rich_status().SerializeToString()),
            (ERROR_METADATA_KEY, error.info().SerializeToString())]


def test_error_from_rpc_reads_the_standard_details() -> None:
    error = BrokerError(Code.NOT_LEADER, "go elsewhere", leader_id=3,
                        leader_address="10.0.0.3:7003")
    trailing = [(STATUS_DETAILS_KEY, error.rich_status().SerializeToString())]  # no old one
    err = error_from_rpc(FakeRpcError(error.status, error.message, trailing), "Produce t/0")
    assert isinstance(err, NotLeaderError) and err.retriable
    assert (err.leader_id, err.leader_address) == (3, "10.0.0.3:7003")
    assert str(err).startswith("Produce t/0: NOT_LEADER: go elsewhere")
    assert err.metadata["leader_id"] == "3"


def test_the_standard_details_win_over_the_old_trailer() -> None:
    standard = BrokerError(Code.UNKNOWN_TOPIC, "standard")
    old = BrokerError(Code.TOPIC_EXISTS, "old")
    trailing = [(ERROR_METADATA_KEY, old.info().SerializeToString()),
                (STATUS_DETAILS_KEY, standard.rich_status().SerializeToString())]
    err = error_from_rpc(FakeRpcError(standard.status, "standard", trailing))
    assert isinstance(err, UnknownTopicError) and "standard" in str(err)


def test_the_old_trailer_alone_still_works() -> None:
    """A node from before the standard details sends only raftka-error-bin."""
    old = BrokerError(Code.CORRUPT_BATCH, "bad CRC")
    err = error_from_rpc(FakeRpcError(old.status, "bad CRC",
                                      [(ERROR_METADATA_KEY, old.info().SerializeToString())]))
    assert isinstance(err, CorruptBatchError) and not err.retriable and err.metadata == {}


def test_a_reason_newer_than_the_client_keeps_the_old_trailers_number() -> None:
    status = rich_status(Code.NOT_LEADER, "future", True)
    info = _error_info(status)
    info.reason = "SOMETHING_NEW"
    status.ClearField("details")
    status.details.add().Pack(info)
    alone = error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "future",
                                        [(STATUS_DETAILS_KEY, status.SerializeToString())]))
    assert type(alone) is RaftkaError and alone.retriable and alone.invalid_metadata
    assert "SOMETHING_NEW: future" in str(alone)
    numbered = error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "future", [
        (STATUS_DETAILS_KEY, status.SerializeToString()),
        (ERROR_METADATA_KEY, errors_pb2.ErrorInfo(code=99, message="future").SerializeToString()),
    ]))
    assert numbered.code == 99 and numbered.retriable


def test_details_of_another_domain_or_garbled_fall_back() -> None:
    foreign = status_pb2.Status(code=5, message="from a proxy")
    foreign.details.add().Pack(error_details_pb2.ErrorInfo(reason="UNKNOWN_TOPIC",
                                                           domain="example.com"))
    old = BrokerError(Code.UNKNOWN_TOPIC, "old")
    for standard in (foreign.SerializeToString(), b"\xff\xff garbage"):
        err = error_from_rpc(FakeRpcError(grpc.StatusCode.NOT_FOUND, "x", [
            (STATUS_DETAILS_KEY, standard), (ERROR_METADATA_KEY, old.info().SerializeToString())]))
        assert isinstance(err, UnknownTopicError) and "old" in str(err)
        err = error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down",
                                          [(STATUS_DETAILS_KEY, standard)]))
        assert type(err).__name__ == "BrokerNotAvailableError"


def test_every_code_round_trips_through_the_standard_details() -> None:
    for name, number in errors_pb2.ErrorCode.items():
        if number == errors_pb2.ERROR_CODE_UNSPECIFIED:
            continue
        error = BrokerError(number, f"a {name}")
        err = error_from_rpc(FakeRpcError(error.status, error.message, _both_trailers(error)))
        assert err.code == number and err.retriable == error.retriable
        assert f"{name}: a {name}" in str(err)


def test_abort_with_sends_both_trailers_over_a_real_server() -> None:
    """A real grpc.aio server aborting with abort_with; the standard helper
    (grpc_status.rpc_status.from_call) reads the status back on a real channel."""

    class Failing(broker_pb2_grpc.BrokerServicer):
        async def Metadata(self, request, context):  # noqa: N802
            await abort_with(context, BrokerError(
                Code.NOT_LEADER, "ask node 2", leader_id=2, leader_address="127.0.0.1:1"))

    async def scenario() -> None:
        server = grpc.aio.server()
        broker_pb2_grpc.add_BrokerServicer_to_server(Failing(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            def call() -> grpc.RpcError:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    try:
                        broker_pb2_grpc.BrokerStub(channel).Metadata(
                            broker_pb2.MetadataRequest(), timeout=5)
                    except grpc.RpcError as exc:
                        return exc
                raise AssertionError("the call did not fail")

            exc = await asyncio.to_thread(call)
        finally:
            await server.stop(None)
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        status = rpc_status.from_call(exc)  # checks code and message agree with the status
        info = _error_info(status)
        assert (info.reason, info.domain, info.metadata["leader_id"]) == (
            "NOT_LEADER", ERROR_DOMAIN, "2")
        old = dict(exc.trailing_metadata())[ERROR_METADATA_KEY]
        assert errors_pb2.ErrorInfo.FromString(old).code == errors_pb2.NOT_LEADER
        err = error_from_rpc(exc)
        assert isinstance(err, NotLeaderError) and err.leader_address == "127.0.0.1:1"

    asyncio.run(scenario())


@pytest.mark.parametrize("code", [Code.CORRUPT_BATCH, Code.INTERNAL_ERROR])
def test_the_status_code_is_the_tables(code: int) -> None:
    error = BrokerError(code, "m")
    assert error.rich_status().code == error.status.value[0]
