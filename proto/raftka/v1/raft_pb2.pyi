from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RaftEntry(_message.Message):
    __slots__ = ("term", "index", "kind", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    kind: int
    data: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., kind: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftSnapshot(_message.Message):
    __slots__ = ("index", "term", "voters", "learners", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("group_id", "type", "to", "term", "log_term", "index", "entries", "commit", "reject", "reject_hint", "snapshot", "context")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    type: int
    to: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[RaftEntry]
    commit: int
    reject: bool
    reject_hint: int
    snapshot: RaftSnapshot
    context: bytes
    def __init__(self, group_id: _Optional[int] = ..., type: _Optional[int] = ..., to: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[RaftEntry, _Mapping]]] = ..., commit: _Optional[int] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., snapshot: _Optional[_Union[RaftSnapshot, _Mapping]] = ..., context: _Optional[bytes] = ...) -> None: ...

class HeartbeatPack(_message.Message):
    __slots__ = ("group_id", "term", "commit")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    group_id: _containers.RepeatedScalarFieldContainer[int]
    term: _containers.RepeatedScalarFieldContainer[int]
    commit: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group_id: _Optional[_Iterable[int]] = ..., term: _Optional[_Iterable[int]] = ..., commit: _Optional[_Iterable[int]] = ...) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("from_node", "to_node", "messages", "heartbeats", "heartbeat_responses", "protocol_version", "hello")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_RESPONSES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    to_node: int
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    heartbeats: HeartbeatPack
    heartbeat_responses: HeartbeatPack
    protocol_version: int
    hello: NodeHello
    def __init__(self, from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ..., heartbeats: _Optional[_Union[HeartbeatPack, _Mapping]] = ..., heartbeat_responses: _Optional[_Union[HeartbeatPack, _Mapping]] = ..., protocol_version: _Optional[int] = ..., hello: _Optional[_Union[NodeHello, _Mapping]] = ...) -> None: ...

class NodeHello(_message.Message):
    __slots__ = ("rack", "entry_format")
    RACK_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FORMAT_FIELD_NUMBER: _ClassVar[int]
    rack: str
    entry_format: int
    def __init__(self, rack: _Optional[str] = ..., entry_format: _Optional[int] = ...) -> None: ...

class RaftStreamSummary(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: int
    def __init__(self, batches: _Optional[int] = ...) -> None: ...
