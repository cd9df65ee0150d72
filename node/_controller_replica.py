"""This node's replica of the controller Raft group: applies metadata commands in log
order and lets admin requests wait for the outcome of the command they proposed.

The controller group's voters are the first three nodes by id (all of them if fewer); the
other nodes follow it as learners, so every node holds the committed metadata.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable, Sequence

from raftka.raft import ConfState, Entry, EntryKind, Ready, Role, Snapshot

from ._controller_snapshot import decode_snapshot, encode_snapshot
from ._controller_state import CONTROLLER_GROUP_ID, ApplyResult, ControllerState
from ._errors import BrokerError, Code, forget_outcome
from ._host import Group

CONTROLLER_VOTERS_MAX = 3
SNAPSHOT_EVERY_ENTRIES = 1000


def controller_conf(node_ids: Sequence[int]) -> ConfState:
    ordered = sorted(node_ids)
    voters = frozenset(ordered[:CONTROLLER_VOTERS_MAX])
    return ConfState(voters, frozenset(ordered) - voters)


class ControllerReplica:
    group_id = CONTROLLER_GROUP_ID

    def __init__(self, node_ids: Sequence[int], on_applied: Callable[[], None],
                 mark_dirty: Callable[[int], None]) -> None:
        self.node_ids = tuple(sorted(node_ids))
        self.state = ControllerState(self.node_ids)
        self._on_applied = on_applied
        self._mark_dirty = mark_dirty
        self._waiters: deque[tuple[int, int, asyncio.Future]] = deque()
        self.group: Group | None = None

    # ------------------------------------------------------------------ StateMachine
    def restore(self, snapshot: Snapshot) -> None:
        self.state = decode_snapshot(snapshot.data)
        self._on_applied()

    def apply(self, entries: list[Entry]) -> None:
        state = self.state
        results: dict[int, tuple[int, ApplyResult]] = {}
        for e in entries:
            if e.kind == EntryKind.NORMAL and e.data:
                results[e.index] = (e.term, state.apply(e.index, e.data))
        last = entries[-1].index
        waiters = self._waiters
        while waiters and waiters[0][0] <= last:
            index, term, future = waiters.popleft()
            if future.done():
                continue
            outcome = results.get(index)
            if outcome is None or outcome[0] != term:
                future.set_exception(BrokerError(
                    Code.NOT_LEADER, "the controller changed leader before the change "
                    "committed; retry it", retriable=True))
            else:
                future.set_result(outcome[1])
        if results:
            self._on_applied()

    def before_ready(self) -> None:
        pass

    def on_ready(self, rd: Ready) -> None:
        pass

    # ------------------------------------------------------------------ commands
    def leader_id(self) -> int:
        return self.group.node.leader_id if self.group is not None else 0

    def require_leader(self) -> None:
        """Raise NOT_LEADER (retriable, naming the leader if known) unless this node leads."""
        group = self.group
        if group is None or group.node.role != Role.LEADER:
            leader = self.leader_id()
            raise BrokerError(
                Code.NOT_LEADER,
                f"metadata changes go to the controller leader, node {leader}" if leader else
                "no controller leader is elected yet; retry shortly",
                retriable=True, leader_id=leader,
            )

    async def propose(self, command: bytes, timeout_s: float) -> ApplyResult:
        self.require_leader()
        group = self.group
        assert group is not None
        try:
            index = group.node.propose(command)
        except Exception as exc:  # NotLeader / ProposalDropped: nothing written
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"metadata change refused: {exc}",
                              retriable=True) from None
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((index, group.node.term, future))
        self._mark_dirty(self.group_id)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.CancelledError:
            forget_outcome(future)  # the requester went away
            raise
        except asyncio.TimeoutError:
            future.cancel()
            raise BrokerError(
                Code.NO_QUORUM, f"the metadata change did not commit within {timeout_s:.0f}s: "
                "a majority of controller nodes may be down; it may still apply later",
                retriable=True) from None

    def snapshot_data(self) -> bytes:
        """The state as snapshot bytes, for compacting the controller log."""
        return encode_snapshot(self.state)

    def snapshot_due(self) -> bool:
        group = self.group
        return group is not None and (
            group.node.applied_index - group.node.first_index >= SNAPSHOT_EVERY_ENTRIES)
