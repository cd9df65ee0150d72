"""The one error table of the contract: one class per ``raftka.v1.ErrorCode`` (aiokafka style),
its gRPC status, and how an error travels on the wire. Client and broker both import it.

Retry logic branches on two class-level flags, never on message text:

- ``retriable``: the same request may succeed if sent again (after a backoff);
- ``invalid_metadata``: the cached metadata (who leads what, which brokers live) is stale,
  so refresh it before retrying.

Wire contract (``proto/raftka/v1/errors.proto``): every failed RPC carries a gRPC status
code and message plus gRPC's standard rich error model: a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer whose details hold one ``google.rpc.ErrorInfo`` with

- ``reason``: the ``raftka.v1.ErrorCode`` name (``NOT_LEADER``, ``UNKNOWN_TOPIC``, ...),
- ``domain``: ``raftka.v1`` (:data:`ERROR_DOMAIN`),
- ``metadata``: ``retriable`` (``"true"``/``"false"``), and where the error names a node
  (NOT_LEADER, NOT_COORDINATOR) ``leader_id`` and ``leader_address``; some errors add
  more keys (CORRUPT_BATCH from a decoding Fetch: ``first_offset``, ``last_offset``,
  ``next_offset``).

grpcurl and every gRPC library's status-details helpers show it (built with grpcio-status
on the node). The same error also travels, for clients written before the standard model,
as our own ``raftka.v1.ErrorInfo`` (numeric code, message, retriable, leader id and
address) in the trailer ``raftka-error-bin`` (:data:`ERROR_METADATA_KEY`); it is the same
content, kept for compatibility (an older Python client reads only it), and
``ProduceStreamResponse.error`` carries that message in-band because errors of single
requests on a stream have no trailer of their own.

:func:`error_from_rpc` turns a ``grpc.RpcError`` into the matching :class:`RaftkaError`,
reading the standard details first and the ``raftka-error-bin`` trailer when they are
absent. When neither is there (a dead node answers nothing, a stopped node lets the
deadline pass) the gRPC status alone decides: UNAVAILABLE and DEADLINE_EXCEEDED are
retriable with a metadata refresh.

Table (code -> class, retriable, invalid_metadata)::

    NOT_LEADER            NotLeaderError            yes  yes   carries leader_id/address
    UNKNOWN_TOPIC         UnknownTopicError         yes  yes   retried only while metadata
    UNKNOWN_PARTITION     UnknownPartitionError     yes  yes   still lists the topic
    CORRUPT_BATCH         CorruptBatchError         no   no    also a recordbatch.CorruptBatchError
    OFFSET_OUT_OF_RANGE   OffsetOutOfRangeError     no   no    readers reset per policy
    TOPIC_EXISTS          TopicExistsError          no   no
    REQUEST_TOO_LARGE     RequestTooLargeError      no   no
    NO_QUORUM             NoQuorumError             yes  yes   the write may have happened
    LEADER_NOT_AVAILABLE  LeaderNotAvailableError   yes  yes
    INVALID_REQUEST       InvalidRequestError       no   no
    INVALID_CONFIG        InvalidConfigError        no   no
    SHUTTING_DOWN         ShuttingDownError         yes  yes
    NOT_ENOUGH_REPLICAS   NotEnoughReplicasError    no   no
    INTERNAL_ERROR        InternalError             no   no
    OUT_OF_ORDER_SEQUENCE OutOfOrderSequenceError   no   no    the producer decides (earlier batch retried?)
    PRODUCER_FENCED       ProducerFencedError       no   no
    UNKNOWN_PRODUCER_ID   UnknownProducerIdError    no   no
    NOT_COORDINATOR       NotCoordinatorError       yes  yes   carries the coordinator like NOT_LEADER
    COORDINATOR_LOADING   CoordinatorLoadingError   yes  no
    UNKNOWN_MEMBER_ID     UnknownMemberIdError      no   no    the consumer rejoins
    FENCED_MEMBER_EPOCH   FencedMemberEpochError    no   no    the consumer heartbeats, then retries
    PARTITION_NOT_ASSIGNED PartitionNotAssignedError no  no
    GROUP_NOT_EMPTY       GroupNotEmptyError        no   no
    UNKNOWN_GROUP         UnknownGroupError         no   no
    INVALID_OFFSET        InvalidOffsetError        no   no
    TOPIC_AUTHORIZATION_FAILED   TopicAuthorizationFailedError    no no  PERMISSION_DENIED
    GROUP_AUTHORIZATION_FAILED   GroupAuthorizationFailedError    no no  PERMISSION_DENIED
    CLUSTER_AUTHORIZATION_FAILED ClusterAuthorizationFailedError  no no  PERMISSION_DENIED
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED TransactionalIdAuthorizationFailedError no no
    AUTHENTICATION_FAILED AuthenticationFailedError no   no    UNAUTHENTICATED
    UNKNOWN_USER          UnknownUserError          no   no
    USER_EXISTS           UserExistsError           no   no
    INVALID_TXN_STATE     InvalidTxnStateError      no   no    transactions (txn.proto)
    TRANSACTIONAL_ID_NOT_FOUND TransactionalIdNotFoundError no no
    CONCURRENT_TRANSACTIONS ConcurrentTransactionsError yes no  the previous one is completing
    INVALID_TRANSACTION_TIMEOUT InvalidTransactionTimeoutError no no
    TRANSACTION_COORDINATOR_FENCED TransactionCoordinatorFencedError no no
    INVALID_PRODUCER_EPOCH InvalidProducerEpochError no  no
    (no trailer) UNAVAILABLE        BrokerNotAvailableError  yes  yes
    (no trailer) DEADLINE_EXCEEDED  RequestTimedOutError     yes  yes
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import grpc
from google.rpc import error_details_pb2, status_pb2

from raftka.v1 import recordbatch as _recordbatch
from raftka.v1 import errors_pb2

__all__ = [
    "AuthenticationFailedError",
    "AuthorizationFailedError",
    "BrokerNotAvailableError",
    "ClusterAuthorizationFailedError",
    "GroupAuthorizationFailedError",
    "TopicAuthorizationFailedError",
    "TransactionalIdAuthorizationFailedError",
    "UnknownUserError",
    "UserExistsError",
    "CoordinatorLoadingError",
    "CorruptBatchError",
    "Code",
    "ERROR_DOMAIN",
    "ERROR_METADATA_KEY",
    "STATUS_DETAILS_KEY",
    "STATUS_OF",
    "FencedMemberEpochError",
    "GroupNotEmptyError",
    "InternalError",
    "InvalidTxnStateError",
    "TransactionalIdNotFoundError",
    "ConcurrentTransactionsError",
    "InvalidTransactionTimeoutError",
    "TransactionCoordinatorFencedError",
    "InvalidProducerEpochError",
    "InvalidConfigError",
    "InvalidOffsetError",
    "InvalidRequestError",
    "LeaderNotAvailableError",
    "NoBrokersAvailable",
    "NoQuorumError",
    "NotCoordinatorError",
    "NotEnoughReplicasError",
    "NotLeaderError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PartitionNotAssignedError",
    "ProducerClosedError",
    "ProducerFencedError",
    "RaftkaError",
    "RaftkaTimeoutError",
    "RequestTimedOutError",
    "RequestTooLargeError",
    "ShuttingDownError",
    "TopicExistsError",
    "UnknownGroupError",
    "UnknownMemberIdError",
    "UnknownPartitionError",
    "UnknownProducerIdError",
    "UnknownTopicError",
    "ErrorDetails",
    "error_class_for_code",
    "error_details",
    "error_from_rpc",
    "is_retriable",
    "rich_status",
    "status_for_code",
]

ERROR_METADATA_KEY = "raftka-error-bin"  # our own raftka.v1.ErrorInfo (kept: see above)
STATUS_DETAILS_KEY = "grpc-status-details-bin"  # gRPC's standard google.rpc.Status
ERROR_DOMAIN = "raftka.v1"  # google.rpc.ErrorInfo.domain of every error a node sends
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


class RaftkaError(Exception):
    """Base of every error the client raises or puts into a future.

    ``code`` is the ``raftka.v1.ErrorCode`` (0 when the error did not come from a broker's
    ErrorInfo); ``grpc_code`` the gRPC status when the error came from an RPC.
    """

    code: int = errors_pb2.ERROR_CODE_UNSPECIFIED  # per class; an instance may carry a newer one
    retriable: bool = False
    invalid_metadata: bool = False
    # google.rpc.ErrorInfo.metadata as the broker sent it (empty when it sent none): the
    # keys named in the module docstring, e.g. a corrupt batch's offsets
    metadata: Mapping[str, str] = _NO_METADATA

    def __init__(
        self,
        message: str = "",
        *,
        grpc_code: grpc.StatusCode | None = None,
        retriable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.grpc_code = grpc_code
        if retriable is not None:
            self.retriable = retriable  # instance override of the class default

    @property
    def code_name(self) -> str:
        try:
            return errors_pb2.ErrorCode.Name(self.code)
        except ValueError:
            return f"ERROR_CODE_{self.code}"

    def __str__(self) -> str:
        return self.message or type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class NotLeaderError(RaftkaError):
    """The node is not the leader of the group the request is for (a partition or the
    controller). ``leader_id`` / ``leader_address`` name the leader when it knows one
    (0 / "" otherwise): go there directly."""

    code = errors_pb2.NOT_LEADER
    retriable = True
    invalid_metadata = True

    def __init__(
        self,
        message: str = "",
        *,
        leader_id: int = 0,
        leader_address: str = "",
        grpc_code: grpc.StatusCode | None = None,
        retriable: bool | None = None,
    ) -> None:
        super().__init__(message, grpc_code=grpc_code, retriable=retriable)
        self.leader_id = leader_id
        self.leader_address = leader_address


class UnknownTopicError(RaftkaError):
    """The topic does not exist (or this node has not applied its creation yet)."""

    code = errors_pb2.UNKNOWN_TOPIC
    retriable = True
    invalid_metadata = True


class UnknownPartitionError(RaftkaError):
    code = errors_pb2.UNKNOWN_PARTITION
    retriable = True
    invalid_metadata = True


class CorruptBatchError(RaftkaError, _recordbatch.CorruptBatchError):
    """A record batch failed validation (bad magic, length, CRC or codec), on the broker or
    while decoding a fetch. Also a :class:`raftka.v1.recordbatch.CorruptBatchError`."""

    code = errors_pb2.CORRUPT_BATCH


class OffsetOutOfRangeError(RaftkaError):
    """The requested offset is below the log start or beyond the high watermark."""

    code = errors_pb2.OFFSET_OUT_OF_RANGE


class TopicExistsError(RaftkaError):
    code = errors_pb2.TOPIC_EXISTS


class RequestTooLargeError(RaftkaError):
    code = errors_pb2.REQUEST_TOO_LARGE


class NoQuorumError(RaftkaError):
    """Not committed in time (no majority reachable). The write may still have happened."""

    code = errors_pb2.NO_QUORUM
    retriable = True
    invalid_metadata = True


class LeaderNotAvailableError(RaftkaError):
    """An election is in progress: retry shortly."""

    code = errors_pb2.LEADER_NOT_AVAILABLE
    retriable = True
    invalid_metadata = True


class InvalidRequestError(RaftkaError):
    code = errors_pb2.INVALID_REQUEST


class InvalidConfigError(RaftkaError):
    code = errors_pb2.INVALID_CONFIG


class ShuttingDownError(RaftkaError):
    """The node is stopping: retry elsewhere."""

    code = errors_pb2.SHUTTING_DOWN
    retriable = True
    invalid_metadata = True


class NotEnoughReplicasError(RaftkaError):
    """The replication factor asked for is larger than the number of live nodes."""

    code = errors_pb2.NOT_ENOUGH_REPLICAS


class InternalError(RaftkaError):
    """A bug on the broker (it keeps serving). Not retried."""

    code = errors_pb2.INTERNAL_ERROR


class OutOfOrderSequenceError(RaftkaError):
    """The partition expected an earlier sequence from this producer: a batch before this
    one is missing. The producer retries it while an earlier batch is being retried."""

    code = errors_pb2.OUT_OF_ORDER_SEQUENCE


class ProducerFencedError(RaftkaError):
    """A newer producer with the same producer id (a higher epoch) exists."""

    code = errors_pb2.PRODUCER_FENCED


class UnknownProducerIdError(RaftkaError):
    """The partition has no state for this producer id (e.g. expired): get a new one."""

    code = errors_pb2.UNKNOWN_PRODUCER_ID


class NotCoordinatorError(RaftkaError):
    """This node is not the group's coordinator (any more): find the coordinator again.
    ``leader_id`` / ``leader_address`` name it when known."""

    code = errors_pb2.NOT_COORDINATOR
    retriable = True
    invalid_metadata = True

    def __init__(self, message: str = "", *, leader_id: int = 0, leader_address: str = "",
                 grpc_code: grpc.StatusCode | None = None, retriable: bool | None = None) -> None:
        super().__init__(message, grpc_code=grpc_code, retriable=retriable)
        self.leader_id = leader_id
        self.leader_address = leader_address


class CoordinatorLoadingError(RaftkaError):
    """The group's new coordinator is still catching up on its log: retry shortly."""

    code = errors_pb2.COORDINATOR_LOADING
    retriable = True


