from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    NOT_LEADER: _ClassVar[ErrorCode]
    UNKNOWN_TOPIC: _ClassVar[ErrorCode]
    UNKNOWN_PARTITION: _ClassVar[ErrorCode]
    CORRUPT_BATCH: _ClassVar[ErrorCode]
    OFFSET_OUT_OF_RANGE: _ClassVar[ErrorCode]
    TOPIC_EXISTS: _ClassVar[ErrorCode]
    REQUEST_TOO_LARGE: _ClassVar[ErrorCode]
    NO_QUORUM: _ClassVar[ErrorCode]
    LEADER_NOT_AVAILABLE: _ClassVar[ErrorCode]
    INVALID_REQUEST: _ClassVar[ErrorCode]
    INVALID_CONFIG: _ClassVar[ErrorCode]
    SHUTTING_DOWN: _ClassVar[ErrorCode]
    NOT_ENOUGH_REPLICAS: _ClassVar[ErrorCode]
    INTERNAL_ERROR: _ClassVar[ErrorCode]
    OUT_OF_ORDER_SEQUENCE: _ClassVar[ErrorCode]
    PRODUCER_FENCED: _ClassVar[ErrorCode]
    UNKNOWN_PRODUCER_ID: _ClassVar[ErrorCode]
    NOT_COORDINATOR: _ClassVar[ErrorCode]
    COORDINATOR_LOADING: _ClassVar[ErrorCode]
    UNKNOWN_MEMBER_ID: _ClassVar[ErrorCode]
    FENCED_MEMBER_EPOCH: _ClassVar[ErrorCode]
    PARTITION_NOT_ASSIGNED: _ClassVar[ErrorCode]
    GROUP_NOT_EMPTY: _ClassVar[ErrorCode]
    UNKNOWN_GROUP: _ClassVar[ErrorCode]
    INVALID_OFFSET: _ClassVar[ErrorCode]
    INVALID_RECORD_STATE: _ClassVar[ErrorCode]
    INCONSISTENT_GROUP_TYPE: _ClassVar[ErrorCode]
    TOPIC_AUTHORIZATION_FAILED: _ClassVar[ErrorCode]
    GROUP_AUTHORIZATION_FAILED: _ClassVar[ErrorCode]
    CLUSTER_AUTHORIZATION_FAILED: _ClassVar[ErrorCode]
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED: _ClassVar[ErrorCode]
    AUTHENTICATION_FAILED: _ClassVar[ErrorCode]
    UNKNOWN_USER: _ClassVar[ErrorCode]
    USER_EXISTS: _ClassVar[ErrorCode]
    INVALID_TXN_STATE: _ClassVar[ErrorCode]
    TRANSACTIONAL_ID_NOT_FOUND: _ClassVar[ErrorCode]
    CONCURRENT_TRANSACTIONS: _ClassVar[ErrorCode]
    INVALID_TRANSACTION_TIMEOUT: _ClassVar[ErrorCode]
    TRANSACTION_COORDINATOR_FENCED: _ClassVar[ErrorCode]
    INVALID_PRODUCER_EPOCH: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
NOT_LEADER: ErrorCode
UNKNOWN_TOPIC: ErrorCode
UNKNOWN_PARTITION: ErrorCode
CORRUPT_BATCH: ErrorCode
OFFSET_OUT_OF_RANGE: ErrorCode
TOPIC_EXISTS: ErrorCode
REQUEST_TOO_LARGE: ErrorCode
NO_QUORUM: ErrorCode
LEADER_NOT_AVAILABLE: ErrorCode
INVALID_REQUEST: ErrorCode
INVALID_CONFIG: ErrorCode
SHUTTING_DOWN: ErrorCode
NOT_ENOUGH_REPLICAS: ErrorCode
INTERNAL_ERROR: ErrorCode
OUT_OF_ORDER_SEQUENCE: ErrorCode
PRODUCER_FENCED: ErrorCode
UNKNOWN_PRODUCER_ID: ErrorCode
NOT_COORDINATOR: ErrorCode
COORDINATOR_LOADING: ErrorCode
UNKNOWN_MEMBER_ID: ErrorCode
FENCED_MEMBER_EPOCH: ErrorCode
PARTITION_NOT_ASSIGNED: ErrorCode
GROUP_NOT_EMPTY: ErrorCode
UNKNOWN_GROUP: ErrorCode
INVALID_OFFSET: ErrorCode
INVALID_RECORD_STATE: ErrorCode
INCONSISTENT_GROUP_TYPE: ErrorCode
TOPIC_AUTHORIZATION_FAILED: ErrorCode
GROUP_AUTHORIZATION_FAILED: ErrorCode
CLUSTER_AUTHORIZATION_FAILED: ErrorCode
TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ErrorCode
AUTHENTICATION_FAILED: ErrorCode
UNKNOWN_USER: ErrorCode
USER_EXISTS: ErrorCode
INVALID_TXN_STATE: ErrorCode
TRANSACTIONAL_ID_NOT_FOUND: ErrorCode
CONCURRENT_TRANSACTIONS: ErrorCode
INVALID_TRANSACTION_TIMEOUT: ErrorCode
TRANSACTION_COORDINATOR_FENCED: ErrorCode
INVALID_PRODUCER_EPOCH: ErrorCode

class ErrorInfo(_message.Message):
    __slots__ = ("code", "message", "retriable", "leader_id", "leader_address")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    retriable: bool
    leader_id: int
    leader_address: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., retriable: _Optional[bool] = ..., leader_id: _Optional[int] = ..., leader_address: _Optional[str] = ...) -> None: ...
