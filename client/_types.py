"""Plain value types the client hands out (never protobufs), and their conversions."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any, NamedTuple

from raftka.v1 import admin_pb2, broker_pb2, group_pb2

__all__ = [
    "BrokerDescription",
    "ClusterDescription",
    "ClusterStatus",
    "ConsumedRecord",
    "GroupDescription",
    "GroupListing",
    "GroupMemberDescription",
    "GroupOffsetReset",
    "GroupPartitionLag",
    "LatencyHistogram",
    "NodeDescription",
    "NodeStats",
    "NodeStatus",
    "PartitionDescription",
    "PartitionOffsets",
    "PartitionStatus",
    "TopicDescription",
    "TopicPartition",
]


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """One partition as the answering node knows it (exact on the partition leader)."""

    partition: int
    leader_id: int  # 0 while no leader is known
    replicas: tuple[int, ...]
    high_watermark: int
    log_start_offset: int
    leader_term: int  # the answering replica's; 0: the answering node hosts none (a hint)
    dirty_ratio: float = 0.0  # compacted topics: as the answering replica computes it
    stored_bytes: int = 0  # batch bytes the answering node's replica keeps (0: none there)

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
            dirty_ratio=p.dirty_ratio,
            stored_bytes=p.stored_bytes,
        )


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    partitions: tuple[PartitionDescription, ...]  # sorted by partition number
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)
    topic_id: str = ""  # differs after a re-creation under the same name; "": not known

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
            topic_id=t.topic_id,
        )


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One config of a topic, as ``Admin.describe_topic_configs`` reports it."""

    name: str
    value: str  # normalized by the node (e.g. "7" for "007")
    source: str  # "TOPIC" (set on the topic) or "DEFAULT"
    read_only: bool  # every config of an internal topic
    doc: str
    default: str = ""  # the value it has when not set on the topic

    @classmethod
    def from_pb(cls, c: admin_pb2.ConfigEntry) -> ConfigEntry:
        source = {admin_pb2.CONFIG_SOURCE_TOPIC: "TOPIC",
                  admin_pb2.CONFIG_SOURCE_DEFAULT: "DEFAULT"}.get(c.source, "UNKNOWN")
        return cls(name=c.name, value=c.value, source=source, read_only=c.read_only,
                   doc=c.doc, default=c.default_value)


@dataclass(frozen=True, slots=True)
class BrokerDescription:
    id: int
    address: str
    rack: str = ""  # its --rack ("" = none declared)


@dataclass(frozen=True, slots=True)
class NodeDescription:
    id: int
    address: str
    reachable: bool  # as seen by the answering node
    leader_count: int  # partitions it leads
    rack: str = ""  # its --rack ("" = none declared, or not known to the answering node)

    @classmethod
    def from_pb(cls, n: admin_pb2.NodeStatus) -> NodeDescription:
        return cls(id=n.id, address=n.address, reachable=n.reachable,
                   leader_count=n.leader_count, rack=n.rack)


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


class ConsumedRecord(NamedTuple):
    """One committed record read from a partition. A NamedTuple, not a dataclass: one is
    built per record on the read path, and a tuple is several times cheaper to build."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int

    @property
    def timestamp(self) -> int:
        """Kafka's name for ``timestamp_ms`` (milliseconds since the epoch)."""
        return self.timestamp_ms