class UnknownMemberIdError(RaftkaError):
    """The member is not in the group (it left, or was removed after its session timeout):
    rejoin with an empty member id."""

    code = errors_pb2.UNKNOWN_MEMBER_ID


class FencedMemberEpochError(RaftkaError):
    """The member's epoch is stale (its assignment changed): heartbeat, then retry."""

    code = errors_pb2.FENCED_MEMBER_EPOCH


class PartitionNotAssignedError(RaftkaError):
    """A commit named a partition the member does not own."""

    code = errors_pb2.PARTITION_NOT_ASSIGNED


class GroupNotEmptyError(RaftkaError):
    """The operation (reset offsets, delete) needs a group with no active members."""

    code = errors_pb2.GROUP_NOT_EMPTY


class UnknownGroupError(RaftkaError):
    code = errors_pb2.UNKNOWN_GROUP


class InvalidOffsetError(RaftkaError):
    """A negative or otherwise impossible offset."""

    code = errors_pb2.INVALID_OFFSET


class InvalidRecordStateError(RaftkaError):
    """A share-group acknowledgement named a record the member does not hold (never
    acquired by it, already settled, or its acquisition lock expired): nothing of that
    acknowledgement was applied. Not retriable as is."""

    code = errors_pb2.INVALID_RECORD_STATE


