"""Plain value types the client hands out (never protobufs), and their conversions."""

from __future__ import annotations

from dataclasses import dataclass, field

from client.pb.raftka.v1 import admin_pb2, broker_pb2

__all__ = [
    "BrokerDescription",
    "ClusterDescription",
    "ConsumedRecord",
    "NodeDescription",
    "PartitionDescription",
    "TopicDescription",
]


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """One partition as the answering node knows it (exact on the partition leader)."""

    partition: int
    leader_id: int  # 0 while no leader is known
    replicas: tuple[int, ...]
    high_watermark: int
    log_start_offset: int
    leader_term: int

    @property
    def has_leader(self) -> bool:
        return self.leader_id != 0

    @classmethod
    def from_pb(cls, p: broker_pb2.PartitionInfo) -> PartitionDescription:
        return cls(
            partition=p.partition,
            leader_id=p.leader_id,
            replicas=tuple(p.replicas),
            high_watermark=p.high_watermark,
            log_start_offset=p.log_start_offset,
            leader_term=p.leader_term,
        )


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    partitions: tuple[PartitionDescription, ...]  # sorted by partition number
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    def partition(self, number: int) -> PartitionDescription | None:
        for p in self.partitions:
            if p.partition == number:
                return p
        return None

    @classmethod
    def from_pb(cls, t: broker_pb2.TopicInfo) -> TopicDescription:
        parts = sorted((PartitionDescription.from_pb(p) for p in t.partitions),
                       key=lambda p: p.partition)
        return cls(
            name=t.name,
            partitions=tuple(parts),
            replication_factor=t.replication_factor,
            configs=dict(t.configs),
        )


@dataclass(frozen=True, slots=True)
class BrokerDescription:
    id: int
    address: str


@dataclass(frozen=True, slots=True)
class NodeDescription:
    id: int
    address: str
    reachable: bool  # as seen by the answering node
    leader_count: int  # partitions it leads

    @classmethod
    def from_pb(cls, n: admin_pb2.NodeStatus) -> NodeDescription:
        return cls(id=n.id, address=n.address, reachable=n.reachable,
                   leader_count=n.leader_count)


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    nodes: tuple[NodeDescription, ...]  # sorted by id
    controller_id: int  # 0 while the controller group has no leader
    under_replicated_partitions: int

    @classmethod
    def from_pb(cls, r: admin_pb2.DescribeClusterResponse) -> ClusterDescription:
        return cls(
            nodes=tuple(sorted((NodeDescription.from_pb(n) for n in r.nodes),
                               key=lambda n: n.id)),
            controller_id=r.controller_id,
            under_replicated_partitions=r.under_replicated_partitions,
        )


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One committed record read from a partition."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int