class ConsumedBatch:
    """The committed records of one stored batch (or its part at or after the reader's
    position), as columns: what ``poll_batches`` returns, for applications that handle
    values (and keys) in bulk and need no object per record. ``len()`` is its record count;
    iterating yields :class:`ConsumedRecord` objects (built on demand)."""

    __slots__ = ("topic", "partition", "offsets", "keys", "values", "timestamps_ms",
                 "headers")

    def __init__(self, topic: str, partition: int, offsets: list[int],
                 keys: list[bytes | None], values: list[bytes | None],
                 timestamps_ms: list[int],
                 headers: list[tuple[tuple[str, bytes | None], ...]]) -> None:
        self.topic = topic
        self.partition = partition
        self.offsets = offsets  # ascending
        self.keys = keys
        self.values = values
        self.timestamps_ms = timestamps_ms
        self.headers = headers  # one tuple per record, () without headers

    @classmethod
    def of_records(cls, topic: str, partition: int,
                   records: list[ConsumedRecord]) -> ConsumedBatch:
        return cls(topic, partition, [r.offset for r in records], [r.key for r in records],
                   [r.value for r in records], [r.timestamp_ms for r in records],
                   [r.headers for r in records])

    @property
    def next_offset(self) -> int:
        """The offset after this batch's last record (a consumer's position after it)."""
        return self.offsets[-1] + 1

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[ConsumedRecord]:
        t, p = self.topic, self.partition
        for o, k, v, h, ts in zip(self.offsets, self.keys, self.values, self.headers,
                                  self.timestamps_ms):
            yield ConsumedRecord(t, p, o, k, v, h, ts)

    def __repr__(self) -> str:
        return (f"ConsumedBatch({self.topic!r}, {self.partition}, offsets "
                f"{self.offsets[0] if self.offsets else '-'}..{self.next_offset - 1 if self.offsets else '-'}, "
                f"{len(self)} records)")


# --------------------------------------------------------------------------- groups


class TopicPartition(NamedTuple):
    topic: str
    partition: int


def topic_partitions(items: list[group_pb2.TopicPartitions]) -> tuple[TopicPartition, ...]:
    """``TopicPartitions`` messages -> sorted ``TopicPartition`` tuples."""
    return tuple(sorted(TopicPartition(tp.topic, p) for tp in items for p in tp.partitions))


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    state: str  # "stable", "reconciling", "empty"
    member_count: int
    coordinator_id: int

    @classmethod
    def from_pb(cls, g: group_pb2.GroupListing) -> GroupListing:
        return cls(group_id=g.group_id, state=g.state, member_count=g.members,
                   coordinator_id=g.coordinator_id)


@dataclass(frozen=True, slots=True)
class GroupMemberDescription:
    member_id: str
    client_id: str
    host: str
    member_epoch: int
    topics: tuple[str, ...]  # the subscription
    assignment: tuple[TopicPartition, ...]  # owned now, sorted
    target: tuple[TopicPartition, ...]  # where reconciliation is heading, sorted

    @classmethod
    def from_pb(cls, m: group_pb2.GroupMember) -> GroupMemberDescription:
        return cls(member_id=m.member_id, client_id=m.client_id, host=m.host,
                   member_epoch=m.member_epoch, topics=tuple(sorted(m.topics)),
                   assignment=topic_partitions(list(m.assignment)),
                   target=topic_partitions(list(m.target)))


@dataclass(frozen=True, slots=True)
class GroupPartitionLag:
    """One partition of a group: its committed offset against the log end (the last
    stable offset for a read_committed group: what its members can read)."""

    topic: str
    partition: int
    committed_offset: int | None  # the next offset the group will read; None: no commit
    log_end_offset: int | None  # the high watermark; None when unknown
    lag: int | None  # log end - committed (log end - log start without a commit); None: unknown
    member_id: str  # owner now, "" when none
    last_stable_offset: int | None = None  # None when unknown

    @classmethod
    def from_pb(cls, p: group_pb2.GroupPartitionState) -> GroupPartitionLag:
        known = p.log_end_offset >= 0  # both come from the partition's leader, or neither
        return cls(topic=p.topic, partition=p.partition,
                   committed_offset=p.committed_offset if p.committed_offset >= 0 else None,
                   log_end_offset=p.log_end_offset if p.log_end_offset >= 0 else None,
                   lag=p.lag if p.lag >= 0 else None, member_id=p.member_id,
                   last_stable_offset=p.last_stable_offset if known else None)


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    group_epoch: int
    assignor: str
    coordinator_id: int
    members: tuple[GroupMemberDescription, ...]  # sorted by member id
    partitions: tuple[GroupPartitionLag, ...]  # sorted by topic, partition
    # "read_committed" when a member reads committed records only: lag is then against
    # the last stable offset (transactions), else against the high watermark
    isolation_level: str = "read_uncommitted"

    @property
    def total_lag(self) -> int | None:
        """Sum of the known lags (None when no partition has a known lag)."""
        known = [p.lag for p in self.partitions if p.lag is not None]
        return sum(known) if known else None

    @property
    def is_empty(self) -> bool:
        return not self.members


