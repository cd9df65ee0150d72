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

Durable membership (so that a live member survives a coordinator move):
7. What a member was told, and what it may hold, is replicated before it is told: every
   change of a member's persisted fields (client id, host, topics, timeouts, ``epoch``,
   ``sent``, ``held``; joining, leaving, removal) and of the group's (``assignor``,
   ``group_epoch`` and the partition counts it was computed with) is recorded in
   ``changed_members``/``changed_group``; the service takes
   them with ``take_changes`` and writes them to the group's offsets partition before it
   answers (``_group_service.py``).
8. A new coordinator rebuilds the group from those records (``restore``): the same member
   ids, epochs and holdings, each member's session starting afresh (``now`` + its
   timeout), a revocation still unacknowledged getting a fresh rebalance timeout, and the
   target recomputed. So a partition stays with its member across the move, and a member
   joining the new coordinator first is only given partitions nobody holds (rule 4).
   What was not written (acknowledgements, removals) only makes the new coordinator more
   careful: a partition stays held a little longer, a gone member times out again.
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
    read_committed: bool = False  # reads with isolation_level read_committed (lag: the LSO)


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
    # Rule 7: what changed since the last take_changes (member ids; removed ones too).
    changed_members: set[str] = field(default_factory=set)
    changed_group: bool = False

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
                  host: str = "", read_committed: bool = False) -> HeartbeatResult | None:
        """One member heartbeat; returns None for a leave. Raises BrokerError."""
        self.expire(now)
        if member_epoch == -1:
            if member_id in self.members:
                self._remove(member_id)
            return None
        if not member_id:
            member = self._join(topics, now, session_timeout_ms, rebalance_timeout_ms,
                                assignor, client_id, host)
            member.read_committed = read_committed
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
                if member.held != member.sent:
                    member.held = member.sent
                    self.changed_members.add(member_id)
                if member.revoke_deadline is not None and member.held <= self._target_of(member):
                    member.revoke_deadline = None
            if topics and frozenset(topics) != member.topics:
                member.topics = frozenset(topics)
                self.changed_members.add(member_id)
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
        if not self.members and assignor and assignor != self.assignor:
            self.assignor = assignor  # the group keeps the assignor of its first member
            self.changed_group = True
        member = Member(
            member_id=uuid.uuid4().hex, client_id=client_id, host=host,
            topics=frozenset(topics), session_timeout_s=session_ms / 1000,
            rebalance_timeout_s=(rebalance_timeout_ms or REBALANCE_TIMEOUT_MS_DEFAULT) / 1000,
            deadline=now + session_ms / 1000)
        self.members[member.member_id] = member
        self.changed_members.add(member.member_id)
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
            self.changed_members.add(member.member_id)
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
        self.changed_members.add(member_id)
        self._bump()

    def _bump(self) -> None:
        self.group_epoch += 1
        self.changed_group = True

    # ------------------------------------------------------------------ durability
    def take_changes(self) -> tuple[dict[str, dict | None], dict | None]:
        """Rule 7: the records of what changed since the last call, and forget it.
        ``({member_id: member record, or None if it is gone}, group record or None if
        unchanged)``. Records are plain JSON-able dicts (``member_record``)."""
        members = {m: (member_record(self.members[m]) if m in self.members else None)
                   for m in sorted(self.changed_members)}
        group = self.group_record() if self.changed_group else None
        self.changed_members = set()
        self.changed_group = False
        return members, group

    def mark_changed(self, member_ids, group: bool) -> None:
        """A write of these changes failed: write the current state again next time."""
        self.changed_members.update(member_ids)
        self.changed_group = self.changed_group or group

    def group_record(self) -> dict:
        # partition_counts: what the group epoch was computed with, so a new coordinator
        # does not take the first heartbeat's counts for a change and bump the epoch
        return {"assignor": self.assignor, "group_epoch": self.group_epoch,
                "partition_counts": dict(sorted(self.partition_counts.items()))}

    @classmethod
    def restore(cls, group_id: str, group: dict | None, members: dict[str, dict],
                now: float) -> ConsumerGroup:
        """Rule 8: the group as its records describe it, on a new coordinator."""
        restored = cls(group_id)
        if group is not None:
            restored.assignor = group.get("assignor") or DEFAULT_ASSIGNOR
            restored.group_epoch = int(group.get("group_epoch", 0))
            # absent in records written before it was recorded: the first heartbeat then
            # sees the counts as new and bumps the epoch once (harmless, just not quiet)
            counts = group.get("partition_counts")
            if isinstance(counts, dict):
                restored.partition_counts = {str(t): int(n) for t, n in counts.items()}
        if restored.assignor not in ASSIGNORS:
            restored.assignor = DEFAULT_ASSIGNOR
        for member_id, record in sorted(members.items()):
            restored.members[member_id] = _member_from_record(member_id, record, now)
        restored.target_epoch = -1  # recomputed at the first heartbeat
        return restored

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


def member_record(m: Member) -> dict:
    """A member's persisted fields (rule 7), JSON-able."""
    return {
        "client_id": m.client_id, "host": m.host, "topics": sorted(m.topics),
        "session_timeout_ms": round(m.session_timeout_s * 1000),
        "rebalance_timeout_ms": round(m.rebalance_timeout_s * 1000),
        "epoch": m.epoch, "sent": sorted(map(list, m.sent)), "held": sorted(map(list, m.held)),
        **({"read_committed": True} if m.read_committed else {}),
    }


def _member_from_record(member_id: str, record: dict, now: float) -> Member:
    session_s = int(record["session_timeout_ms"]) / 1000
    rebalance_s = int(record["rebalance_timeout_ms"]) / 1000
    sent = frozenset((str(t), int(p)) for t, p in record["sent"])
    held = frozenset((str(t), int(p)) for t, p in record["held"]) | sent
    return Member(
        member_id=member_id, client_id=str(record.get("client_id", "")),
        host=str(record.get("host", "")), topics=frozenset(map(str, record["topics"])),
        session_timeout_s=session_s, rebalance_timeout_s=rebalance_s,
        deadline=now + session_s, epoch=int(record["epoch"]), sent=sent, held=held,
        revoke_deadline=now + rebalance_s if held != sent else None,
        read_committed=bool(record.get("read_committed", False)))
