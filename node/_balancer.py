"""The automatic balancer (issue 19): on the controller leader, keep replicas, bytes and
preferred leaders spread evenly over the active nodes.

One asyncio task per node (``run``, ``balancer``) wakes every ``STEP_INTERVAL_S``; it does
nothing unless this node leads the controller group and the node's ``balancer`` setting is
on. A step:

1. reads the committed metadata afresh (nothing is remembered between steps but the log
   sizes and when the imbalance was first seen, so a controller failover simply hands the
   work to the next leader's balancer);
2. does nothing while the replicated flag ``balancer_paused`` is set (``raftka cluster
   balance pause``), a node is decommissioning (the drain, ``_reassignment.py``, owns the
   moves then) or an active node is unreachable (moving onto it would stall; moving off it
   is ``remove --dead``'s decision, an operator's);
3. computes the plan with the pure ``_balancer_plan.plan_moves`` (only when its inputs
   changed: the metadata version, the log sizes, reachability; an idle balanced cluster costs
   nothing);
4. once the plan has been non-empty for ``balance_delay_s`` (a node that just joined gets
   its moves after that), proposes its first moves as ordinary ``reassign_partition``
   controller commands: leader moves (a reorder of the replica set: no data moves, the
   partition's leader records it complete at once and hands leadership to the new
   preferred replica) up to ``LEADER_MOVES_PER_STEP`` per step, data moves while fewer
   than ``MOVES_IN_FLIGHT_MAX`` partitions move (every move counts, an operator's too).

The reassignment machinery does the rest (learner first, catch-up under the throttle,
promotion, removal: ``_reassignment.py``): the balancer never touches Raft itself. It never
plans a partition that is moving, and the controller refuses a move of a partition that is
already moving, so the balancer and an operator never move one partition at once: the first
committed wins, the other is refused (the operator pauses the balancer, or cancels its
move, to take over a partition it is moving).

Log sizes: each replica's size is its partition's committed log size after retention
(``PartitionReplica.stored_bytes``), reported by the partition's leader. Every
``SIZES_REFRESH_S`` the balancer asks every other active node for the sizes of the
partitions it leads (``Admin.DescribeReplicaSizes``, over the peer channels) and takes its
own; a partition whose leader did not answer keeps its last size (0 if never heard).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from raftka.raft import Role
from raftka.v1 import admin_pb2, admin_pb2_grpc

from ._balancer_plan import Move, PartitionLoad, plan_moves
from ._controller_commands import encode_reassign_partition
from ._periodic import every

if TYPE_CHECKING:
    from ._broker import Broker

log = logging.getLogger("raftka.balancer")

STEP_INTERVAL_S = 1.0
SIZES_REFRESH_S = 10.0
SIZES_CALL_TIMEOUT_S = 3.0
MOVES_IN_FLIGHT_MAX = 2
LEADER_MOVES_PER_STEP = 8
PLAN_SHOWN_MAX = 100  # DescribeBalancer's plan
STEP_PLAN_MAX = LEADER_MOVES_PER_STEP + MOVES_IN_FLIGHT_MAX  # what one step may propose


class Balancer:
    def __init__(self, broker: Broker, enabled: bool, delay_s: float) -> None:
        self.broker = broker
        self.enabled = enabled
        self.delay_s = delay_s
        self.channel_of: Any = None  # node id -> grpc.aio.Channel (the forwarder's); set
        self.sizes: dict[int, int] = {}  # group id -> log size in bytes, as last reported
        self._sizes_at = -SIZES_REFRESH_S  # monotonic
        self._sizes_version = 0
        self._plans: dict[int, tuple[tuple, list[Move]]] = {}  # moves_max -> (inputs, plan)
        self._imbalanced_since: float | None = None
        self.status = "not the controller leader"
        self.proposed = 0  # moves proposed since start (tests, logs)

    # ------------------------------------------------------------------ inputs
    def local_sizes(self) -> dict[int, int]:
        """Group id -> log size of every partition this node leads."""
        out = {}
        for replica in self.broker.partitions.values():
            group = replica.group
            if group is not None and not group.closed and group.node.role == Role.LEADER:
                out[group.group_id] = replica.stored_bytes()
        return out

    async def _refresh_sizes(self, nodes: list[int]) -> None:
        sizes = dict(self.sizes)
        sizes.update(self.local_sizes())
        others = [n for n in nodes if n != self.broker.node_id]
        answers = await asyncio.gather(*(self._sizes_at_node(n) for n in others))
        for answer in answers:
            sizes.update(answer)
        state = self.broker.controller.state
        known = {part.group_id for meta in state.topics.values() for part in meta.partitions}
        sizes = {g: s for g, s in sizes.items() if g in known}
        if sizes != self.sizes:
            self.sizes = sizes
            self._sizes_version += 1

    async def _sizes_at_node(self, node: int) -> dict[int, int]:
        if self.channel_of is None:
            return {}
        from ._forwarding import forwarded_metadata  # (it imports the broker, which imports us)
        try:
            answer = await admin_pb2_grpc.AdminStub(self.channel_of(node)).DescribeReplicaSizes(
                admin_pb2.DescribeReplicaSizesRequest(), timeout=SIZES_CALL_TIMEOUT_S,
                metadata=forwarded_metadata(self.broker.node_id))
        except Exception as exc:  # noqa: BLE001 - unreachable, refused: keep the old sizes
            log.debug("sizes from node %d: %s", node, exc)
            return {}
        return dict(zip(answer.group_ids, answer.size_bytes))

    def loads(self) -> tuple[dict[int, str], list[PartitionLoad]]:
        """The planner's inputs from the applied metadata: active nodes with racks, every
        partition at its desired set (a moving one at its target, marked moving)."""
        b = self.broker
        state = b.controller.state
        nodes = {n: b.racks.get(n, "") for n in state.active_node_ids}
        parts = [PartitionLoad(meta.name, part.partition, part.desired,
                               self.sizes.get(part.group_id, 0), bool(part.target))
                 for meta in state.topics_sorted() for part in meta.partitions]
        return nodes, parts

    def waiting_for(self) -> str:
        """Why the balancer plans nothing now, or ""."""
        b = self.broker
        state = b.controller.state
        if state.balancer_paused:
            return "paused"
        if state.decommissioning:
            return (f"waiting: node(s) {sorted(state.decommissioning)} decommissioning "
                    "(the drain moves replicas)")
        down = [n for n in state.active_node_ids
                if n != b.node_id and not b.host.transport.is_reachable(n)]
        if down:
            return f"waiting: node(s) {down} unreachable"
        return ""

    async def plan(self, moves_max: int = STEP_PLAN_MAX) -> list[Move]:
        """The current plan, at most ``moves_max`` moves. Recomputed only when its inputs
        changed, in a worker thread: with 10,000 partitions (and racks) a plan takes up to
        a second of CPU, which must not stall the event loop in one piece."""
        b = self.broker
        state = b.controller.state
        key = (state.version, self._sizes_version, tuple(sorted(b.racks.items())))
        cached = self._plans.get(moves_max)
        if cached is not None and cached[0] == key:
            return cached[1]
        nodes, parts = self.loads()
        plan = await asyncio.to_thread(plan_moves, nodes, parts, moves_max=moves_max)
        self._plans[moves_max] = (key, plan)
        return plan

    # ------------------------------------------------------------------ the step
    def is_leader(self) -> bool:
        group = self.broker.controller.group
        return group is not None and group.node.role == Role.LEADER

    async def step(self) -> None:
        if not self.enabled or not self.is_leader():
            self.status = "off" if not self.enabled else "not the controller leader"
            self._imbalanced_since = None
            return
        state = self.broker.controller.state
        now = time.monotonic()
        if now - self._sizes_at >= SIZES_REFRESH_S:
            self._sizes_at = now
            await self._refresh_sizes(list(state.active_node_ids))
            if not self.is_leader():
                return
            state = self.broker.controller.state
        waiting = self.waiting_for()
        if waiting:
            self.status = waiting
            self._imbalanced_since = None
            return
        plan = await self.plan()
        if not self.is_leader():
            return
        if not plan:
            self.status = "balanced"
            self._imbalanced_since = None
            return
        if self._imbalanced_since is None:
            self._imbalanced_since = now
        left = self._imbalanced_since + self.delay_s - now
        if left > 0:
            self.status = f"imbalanced: first moves in {left:.0f} s"
            return
        self.status = "balancing"
        in_flight = len(state.reassignments())
        data_budget = MOVES_IN_FLIGHT_MAX - in_flight
        leader_budget = LEADER_MOVES_PER_STEP
        for move in plan:
            if move.moves_data:
                if data_budget <= 0:
                    continue
                data_budget -= 1
            else:
                if leader_budget <= 0:
                    continue
                leader_budget -= 1
            await self._propose(move)
            if not self.is_leader():
                return

    async def _propose(self, move: Move) -> None:
        ctl = self.broker.controller
        result = await ctl.propose(
            encode_reassign_partition(move.topic, move.partition, move.target), 5.0)
        if result.ok:
            self.proposed += 1
            log.info("balancer: %s/%d moves from %s to %s (%s: %s)", move.topic,
                     move.partition, list(move.replicas), list(move.target), move.kind,
                     move.reason)
        else:  # e.g. an operator's move of the same partition committed first
            log.info("balancer: move of %s/%d to %s refused: %s", move.topic, move.partition,
                     list(move.target), result.message)

    # ------------------------------------------------------------------ describe
    async def describe(self) -> admin_pb2.DescribeBalancerResponse:
        """The status, the nodes' loads and the plan (for DescribeBalancer)."""
        state = self.broker.controller.state
        nodes, parts = self.loads()
        response = admin_pb2.DescribeBalancerResponse(
            paused=state.balancer_paused, moves_in_flight=len(state.reassignments()),
            moves_in_flight_max=MOVES_IN_FLIGHT_MAX)
        waiting = self.waiting_for()
        response.status = waiting or ("off (this node runs with --no-balancer)"
                                      if not self.enabled else self.status)
        counts = {n: [0, 0, 0] for n in nodes}
        for p in parts:
            for i, n in enumerate(p.replicas):
                if n in counts:
                    counts[n][0] += 1
                    counts[n][2] += p.size_bytes
                    if i == 0:
                        counts[n][1] += 1
        for n, rack in sorted(nodes.items()):
            response.nodes.add(id=n, rack=rack, replica_count=counts[n][0],
                               leader_count=counts[n][1], size_bytes=counts[n][2])
        plan = await self.plan(PLAN_SHOWN_MAX)
        if not waiting and not plan and self.enabled:
            response.status = "balanced"
        for move in plan:
            response.plan.add(topic=move.topic, partition=move.partition,
                              replicas=list(move.replicas), target=list(move.target),
                              kind=move.kind, reason=move.reason)
        return response


async def run(balancer: Balancer) -> None:
    """The task: ``balancer.step()`` every ``STEP_INTERVAL_S``; never ends on an error."""
    await every(STEP_INTERVAL_S, balancer.step, "balancer step", log)