@dataclass(frozen=True, slots=True)
class GroupOffsetReset:
    """One partition of a (planned or done) offset reset."""

    topic: str
    partition: int
    previous_offset: int | None  # committed before; None: nothing committed
    new_offset: int


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """``Admin.list_offsets``: the offset asked for plus the partition's bounds, from its
    leader."""

    topic: str
    partition: int
    offset: int
    high_watermark: int
    log_start_offset: int
    last_stable_offset: int | None = None  # what read_committed readers can reach


# --------------------------------------------------------------------------- cluster status


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Cumulative request latencies of one node (``Admin.describe_node_stats``)."""

    upper_bounds_s: tuple[float, ...]  # ascending, the last is inf
    cumulative_counts: tuple[int, ...]
    sum_s: float
    count: int

    @classmethod
    def from_pb(cls, h: Any) -> LatencyHistogram:
        return cls(tuple(h.upper_bounds_seconds), tuple(h.cumulative_counts), h.sum_seconds,
                   h.count)

    def quantile_since(self, earlier: LatencyHistogram | None, q: float) -> float | None:
        """The ``q`` quantile (0..1) in seconds of the requests between ``earlier`` and this
        one (all of them with None), interpolated within a bucket as Prometheus'
        ``histogram_quantile`` does; None without requests. Beyond the last finite bound
        it says that bound."""
        counts = self.cumulative_counts
        if earlier is not None and earlier.upper_bounds_s == self.upper_bounds_s:
            counts = tuple(a - b for a, b in zip(counts, earlier.cumulative_counts))
        if not counts or counts[-1] <= 0:
            return None
        rank = q * counts[-1]
        lower, below = 0.0, 0
        for bound, cumulative in zip(self.upper_bounds_s, counts):
            if cumulative >= rank:
                if bound == float("inf"):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower


@dataclass(frozen=True, slots=True)
class NodeStats:
    """Request statistics of one node since it started (``Admin.describe_node_stats``)."""

    node_id: int
    produce_acks_all: LatencyHistogram
    produce_acks_leader: LatencyHistogram
    fetch: LatencyHistogram
    produce_records: int
    produce_bytes: int
    fetch_records: int
    fetch_bytes: int

    @classmethod
    def from_pb(cls, r: Any) -> NodeStats:
        return cls(r.node_id, LatencyHistogram.from_pb(r.produce_acks_all),
                   LatencyHistogram.from_pb(r.produce_acks_leader),
                   LatencyHistogram.from_pb(r.fetch), r.produce_records, r.produce_bytes,
                   r.fetch_records, r.fetch_bytes)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    id: int
    address: str
    reachable: bool  # answered this client
    leader_count: int  # partitions it leads (its own claim, newest term wins)
    replica_count: int  # partition replicas the metadata places on it
    seen_down_by: tuple[int, ...]  # reachable nodes that report it unreachable


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """A partition that is not fully replicated (``ClusterStatus.under_replicated``)."""

    topic: str
    partition: int
    leader_id: int  # 0: no leader
    replicas: tuple[int, ...]
    missing: tuple[int, ...]  # replicas that are down, unreachable from the leader or not started


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """A cluster-wide view merged from every node's answer (``Admin.cluster_status``)."""

    nodes: tuple[NodeStatus, ...]  # sorted by id
    controller_id: int  # 0 while no controller leader is known
    partition_count: int
    leaderless: tuple[TopicPartition, ...]
    under_replicated: tuple[PartitionStatus, ...]

    @property
    def under_replicated_partitions(self) -> int:
        return len(self.under_replicated)
