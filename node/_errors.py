"""Errors the broker returns: a gRPC status code plus a machine-readable ``ErrorInfo``.

The ``ErrorInfo`` travels in the trailing metadata key ``raftka-error-bin`` (see
proto/raftka/v1/errors.proto), so clients branch on ``code``/``retriable`` and go to the
named leader without parsing text.
"""

from __future__ import annotations

import grpc

from client.pb.raftka.v1 import errors_pb2

ERROR_METADATA_KEY = "raftka-error-bin"


class Code:
    NOT_LEADER = errors_pb2.NOT_LEADER
    UNKNOWN_TOPIC = errors_pb2.UNKNOWN_TOPIC
    UNKNOWN_PARTITION = errors_pb2.UNKNOWN_PARTITION
    CORRUPT_BATCH = errors_pb2.CORRUPT_BATCH
    OFFSET_OUT_OF_RANGE = errors_pb2.OFFSET_OUT_OF_RANGE
    TOPIC_EXISTS = errors_pb2.TOPIC_EXISTS
    REQUEST_TOO_LARGE = errors_pb2.REQUEST_TOO_LARGE
    NO_QUORUM = errors_pb2.NO_QUORUM
    LEADER_NOT_AVAILABLE = errors_pb2.LEADER_NOT_AVAILABLE
    INVALID_REQUEST = errors_pb2.INVALID_REQUEST
    INVALID_CONFIG = errors_pb2.INVALID_CONFIG
    SHUTTING_DOWN = errors_pb2.SHUTTING_DOWN
    NOT_ENOUGH_REPLICAS = errors_pb2.NOT_ENOUGH_REPLICAS
    INTERNAL_ERROR = errors_pb2.INTERNAL_ERROR
    OUT_OF_ORDER_SEQUENCE = errors_pb2.OUT_OF_ORDER_SEQUENCE
    PRODUCER_FENCED = errors_pb2.PRODUCER_FENCED
    UNKNOWN_PRODUCER_ID = errors_pb2.UNKNOWN_PRODUCER_ID
    NOT_COORDINATOR = errors_pb2.NOT_COORDINATOR
    COORDINATOR_LOADING = errors_pb2.COORDINATOR_LOADING
    UNKNOWN_MEMBER_ID = errors_pb2.UNKNOWN_MEMBER_ID
    FENCED_MEMBER_EPOCH = errors_pb2.FENCED_MEMBER_EPOCH
    PARTITION_NOT_ASSIGNED = errors_pb2.PARTITION_NOT_ASSIGNED
    GROUP_NOT_EMPTY = errors_pb2.GROUP_NOT_EMPTY
    UNKNOWN_GROUP = errors_pb2.UNKNOWN_GROUP
    INVALID_OFFSET = errors_pb2.INVALID_OFFSET


STATUS_OF = {
    Code.NOT_LEADER: grpc.StatusCode.FAILED_PRECONDITION,
    Code.UNKNOWN_TOPIC: grpc.StatusCode.NOT_FOUND,
    Code.UNKNOWN_PARTITION: grpc.StatusCode.NOT_FOUND,
    Code.CORRUPT_BATCH: grpc.StatusCode.INVALID_ARGUMENT,
    Code.OFFSET_OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
    Code.TOPIC_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Code.REQUEST_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.NO_QUORUM: grpc.StatusCode.UNAVAILABLE,
    Code.LEADER_NOT_AVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Code.INVALID_CONFIG: grpc.StatusCode.INVALID_ARGUMENT,
    Code.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    Code.NOT_ENOUGH_REPLICAS: grpc.StatusCode.FAILED_PRECONDITION,
    Code.INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
    Code.OUT_OF_ORDER_SEQUENCE: grpc.StatusCode.FAILED_PRECONDITION,
    Code.PRODUCER_FENCED: grpc.StatusCode.FAILED_PRECONDITION,
    Code.UNKNOWN_PRODUCER_ID: grpc.StatusCode.FAILED_PRECONDITION,
    Code.NOT_COORDINATOR: grpc.StatusCode.FAILED_PRECONDITION,
    Code.COORDINATOR_LOADING: grpc.StatusCode.UNAVAILABLE,
    Code.UNKNOWN_MEMBER_ID: grpc.StatusCode.FAILED_PRECONDITION,
    Code.FENCED_MEMBER_EPOCH: grpc.StatusCode.FAILED_PRECONDITION,
    Code.PARTITION_NOT_ASSIGNED: grpc.StatusCode.FAILED_PRECONDITION,
    Code.GROUP_NOT_EMPTY: grpc.StatusCode.FAILED_PRECONDITION,
    Code.UNKNOWN_GROUP: grpc.StatusCode.NOT_FOUND,
    Code.INVALID_OFFSET: grpc.StatusCode.INVALID_ARGUMENT,
}
_RETRIABLE = {Code.NOT_LEADER, Code.NO_QUORUM, Code.LEADER_NOT_AVAILABLE, Code.SHUTTING_DOWN,
              Code.NOT_COORDINATOR, Code.COORDINATOR_LOADING}


class BrokerError(Exception):
    def __init__(self, code: int, message: str, retriable: bool | None = None,
                 leader_id: int = 0, leader_address: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retriable = code in _RETRIABLE if retriable is None else retriable
        self.leader_id = leader_id
        self.leader_address = leader_address

    def info(self) -> errors_pb2.ErrorInfo:
        return errors_pb2.ErrorInfo(
            code=self.code, message=self.message, retriable=self.retriable,
            leader_id=self.leader_id, leader_address=self.leader_address,
        )

    @property
    def status(self) -> grpc.StatusCode:
        return STATUS_OF.get(self.code, grpc.StatusCode.UNKNOWN)

    def __repr__(self) -> str:
        return f"BrokerError({errors_pb2.ErrorCode.Name(self.code)}: {self.message})"


async def abort_with(context: grpc.aio.ServicerContext, error: BrokerError) -> None:
    """End the RPC with the error's status, message and ErrorInfo trailer."""
    trailer = ((ERROR_METADATA_KEY, error.info().SerializeToString()),)
    await context.abort(error.status, error.message, trailing_metadata=trailer)
