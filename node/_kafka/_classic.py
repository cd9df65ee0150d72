"""Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) for Kafka
clients, next to our KIP-848-style groups.

How classic members map onto our groups (the choice, and why):

- The classic protocol is *client-side* assignment: the broker only collects the members'
  subscriptions, picks a leader member, hands it everyone's metadata and passes the
  assignment it computes back to each member. Our groups (``_coordinator.py``) assign on
  the broker and move partitions one acknowledged revocation at a time. The two cannot
  drive one member set without a translation layer that would have to fake both sides, so
  a group id is served by one protocol at a time, as in Kafka 4.x without its online
  migration: a classic JoinGroup for a group that has members of our protocol is refused
  with INCONSISTENT_GROUP_PROTOCOL (and the gRPC door's Heartbeat is refused for a group
  with classic members, through ``GroupCoordinatorService.classic_members``).
- Same coordinator: the leader of the group's ``__consumer_offsets`` partition, as for our
  groups (FindCoordinator answers the same node for either door).
- Same offsets: a classic member's OffsetCommit is written by the same commit path
  (``GroupCoordinatorService._write``) to the same partition, so a group's committed
  offsets read the same through both doors, and an empty group's offsets can be
  committed, fetched and reset from either.
- Classic membership is persisted the way Kafka's own coordinator does it: when a
  generation's assignment is complete (the leader's SyncGroup), the whole group (generation,
  protocol, leader, every member's metadata and assignment) is written to the group's
  ``__consumer_offsets`` partition as one record (``_offsets.py``, key kind ``C``) and the
  members get their assignments only once a majority has it; a group that becomes empty
  writes a tombstone. A new coordinator (the partition's next leader, or this node
  re-elected in a later term) rebuilds the group from that record, Stable, each member with
  a fresh session timeout, so members keep their ids, generation and right to commit
  across a coordinator move and do not rejoin from scratch. Between generations (a
  rebalance in progress) only the last completed generation is in the log: a member of a
  newer one gets ILLEGAL_GENERATION there and rejoins, as it would with Kafka.

State machine per group (Kafka's GroupCoordinator, without static membership):

1. Empty -> PreparingRebalance on the first JoinGroup with a member id (KIP-394: a join
   without one is answered MEMBER_ID_REQUIRED with an id, kept pending for a session
   timeout, not a member yet: nothing waits for it). A rebalance completes when every
   member of the previous generation has joined again, or when the longest rebalance
   timeout of the members has passed (members that did not join are removed), or at once
   for a group that had no members before (after ``INITIAL_DELAY_S``, so consumers
   started together land in one generation).
2. Completing a rebalance bumps the generation, picks the first protocol (assignor) that
   every member supports in the leader's order of preference, answers every pending
   JoinGroup (the leader's answer lists every member's metadata) and moves to
   CompletingRebalance.
3. SyncGroup from the leader with the assignments moves to Stable and answers every
   member's pending SyncGroup with its assignment; a SyncGroup in Stable answers at once.
4. Heartbeat: UNKNOWN_MEMBER_ID for an unknown member, ILLEGAL_GENERATION for another
   generation, REBALANCE_IN_PROGRESS while a rebalance is being prepared (the member
   rejoins), else it extends the member's session.
5. A member whose session timeout passes without a heartbeat, join or sync is removed and
   the group rebalances; LeaveGroup removes it at once.
5a. A failed write of a generation's assignment (no quorum, a move) answers the pending
   SyncGroups REBALANCE_IN_PROGRESS and prepares a new rebalance: nothing is handed out
   that a new coordinator would not know.
6. OffsetCommit: a member of the current generation commits (REBALANCE_IN_PROGRESS while a
   rebalance is prepared, ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID otherwise); generation -1
   with no member id commits only for a group without members (admin tools, manual
   assignment).
7. Bounded: ``MEMBERS_MAX`` members a group; member metadata and assignments are the
   clients' bytes, limited by the request size.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode as K

from .._broker import Broker
from .._errors import BrokerError, Code, forget_outcome
from .._group_service import COMMIT_TIMEOUT_S, METADATA_MAX, GroupCoordinatorService
from .._offsets import OFFSETS_TOPIC, OffsetsReplica, encode_classic_group
from ._errors import kafka_code

log = logging.getLogger("raftka.kafka.groups")

MEMBERS_MAX = 1000
INITIAL_DELAY_S = 0.3
EXPIRY_INTERVAL_S = 0.1
SESSION_TIMEOUT_MS_MIN = 1_000
SESSION_TIMEOUT_MS_MAX = 300_000
# a group record above this is not persisted (the offsets topic's records stay well below
# its 1 MiB max.message.bytes): such a group's membership lives in memory only, as before
CLASSIC_RECORD_MAX = 768 << 10

EMPTY, PREPARING, COMPLETING, STABLE = "Empty", "PreparingRebalance", \
    "CompletingRebalance", "Stable"


@dataclass
class _Member:
    member_id: str
    client_id: str
    host: str
    session_timeout_s: float
    rebalance_timeout_s: float
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    deadline: float
    assignment: bytes = b""
    join: asyncio.Future | None = None  # a pending JoinGroup's answer
    sync: asyncio.Future | None = None  # a pending SyncGroup's answer


@dataclass
class _Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str = ""
    protocol: str | None = None
    leader: str = ""
    members: dict[str, _Member] = field(default_factory=dict)
    rebalance_deadline: float = 0.0
    joined: set[str] = field(default_factory=set)  # members that joined this rebalance
    new: bool = False  # this rebalance started without members (rule 1's initial delay)
    # ids given with MEMBER_ID_REQUIRED (KIP-394) whose join has not come yet: not members
    # (a rebalance does not wait for them), forgotten after their session timeout
    pending: dict[str, float] = field(default_factory=dict)
    term: int = 0  # the offsets partition's Raft term this state belongs to
    storing: int = -1  # the generation whose assignment is being written


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _group_record(g: _Group, assignments: dict[str, bytes]) -> dict:
    """What a new coordinator needs to go on serving the group (rule 5a's write)."""
    return {"generation": g.generation, "protocol_type": g.protocol_type,
            "protocol": g.protocol, "leader": g.leader,
            "members": [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                         "session_timeout_ms": round(m.session_timeout_s * 1000),
                         "rebalance_timeout_ms": round(m.rebalance_timeout_s * 1000),
                         "protocol_type": m.protocol_type,
                         "protocols": [[n, _b64(md)] for n, md in m.protocols],
                         "assignment": _b64(assignments.get(m.member_id, b""))}
                        for m in g.members.values()]}