class InconsistentGroupTypeError(RaftkaError):
    """The group id belongs to a consumer group and was used as a share group, or the
    other way round: use another group id."""

    code = errors_pb2.INCONSISTENT_GROUP_TYPE


class AuthorizationFailedError(RaftkaError):
    """Base of the ``*_AUTHORIZATION_FAILED`` errors: the principal may not do this (the
    message names the operation and the resource); nothing was written."""


class TopicAuthorizationFailedError(AuthorizationFailedError):
    code = errors_pb2.TOPIC_AUTHORIZATION_FAILED


class GroupAuthorizationFailedError(AuthorizationFailedError):
    code = errors_pb2.GROUP_AUTHORIZATION_FAILED


class ClusterAuthorizationFailedError(AuthorizationFailedError):
    code = errors_pb2.CLUSTER_AUTHORIZATION_FAILED


class TransactionalIdAuthorizationFailedError(AuthorizationFailedError):
    code = errors_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


class AuthenticationFailedError(RaftkaError):
    """The node requires credentials and got none, or wrong ones (bad password, unknown
    user, a certificate whose subject maps to no principal)."""

    code = errors_pb2.AUTHENTICATION_FAILED


class UnknownUserError(RaftkaError):
    code = errors_pb2.UNKNOWN_USER


