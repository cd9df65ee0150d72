from raftka.v1 import group_pb2 as _group_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AcknowledgeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACKNOWLEDGE_TYPE_UNSPECIFIED: _ClassVar[AcknowledgeType]
    ACCEPT: _ClassVar[AcknowledgeType]
    RELEASE: _ClassVar[AcknowledgeType]
    REJECT: _ClassVar[AcknowledgeType]
ACKNOWLEDGE_TYPE_UNSPECIFIED: AcknowledgeType
ACCEPT: AcknowledgeType
RELEASE: AcknowledgeType
REJECT: AcknowledgeType

class ShareGroupConfig(_message.Message):
    __slots__ = ("record_lock_duration_ms", "max_delivery_attempts", "dead_letter_topic", "max_in_flight_records", "redelivery_backoff_initial_ms", "redelivery_backoff_multiplier", "redelivery_backoff_max_ms")
    RECORD_LOCK_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERY_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_TOPIC_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    REDELIVERY_BACKOFF_INITIAL_MS_FIELD_NUMBER: _ClassVar[int]
    REDELIVERY_BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    REDELIVERY_BACKOFF_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    record_lock_duration_ms: int
    max_delivery_attempts: int
    dead_letter_topic: str
    max_in_flight_records: int
    redelivery_backoff_initial_ms: int
    redelivery_backoff_multiplier: float
    redelivery_backoff_max_ms: int
    def __init__(self, record_lock_duration_ms: _Optional[int] = ..., max_delivery_attempts: _Optional[int] = ..., dead_letter_topic: _Optional[str] = ..., max_in_flight_records: _Optional[int] = ..., redelivery_backoff_initial_ms: _Optional[int] = ..., redelivery_backoff_multiplier: _Optional[float] = ..., redelivery_backoff_max_ms: _Optional[int] = ...) -> None: ...

class ShareGroupHeartbeatRequest(_message.Message):
    __slots__ = ("group_id", "member_id", "topics", "leave", "client_id", "config")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    member_id: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    leave: bool
    client_id: str
    config: ShareGroupConfig
    def __init__(self, group_id: _Optional[str] = ..., member_id: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ..., leave: _Optional[bool] = ..., client_id: _Optional[str] = ..., config: _Optional[_Union[ShareGroupConfig, _Mapping]] = ...) -> None: ...

class ShareGroupHeartbeatResponse(_message.Message):
    __slots__ = ("heartbeat_interval_ms", "config", "assignment")
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    config: ShareGroupConfig
    assignment: _containers.RepeatedCompositeFieldContainer[_group_pb2.TopicPartitions]
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ..., config: _Optional[_Union[ShareGroupConfig, _Mapping]] = ..., assignment: _Optional[_Iterable[_Union[_group_pb2.TopicPartitions, _Mapping]]] = ...) -> None: ...

class DescribeShareGroupRequest(_message.Message):
    __slots__ = ("group_id",)
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    def __init__(self, group_id: _Optional[str] = ...) -> None: ...

class ShareMember(_message.Message):
    __slots__ = ("member_id", "client_id", "topics", "host")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    client_id: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    host: str
    def __init__(self, member_id: _Optional[str] = ..., client_id: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ..., host: _Optional[str] = ...) -> None: ...

class DescribeShareGroupResponse(_message.Message):
    __slots__ = ("config", "members", "coordinator_id", "topics")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    config: ShareGroupConfig
    members: _containers.RepeatedCompositeFieldContainer[ShareMember]
    coordinator_id: int
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, config: _Optional[_Union[ShareGroupConfig, _Mapping]] = ..., members: _Optional[_Iterable[_Union[ShareMember, _Mapping]]] = ..., coordinator_id: _Optional[int] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class AcquiredRecords(_message.Message):
    __slots__ = ("first_offset", "last_offset", "delivery_count")
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    first_offset: int
    last_offset: int
    delivery_count: int
    def __init__(self, first_offset: _Optional[int] = ..., last_offset: _Optional[int] = ..., delivery_count: _Optional[int] = ...) -> None: ...

class ShareFetchRequest(_message.Message):
    __slots__ = ("group_id", "member_id", "topic", "partition", "max_records", "max_wait_ms", "request_id", "acknowledgements", "acknowledge_request_id")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGE_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    member_id: str
    topic: str
    partition: int
    max_records: int
    max_wait_ms: int
    request_id: str
    acknowledgements: _containers.RepeatedCompositeFieldContainer[AcknowledgeRange]
    acknowledge_request_id: str
    def __init__(self, group_id: _Optional[str] = ..., member_id: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., max_records: _Optional[int] = ..., max_wait_ms: _Optional[int] = ..., request_id: _Optional[str] = ..., acknowledgements: _Optional[_Iterable[_Union[AcknowledgeRange, _Mapping]]] = ..., acknowledge_request_id: _Optional[str] = ...) -> None: ...

class ShareFetchResponse(_message.Message):
    __slots__ = ("acquired", "record_batches", "lock_deadline_ms", "high_watermark", "acknowledged")
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    RECORD_BATCHES_FIELD_NUMBER: _ClassVar[int]
    LOCK_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acquired: _containers.RepeatedCompositeFieldContainer[AcquiredRecords]
    record_batches: bytes
    lock_deadline_ms: int
    high_watermark: int
    acknowledged: bool
    def __init__(self, acquired: _Optional[_Iterable[_Union[AcquiredRecords, _Mapping]]] = ..., record_batches: _Optional[bytes] = ..., lock_deadline_ms: _Optional[int] = ..., high_watermark: _Optional[int] = ..., acknowledged: _Optional[bool] = ...) -> None: ...

class AcknowledgeRange(_message.Message):
    __slots__ = ("first_offset", "last_offset", "type", "release_delay_ms", "error")
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    first_offset: int
    last_offset: int
    type: AcknowledgeType
    release_delay_ms: int
    error: str
    def __init__(self, first_offset: _Optional[int] = ..., last_offset: _Optional[int] = ..., type: _Optional[_Union[AcknowledgeType, str]] = ..., release_delay_ms: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ShareAcknowledgeRequest(_message.Message):
    __slots__ = ("group_id", "member_id", "topic", "partition", "ranges", "leave", "request_id")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    member_id: str
    topic: str
    partition: int
    ranges: _containers.RepeatedCompositeFieldContainer[AcknowledgeRange]
    leave: bool
    request_id: str
    def __init__(self, group_id: _Optional[str] = ..., member_id: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[AcknowledgeRange, _Mapping]]] = ..., leave: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ShareAcknowledgeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeSharePartitionRequest(_message.Message):
    __slots__ = ("group_id", "topic", "partition")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    topic: str
    partition: int
    def __init__(self, group_id: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ...) -> None: ...

class DescribeSharePartitionResponse(_message.Message):
    __slots__ = ("start_offset", "end_offset", "high_watermark", "acquired", "available", "dead_lettering", "dead_lettered", "accepted", "members")
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERING_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    start_offset: int
    end_offset: int
    high_watermark: int
    acquired: int
    available: int
    dead_lettering: int
    dead_lettered: int
    accepted: int
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., high_watermark: _Optional[int] = ..., acquired: _Optional[int] = ..., available: _Optional[int] = ..., dead_lettering: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., accepted: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class InitializeSharePartitionRequest(_message.Message):
    __slots__ = ("group_id", "topic", "partition")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    topic: str
    partition: int
    def __init__(self, group_id: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ...) -> None: ...

class InitializeSharePartitionResponse(_message.Message):
    __slots__ = ("start_offset",)
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    start_offset: int
    def __init__(self, start_offset: _Optional[int] = ...) -> None: ...