def _restored(group_id: str, record: dict, term: int, now: float) -> _Group:
    """The group as the record left it, Stable, every member with a fresh session."""
    g = _Group(group_id, state=STABLE, generation=int(record["generation"]),
               protocol_type=str(record["protocol_type"]), protocol=record["protocol"],
               leader=str(record["leader"]), term=term)
    for r in record["members"]:
        session_s = int(r["session_timeout_ms"]) / 1000
        m = _Member(str(r["member_id"]), str(r["client_id"]), str(r["host"]), session_s,
                    int(r["rebalance_timeout_ms"]) / 1000, str(r["protocol_type"]),
                    [(str(n), base64.b64decode(md)) for n, md in r["protocols"]],
                    now + session_s, base64.b64decode(r["assignment"]))
        g.members[m.member_id] = m
    if not g.members or g.leader not in g.members:
        raise ValueError("a classic group record without its leader")
    return g


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000)


class ClassicGroups:
    def __init__(self, broker: Broker, groups: GroupCoordinatorService) -> None:
        self.broker = broker
        self.groups = groups
        self._groups: dict[str, _Group] = {}
        self._task: asyncio.Task | None = None
        self._stores: set[asyncio.Task] = set()
        groups.classic_members = self.has_members

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._expire_loop(),
                                                            name="kafka-classic-groups")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._stores) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in self._groups.values():
            for m in g.members.values():
                for f in (m.join, m.sync):
                    if f is not None and not f.done():
                        f.cancel()

    def has_members(self, group_id: str) -> bool:
        try:
            g = self._group(group_id, create=False)
        except BrokerError:
            return False
        return g is not None and bool(g.members)

    # ------------------------------------------------------------------ lookup
    def _group(self, group_id: str, create: bool) -> _Group | None:
        """The group, while this node coordinates it; raises BrokerError (NOT_COORDINATOR,
        COORDINATOR_LOADING, INVALID_REQUEST for a bad id) when this node cannot serve it.
        Within a term the state in memory is the truth; in a new term (another node may
        have coordinated the group meanwhile) it is rebuilt from the log's record."""
        replica = self.groups._replica(group_id)  # raises unless this node coordinates it now
        term = replica.group.node.term
        g = self._groups.get(group_id)
        if g is not None and g.term != term:
            self._drop(g)
            g = None
        if g is None:
            record = replica.classic.get(group_id)
            if record is not None:
                try:
                    g = _restored(group_id, record, term, time.monotonic())
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("group %s: its classic group record is unreadable (%s); "
                                "the group starts empty", group_id, exc)
                else:
                    log.info("group %s: coordinating it in term %d with its %d classic "
                             "member(s) from the log (generation %d)", group_id, term,
                             len(g.members), g.generation)
                    self._groups[group_id] = g
            if g is None and create:
                g = self._groups[group_id] = _Group(group_id, term=term)
        return g

    def _drop(self, g: _Group) -> None:
        for m in g.members.values():
            self._fail(m, K.not_coordinator)
        if self._groups.get(g.group_id) is g:
            del self._groups[g.group_id]

    def _consumer_group_members(self, group_id: str) -> int:
        replica = self.groups._replica(group_id)
        c = self.groups._existing(group_id, replica)
        return len(c.group.members) if c is not None else 0

    # ------------------------------------------------------------------ JoinGroup
    async def join_group(self, request, version, ctx, header) -> dict:
        group_id = request.group_id
        failure = {"generation_id": -1, "leader": "", "member_id": request.member_id,
                   "members": [], "protocol_name": None}
        try:
            g = self._group(group_id, create=True)
            if self._consumer_group_members(group_id):
                raise _Kafka(K.inconsistent_group_protocol, f"group {group_id!r} has members "
                             "of the consumer protocol (KIP-848); use the same protocol")
        except BrokerError as exc:
            return {**failure, "error_code": _group_code(exc)}
        except _Kafka as exc:
            return {**failure, "error_code": exc.code}
        assert g is not None
        session_ms = _ms(request.session_timeout)
        if not SESSION_TIMEOUT_MS_MIN <= session_ms <= SESSION_TIMEOUT_MS_MAX:
            return {**failure, "error_code": K.invalid_session_timeout}
        rebalance_ms = _ms(request.rebalance_timeout) if version >= 1 else session_ms
        protocols = [(p.name, bytes(p.metadata)) for p in request.protocols]
        member_id = request.member_id
        others = [m for m in g.members.values() if m.member_id != member_id]
        if not protocols or any(m.protocol_type != request.protocol_type for m in others) \
                or not self._common_protocols(others, protocols):
            return {**failure, "error_code": K.inconsistent_group_protocol}
        now = time.monotonic()
        if member_id and member_id not in g.members and member_id not in g.pending:
            return {**failure, "error_code": K.unknown_member_id}
        if not member_id:
            if len(g.members) >= MEMBERS_MAX:
                return {**failure, "error_code": K.group_max_size_reached}
            member_id = f"{header.client_id or 'member'}-{uuid.uuid4()}"
            if version >= 4:  # KIP-394: the client rejoins with the id it is given
                if len(g.pending) >= MEMBERS_MAX:
                    return {**failure, "error_code": K.group_max_size_reached}
                g.pending[member_id] = now + session_ms / 1000
                return {**failure, "member_id": member_id, "error_code": K.member_id_required}
        g.pending.pop(member_id, None)
        m = g.members.get(member_id)
        if m is None:
            m = g.members[member_id] = _Member(
                member_id, header.client_id or "", ctx.peer(), session_ms / 1000,
                rebalance_ms / 1000, request.protocol_type, protocols, now + session_ms / 1000)
        elif g.state == STABLE and m.protocols == protocols and member_id != g.leader:
            # a follower rejoining with nothing changed: the current generation
            m.deadline = now + m.session_timeout_s
            return self._join_answer(g, m)
        m.protocols = protocols
        m.session_timeout_s = session_ms / 1000
        m.rebalance_timeout_s = rebalance_ms / 1000
        m.deadline = now + m.session_timeout_s
        if m.join is not None and not m.join.done():
            m.join.set_result({**failure, "error_code": K.unknown_member_id})
        join = m.join = asyncio.get_running_loop().create_future()
        g.protocol_type = request.protocol_type
        self._rebalance(g, now)
        g.joined.add(member_id)
        self._maybe_complete(g, now)
        return await asyncio.shield(join)

    @staticmethod
    def _common_protocols(members, protocols: list[tuple[str, bytes]]) -> set[str]:
        names = {n for n, _ in protocols}
        for m in members:
            names &= {n for n, _ in m.protocols}
        return names

    def _rebalance(self, g: _Group, now: float) -> None:
        """Rule 1: start preparing a rebalance (no-op while one is being prepared)."""
        if g.state == PREPARING:
            return
        for m in g.members.values():
            if m.sync is not None and not m.sync.done():
                m.sync.set_result({"error_code": K.rebalance_in_progress, "assignment": b""})
            m.sync = None
        had_members = bool(g.members) and g.state != EMPTY
        g.new = not had_members
        g.state = PREPARING
        g.joined = set()
        timeout = max((m.rebalance_timeout_s for m in g.members.values()), default=0.0)
        g.rebalance_deadline = now + (timeout if had_members else INITIAL_DELAY_S)

    def _maybe_complete(self, g: _Group, now: float) -> None:
        if g.state != PREPARING:
            return
        waiting = [m for m in g.members.values() if m.member_id not in g.joined]
        if waiting and now < g.rebalance_deadline:
            return
        if g.new and now < g.rebalance_deadline:
            return  # a new group: wait a moment for the other consumers started with it
        for m in waiting:  # rule 1: did not rejoin in time
            self._remove(g, m.member_id, K.unknown_member_id, rebalance=False)
        if not g.members:
            g.state = EMPTY
            g.protocol = None
            g.leader = ""
            g.generation += 1
            self._store_empty(g)
            return
        g.generation += 1
        if g.leader not in g.members:
            g.leader = next(iter(g.members))
        leader = g.members[g.leader]
        common = self._common_protocols(g.members.values(), leader.protocols)
        g.protocol = next(n for n, _ in leader.protocols if n in common)
        g.state = COMPLETING
        for m in g.members.values():
            m.assignment = b""
            if m.join is not None and not m.join.done():
                m.join.set_result(self._join_answer(g, m))
            m.join = None
        log.info("group %s: generation %d with %d classic member(s), protocol %s",
                 g.group_id, g.generation, len(g.members), g.protocol)

    def _join_answer(self, g: _Group, m: _Member) -> dict:
        members = []
        if m.member_id == g.leader:
            members = [{"member_id": o.member_id,
                        "metadata": dict(o.protocols).get(g.protocol or "", b"")}
                       for o in g.members.values()]
        return {"error_code": K.none, "generation_id": g.generation,
                "protocol_type": g.protocol_type, "protocol_name": g.protocol,
                "leader": g.leader, "member_id": m.member_id, "members": members}

    # ------------------------------------------------------------------ SyncGroup
    async def sync_group(self, request, version, ctx, header) -> dict:
        try:
            g = self._group(request.group_id, create=False)
        except BrokerError as exc:
            return {"error_code": _group_code(exc), "assignment": b""}
        m = g.members.get(request.member_id) if g is not None else None
        if g is None or m is None:
            return {"error_code": K.unknown_member_id, "assignment": b""}
        if request.generation_id != g.generation:
            return {"error_code": K.illegal_generation, "assignment": b""}
        if g.state == PREPARING:
            return {"error_code": K.rebalance_in_progress, "assignment": b""}
        m.deadline = time.monotonic() + m.session_timeout_s
        answer = {"error_code": K.none, "protocol_type": g.protocol_type,
                  "protocol_name": g.protocol}
        if g.state == STABLE:
            return {**answer, "assignment": m.assignment}
        if m.sync is not None and not m.sync.done():
            m.sync.set_result({"error_code": K.rebalance_in_progress, "assignment": b""})
        sync = m.sync = asyncio.get_running_loop().create_future()
        if request.member_id == g.leader and g.storing != g.generation:
            given = {a.member_id: bytes(a.assignment) for a in request.assignments}
            g.storing = g.generation
            task = asyncio.get_running_loop().create_task(
                self._store_assignment(g, given, answer),
                name=f"kafka-classic-store-{g.group_id}")
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)
        return await asyncio.shield(sync)

    async def _store_assignment(self, g: _Group, given: dict[str, bytes],
                                answer: dict) -> None:
        """Rule 5a: write the generation with its assignment, then hand it out."""
        generation = g.generation
        assignments = {m: given.get(m, b"") for m in g.members}
        payload = encode_classic_group(g.group_id, _group_record(g, assignments),
                                       int(time.time() * 1000))
        stored = True
        if len(payload) > CLASSIC_RECORD_MAX:
            log.warning("group %s: its %d-byte classic group record is too large to persist; "
                        "its membership lives in this coordinator's memory only",
                        g.group_id, len(payload))
        else:
            try:
                replica = self.groups._replica(g.group_id)
                if replica.group.node.term != g.term:
                    raise BrokerError(Code.NOT_COORDINATOR, "the coordinator moved",
                                      retriable=True)
                await replica.produce(payload, -1, COMMIT_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: the members rejoin
                log.info("group %s: generation %d could not be written (%s); rebalancing",
                         g.group_id, generation, exc)
                stored = False
        if g.storing == generation:
            g.storing = -1
        if self._groups.get(g.group_id) is not g or g.generation != generation \
                or g.state != COMPLETING:
            return  # overtaken (a rebalance, a move): the pending calls were answered then
        now = time.monotonic()
        if not stored:
            self._rebalance(g, now)
            self._maybe_complete(g, now)
            return
        g.state = STABLE
        for o in g.members.values():
            o.assignment = assignments.get(o.member_id, b"")
            if o.sync is not None and not o.sync.done():
                o.sync.set_result({**answer, "assignment": o.assignment})
            o.sync = None

    def _store_empty(self, g: _Group) -> None:
        """A group that became empty: tombstone its record, so a new coordinator does not
        bring back members that left (fire and forget: if it fails, they time out there)."""
        try:
            replica = self.groups._replica(g.group_id)
        except BrokerError:
            return
        if g.group_id not in replica.classic or replica.group.node.term != g.term:
            return
        task = asyncio.ensure_future(replica.produce(
            encode_classic_group(g.group_id, None, int(time.time() * 1000)), -1,
            COMMIT_TIMEOUT_S))
        forget_outcome(task)  # a failed tombstone: the members time out at the next coordinator

    # ------------------------------------------------------------------ Heartbeat, Leave
    async def heartbeat(self, request, version, ctx, header) -> dict:
        try:
            g = self._group(request.group_id, create=False)
        except BrokerError as exc:
            return {"error_code": _group_code(exc)}
        m = g.members.get(request.member_id) if g is not None else None
        if g is None or m is None:
            return {"error_code": K.unknown_member_id}
        m.deadline = time.monotonic() + m.session_timeout_s
        if request.generation_id != g.generation:
            return {"error_code": K.illegal_generation}
        if g.state == PREPARING:
            return {"error_code": K.rebalance_in_progress}
        return {"error_code": K.none}

    async def leave_group(self, request, version, ctx, header) -> dict:
        ids = [request.member_id] if version < 3 else [m.member_id for m in request.members]
        try:
            g = self._group(request.group_id, create=False)
        except BrokerError as exc:
            return {"error_code": _group_code(exc), "members": []}
        results = []
        for member_id in ids:
            known = g is not None and member_id in g.members
            if known:
                self._remove(g, member_id, K.unknown_member_id, rebalance=True)
            results.append({"member_id": member_id,
                            "error_code": K.none if known else K.unknown_member_id})
        if version < 3 and results and results[0]["error_code"] != K.none:
            return {"error_code": results[0]["error_code"]}
        return {"error_code": K.none, "members": results}

    def _remove(self, g: _Group, member_id: str, code: K, rebalance: bool) -> None:
        m = g.members.pop(member_id, None)
        if m is None:
            return
        g.joined.discard(member_id)
        self._fail(m, code)
        if rebalance:
            now = time.monotonic()
            if g.members:
                self._rebalance(g, now)
                self._maybe_complete(g, now)
            else:
                g.state = EMPTY
                g.generation += 1
                g.protocol = None
                g.leader = ""
                self._store_empty(g)

    @staticmethod
    def _fail(m: _Member, code: K) -> None:
        for f in (m.join, m.sync):
            if f is not None and not f.done():
                f.set_result({"error_code": code, "generation_id": -1, "leader": "",
                              "member_id": m.member_id, "members": [], "assignment": b""})

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            now = time.monotonic()
            for group_id in list(self._groups):
                try:
                    g = self._group(group_id, create=False)
                except BrokerError:
                    stale = self._groups.get(group_id)
                    if stale is not None:  # not coordinating it now: its record is in the log
                        self._drop(stale)
                    continue
                if g is None:
                    continue
                for member_id, deadline in list(g.pending.items()):
                    if deadline < now:
                        del g.pending[member_id]
                for m in list(g.members.values()):
                    waiting = m.join is not None and not m.join.done()
                    if not waiting and m.deadline < now:
                        log.info("group %s: classic member %s timed out", group_id, m.member_id)
                        self._remove(g, m.member_id, K.unknown_member_id, rebalance=True)
                self._maybe_complete(g, now)
                if not g.members and not g.pending and g.state == EMPTY:
                    del self._groups[group_id]

    # ------------------------------------------------------------------ offsets
    async def offset_commit(self, request, version: int) -> dict:
        group_id = request.group_id
        generation = getattr(request, "generation_id_or_member_epoch", -1)
        member_id = request.member_id

        def all_failed(code: K) -> dict:
            return {"topics": [{"name": t.name, "partitions": [
                {"partition_index": p.partition_index, "error_code": code}
                for p in t.partitions]} for t in request.topics]}

        try:
            replica = self.groups._replica(group_id)
            g = self._group(group_id, create=False)
            c = self.groups._coordinated(group_id, replica)
        except BrokerError as exc:
            return all_failed(_group_code(exc))
        if generation < 0 and not member_id:
            if (g is not None and g.members) or c.group.members:
                return all_failed(K.unknown_member_id)
        elif member_id in c.group.members:  # a member of the consumer protocol (KIP-848)
            try:
                c.group.check_commit(member_id, generation, [
                    (t.name, p.partition_index) for t in request.topics for p in t.partitions])
            except BrokerError as exc:
                return all_failed(kafka_code(exc.code))
        elif g is None or member_id not in g.members:
            return all_failed(K.unknown_member_id)
        elif g.state == PREPARING:
            return all_failed(K.rebalance_in_progress)
        elif generation != g.generation:
            return all_failed(K.illegal_generation)
        else:
            g.members[member_id].deadline = time.monotonic() + \
                g.members[member_id].session_timeout_s
        state = self.broker.controller.state
        commits, topics = [], []
        for t in request.topics:
            meta = state.topic(t.name)
            parts = []
            for p in t.partitions:
                code = K.none
                if meta is None or not 0 <= p.partition_index < len(meta.partitions):
                    code = K.unknown_topic_or_partition
                elif p.committed_offset < 0:
                    code = K.invalid_commit_offset_size
                elif len(p.committed_metadata or "") > METADATA_MAX:
                    code = K.offset_metadata_too_large
                else:
                    commits.append((t.name, p.partition_index, p.committed_offset,
                                    p.committed_metadata or ""))
                parts.append({"partition_index": p.partition_index, "error_code": code})
            topics.append({"name": t.name, "partitions": parts})
        if commits:
            try:
                await self.groups._write(c, replica, group_id, commits)
            except BrokerError as exc:
                code = _group_code(exc)
                for t in topics:
                    for p in t["partitions"]:
                        if p["error_code"] == K.none:
                            p["error_code"] = code
        return {"topics": topics}

    async def offset_delete(self, request, version, ctx, header) -> dict:
        """OffsetDelete: the group's committed offsets of the named partitions are deleted,
        except for topics the group's members consume (GROUP_SUBSCRIBED_TO_TOPIC: for a
        classic group with members every topic counts, its subscriptions being in the
        clients' own metadata format)."""
        group_id = request.group_id
        try:
            replica = self.groups._replica(group_id)
            g = self._group(group_id, create=False)
            c = self.groups._coordinated(group_id, replica)
        except BrokerError as exc:
            return {"error_code": _group_code(exc), "topics": []}
        committed = replica.offsets.get(group_id, {})
        if not committed and not c.group.members and (g is None or not g.members):
            return {"error_code": K.group_id_not_found, "topics": []}
        busy = c.group.subscribed_topics()
        classic_members = g is not None and bool(g.members)
        deletions, topics = [], []
        for t in request.topics:
            parts = []
            for p in t.partitions:
                code = K.none
                if classic_members or t.name in busy:
                    code = K.group_subscribed_to_topic
                elif (t.name, p.partition_index) in committed:
                    deletions.append((t.name, p.partition_index, -1, ""))
                parts.append({"partition_index": p.partition_index, "error_code": code})
            topics.append({"name": t.name, "partitions": parts})
        if deletions:
            try:
                await self.groups._write(c, replica, group_id, deletions)
            except BrokerError as exc:
                return {"error_code": _group_code(exc), "topics": []}
        return {"error_code": K.none, "topics": topics}

    # ------------------------------------------------------------------ listing
    def listing(self) -> dict[str, str]:
        """State of every classic group this node coordinates now."""
        ids = set(self._groups)
        meta = self.broker.controller.state.topic(OFFSETS_TOPIC)
        for p in range(len(meta.partitions) if meta is not None else 0):
            replica = self.broker.partitions.get((OFFSETS_TOPIC, p))
            if isinstance(replica, OffsetsReplica):
                ids.update(replica.classic)  # coordinated groups not served since a move
        out = {}
        for group_id in sorted(ids):
            try:
                g = self._group(group_id, create=False)
            except BrokerError:
                continue
            if g is not None:
                out[group_id] = g.state
        return out

    def describe(self, group_id: str) -> dict | None:
        try:
            g = self._group(group_id, create=False)
        except BrokerError:
            return None
        if g is None or not g.members:
            return None
        return {"error_code": K.none, "group_id": group_id, "group_state": g.state,
                "protocol_type": g.protocol_type, "protocol_data": g.protocol or "",
                "members": [{"member_id": m.member_id, "client_id": m.client_id,
                             "client_host": m.host,
                             "member_metadata": dict(m.protocols).get(g.protocol or "", b""),
                             "member_assignment": m.assignment}
                            for m in g.members.values()]}


class _Kafka(Exception):
    def __init__(self, code: K, message: str) -> None:
        super().__init__(message)
        self.code = code


def _group_code(exc: BrokerError) -> K:
    if exc.code == Code.INVALID_REQUEST:
        return K.invalid_group_id
    if exc.code in (Code.LEADER_NOT_AVAILABLE, Code.NOT_LEADER):
        return K.not_coordinator
    if exc.code == Code.NO_QUORUM:
        return K.coordinator_not_available
    return kafka_code(exc.code)
