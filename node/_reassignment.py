"""Carrying out partition moves and node decommissions (issue 19).

The controller only records intent (``_controller_state.py``: a partition's ``target``, a
node ``decommissioning``); the work happens here, on every node, in one asyncio task
(``Broker._reassignments``) that runs ``ReassignmentDriver.step`` every ``STEP_INTERVAL_S``.

Per partition this node *leads* whose metadata has a move (``desired`` = the target, or the
old replicas after a cancel), one single-server Raft change at a time (the core refuses a
second one while one is uncommitted; thesis §4.1, etcd's learner-first member add):

1. a node of ``desired`` in neither voters nor learners is added as a LEARNER. That node
   started an empty replica when it saw itself in the target (``Broker._start_partition``:
   no configuration, never campaigns); the leader catches it up with its log, or with a
   snapshot when its log is compacted below what the learner holds;
2. a learner of ``desired`` whose match index has reached the leader's commit index is
   promoted to VOTER (under writes a follower's match runs ahead of the commit index, which
   waits for a majority, so this is reached as soon as it is within a round trip);
3. only when every node of ``desired`` votes: learners outside ``desired`` are removed, then
   voters outside it. Voters are thus never fewer than ``len(desired)`` (the replication
   factor) during the move, and every acknowledged write stays on a majority of the old
   *and* the new configuration (single-server changes overlap in a majority). If this leader
   itself leaves, it first hands leadership to the most caught-up voter of ``desired``
   (TimeoutNow); the new leader goes on from there;
4. when the voters are exactly ``desired``, there is no learner and the configuration is
   committed, it reports completion to the controller (``CompleteReassignment``). Every
   node then applies metadata in which it may no longer host the partition: it stops the
   replica and deletes its data (``Broker._reconcile``).

Nothing here is remembered between steps: each step reads the Raft configuration and the
metadata afresh, so a leader change, a restart or a cancel in the middle is picked up by
whoever leads next.

Throttle: APP and SNAP messages to a *learner* of a partition's group are paced, not dropped
(``_catchup_pacer.py``): they share a token bucket of the controller's
``reassign_throttle_bytes_per_s`` per sending node (``DEFAULT_BYTES_PER_S`` when it is 0),
and a message over budget waits in a queue per destination until the bucket has filled
(Raft's inflight window for learners keeps that queue short). Voters are never throttled:
they carry the writes being acknowledged.

On the controller leader, the same step plans decommissions: for each decommissioning
node, ``ControllerState.plan_moves_off`` proposes moves (at most ``DECOMMISSION_MOVES_MAX``
partitions moving off that node at once); once the node hosts nothing it proposes
``remove_node``.

It also replaces controller voters (``_replace_controller_voters``): every node follows the
controller group (voters, or learners for the others), so a voter that is decommissioning or
removed is replaced by promoting the lowest-id active learner whose log has reached the
commit index (ADD_VOTER), then demoted to learner (ADD_LEARNER; demoted rather than removed
so that a node whose decommission is cancelled still follows the metadata). A learner that
is *removed* (final, unlike decommissioning) then leaves the group (REMOVE_NODE) once it
has had time to apply its own removal (``_told_of_its_removal``), and every node that sees
it gone from the group drops it from its Raft transport (``Broker.forget_departed_nodes``):
nobody dials it again. One change at a
time, promotion first: the group never has fewer voters than it started with while a
replacement exists, and a lost voter of three (``remove --dead``) gets the group back to
three healthy voters without an outage. A leader that is itself to be demoted hands its
leadership to the most caught-up other voter first.

Before any of that, a node registered by a join (``register_node``, ``_join.py``) that is in
neither the voters nor the learners of the controller group is added as a learner (etcd's
learner-first member add), one per step; and while the voters are fewer than
``min(CONTROLLER_VOTERS_MAX, active nodes)`` (a cluster that started with fewer nodes), a
caught-up learner is promoted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable

from raftka.raft import ConfChange, ConfChangeKind, Message, MsgType, Role
from raftka.v1 import admin_pb2

from ._catchup_pacer import DEFAULT_BYTES_PER_S, CatchUpPacer
from ._controller_commands import (
    encode_reassign_partition,
    encode_remove_node,
)
from ._controller_replica import CONTROLLER_VOTERS_MAX
from ._controller_state import PartitionMeta, TopicMeta
from ._errors import BrokerError
from ._periodic import every

if TYPE_CHECKING:
    from ._broker import Broker
    from ._partition import PartitionReplica

log = logging.getLogger("raftka.reassignment")

STEP_INTERVAL_S = 0.2
# Partitions moving off one decommissioning node at once. Bytes are paced by the catch-up
# throttle whatever the count; the count bounds the per-move work (configuration changes,
# metadata writes, completion reports). At 2, a node holding 7,500 mostly idle replicas
# took about an hour to drain (~2 moves/s: each move waits for a few 0.2 s steps).
DECOMMISSION_MOVES_MAX = 16
REPORT_RETRY_S = 1.0
# A removed learner leaves the controller group once it has held the entries up to its
# removal for this long (heartbeats tell it they are committed, so it applies its own
# removal first), or once nothing was heard from it for REMOVED_SILENT_S (stopped or dead).
REMOVED_LEARNER_GRACE_S = 2.0
REMOVED_SILENT_S = 30.0


def _call_later(delay_s: float, fn: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_later(delay_s, fn)


# Records a finished move at the controller leader (here or forwarded there); raises
# BrokerError. Set by the server (``AdminService.complete_reassignment``).
ControllerWrite = Callable[[admin_pb2.CompleteReassignmentRequest], Awaitable[None]]


class ReassignmentDriver:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.controller_write: ControllerWrite | None = None
        self._reported: dict[tuple[int, tuple[int, ...]], float] = {}  # -> when (monotonic)
        self.pacer = CatchUpPacer(
            send_now=self._send_now, is_learner=self._is_learner,
            rate=self.catchup_rate, clock=time.monotonic, schedule=_call_later)
        # Removed learners of the controller group, on its leader: the commit index when
        # this leader first saw the node removed, and since when the node holds it.
        self._removal_index: dict[int, int] = {}
        self._holds_removal_since: dict[int, float] = {}

    # ------------------------------------------------------------------ throttle
    def catchup_rate(self) -> float:
        """Bytes/s this node may send to learners (module docstring, Throttle)."""
        return float(self.broker.controller.state.reassign_throttle_bytes_per_s
                     or DEFAULT_BYTES_PER_S)

    def _send_now(self, group_id: int, m: Message) -> None:
        self.broker.host.transport.send_now(group_id, m)

    def _is_learner(self, group_id: int, node: int) -> bool:
        """Whether ``node`` catches up as a learner of partition group ``group_id``. The
        controller group's learners (every node past its voters) follow the metadata for
        good: never paced, nor held behind a partition's catch-up to the same node."""
        if group_id == self.broker.controller.group_id:
            return False
        group = self.broker.host.groups.get(group_id)
        return group is not None and node in group.node.conf_state.learners

    # ------------------------------------------------------------------ the step
    async def step(self) -> None:
        broker = self.broker
        state = broker.controller.state
        for topic, meta in state.reassignments():
            replica = broker.partitions.get((topic.name, meta.partition))
            if replica is None or replica.group is None or replica.group.closed:
                continue
            if replica.group.node.role != Role.LEADER:
                continue
            try:
                await self._drive(topic, meta, replica)
            except BrokerError as exc:
                log.info("move of %s/%d: %s; retrying", topic.name, meta.partition,
                         exc.message)
        broker.forget_departed_nodes()
        ctl = broker.controller
        if ctl.group is not None and ctl.group.node.role == Role.LEADER:
            self._replace_controller_voters()
            try:
                for node_id in sorted(state.decommissioning):
                    await self._drain(node_id)
            except BrokerError as exc:  # leadership lost or no quorum: an expected event
                log.info("decommission step: %s; retrying", exc.message)

    def _replace_controller_voters(self) -> None:
        ctl = self.broker.controller
        group = ctl.group
        assert group is not None
        node = group.node
        if node.conf_change_pending:
            return
        state = ctl.state
        leaving = state.decommissioning | state.removed_nodes
        conf = node.conf_state
        # A node that joined follows the metadata as a learner first (etcd's learner-first
        # member add); one at a time, like every change here.
        outside = [n for n in state.node_ids if n not in conf.voters
                   and n not in conf.learners and n not in state.removed_nodes]
        if outside:
            change = ConfChange(ConfChangeKind.ADD_LEARNER, outside[0])
            try:
                node.propose_conf_change(change)
            except Exception as exc:  # noqa: BLE001 - refused: retried at the next step
                log.info("controller: adding node %d as a learner refused: %s",
                         outside[0], exc)
                return
            self.broker.host.mark(group.group_id)
            log.info("controller: node %d follows the metadata as a learner", outside[0])
            return
        gone = sorted(conf.voters & leaving)
        matches = node.follower_matches()
        candidates = [n for n in state.active_node_ids if n in conf.learners
                      and matches.get(n, 0) >= node.commit_index]
        healthy = len(conf.voters) - len(gone)
        wanted = min(CONTROLLER_VOTERS_MAX, len(state.active_node_ids))
        # A removed node (final: ids are never reused) leaves the group once demoted and
        # told of its removal, so that no node replicates to it or dials it any more
        # (Broker.forget_departed_nodes).
        dropped = [n for n in sorted(conf.learners & state.removed_nodes)
                   if self._told_of_its_removal(n, node.commit_index, matches)]
        if not gone and healthy >= wanted and not dropped:
            return
        change: ConfChange | None = None
        if not gone and healthy >= wanted:
            change = ConfChange(ConfChangeKind.REMOVE_NODE, dropped[0])
        elif healthy < wanted:
            if not candidates:
                return  # wait for an active learner to catch up
            change = ConfChange(ConfChangeKind.ADD_VOTER, candidates[0])
        elif gone[0] == self.broker.node_id:
            others = [n for n in conf.voters if n not in leaving]
            if not others:
                return
            best = max(others, key=lambda n: (matches.get(n, 0), -n))
            log.info("controller: node %d leaves the voters; handing leadership to node %d",
                     self.broker.node_id, best)
            node.transfer_leader(best)
            self.broker.host.mark(group.group_id)
            return
        else:
            change = ConfChange(ConfChangeKind.ADD_LEARNER, gone[0])  # demote
        try:
            node.propose_conf_change(change)
        except Exception as exc:  # noqa: BLE001 - refused: retried at the next step
            log.info("controller: %s of node %d refused: %s", change.kind.name,
                     change.node_id, exc)
            return
        self.broker.host.mark(group.group_id)
        log.info("controller: %s node %d (voters were %s)", change.kind.name,
                 change.node_id, sorted(conf.voters))

    def _told_of_its_removal(self, node_id: int, commit_index: int,
                             matches: dict[int, int]) -> bool:
        """Whether removed learner ``node_id`` may leave the controller group: it has held
        the entries up to its removal for ``REMOVED_LEARNER_GRACE_S`` (so a node still
        running applies its own removal and says so to its clients, instead of answering
        with the metadata of its last day forever), or it has been silent for
        ``REMOVED_SILENT_S``."""
        now = time.monotonic()
        needed = self._removal_index.setdefault(node_id, commit_index)
        if matches.get(node_id, 0) >= needed:
            since = self._holds_removal_since.setdefault(node_id, now)
            if now - since >= REMOVED_LEARNER_GRACE_S:
                return True
        return self.broker.host.driver.silent_for(node_id) >= REMOVED_SILENT_S

    async def _drive(self, topic: TopicMeta, meta: PartitionMeta,
                     replica: PartitionReplica) -> None:
        group = replica.group
        assert group is not None
        node = group.node
        if node.conf_change_pending:
            return  # one change at a time: wait for the last one to commit
        desired = meta.desired
        conf = node.conf_state
        voters, learners = conf.voters, conf.learners
        change: ConfChange | None = None
        missing = [n for n in desired if n not in voters and n not in learners]
        if missing:
            change = ConfChange(ConfChangeKind.ADD_LEARNER, missing[0])
        else:
            matches = node.follower_matches()
            ready = [n for n in desired if n in learners
                     and matches.get(n, 0) >= node.commit_index]
            if ready:
                change = ConfChange(ConfChangeKind.ADD_VOTER, ready[0])
            elif any(n in learners for n in desired):
                return  # catching up
            else:
                extra_learners = sorted(learners - set(desired))
                extra_voters = sorted(voters - set(desired))
                if extra_learners:
                    change = ConfChange(ConfChangeKind.REMOVE_NODE, extra_learners[0])
                elif extra_voters:
                    me = broker_id = self.broker.node_id
                    others = [n for n in extra_voters if n != me]
                    if others:
                        change = ConfChange(ConfChangeKind.REMOVE_NODE, others[0])
                    else:
                        best = max(desired, key=lambda n: (matches.get(n, 0), -n))
                        log.info("%s/%d: node %d leaves the group; handing leadership to "
                                 "node %d", topic.name, meta.partition, broker_id, best)
                        node.transfer_leader(best)
                        self.broker.host.mark(group.group_id)
                        return
        if change is not None:
            try:
                node.propose_conf_change(change)
            except Exception as exc:  # noqa: BLE001 - refused (not leader, pending): retry
                log.info("%s/%d: %s of node %d refused: %s", topic.name, meta.partition,
                         change.kind.name, change.node_id, exc)
                return
            self.broker.host.mark(group.group_id)
            log.info("%s/%d: %s node %d (moving to %s)", topic.name, meta.partition,
                     change.kind.name, change.node_id, list(desired))
            return
        await self._report(topic, meta)

    async def _report(self, topic: TopicMeta, meta: PartitionMeta) -> None:
        key = (meta.group_id, meta.desired)
        now = time.monotonic()
        if now - self._reported.get(key, -REPORT_RETRY_S) < REPORT_RETRY_S:
            return
        self._reported[key] = now
        if len(self._reported) > 10_000:
            self._reported.clear()
        write = self.controller_write
        if write is None:
            return
        await write(admin_pb2.CompleteReassignmentRequest(
            topic=topic.name, partition=meta.partition, group_id=meta.group_id,
            replicas=list(meta.desired)))
        log.info("%s/%d: moved to %s", topic.name, meta.partition, list(meta.desired))

    async def _drain(self, node_id: int) -> None:
        ctl = self.broker.controller
        state = ctl.state
        if not state.hosts_anything(node_id):
            result = await ctl.propose(encode_remove_node(node_id), 5.0)
            if result.ok:
                log.info("node %d is drained and removed from the cluster", node_id)
            return
        moves = state.plan_moves_off(node_id, DECOMMISSION_MOVES_MAX)
        # proposed together: they commit in one Raft pass, and every node reconciles its
        # replicas with the metadata once for all of them, not once per move
        results = await asyncio.gather(
            *(ctl.propose(encode_reassign_partition(topic, partition, replicas), 5.0)
              for topic, partition, replicas in moves), return_exceptions=True)
        failure: BaseException | None = None
        for (topic, partition, replicas), result in zip(moves, results):
            if isinstance(result, BaseException):
                failure = failure or result
            elif result.ok:
                log.info("decommission of node %d: %s/%d moves to %s", node_id, topic,
                         partition, list(replicas))
        if failure is not None:
            raise failure  # the step logs a BrokerError (lost leadership) and retries


async def run(driver: ReassignmentDriver) -> None:
    """The task: ``driver.step()`` every ``STEP_INTERVAL_S``; never ends on an error."""
    await every(STEP_INTERVAL_S, driver.step, "reassignment step", log)
