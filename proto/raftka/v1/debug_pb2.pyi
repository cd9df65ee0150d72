from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaDigestRequest(_message.Message):
    __slots__ = ("topic", "partition", "from_offset", "to_offset", "range_offsets", "max_bytes", "positions_only")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FROM_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TO_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RANGE_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_ONLY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    from_offset: int
    to_offset: int
    range_offsets: int
    max_bytes: int
    positions_only: bool
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., from_offset: _Optional[int] = ..., to_offset: _Optional[int] = ..., range_offsets: _Optional[int] = ..., max_bytes: _Optional[int] = ..., positions_only: _Optional[bool] = ...) -> None: ...

class OffsetRangeDigest(_message.Message):
    __slots__ = ("start_offset", "end_offset", "crc32c", "batches", "records", "bytes")
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    start_offset: int
    end_offset: int
    crc32c: int
    batches: int
    records: int
    bytes: int
    def __init__(self, start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., crc32c: _Optional[int] = ..., batches: _Optional[int] = ..., records: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class ReplicaDigestResponse(_message.Message):
    __slots__ = ("node_id", "leader", "term", "leader_id", "log_start_offset", "high_watermark", "last_offset", "applied_index", "last_index", "ranges", "next_offset")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LOG_START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    leader: bool
    term: int
    leader_id: int
    log_start_offset: int
    high_watermark: int
    last_offset: int
    applied_index: int
    last_index: int
    ranges: _containers.RepeatedCompositeFieldContainer[OffsetRangeDigest]
    next_offset: int
    def __init__(self, node_id: _Optional[int] = ..., leader: _Optional[bool] = ..., term: _Optional[int] = ..., leader_id: _Optional[int] = ..., log_start_offset: _Optional[int] = ..., high_watermark: _Optional[int] = ..., last_offset: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_index: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[OffsetRangeDigest, _Mapping]]] = ..., next_offset: _Optional[int] = ...) -> None: ...
