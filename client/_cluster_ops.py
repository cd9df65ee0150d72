"""Values the Admin's cluster operations return (issue 19): nodes with their state,
partition moves with their progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClusterNode:
    id: int
    address: str
    state: str  # "active", "decommissioning" or "removed"
    reachable: bool  # as seen by the node that answered
    replica_count: int  # partitions it hosts (a move counts on both sides)
    leader_count: int  # partitions it leads, as the answering node knows
    controller_voter: bool  # votes in the controller group (the others follow it)

    @classmethod
    def from_pb(cls, pb: Any) -> ClusterNode:
        return cls(pb.id, pb.address, pb.state, pb.reachable, pb.replica_count,
                   pb.leader_count, pb.controller_voter)


@dataclass(frozen=True)
class ReplicaProgress:
    node_id: int
    role: str  # "voter", "learner" or "absent" (not in the partition's Raft group)
    match_index: int  # the last Raft index the leader knows it holds
    caught_up_offset: int  # records below this offset are on the replica


@dataclass(frozen=True)
class Reassignment:
    topic: str
    partition: int
    replicas: tuple[int, ...]  # before the move
    target: tuple[int, ...]
    cancelled: bool  # heading back to ``replicas``
    leader_id: int  # 0: unknown (no progress then)
    high_watermark: int
    progress: tuple[ReplicaProgress, ...]

    @classmethod
    def from_pb(cls, pb: Any) -> Reassignment:
        return cls(pb.topic, pb.partition, tuple(pb.replicas), tuple(pb.target), pb.cancelled,
                   pb.leader_id, pb.high_watermark, tuple(
                       ReplicaProgress(p.node_id, p.role, p.match_index, p.caught_up_offset)
                       for p in pb.progress))


@dataclass(frozen=True)
class BalancerNode:
    id: int
    rack: str
    replica_count: int  # partitions it hosts once the moves under way are done
    leader_count: int  # partitions whose preferred leader it is
    size_bytes: int  # the log sizes of its replicas, as last reported


@dataclass(frozen=True)
class BalancerMove:
    topic: str
    partition: int
    replicas: tuple[int, ...]  # now
    target: tuple[int, ...]  # after the move ([0]: the preferred leader)
    kind: str  # "leader" (a reorder: no data moves), "rack", "replicas" or "bytes"
    reason: str


@dataclass(frozen=True)
class BalancerStatus:
    paused: bool
    status: str  # "balanced", "balancing", "paused", "waiting: ...", "imbalanced: ..."
    nodes: tuple[BalancerNode, ...]
    plan: tuple[BalancerMove, ...]  # what it would do next, in order
    moves_in_flight: int
    moves_in_flight_max: int

    @classmethod
    def from_pb(cls, pb: Any) -> BalancerStatus:
        return cls(pb.paused, pb.status,
                   tuple(BalancerNode(n.id, n.rack, n.replica_count, n.leader_count,
                                      n.size_bytes) for n in pb.nodes),
                   tuple(BalancerMove(m.topic, m.partition, tuple(m.replicas),
                                      tuple(m.target), m.kind, m.reason) for m in pb.plan),
                   pb.moves_in_flight, pb.moves_in_flight_max)


__all__ = ["BalancerMove", "BalancerNode", "BalancerStatus", "ClusterNode", "Reassignment",
           "ReplicaProgress"]