class UserExistsError(RaftkaError):
    code = errors_pb2.USER_EXISTS


class InvalidTxnStateError(RaftkaError):
    """The request does not fit the state of the transaction (a transactional send without
    ``begin_transaction``, a commit while none is open, a transactional batch that no
    coordinator opened). Nothing was written."""

    code = errors_pb2.INVALID_TXN_STATE


class TransactionalIdNotFoundError(RaftkaError):
    code = errors_pb2.TRANSACTIONAL_ID_NOT_FOUND


class ConcurrentTransactionsError(RaftkaError):
    """The previous transaction of this transactional id is still being completed (its
    markers are being written): retry shortly."""

    code = errors_pb2.CONCURRENT_TRANSACTIONS
    retriable = True


class InvalidTransactionTimeoutError(RaftkaError):
    code = errors_pb2.INVALID_TRANSACTION_TIMEOUT


class TransactionCoordinatorFencedError(RaftkaError):
    """A transaction marker came from a coordinator older than one the partition already
    heard from for this producer (a deposed coordinator): it was not written."""

    code = errors_pb2.TRANSACTION_COORDINATOR_FENCED


class InvalidProducerEpochError(RaftkaError):
    """A transaction marker or transactional offset commit carried an epoch older than the
    producer's current one: it was not written."""

    code = errors_pb2.INVALID_PRODUCER_EPOCH


