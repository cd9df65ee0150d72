"""The GroupCoordinator gRPC service: consumer groups on top of ``__consumer_offsets``.

This node coordinates the groups whose offsets partition it leads (``_offsets.py``);
membership and assignment follow the rules in ``_coordinator.py``. Membership is served
from memory and *replicated* (rules 7 and 8 there): every change of what a member was
told or may hold is written to the group's offsets partition before the heartbeat that
caused it is answered (``_persist``), so when leadership of that partition moves (a
preferred-leader handoff, a graceful stop, a failover) the new coordinator rebuilds the
group with the same members, epochs and holdings, and a live member keeps its partitions
without rejoining. (Before this, membership lived in memory only: a move made every member
rejoin, and a member joining the new coordinator first was given partitions the others
were still processing.) Offsets and membership are served only once the coordinator has
applied an entry of its own term (COORDINATOR_LOADING before), so it never answers with an
offset older than one it acknowledged earlier, nor with a membership older than one it
told a member.

Commits still being replicated are tracked per group; a FetchOffsets waits for them, so a
member that takes over a partition never starts from an offset older than a commit its
previous owner had already been allowed to make.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Callable

from raftka.v1 import group_pb2, group_pb2_grpc
from raftka.raft import Role

from ._broker import Broker
from ._controller_state import TopicMeta
from ._coordinator import ConsumerGroup, TopicPartition
from ._errors import BrokerError, Code, forget_outcome
from ._offsets import (
    GROUP_ID_MAX,
    OFFSETS_TOPIC,
    OffsetsReplica,
    encode_commits,
    encode_group_changes,
    offsets_partition_for,
)
from ._services import _handler, _Service

STABLE_WAIT_S = 5.0  # FetchOffsets waits this long for a transaction's pending offsets
STABLE_POLL_S = 0.01

log = logging.getLogger("raftka.groups")

COMMIT_TIMEOUT_S = 10.0
EXPIRY_INTERVAL_S = 0.1
DELETED_TOPIC_SWEEP_S = 1.0
DELETED_TOPIC_MEMORY_S = 600.0


def _ignore_outcome(task: asyncio.Future) -> None:
    # A failed deletion (leadership moved, no quorum) is retried by the next sweep.
    if not task.cancelled():
        task.exception()
METADATA_MAX = 4096


class _Coordinated:
    """A group this node coordinates, valid for one leadership term of its partition."""

    __slots__ = ("term", "group", "inflight", "persisting")

    def __init__(self, term: int, group: ConsumerGroup) -> None:
        self.term = term
        self.group = group
        self.inflight: set[asyncio.Future] = set()  # commits being replicated
        self.persisting: set[asyncio.Future] = set()  # membership writes being replicated


def _tps(items) -> list[TopicPartition]:
    return [(tp.topic, p) for tp in items for p in tp.partitions]


def _to_pb(tps) -> list[group_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for t, p in sorted(tps):
        by_topic.setdefault(t, []).append(p)
    return [group_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]


def _check_group_id(group_id: str) -> None:
    if not group_id or len(group_id) > GROUP_ID_MAX or not group_id.isprintable():
        raise BrokerError(Code.INVALID_REQUEST, f"group id must be 1 to {GROUP_ID_MAX} printable "
                          f"characters, got {group_id[:300]!r}")


class GroupCoordinatorService(_Service, group_pb2_grpc.GroupCoordinatorServicer):
    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self._groups: dict[str, _Coordinated] = {}
        self._task: asyncio.Task | None = None
        self._next_sweep = 0.0
        # Whether a group has members of Kafka's classic protocol (set by the Kafka
        # listener, node/_kafka/_classic.py): such a group refuses members of ours.
        self.classic_members: Callable[[str], bool] = lambda group_id: False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._expire_loop(),
                                                            name="group-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            now = time.monotonic()
            for group_id, c in list(self._groups.items()):
                replica = self._current_replica(group_id, c)
                if replica is None:
                    # Not coordinating it in this term any more: the membership is in the
                    # log for whoever (maybe this node again) coordinates it next.
                    if self._groups.get(group_id) is c:
                        del self._groups[group_id]
                    continue
                gone = c.group.expire(now)
                if gone:
                    log.info("group %s: removed members %s (session or rebalance timeout)",
                             group_id, ", ".join(gone))
                    self._persist(c, replica)  # in the background
            if now >= self._next_sweep:
                self._next_sweep = now + DELETED_TOPIC_SWEEP_S
                self._drop_offsets_of_deleted_topics()

    def _drop_offsets_of_deleted_topics(self) -> None:
        """Committed offsets of a deleted topic go with it (as in Kafka): every node notes,
        as it applies the metadata, which topic names were deleted (or re-created under a
        new id) and when (``Broker.deleted_topics``; noted at apply time, not by polling,
        so a topic deleted within a sweep interval of its creation is not missed); the
        coordinator of each offsets partition it leads then writes deletions (offset -1)
        for the offsets of those names committed before that time. Idempotent, so each
        sweep may retry (after a failed write or a coordinator move) until the note
        expires; commits made to a re-created topic after the deletion are kept."""
        deleted = self.broker.deleted_topics
        now_ms = int(time.time() * 1000)
        for name, seen_ms in list(deleted.items()):
            if now_ms - seen_ms > DELETED_TOPIC_MEMORY_S * 1000:
                del deleted[name]
        if not deleted:
            return
        for (topic, _), replica in list(self.broker.partitions.items()):
            if topic != OFFSETS_TOPIC or not isinstance(replica, OffsetsReplica) \
                    or not replica.leader_ready():
                continue
            for group_id, committed in list(replica.offsets.items()):
                stale = [(t, p, -1, "") for (t, p), co in committed.items()
                         if t in deleted and co.commit_time_ms <= deleted[t]]
                if stale:
                    log.info("group %s: dropping committed offsets of deleted topics %s",
                             group_id, ", ".join(sorted({t for t, *_ in stale})))
                    payload = encode_commits(group_id, stale, now_ms)
                    task = asyncio.ensure_future(replica.produce(payload, -1,
                                                                 COMMIT_TIMEOUT_S))
                    task.add_done_callback(_ignore_outcome)

    # ------------------------------------------------------------------ routing
    def _offsets_topic(self) -> TopicMeta:
        meta = self.broker.controller.state.topic(OFFSETS_TOPIC)
        if meta is None:
            raise BrokerError(Code.COORDINATOR_LOADING, f"the {OFFSETS_TOPIC} topic is being "
                              "created; retry shortly", retriable=True)
        return meta

    def _replica(self, group_id: str) -> OffsetsReplica:
        """This node's replica of the group's offsets partition, if it is the coordinator."""
        _check_group_id(group_id)
        meta = self._offsets_topic()
        pnum = offsets_partition_for(group_id, len(meta.partitions))
        replica = self.broker.partitions.get((OFFSETS_TOPIC, pnum))
        leader = self.broker.leader_of(meta, meta.partitions[pnum])
        if not isinstance(replica, OffsetsReplica) or replica.group is None \
                or replica.group.node.role != Role.LEADER:
            raise BrokerError(
                Code.NOT_COORDINATOR,
                f"node {self.broker.node_id} is not the coordinator of group {group_id!r}"
                + (f"; node {leader} is" if leader and leader != self.broker.node_id
                   else "; an election is in progress"),
                retriable=True, leader_id=leader if leader != self.broker.node_id else 0)
        if not replica.leader_ready():
            raise BrokerError(Code.COORDINATOR_LOADING, f"the coordinator of group {group_id!r} "
                              "is catching up on its log; retry shortly", retriable=True)
        return replica

    def _coordinated(self, group_id: str, replica: OffsetsReplica) -> _Coordinated:
        if (replica.groups.get(group_id) or {}).get("type") == "share":  # _share_service.py
            raise BrokerError(Code.INCONSISTENT_GROUP_TYPE, f"group id {group_id!r} is used "
                              "by a share group; a consumer group needs another id")
        c = self._existing(group_id, replica)
        if c is None:
            c = _Coordinated(replica.group.node.term, ConsumerGroup(group_id))
            self._groups[group_id] = c
        return c

    def _existing(self, group_id: str, replica: OffsetsReplica) -> _Coordinated | None:
        """The group's state in this term: as this node keeps it, else rebuilt from the
        replicated membership records (a new coordinator), else None (reads must not grow
        the table with every group id anybody asks about)."""
        term = replica.group.node.term
        c = self._groups.get(group_id)
        if c is not None and c.term == term:
            return c
        members = replica.members.get(group_id, {})
        record = replica.groups.get(group_id)
        if not members and record is None:
            if c is not None:
                del self._groups[group_id]  # a state of an earlier term
            return None
        c = _Coordinated(term, ConsumerGroup.restore(group_id, record, members,
                                                     time.monotonic()))
        self._groups[group_id] = c
        if members:
            log.info("group %s: coordinating it in term %d with its %d member(s) from the "
                     "log", group_id, term, len(members))
        return c

    def _persist(self, c: _Coordinated, replica: OffsetsReplica,
                 deleted: bool = False) -> list[asyncio.Future]:
        """Start writing the group's membership changes (``_coordinator.py`` rule 7);
        returns every membership write of the group still in flight, this one last. If the
        write fails, the changes are marked again for the next one."""
        members, record = c.group.take_changes()
        if members or record is not None or deleted:
            now_ms = int(time.time() * 1000)
            for payload in encode_group_changes(c.group.group_id, members, record, now_ms,
                                                deleted):
                task = asyncio.ensure_future(replica.produce(payload, -1, COMMIT_TIMEOUT_S))
                c.persisting.add(task)
                task.add_done_callback(functools.partial(
                    self._persisted, c, list(members), record is not None))
        return list(c.persisting)

    @staticmethod
    def _persisted(c: _Coordinated, member_ids: list[str], group: bool,
                   task: asyncio.Future) -> None:
        c.persisting.discard(task)
        if task.cancelled() or task.exception() is not None:
            c.group.mark_changed(member_ids, group)

    async def _persisted_before_answering(self, c: _Coordinated, replica: OffsetsReplica,
                                          deleted: bool = False) -> None:
        """Write this heartbeat's changes and wait for them and for every earlier write of
        the group: the answer may tell the member about any of them. Raises the first
        failure (retriable: the member heartbeats again)."""
        for outcome in await asyncio.gather(*self._persist(c, replica, deleted),
                                            return_exceptions=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, BrokerError):
                    raise outcome
                raise BrokerError(Code.COORDINATOR_LOADING, f"group {c.group.group_id!r}: "
                                  f"its membership could not be written ({outcome!r}); "
                                  "retry", retriable=True)

    def _partition_counts(self, topics) -> dict[str, int]:
        state = self.broker.controller.state
        counts = {}
        for t in topics:
            meta = state.topic(t)
            counts[t] = len(meta.partitions) if meta is not None else 0
        return counts

    # ------------------------------------------------------------------ RPCs
    @_handler
    async def FindCoordinator(self, request, context):  # noqa: N802
        _check_group_id(request.group_id)
        meta = self._offsets_topic()
        pnum = offsets_partition_for(request.group_id, len(meta.partitions))
        leader = self.broker.leader_of(meta, meta.partitions[pnum])
        return group_pb2.FindCoordinatorResponse(
            node_id=leader, address=self.broker.address_of(leader) if leader else "",
            offsets_partition=pnum)

    @_handler
    async def Heartbeat(self, request, context):  # noqa: N802
        replica = self._replica(request.group_id)
        if self.classic_members(request.group_id):
            raise BrokerError(Code.INVALID_REQUEST, f"group {request.group_id!r} has members "
                              "of Kafka's classic group protocol; use another group id")
        c = self._coordinated(request.group_id, replica)
        group = c.group
        topics = list(request.topics) or None
        wanted = set(topics or ()) | group.subscribed_topics()
        result = group.heartbeat(
            member_id=request.member_id, member_epoch=request.member_epoch, topics=topics,
            now=time.monotonic(), partition_counts=self._partition_counts(wanted),
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms, assignor=request.assignor,
            client_id=request.client_id, host=context.peer() or "",
            read_committed=request.read_committed)
        await self._persisted_before_answering(c, replica)
        if result is None:
            return group_pb2.GroupHeartbeatResponse(member_id=request.member_id, member_epoch=-1,
                                                    group_epoch=group.group_epoch)
        return group_pb2.GroupHeartbeatResponse(
            member_id=result.member_id, member_epoch=result.member_epoch,
            heartbeat_interval_ms=result.heartbeat_interval_ms,
            assignment=_to_pb(result.assignment), group_epoch=result.group_epoch,
            pending=result.pending)

    @_handler
    async def CommitOffsets(self, request, context):  # noqa: N802
        replica = self._replica(request.group_id)
        commits = self._validated_commits(request.offsets)
        c = self._coordinated(request.group_id, replica)
        c.group.check_commit(request.member_id, request.member_epoch,
                             [(t, p) for t, p, _, _ in commits])
        await self._write(c, replica, request.group_id, commits)
        return group_pb2.OffsetCommitResponse()

    def _validated_commits(self, entries) -> list[tuple[str, int, int, str]]:
        if not entries:
            raise BrokerError(Code.INVALID_REQUEST, "the commit names no partition")
        state = self.broker.controller.state
        out = []
        for e in entries:
            if e.offset < 0:
                raise BrokerError(Code.INVALID_OFFSET, f"offset {e.offset} for {e.topic}/"
                                  f"{e.partition} is negative; commit the next offset to read")
            meta = state.topic(e.topic)
            if meta is None:
                raise BrokerError(Code.UNKNOWN_TOPIC, f"topic {e.topic!r} does not exist")
            if not 0 <= e.partition < len(meta.partitions):
                raise BrokerError(Code.UNKNOWN_PARTITION, f"topic {e.topic!r} has partitions "
                                  f"0..{len(meta.partitions) - 1}, not {e.partition}")
            if len(e.metadata) > METADATA_MAX:
                raise BrokerError(Code.INVALID_REQUEST, f"commit metadata is limited to "
                                  f"{METADATA_MAX} characters")
            out.append((e.topic, e.partition, e.offset, e.metadata))
        return out

    async def _write(self, c: _Coordinated, replica: OffsetsReplica, group_id: str,
                     commits: list[tuple[str, int, int, str]]) -> None:
        payload = encode_commits(group_id, commits, int(time.time() * 1000))
        task = asyncio.ensure_future(replica.produce(payload, -1, COMMIT_TIMEOUT_S))
        c.inflight.add(task)
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                c.inflight.discard(task)
            else:
                task.add_done_callback(c.inflight.discard)
                forget_outcome(task)  # the committer went away: a failure now is expected

    @_handler
    async def FetchOffsets(self, request, context):  # noqa: N802
        replica = self._replica(request.group_id)
        c = self._existing(request.group_id, replica)
        if c is not None and c.inflight:
            await asyncio.gather(*list(c.inflight), return_exceptions=True)
            replica = self._replica(request.group_id)
        committed = replica.offsets.get(request.group_id, {})
        wanted = _tps(request.partitions) or sorted(committed)
        replica = await self._wait_stable(request.group_id, wanted, replica,
                                          0.0 if request.require_stable else STABLE_WAIT_S)
        committed = replica.offsets.get(request.group_id, {})
        response = group_pb2.OffsetFetchResponse()
        for t, p in wanted:
            co = committed.get((t, p))
            if co is None:
                response.offsets.add(topic=t, partition=p, offset=-1)
            else:
                response.offsets.add(topic=t, partition=p, offset=co.offset,
                                     metadata=co.metadata, commit_time_ms=co.commit_time_ms)
        return response

    async def _wait_stable(self, group_id: str, wanted, replica,
                           wait_s: float = STABLE_WAIT_S):
        """KIP-447's stable offsets: while a transaction holds pending offsets of the group
        for a wanted partition (TxnOffsetCommit, decided but its marker not yet applied
        here), wait for its marker, up to ``wait_s`` (0: require_stable, the caller
        retries); then CONCURRENT_TRANSACTIONS
        (retriable: Kafka's UNSTABLE_OFFSET_COMMIT). Answering the older committed offset
        instead would let a consumer that takes over right after commit_transaction
        reprocess what the transaction consumed. The replica to read."""
        deadline = time.monotonic() + wait_s
        while True:
            unstable = [(t, p) for t, p in wanted if replica.has_pending(group_id, t, p)]
            if not unstable:
                return replica
            if time.monotonic() >= deadline:
                t, p = unstable[0]
                raise BrokerError(Code.CONCURRENT_TRANSACTIONS, (
                    f"a transaction holds pending offsets of group {group_id!r} for {t}/{p} "
                    "(its commit or abort marker is on the way; KIP-447 unstable offset "
                    "commit); retry shortly"), retriable=True)
            await asyncio.sleep(STABLE_POLL_S)
            replica = self._replica(group_id)

    @_handler
    async def ListGroups(self, request, context):  # noqa: N802
        listings: dict[str, group_pb2.GroupListing] = {}
        for (topic, _), replica in self.broker.partitions.items():
            if topic != OFFSETS_TOPIC or not isinstance(replica, OffsetsReplica):
                continue
            leader = replica.group.node.leader_id if replica.group is not None else 0
            for group_id in replica.offsets:
                listings[group_id] = group_pb2.GroupListing(
                    group_id=group_id, state="empty", members=0, coordinator_id=leader)
        for group_id, c in self._groups.items():
            replica = self._current_replica(group_id, c)
            if replica is None:
                continue
            if not c.group.members and group_id not in listings:
                continue
            listings[group_id] = group_pb2.GroupListing(
                group_id=group_id, state=c.group.state, members=len(c.group.members),
                coordinator_id=self.broker.node_id)
        return group_pb2.ListGroupsResponse(groups=[listings[g] for g in sorted(listings)])

    def _current_replica(self, group_id: str, c: _Coordinated) -> OffsetsReplica | None:
        try:
            replica = self._replica(group_id)
        except BrokerError:
            return None
        return replica if replica.group.node.term == c.term else None

    @_handler
    async def DescribeGroup(self, request, context):  # noqa: N802
        replica = self._replica(request.group_id)
        if (replica.groups.get(request.group_id) or {}).get("type") == "share":
            raise BrokerError(Code.INCONSISTENT_GROUP_TYPE, f"group {request.group_id!r} is a "
                              "share group; describe it with `raftka share describe` "
                              "(Share.DescribeShareGroup)")
        c = self._existing(request.group_id, replica)
        committed = replica.offsets.get(request.group_id, {})
        if (c is None or not c.group.members) and not committed:
            raise BrokerError(Code.UNKNOWN_GROUP, f"group {request.group_id!r} has no members "
                              "and no committed offsets")
        group = c.group if c is not None else ConsumerGroup(request.group_id)
        # lag against what the group can read: the last stable offset when a member reads
        # committed records only (transactions), else the high watermark
        read_committed = any(m.read_committed for m in group.members.values())
        response = group_pb2.DescribeGroupResponse(
            group_id=request.group_id, state=group.state, group_epoch=group.group_epoch,
            assignor=group.assignor, coordinator_id=self.broker.node_id,
            isolation_level="read_committed" if read_committed else "read_uncommitted")
        for m in sorted(group.members.values(), key=lambda m: m.member_id):
            response.members.add(
                member_id=m.member_id, client_id=m.client_id, host=m.host,
                member_epoch=m.epoch, topics=sorted(m.topics), assignment=_to_pb(m.held),
                target=_to_pb(group.target.get(m.member_id, ())))
        partitions = set(committed)
        for t, n in self._partition_counts(group.subscribed_topics()).items():
            partitions.update((t, p) for p in range(n))
        for t, p in sorted(partitions):
            co = committed.get((t, p))
            end, stable = self._log_end(t, p)
            offset = co.offset if co is not None else -1
            reach = stable if read_committed else end
            response.partitions.add(
                topic=t, partition=p, committed_offset=offset, log_end_offset=end,
                last_stable_offset=stable,
                lag=max(reach - offset, 0) if reach >= 0 and offset >= 0 else -1,
                member_id=group.owner_of((t, p)))
        return response

    def _log_end(self, topic: str, partition: int) -> tuple[int, int]:
        """The high watermark and the last stable offset if this node leads the partition,
        else -1, -1 (unknown here)."""
        replica = self.broker.partitions.get((topic, partition))
        if replica is None or replica.group is None or replica.group.node.role != Role.LEADER:
            return -1, -1
        return replica.high_watermark, replica.last_stable_offset

    @_handler
    async def ResetOffsets(self, request, context):  # noqa: N802
        replica = self._replica(request.group_id)
        c = self._coordinated(request.group_id, replica)
        self._require_empty(c, replica, "reset its offsets")
        commits = self._validated_commits(request.offsets)
        await self._write(c, replica, request.group_id, commits)
        return group_pb2.ResetOffsetsResponse()

    @_handler
    async def DeleteGroup(self, request, context):  # noqa: N802
        replica = self._replica(request.group_id)
        c = self._coordinated(request.group_id, replica)
        self._require_empty(c, replica, "delete it")
        committed = replica.offsets.get(request.group_id)
        if not committed and request.group_id not in replica.groups:
            raise BrokerError(Code.UNKNOWN_GROUP, f"group {request.group_id!r} has no "
                              "committed offsets and no members")
        if committed:
            tombstones = [(t, p, -1, "") for t, p in sorted(committed)]
            await self._write(c, replica, request.group_id, tombstones)
        await self._persisted_before_answering(c, replica, deleted=True)
        self._groups.pop(request.group_id, None)
        return group_pb2.DeleteGroupResponse()

    def _require_empty(self, c: _Coordinated, replica: OffsetsReplica, what: str) -> None:
        if c.group.expire(time.monotonic()):
            self._persist(c, replica)
        if c.group.members:
            raise BrokerError(Code.GROUP_NOT_EMPTY, f"group {c.group.group_id!r} has "
                              f"{len(c.group.members)} active member(s); stop its consumers "
                              f"before you {what}")
