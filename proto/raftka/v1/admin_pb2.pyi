from raftka.v1 import broker_pb2 as _broker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConfigSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFIG_SOURCE_UNSPECIFIED: _ClassVar[ConfigSource]
    CONFIG_SOURCE_DEFAULT: _ClassVar[ConfigSource]
    CONFIG_SOURCE_TOPIC: _ClassVar[ConfigSource]
CONFIG_SOURCE_UNSPECIFIED: ConfigSource
CONFIG_SOURCE_DEFAULT: ConfigSource
CONFIG_SOURCE_TOPIC: ConfigSource

class CreateTopicRequest(_message.Message):
    __slots__ = ("name", "partitions", "replication_factor", "configs")
    class ConfigsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    partitions: int
    replication_factor: int
    configs: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., partitions: _Optional[int] = ..., replication_factor: _Optional[int] = ..., configs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateTopicResponse(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: _broker_pb2.TopicInfo
    def __init__(self, topic: _Optional[_Union[_broker_pb2.TopicInfo, _Mapping]] = ...) -> None: ...

class DeleteTopicRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTopicResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeTopicRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeTopicResponse(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: _broker_pb2.TopicInfo
    def __init__(self, topic: _Optional[_Union[_broker_pb2.TopicInfo, _Mapping]] = ...) -> None: ...

class AddPartitionsRequest(_message.Message):
    __slots__ = ("name", "total_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    total_count: int
    def __init__(self, name: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class AddPartitionsResponse(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: _broker_pb2.TopicInfo
    def __init__(self, topic: _Optional[_Union[_broker_pb2.TopicInfo, _Mapping]] = ...) -> None: ...

class AlterTopicConfigsRequest(_message.Message):
    __slots__ = ("name", "set", "delete", "validate_only")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    set: _containers.ScalarMap[str, str]
    delete: _containers.RepeatedScalarFieldContainer[str]
    validate_only: bool
    def __init__(self, name: _Optional[str] = ..., set: _Optional[_Mapping[str, str]] = ..., delete: _Optional[_Iterable[str]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class AlterTopicConfigsResponse(_message.Message):
    __slots__ = ("configs",)
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    configs: _containers.RepeatedCompositeFieldContainer[ConfigEntry]
    def __init__(self, configs: _Optional[_Iterable[_Union[ConfigEntry, _Mapping]]] = ...) -> None: ...

class ConfigEntry(_message.Message):
    __slots__ = ("name", "value", "source", "read_only", "doc", "default_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    source: ConfigSource
    read_only: bool
    doc: str
    default_value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., source: _Optional[_Union[ConfigSource, str]] = ..., read_only: _Optional[bool] = ..., doc: _Optional[str] = ..., default_value: _Optional[str] = ...) -> None: ...

class DescribeTopicConfigsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeTopicConfigsResponse(_message.Message):
    __slots__ = ("configs",)
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    configs: _containers.RepeatedCompositeFieldContainer[ConfigEntry]
    def __init__(self, configs: _Optional[_Iterable[_Union[ConfigEntry, _Mapping]]] = ...) -> None: ...

class DescribeClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeNodeStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LatencyHistogram(_message.Message):
    __slots__ = ("upper_bounds_seconds", "cumulative_counts", "sum_seconds", "count")
    UPPER_BOUNDS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    upper_bounds_seconds: _containers.RepeatedScalarFieldContainer[float]
    cumulative_counts: _containers.RepeatedScalarFieldContainer[int]
    sum_seconds: float
    count: int
    def __init__(self, upper_bounds_seconds: _Optional[_Iterable[float]] = ..., cumulative_counts: _Optional[_Iterable[int]] = ..., sum_seconds: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class DescribeNodeStatsResponse(_message.Message):
    __slots__ = ("node_id", "produce_acks_all", "produce_acks_leader", "fetch", "produce_records", "produce_bytes", "fetch_records", "fetch_bytes", "follower_fetch_requests", "follower_fetch_records")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCE_ACKS_ALL_FIELD_NUMBER: _ClassVar[int]
    PRODUCE_ACKS_LEADER_FIELD_NUMBER: _ClassVar[int]
    FETCH_FIELD_NUMBER: _ClassVar[int]
    PRODUCE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    PRODUCE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FETCH_RECORDS_FIELD_NUMBER: _ClassVar[int]
    FETCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    FOLLOWER_FETCH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FOLLOWER_FETCH_RECORDS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    produce_acks_all: LatencyHistogram
    produce_acks_leader: LatencyHistogram
    fetch: LatencyHistogram
    produce_records: int
    produce_bytes: int
    fetch_records: int
    fetch_bytes: int
    follower_fetch_requests: int
    follower_fetch_records: int
    def __init__(self, node_id: _Optional[int] = ..., produce_acks_all: _Optional[_Union[LatencyHistogram, _Mapping]] = ..., produce_acks_leader: _Optional[_Union[LatencyHistogram, _Mapping]] = ..., fetch: _Optional[_Union[LatencyHistogram, _Mapping]] = ..., produce_records: _Optional[int] = ..., produce_bytes: _Optional[int] = ..., fetch_records: _Optional[int] = ..., fetch_bytes: _Optional[int] = ..., follower_fetch_requests: _Optional[int] = ..., follower_fetch_records: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("id", "address", "reachable", "leader_count", "rack")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_COUNT_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    reachable: bool
    leader_count: int
    rack: str
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., reachable: _Optional[bool] = ..., leader_count: _Optional[int] = ..., rack: _Optional[str] = ...) -> None: ...

class DescribeClusterResponse(_message.Message):
    __slots__ = ("nodes", "controller_id", "under_replicated_partitions")
    NODES_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    UNDER_REPLICATED_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    controller_id: int
    under_replicated_partitions: int
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., controller_id: _Optional[int] = ..., under_replicated_partitions: _Optional[int] = ...) -> None: ...

class ReassignPartitionRequest(_message.Message):
    __slots__ = ("topic", "partition", "replicas")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    replicas: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., replicas: _Optional[_Iterable[int]] = ...) -> None: ...

class ReassignPartitionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelReassignmentRequest(_message.Message):
    __slots__ = ("topic", "partition")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ...) -> None: ...

class CancelReassignmentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompleteReassignmentRequest(_message.Message):
    __slots__ = ("topic", "partition", "group_id", "replicas")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    group_id: int
    replicas: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., group_id: _Optional[int] = ..., replicas: _Optional[_Iterable[int]] = ...) -> None: ...

class CompleteReassignmentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReassignmentsRequest(_message.Message):
    __slots__ = ("topic", "local_only")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    local_only: bool
    def __init__(self, topic: _Optional[str] = ..., local_only: _Optional[bool] = ...) -> None: ...

class ReplicaProgress(_message.Message):
    __slots__ = ("node_id", "role", "match_index", "caught_up_offset")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_OFFSET_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    role: str
    match_index: int
    caught_up_offset: int
    def __init__(self, node_id: _Optional[int] = ..., role: _Optional[str] = ..., match_index: _Optional[int] = ..., caught_up_offset: _Optional[int] = ...) -> None: ...

class Reassignment(_message.Message):
    __slots__ = ("topic", "partition", "replicas", "target", "cancelled", "leader_id", "leader_last_index", "high_watermark", "progress")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    replicas: _containers.RepeatedScalarFieldContainer[int]
    target: _containers.RepeatedScalarFieldContainer[int]
    cancelled: bool
    leader_id: int
    leader_last_index: int
    high_watermark: int
    progress: _containers.RepeatedCompositeFieldContainer[ReplicaProgress]
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., replicas: _Optional[_Iterable[int]] = ..., target: _Optional[_Iterable[int]] = ..., cancelled: _Optional[bool] = ..., leader_id: _Optional[int] = ..., leader_last_index: _Optional[int] = ..., high_watermark: _Optional[int] = ..., progress: _Optional[_Iterable[_Union[ReplicaProgress, _Mapping]]] = ...) -> None: ...

class ListReassignmentsResponse(_message.Message):
    __slots__ = ("reassignments", "throttle_bytes_per_s")
    REASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    reassignments: _containers.RepeatedCompositeFieldContainer[Reassignment]
    throttle_bytes_per_s: int
    def __init__(self, reassignments: _Optional[_Iterable[_Union[Reassignment, _Mapping]]] = ..., throttle_bytes_per_s: _Optional[int] = ...) -> None: ...

class AlterReplicationFactorRequest(_message.Message):
    __slots__ = ("topic", "replication_factor")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    topic: str
    replication_factor: int
    def __init__(self, topic: _Optional[str] = ..., replication_factor: _Optional[int] = ...) -> None: ...

class AlterReplicationFactorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetReassignmentThrottleRequest(_message.Message):
    __slots__ = ("bytes_per_s",)
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    bytes_per_s: int
    def __init__(self, bytes_per_s: _Optional[int] = ...) -> None: ...

class SetReassignmentThrottleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DecommissionNodeRequest(_message.Message):
    __slots__ = ("node_id", "cancel", "dead")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    cancel: bool
    dead: bool
    def __init__(self, node_id: _Optional[int] = ..., cancel: _Optional[bool] = ..., dead: _Optional[bool] = ...) -> None: ...

class DecommissionNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("id", "address", "state", "reachable", "replica_count", "leader_count", "controller_voter")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEADER_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_VOTER_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    state: str
    reachable: bool
    replica_count: int
    leader_count: int
    controller_voter: bool
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., reachable: _Optional[bool] = ..., replica_count: _Optional[int] = ..., leader_count: _Optional[int] = ..., controller_voter: _Optional[bool] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "controller_id")
    NODES_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    controller_id: int
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., controller_id: _Optional[int] = ...) -> None: ...

class JoinClusterRequest(_message.Message):
    __slots__ = ("node_id", "address", "peer_address", "kafka_address", "rack")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KAFKA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    peer_address: str
    kafka_address: str
    rack: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., peer_address: _Optional[str] = ..., kafka_address: _Optional[str] = ..., rack: _Optional[str] = ...) -> None: ...