# ---------------------------------------------------------------- client-side conditions


class BrokerNotAvailableError(RaftkaError):
    """The broker could not be reached (gRPC UNAVAILABLE without an ErrorInfo): it is down,
    restarting or cut off. Try another broker after refreshing metadata."""

    retriable = True
    invalid_metadata = True


class RequestTimedOutError(RaftkaError):
    """One RPC hit its deadline (the node may be paused or overloaded). The request may
    have been applied."""

    retriable = True
    invalid_metadata = True


class NoBrokersAvailable(RaftkaError):
    """None of the known brokers (bootstrap list included) answered. ``tried`` lists the
    addresses asked; ``last_error`` is the last failure."""

    retriable = True
    invalid_metadata = True

    def __init__(self, tried: list[str] | None = None, last_error: BaseException | None = None,
                 waited_s: float | None = None) -> None:
        self.tried = list(tried or [])
        self.last_error = last_error
        waited = f" for {waited_s:g}s" if waited_s is not None else ""
        detail = f"; last error: {last_error}" if last_error is not None else ""
        super().__init__(
            f"no broker answered{waited} (tried {', '.join(self.tried) or 'nobody'}){detail}"
        )


class RaftkaTimeoutError(RaftkaError, TimeoutError):
    """An operation (with all its retries) did not finish within its overall time limit.
    The last underlying error, if any, is ``__cause__``. Also a builtin ``TimeoutError``."""


class ProducerClosedError(RaftkaError):
    """The producer was closed before the record could be delivered, or is closed."""


