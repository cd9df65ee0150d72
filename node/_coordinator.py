"""Consumer-group membership and assignment (KIP-848 style), as a pure state machine.

One ``ConsumerGroup`` per group this node coordinates. No I/O and no clock of its own: the
service passes ``now`` (monotonic seconds) in, so the rules are unit-testable.

Epochs and ownership, the rules that keep a partition with at most one member:
1. ``group_epoch`` increases whenever membership, subscriptions or partition counts
   change; the target assignment is recomputed (by the group's assignor) at each bump.
2. Each member has ``epoch`` (of the assignment last *sent* to it) and ``sent`` (that
   assignment). ``held`` is what the member may still own: ``sent`` plus anything sent
   earlier that it has not yet acknowledged dropping.
3. A heartbeat carrying ``epoch == member.epoch`` acknowledges ``sent``: ``held = sent``.
   A lower epoch (the member has not seen our last answer) acknowledges nothing.
4. A partition is *free* when no member holds it. A member's next ``sent`` is its target
   restricted to what it holds or what is free. So a partition moves A → B only after A
   acknowledged an assignment without it, or A was removed.
5. A member is removed when it leaves, when no heartbeat came within its session timeout,
   or when it kept a revoked partition past its rebalance timeout. Its partitions become
   free at once.
6. Commits are fenced: only a known member, with an epoch not above its own, for a
   partition it holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ._assignors import ASSIGNORS, DEFAULT_ASSIGNOR, TopicPartition
from ._errors import BrokerError, Code

SESSION_TIMEOUT_MS_DEFAULT = 10_000
SESSION_TIMEOUT_MS_MIN = 500
SESSION_TIMEOUT_MS_MAX = 300_000
REBALANCE_TIMEOUT_MS_DEFAULT = 30_000
HEARTBEAT_INTERVAL_MS = 500
PENDING_HEARTBEAT_INTERVAL_MS = 50
MEMBERS_MAX = 1000


@dataclass
class Member:
    member_id: str
    client_id: str
    host: str
    topics: frozenset[str]
    session_timeout_s: float
    rebalance_timeout_s: float
    deadline: float  # removed when a heartbeat has not come by then
    epoch: int = 0
    sent: frozenset[TopicPartition] = frozenset()
    held: frozenset[TopicPartition] = frozenset()
    revoke_deadline: float | None = None  # set while a revocation is unacknowledged


@dataclass
class HeartbeatResult:
    member_id: str
    member_epoch: int
    assignment: frozenset[TopicPartition]
    group_epoch: int
    pending: bool
    heartbeat_interval_ms: int


@dataclass
class ConsumerGroup:
    group_id: str
    assignor: str = DEFAULT_ASSIGNOR
    group_epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, frozenset[TopicPartition]] = field(default_factory=dict)
    target_epoch: int = 0
    partition_counts: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        if not self.members:
            return "empty"
        if any(m.sent != self.target.get(m.member_id, frozenset()) or m.held != m.sent
               for m in self.members.values()):
            return "reconciling"
        return "stable"

    def subscribed_topics(self) -> set[str]:
        return set().union(*(m.topics for m in self.members.values())) if self.members else set()

    def owner_of(self, tp: TopicPartition) -> str:
        for m in self.members.values():
            if tp in m.held:
                return m.member_id
        return ""

    # ------------------------------------------------------------------ heartbeat
    def heartbeat(self, *, member_id: str, member_epoch: int, topics: list[str] | None,
                  now: float, partition_counts: dict[str, int], session_timeout_ms: int = 0,
                  rebalance_timeout_ms: int = 0, assignor: str = "", client_id: str = "",
                  host: str = "") -> HeartbeatResult | None:
        """One member heartbeat; returns None for a leave. Raises BrokerError."""
        self.expire(now)
        if member_epoch == -1:
            if member_id in self.members:
                self._remove(member_id)
            return None
        if not member_id:
            member = self._join(topics, now, session_timeout_ms, rebalance_timeout_ms,
                                assignor, client_id, host)
        else:
            member = self.members.get(member_id)
            if member is None:
                raise BrokerError(Code.UNKNOWN_MEMBER_ID, f"member {member_id} is not in group "
                                  f"{self.group_id!r} (it left, was removed after its session "
                                  "timeout, or the coordinator moved); rejoin")
            if member_epoch > member.epoch or member_epoch < 0:
                raise BrokerError(Code.FENCED_MEMBER_EPOCH, f"member {member_id} sent epoch "
                                  f"{member_epoch} but its epoch is {member.epoch}; rejoin")
            member.deadline = now + member.session_timeout_s
            if member_epoch == member.epoch:  # rule 3
                member.held = member.sent
                if member.revoke_deadline is not None and member.held <= self._target_of(member):
                    member.revoke_deadline = None
            if topics and frozenset(topics) != member.topics:
                member.topics = frozenset(topics)
                self._bump()
        self._refresh_counts(partition_counts)
        if self.target_epoch != self.group_epoch:
            self._recompute()
        return self._reconcile(member, now)

    def _join(self, topics: list[str] | None, now: float, session_timeout_ms: int,
              rebalance_timeout_ms: int, assignor: str, client_id: str, host: str) -> Member:
        if not topics:
            raise BrokerError(Code.INVALID_REQUEST, "a joining member must subscribe to at "
                              "least one topic")
        if len(self.members) >= MEMBERS_MAX:
            raise BrokerError(Code.INVALID_REQUEST, f"group {self.group_id!r} already has "
                              f"{MEMBERS_MAX} members")
        session_ms = session_timeout_ms or SESSION_TIMEOUT_MS_DEFAULT
        if not SESSION_TIMEOUT_MS_MIN <= session_ms <= SESSION_TIMEOUT_MS_MAX:
            raise BrokerError(Code.INVALID_REQUEST, f"session_timeout_ms must be from "
                              f"{SESSION_TIMEOUT_MS_MIN} to {SESSION_TIMEOUT_MS_MAX}, got "
                              f"{session_ms}")
        if assignor and assignor not in ASSIGNORS:
            raise BrokerError(Code.INVALID_REQUEST, f"unknown assignor {assignor!r}; use one "
                              f"of {', '.join(sorted(ASSIGNORS))}")
        if not self.members and assignor:
            self.assignor = assignor  # the group keeps the assignor of its first member
        member = Member(
            member_id=uuid.uuid4().hex, client_id=client_id, host=host,
            topics=frozenset(topics), session_timeout_s=session_ms / 1000,
            rebalance_timeout_s=(rebalance_timeout_ms or REBALANCE_TIMEOUT_MS_DEFAULT) / 1000,
            deadline=now + session_ms / 1000)
        self.members[member.member_id] = member
        self._bump()
        return member

    def _reconcile(self, member: Member, now: float) -> HeartbeatResult:
        target = self._target_of(member)
        held_by_others: set[TopicPartition] = set()
        for other in self.members.values():
            if other is not member:
                held_by_others |= other.held
        sent = frozenset(tp for tp in target if tp not in held_by_others)  # rule 4
        if sent != member.sent:
            revoked = member.held - sent
            member.epoch = max(member.epoch + 1, self.group_epoch)
            member.sent = sent
            member.held = member.held | sent
            if revoked and member.revoke_deadline is None:
                member.revoke_deadline = now + member.rebalance_timeout_s
        pending = sent != target or member.held != member.sent
        return HeartbeatResult(
            member.member_id, member.epoch, member.sent, self.group_epoch, pending,
            PENDING_HEARTBEAT_INTERVAL_MS if pending else HEARTBEAT_INTERVAL_MS)

    def _target_of(self, member: Member) -> frozenset[TopicPartition]:
        return self.target.get(member.member_id, frozenset())

    # ------------------------------------------------------------------ membership
    def expire(self, now: float) -> list[str]:
        """Remove members past their session or rebalance timeout (rule 5)."""
        gone = [m.member_id for m in self.members.values()
                if now > m.deadline or (m.revoke_deadline is not None and now > m.revoke_deadline)]
        for member_id in gone:
            self._remove(member_id)
        return gone

    def _remove(self, member_id: str) -> None:
        del self.members[member_id]
        self._bump()

    def _bump(self) -> None:
        self.group_epoch += 1

    def _refresh_counts(self, partition_counts: dict[str, int]) -> None:
        counts = {t: partition_counts.get(t, 0) for t in self.subscribed_topics()}
        if counts != self.partition_counts:
            self.partition_counts = counts
            self._bump()

    def _recompute(self) -> None:
        members = {m: self.members[m].topics for m in sorted(self.members)}
        previous = {m: set(tp) for m, tp in self.target.items()}
        for m, member in self.members.items():
            previous.setdefault(m, set()).update(member.held)
        result = ASSIGNORS[self.assignor](members, self.partition_counts, previous)
        self.target = {m: frozenset(tps) for m, tps in result.items()}
        self.target_epoch = self.group_epoch

    # ------------------------------------------------------------------ commits
    def check_commit(self, member_id: str, member_epoch: int,
                     partitions: list[TopicPartition]) -> None:
        """Rule 6. ``member_id`` empty: a simple consumer, allowed only in an empty group."""
        if not member_id:
            if self.members:
                raise BrokerError(Code.UNKNOWN_MEMBER_ID, f"group {self.group_id!r} has active "
                                  "members; only a member can commit its offsets (join the "
                                  "group, or commit while it is empty)")
            return
        member = self.members.get(member_id)
        if member is None:
            raise BrokerError(Code.UNKNOWN_MEMBER_ID, f"member {member_id} is not in group "
                              f"{self.group_id!r} any more (session timeout or left); its "
                              "partitions may belong to another member now. Rejoin, then "
                              "continue from the committed offsets")
        if member_epoch > member.epoch or member_epoch < 0:
            raise BrokerError(Code.FENCED_MEMBER_EPOCH, f"member {member_id} committed with "
                              f"epoch {member_epoch}; its epoch is {member.epoch}")
        missing = [tp for tp in partitions if tp not in member.held]
        if missing:
            names = ", ".join(f"{t}/{p}" for t, p in sorted(missing)[:5])
            raise BrokerError(Code.PARTITION_NOT_ASSIGNED, f"member {member_id} does not own "
                              f"{names}; commit only the partitions assigned to it")