class ClusterNode(_message.Message):
    __slots__ = ("id", "address", "peer_address", "kafka_address", "rack")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KAFKA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    peer_address: str
    kafka_address: str
    rack: str
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., peer_address: _Optional[str] = ..., kafka_address: _Optional[str] = ..., rack: _Optional[str] = ...) -> None: ...

class JoinClusterResponse(_message.Message):
    __slots__ = ("node_id", "nodes", "initial_node_ids")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    INITIAL_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    nodes: _containers.RepeatedCompositeFieldContainer[ClusterNode]
    initial_node_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_id: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[ClusterNode, _Mapping]]] = ..., initial_node_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DescribeBalancerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BalancerNode(_message.Message):
    __slots__ = ("id", "rack", "replica_count", "leader_count", "size_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    REPLICA_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEADER_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: int
    rack: str
    replica_count: int
    leader_count: int
    size_bytes: int
    def __init__(self, id: _Optional[int] = ..., rack: _Optional[str] = ..., replica_count: _Optional[int] = ..., leader_count: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class BalancerMove(_message.Message):
    __slots__ = ("topic", "partition", "replicas", "target", "kind", "reason")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    replicas: _containers.RepeatedScalarFieldContainer[int]
    target: _containers.RepeatedScalarFieldContainer[int]
    kind: str
    reason: str
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., replicas: _Optional[_Iterable[int]] = ..., target: _Optional[_Iterable[int]] = ..., kind: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DescribeBalancerResponse(_message.Message):
    __slots__ = ("paused", "status", "nodes", "plan", "moves_in_flight", "moves_in_flight_max")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MOVES_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MOVES_IN_FLIGHT_MAX_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    status: str
    nodes: _containers.RepeatedCompositeFieldContainer[BalancerNode]
    plan: _containers.RepeatedCompositeFieldContainer[BalancerMove]
    moves_in_flight: int
    moves_in_flight_max: int
    def __init__(self, paused: _Optional[bool] = ..., status: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[BalancerNode, _Mapping]]] = ..., plan: _Optional[_Iterable[_Union[BalancerMove, _Mapping]]] = ..., moves_in_flight: _Optional[int] = ..., moves_in_flight_max: _Optional[int] = ...) -> None: ...

class SetBalancerRequest(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    def __init__(self, paused: _Optional[bool] = ...) -> None: ...

class SetBalancerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeReplicaSizesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeReplicaSizesResponse(_message.Message):
    __slots__ = ("group_ids", "size_bytes")
    GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    group_ids: _containers.RepeatedScalarFieldContainer[int]
    size_bytes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group_ids: _Optional[_Iterable[int]] = ..., size_bytes: _Optional[_Iterable[int]] = ...) -> None: ...