# The one table of broker error codes: every ``raftka.v1.ErrorCode``, the gRPC status the
# broker answers it with, and the exception class the client raises for it. The class carries
# the ``retriable`` and ``invalid_metadata`` flags; the broker puts the same ``retriable`` into
# the ErrorInfo it sends, so clients in other languages branch on the same flag.
_TABLE: tuple[tuple[type[RaftkaError], grpc.StatusCode], ...] = (
    (NotLeaderError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownTopicError, grpc.StatusCode.NOT_FOUND),
    (UnknownPartitionError, grpc.StatusCode.NOT_FOUND),
    (CorruptBatchError, grpc.StatusCode.INVALID_ARGUMENT),
    (OffsetOutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (TopicExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (RequestTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NoQuorumError, grpc.StatusCode.UNAVAILABLE),
    (LeaderNotAvailableError, grpc.StatusCode.UNAVAILABLE),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (NotEnoughReplicasError, grpc.StatusCode.FAILED_PRECONDITION),
    (InternalError, grpc.StatusCode.INTERNAL),
    (OutOfOrderSequenceError, grpc.StatusCode.FAILED_PRECONDITION),
    (ProducerFencedError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownProducerIdError, grpc.StatusCode.FAILED_PRECONDITION),
    (NotCoordinatorError, grpc.StatusCode.FAILED_PRECONDITION),
    (CoordinatorLoadingError, grpc.StatusCode.UNAVAILABLE),
    (UnknownMemberIdError, grpc.StatusCode.FAILED_PRECONDITION),
    (FencedMemberEpochError, grpc.StatusCode.FAILED_PRECONDITION),
    (PartitionNotAssignedError, grpc.StatusCode.FAILED_PRECONDITION),
    (GroupNotEmptyError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownGroupError, grpc.StatusCode.NOT_FOUND),
    (InvalidOffsetError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRecordStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (InconsistentGroupTypeError, grpc.StatusCode.FAILED_PRECONDITION),
    (TopicAuthorizationFailedError, grpc.StatusCode.PERMISSION_DENIED),
    (GroupAuthorizationFailedError, grpc.StatusCode.PERMISSION_DENIED),
    (ClusterAuthorizationFailedError, grpc.StatusCode.PERMISSION_DENIED),
    (TransactionalIdAuthorizationFailedError, grpc.StatusCode.PERMISSION_DENIED),
    (AuthenticationFailedError, grpc.StatusCode.UNAUTHENTICATED),
    (UnknownUserError, grpc.StatusCode.NOT_FOUND),
    (UserExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (InvalidTxnStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (TransactionalIdNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConcurrentTransactionsError, grpc.StatusCode.UNAVAILABLE),
    (InvalidTransactionTimeoutError, grpc.StatusCode.INVALID_ARGUMENT),
    (TransactionCoordinatorFencedError, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidProducerEpochError, grpc.StatusCode.FAILED_PRECONDITION),
)
_BY_CODE: dict[int, type[RaftkaError]] = {cls.code: cls for cls, _ in _TABLE}
STATUS_OF: dict[int, grpc.StatusCode] = {cls.code: status for cls, status in _TABLE}


class Code:
    """The ``raftka.v1.ErrorCode`` numbers by name (``Code.NOT_LEADER``), for the broker."""


for _name, _number in errors_pb2.ErrorCode.items():
    setattr(Code, _name, _number)


def status_for_code(code: int) -> grpc.StatusCode:
    """The gRPC status the broker answers a code with (UNKNOWN for a code not in the table)."""
    return STATUS_OF.get(code, grpc.StatusCode.UNKNOWN)


def is_retriable(code: int) -> bool:
    """Whether a request that failed with this code may succeed if sent again."""
    return error_class_for_code(code).retriable


def error_class_for_code(code: int) -> type[RaftkaError]:
    """The class for a ``raftka.v1.ErrorCode`` (``RaftkaError`` for unknown codes)."""
    return _BY_CODE.get(code, RaftkaError)


class ErrorDetails(NamedTuple):
    """An error as a node sent it, read from a failed call's trailers (either format)."""

    code: int  # ERROR_CODE_UNSPECIFIED when the reason is a name this client does not know
    reason: str  # the ErrorCode name
    message: str
    retriable: bool
    leader_id: int
    leader_address: str
    metadata: Mapping[str, str]


def rich_status(code: int, message: str, retriable: bool, leader_id: int = 0,
                leader_address: str = "",
                metadata: Mapping[str, str] | None = None) -> status_pb2.Status:
    """The ``google.rpc.Status`` a node sends for an error (status code from the table,
    one ``google.rpc.ErrorInfo`` detail); see the module docstring for its fields."""
    info = error_details_pb2.ErrorInfo(
        reason=_code_name(code), domain=ERROR_DOMAIN,
        metadata={"retriable": "true" if retriable else "false"})
    if leader_id or leader_address:
        info.metadata["leader_id"] = str(leader_id)
        info.metadata["leader_address"] = leader_address
    if metadata:
        info.metadata.update(metadata)
    status = status_pb2.Status(code=status_for_code(code).value[0], message=message)
    status.details.add().Pack(info)
    return status


def _code_name(code: int) -> str:
    try:
        return errors_pb2.ErrorCode.Name(code)
    except ValueError:
        return f"ERROR_CODE_{code}"


def _trailer(metadata: Iterable[Any] | None, key: str) -> bytes | None:
    if not metadata:
        return None
    for item in metadata:
        try:
            k, value = item[0], item[1]
        except (TypeError, IndexError):
            continue
        if k == key:
            if isinstance(value, str):  # a "-bin" key always carries bytes; be lenient
                value = value.encode("latin-1")
            return bytes(value)
    return None


def _standard_error(metadata: Iterable[Any] | None) -> ErrorDetails | None:
    """The error in the standard ``grpc-status-details-bin`` trailer (its
    ``google.rpc.ErrorInfo`` of domain raftka.v1), or None if absent or unparsable."""
    raw = _trailer(metadata, STATUS_DETAILS_KEY)
    if raw is None:
        return None
    try:
        status = status_pb2.Status.FromString(raw)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == ERROR_DOMAIN:
                    break
        else:
            return None
        meta = dict(info.metadata)
        code = errors_pb2.ErrorCode.Value(info.reason) \
            if info.reason in errors_pb2.ErrorCode.keys() else errors_pb2.ERROR_CODE_UNSPECIFIED
        leader = meta.get("leader_id", "0")
        return ErrorDetails(code, info.reason, status.message, meta.get("retriable") == "true",
                          int(leader) if leader.isdigit() else 0,
                          meta.get("leader_address", ""), MappingProxyType(meta))
    except Exception:  # noqa: BLE001 - a garbled trailer must not hide the status
        return None


def _legacy_error(metadata: Iterable[Any] | None) -> ErrorDetails | None:
    """The error in our own ``raftka-error-bin`` trailer, or None if absent or unparsable."""
    raw = _trailer(metadata, ERROR_METADATA_KEY)
    if raw is None:
        return None
    try:
        info = errors_pb2.ErrorInfo.FromString(raw)
    except Exception:  # noqa: BLE001 - a garbled trailer must not hide the status
        return None
    if info.code == errors_pb2.ERROR_CODE_UNSPECIFIED:
        return None
    return ErrorDetails(info.code, _code_name(info.code), info.message, info.retriable,
                      info.leader_id, info.leader_address, _NO_METADATA)


def error_details(metadata: Iterable[Any] | None) -> ErrorDetails | None:
    """The error a node put into a failed call's trailing metadata, or None (the call
    never reached a node's handler). The standard details first; our own trailer for
    what they lack (an older node sends only it; a reason newer than this client has its
    number only there)."""
    metadata = list(metadata) if metadata else []
    standard = _standard_error(metadata)
    if standard is None:
        return _legacy_error(metadata)
    if standard.code == errors_pb2.ERROR_CODE_UNSPECIFIED:
        legacy = _legacy_error(metadata)
        if legacy is not None:
            return standard._replace(code=legacy.code)
    return standard


def _call(obj: Any, name: str) -> Any:
    fn = getattr(obj, name, None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:  # noqa: BLE001 - some RpcError flavours raise when not a Call
        return None


def error_from_rpc(rpc_error: BaseException, what: str = "") -> RaftkaError:
    """Turn a ``grpc.RpcError`` (anything with ``code()``, ``details()`` and
    ``trailing_metadata()``) into the matching :class:`RaftkaError`.

    ``what`` names the request for the message (e.g. ``"Produce t/0 to 127.0.0.1:7001"``).
    """
    status: grpc.StatusCode | None = _call(rpc_error, "code")
    details: str = _call(rpc_error, "details") or ""
    info = error_details(_call(rpc_error, "trailing_metadata"))
    prefix = f"{what}: " if what else ""
    status_name = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"

    if info is not None:
        cls = error_class_for_code(info.code)
        text = info.message or details or cls.__name__
        name = info.reason or status_name
        message = f"{prefix}{name}: {text}"
        retriable = cls.retriable or info.retriable
        if cls is NotLeaderError or cls is NotCoordinatorError:
            if info.leader_address:
                message += f" (leader: node {info.leader_id} at {info.leader_address})"
            err: RaftkaError = cls(
                message,
                leader_id=info.leader_id,
                leader_address=info.leader_address,
                grpc_code=status,
                retriable=retriable,
            )
        else:
            err = cls(message, grpc_code=status, retriable=retriable)
        err.metadata = info.metadata
        if cls is RaftkaError:
            err.code = info.code  # a code newer than this client: keep the number
            if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                err.invalid_metadata = True
        return err

    text = details or status_name
    if status == grpc.StatusCode.UNAVAILABLE:
        return BrokerNotAvailableError(f"{prefix}broker unavailable: {text}", grpc_code=status)
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimedOutError(f"{prefix}no answer before the deadline: {text}",
                                    grpc_code=status)
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RequestTooLargeError(f"{prefix}request or response too large: {text}",
                                    grpc_code=status)
    if status == grpc.StatusCode.UNIMPLEMENTED:
        return RaftkaError(
            f"{prefix}the broker does not implement this call ({text}); client and broker "
            "versions differ",
            grpc_code=status,
        )
    if status == grpc.StatusCode.INTERNAL:
        return InternalError(f"{prefix}internal error: {text}", grpc_code=status)
    return RaftkaError(f"{prefix}{status_name}: {text}", grpc_code=status)
