"""``Consumer``: a member of a consumer group (broker-side assignment, KIP-848 style).

    with Consumer("127.0.0.1:7001", "billing", ["orders"]) as consumer:
        for record in consumer:          # or: records = consumer.poll(1.0)
            handle(record)
            consumer.commit()            # commits the position after what poll returned

Threads, and why:
- the **heartbeat thread** keeps the membership alive on its own, so a slow handler between
  two ``poll`` calls never makes the member miss its session timeout; it also brings new
  target assignments from the coordinator;
- one **fetcher thread per owned partition** reads ahead (long-poll Fetch against the
  partition leader, following leader changes; about two fetches' worth per partition), so
  partitions are read in parallel; ``poll`` decodes the fetched batches in the caller's
  thread and hands the records out.

Assignment changes are applied inside ``poll`` (never behind the application's back):
revoked partitions stop, and with auto-commit their positions are committed first; added
partitions start from the group's committed offset (or ``auto_offset_reset`` when none).
Only then does the heartbeat acknowledge the new assignment, and only after that will the
coordinator give a revoked partition to another member. When the coordinator says the
member is gone (session timeout, or it was fenced), the consumer drops every partition at
once — its commits would be refused anyway — and joins again. A coordinator failover alone
does not do that: membership is kept in the offsets partition, so the member goes on with
the new coordinator at its next heartbeat.

Positions and commits use Kafka's meaning: the offset of the next record to read.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from raftka.client._security import ClientSecurity
from raftka.client._admin import AdminOps
from raftka.client._cluster import Cluster
from raftka.client._coordinator import GroupCoordinatorClient
from raftka.client._transactions import ConsumerGroupMetadata
from raftka.client._ops import Ops, backoff, run_sync
from raftka.client._retry import RetryPolicy
from raftka.client._retry_topics import RetryRouter, RetryTopics, check_handler_result, now_ms
from raftka.v1.errors import (
    CorruptBatchError,
    FencedMemberEpochError,
    OffsetOutOfRangeError,
    RaftkaError,
    RaftkaTimeoutError,
    UnknownMemberIdError,
    UnknownTopicError,
)
from raftka.client._reader import PartitionReader, _isolation, check_read_from
from raftka.client._types import ConsumedBatch, ConsumedRecord, TopicPartition
from raftka.v1 import group_pb2

__all__ = ["CommitFailedError", "Consumer"]

log = logging.getLogger("raftka.consumer")

_RESETS = ("earliest", "latest", "none")
# Per partition: fetch again when fewer fetched batches than this wait for poll (the reader
# also keeps one more Fetch in flight while a backlog remains).
READ_AHEAD_BATCHES = 2
# Retries (_retry.py): the heartbeat backs off 50 ms-1 s after a retriable failure (the
# coordinator client already retried within half a session); a fetcher whose reader gave
# up on a retriable error backs off 50-500 ms like the reader; a commit refused for a stale
# member epoch waits 50-200 ms for the heartbeat to bring the new one.
HEARTBEAT_RETRY = RetryPolicy(backoff_initial_s=0.05, backoff_max_s=1.0)
FETCH_RETRY = RetryPolicy(backoff_initial_s=0.05, backoff_max_s=0.5)
COMMIT_EPOCH_RETRY = RetryPolicy(backoff_initial_s=0.05, backoff_max_s=0.2)


def _by_topic(tps: Iterable[tuple[str, int]]) -> list[group_pb2.TopicPartitions]:
    grouped: dict[str, list[int]] = {}
    for t, p in sorted(tps):
        grouped.setdefault(t, []).append(p)
    return [group_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in grouped.items()]


class CommitFailedError(RaftkaError):
    """The commit was refused because the consumer no longer owns the partition (the group
    rebalanced, or the member was removed). Records since the last successful commit will be
    delivered again to whoever owns the partition now."""


# ---------------------------------------------------------------------- shared with aio
# The requests, their answers' meaning and the commit rules, used by this Consumer and by
# the asyncio one (raftka.client.aio._consumer), which drive them with their own I/O.


def heartbeat_request(consumer: Any, member_id: str, epoch: int,
                      owned: Iterable[TopicPartition]) -> group_pb2.GroupHeartbeatRequest:
    """A member's heartbeat: joining (no member id yet) it names its topics; it always
    reports the partitions it owns and acknowledges ``epoch`` (0 when joining)."""
    joining = not member_id
    request = group_pb2.GroupHeartbeatRequest(
        group_id=consumer.group_id, member_id=member_id, member_epoch=epoch,
        topics=list(consumer.topics) if joining else [],
        session_timeout_ms=consumer._session_timeout_ms,
        rebalance_timeout_ms=consumer._rebalance_timeout_ms,
        assignor=consumer._assignor, client_id=consumer._client_id,
        read_committed=joining and consumer._isolation_level == "read_committed")
    request.owned.extend(_by_topic(owned))
    return request


def leave_request(group_id: str, member_id: str) -> group_pb2.GroupHeartbeatRequest:
    return group_pb2.GroupHeartbeatRequest(group_id=group_id, member_id=member_id,
                                           member_epoch=-1)


def target_assignment(response: Any) -> frozenset[TopicPartition]:
    """The partitions a heartbeat answer assigns to the member."""
    return frozenset(TopicPartition(tp.topic, p) for tp in response.assignment
                     for p in tp.partitions)


def commit_ops(coordinator: GroupCoordinatorClient, group_id: str, member_id: str,
               epoch: Callable[[], int], offsets: Mapping[tuple[str, int], int],
               timeout: float) -> Ops[None]:
    """Commit ``offsets`` as ``member_id`` with its acknowledged epoch (``epoch()``, read
    again after each FENCED_MEMBER_EPOCH: the heartbeat brings the new one). Raises
    :class:`CommitFailedError` when the member or a partition is not ours any more."""
    request = group_pb2.OffsetCommitRequest(
        group_id=group_id, member_id=member_id, member_epoch=epoch())
    for (topic, partition), offset in sorted(offsets.items()):
        request.offsets.add(topic=topic, partition=partition, offset=int(offset))
    retry = COMMIT_EPOCH_RETRY.start(timeout)
    while True:
        try:
            yield from coordinator.call_ops("CommitOffsets", request, retry.remaining())
            return
        except FencedMemberEpochError:
            # Not retriable by the table (rule 1 of _retry.py), but our own to judge:
            # our epoch moved (an assignment change not yet applied), the heartbeat
            # learns the new one; retry with it while time remains.
            if retry.expired():
                raise
            yield backoff(retry)
            request.member_epoch = epoch()
        except UnknownMemberIdError as exc:
            raise CommitFailedError(f"commit refused: {exc}") from exc
        except RaftkaError as exc:
            if exc.code_name == "PARTITION_NOT_ASSIGNED":
                raise CommitFailedError(f"commit refused: {exc}") from exc
            raise


def fetch_committed_ops(coordinator: GroupCoordinatorClient, tps: list[TopicPartition],
                        timeout: float) -> Ops[dict[TopicPartition, int]]:
    """The group's committed offsets of ``tps`` (-1 where none)."""
    if not tps:
        return {}
    request = group_pb2.OffsetFetchRequest(group_id=coordinator.group_id,
                                           partitions=_by_topic(tps))
    response = yield from coordinator.call_ops("FetchOffsets", request, timeout)
    return {TopicPartition(o.topic, o.partition): o.offset for o in response.offsets}


class GroupMembership:
    """A member's view of its group, sans-I/O, shared by this Consumer and the asyncio
    one: the heartbeat side records what the coordinator says (:meth:`on_answer`,
    :meth:`on_fenced`, :meth:`on_fatal`); the poll side takes the changes
    (:meth:`take`), applies them (:meth:`plan`) and acknowledges (:meth:`applied`), so
    the next heartbeat reports the new epoch. The owner serializes calls (the threaded
    Consumer under its condition's lock; the asyncio one on its loop).

    ``generation`` counts memberships: +1 each time the coordinator forgot the member
    (fenced, or its session expired), so a target meant for a lost membership is never
    applied. ``owned``: what poll hands out now; ``acked_epoch``: the epoch of the
    assignment poll last applied (0 before any)."""

    __slots__ = ("member_id", "generation", "incoming", "lost", "error", "acked_epoch",
                 "acked_generation", "owned")

    def __init__(self) -> None:
        self.member_id = ""
        self.generation = 0
        self.incoming: tuple[int, int, frozenset[TopicPartition]] | None = None
        self.lost = False  # the coordinator no longer knows us: drop everything
        self.error: BaseException | None = None  # the heartbeat gave up: poll raises it
        self.acked_epoch = 0
        self.acked_generation = 0
        self.owned: frozenset[TopicPartition] = frozenset()

    # ------------------------------------------------------------------ heartbeat side

    def heartbeat(self, consumer: Any) -> group_pb2.GroupHeartbeatRequest:
        """The next heartbeat: joining without a member id, else acknowledging the epoch
        poll applied in this membership (0 when it applied none yet)."""
        epoch = (self.acked_epoch if self.acked_generation == self.generation
                 and self.member_id else 0)
        return heartbeat_request(consumer, self.member_id, epoch, self.owned)

    def on_answer(self, response: Any) -> bool:
        """A heartbeat answer; True when poll has a new target to apply."""
        target = target_assignment(response)
        self.member_id = response.member_id
        acked = self.acked_epoch if self.acked_generation == self.generation else 0
        if response.member_epoch != acked or target != self.owned:
            self.incoming = (self.generation, response.member_epoch, target)
            return True
        return False

    def on_fenced(self) -> None:
        """UNKNOWN_MEMBER_ID / FENCED_MEMBER_EPOCH: rejoin as a new member; poll drops
        every partition (their commits would be refused anyway)."""
        self.member_id = ""
        self.generation += 1
        self.incoming = None
        self.lost = True

    def on_fatal(self, error: BaseException) -> None:
        self.error = error

    @property
    def has_news(self) -> bool:
        return self.incoming is not None or self.lost or self.error is not None

    # ------------------------------------------------------------------ poll side

    def take(self) -> tuple[BaseException | None, frozenset[TopicPartition] | None,
                            tuple[int, int, frozenset[TopicPartition]] | None]:
        """(the heartbeat's fatal error, the partitions to drop when the membership was
        lost (else None), the target to apply): each handed out once."""
        error, self.error = self.error, None
        lost, self.lost = self.lost, False
        incoming, self.incoming = self.incoming, None
        dropped = None
        if lost:
            dropped, self.owned, self.acked_epoch = self.owned, frozenset(), 0
        return error, dropped, incoming

    def plan(self, incoming: tuple[int, int, frozenset[TopicPartition]]
             ) -> tuple[frozenset[TopicPartition], frozenset[TopicPartition]] | None:
        """(revoked, added) to go from what is owned to ``incoming``'s target; None when
        it belongs to a membership lost since."""
        generation, _epoch, target = incoming
        if generation != self.generation:
            return None
        return self.owned - target, target - self.owned

    def keep(self, incoming: tuple[int, int, frozenset[TopicPartition]]) -> None:
        """Applying ``incoming`` failed for now: try again at the next poll (unless a
        newer target came meanwhile)."""
        if self.incoming is None:
            self.incoming = incoming

    def applied(self, incoming: tuple[int, int, frozenset[TopicPartition]]) -> None:
        """Poll now owns ``incoming``'s target; the next heartbeat acknowledges it."""
        generation, epoch, target = incoming
        self.owned = target
        if generation == self.generation:
            self.acked_epoch = epoch
            self.acked_generation = generation


class _Fetcher:
    """Fetches one partition ahead of ``poll`` in its own thread. It never decodes: ``poll``
    does, in the caller's thread, so this thread mostly waits on the network without the
    GIL, and the caller does not queue for the GIL behind a decoding thread."""

    def __init__(self, consumer: Consumer, tp: TopicPartition, start: int | str) -> None:
        self.tp = tp
        self.error: BaseException | None = None
        self._consumer = consumer
        self.reader = PartitionReader(
            consumer._cluster, tp.topic, tp.partition, start,
            offset_reset=consumer._auto_offset_reset, max_wait_ms=consumer._fetch_max_wait_ms,
            max_bytes=consumer._fetch_max_bytes, request_timeout_ms=consumer._request_timeout_ms,
            read_ahead=False,  # this thread is the read-ahead
            read_from=consumer._read_from, rack=consumer._rack,
            isolation_level=consumer._isolation_level)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raftka-fetch-{tp.topic}-"
                                        f"{tp.partition}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cond = self._consumer._cond
        reader = self.reader
        retry = FETCH_RETRY.start()
        while not self._stop.is_set():
            with cond:
                while reader.fetched_batches >= READ_AHEAD_BATCHES and not self._stop.is_set():
                    cond.wait(0.2)
            if self._stop.is_set():
                return
            try:
                reader.fetch(0.5)
            except RaftkaError as exc:
                if exc.retriable:  # the reader retried within its fetch already
                    retry.classify(exc)
                    self._stop.wait(retry.delay())
                    continue
                with cond:
                    self.error = exc
                    cond.notify_all()
                return
            except Exception as exc:  # noqa: BLE001 - surfaced to the poll caller
                with cond:
                    self.error = exc
                    cond.notify_all()
                return
            retry.succeeded()
            if reader.fetched_batches:
                with cond:
                    cond.notify_all()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self.reader.close()


class Consumer:
    """A consumer-group member. Not thread-safe: call it from one thread (``wakeup`` and
    ``close`` excepted)."""

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        group_id: str,
        topics: str | Iterable[str],
        *,
        auto_offset_reset: str = "earliest",
        enable_auto_commit: bool = False,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        rebalance_timeout_ms: int = 30_000,
        assignor: str = "sticky",
        client_id: str = "",
        max_poll_records: int = 500,
        fetch_max_bytes: int = 1 << 20,
        fetch_max_wait_ms: int = 500,
        request_timeout_ms: int = 5000,
        security: ClientSecurity | None = None,
        read_from: str = "leader",
        rack: str | None = None,
        isolation_level: str = "read_uncommitted",
        retry_topics: RetryTopics | None = None,
    ) -> None:
        """``retry_topics``: ``process(handler)`` sends a record whose handler raised to a
        retry topic and, after ``max_attempts``, to a dead-letter topic, without blocking
        its partition (``_retry_topics.py``)."""
        check_read_from(read_from, rack)
        _isolation(isolation_level)  # a bad value fails here, not in the fetchers
        self._isolation_level = isolation_level
        if auto_offset_reset not in _RESETS:
            raise ValueError(f"auto_offset_reset must be one of {_RESETS}, got "
                             f"{auto_offset_reset!r}")
        topics = [topics] if isinstance(topics, str) else list(topics)
        if not topics:
            raise ValueError("subscribe to at least one topic")
        if max_poll_records < 1:
            raise ValueError("max_poll_records must be at least 1")
        if retry_topics is not None and enable_auto_commit:
            raise ValueError("retry_topics commits after each process() round: use it with "
                             "enable_auto_commit=False")
        self.group_id = group_id
        self._router = RetryRouter(retry_topics, group_id) if retry_topics else None
        if self._router is not None:
            self._router.check_topics(topics)
            topics = list(self._router.subscription(topics))
        self.topics = tuple(sorted(set(topics)))
        self._bootstrap, self._security = bootstrap, security  # the retry producer's
        self._retry_producer: Any = None
        # paused partitions (pause/resume) -> where they resume: the position when paused,
        # or what seek said since
        self._paused: dict[TopicPartition, int | str] = {}
        self._auto_offset_reset = auto_offset_reset
        self._auto_commit = enable_auto_commit
        self._auto_commit_interval_s = auto_commit_interval_ms / 1000
        self._session_timeout_ms = session_timeout_ms
        self._rebalance_timeout_ms = rebalance_timeout_ms
        self._assignor = assignor
        self._client_id = client_id or f"raftka-python@{socket.gethostname()}"
        self._max_poll_records = max_poll_records
        self._fetch_max_bytes = fetch_max_bytes
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._request_timeout_ms = request_timeout_ms
        self._read_from = read_from  # follower fetching (_reader.py)
        self._rack = rack
        self._cluster = Cluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                security=security)
        self._coordinator = GroupCoordinatorClient(self._cluster, group_id)

        self._cond = threading.Condition()
        self._group = GroupMembership()  # under _cond: heartbeat thread and poll thread
        self._fetchers: dict[TopicPartition, _Fetcher] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._next_auto_commit = time.monotonic() + self._auto_commit_interval_s
        self._rotation = 0
        self._closed = False
        self._hb_wake = threading.Event()
        self._hb_stop = threading.Event()
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                           name=f"raftka-heartbeat-{group_id}")
        self._hb_thread.start()

    # ------------------------------------------------------------------ public API
    @property
    def member_id(self) -> str:
        return self._group.member_id

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer owns now (as of the last ``poll``)."""
        return set(self._group.owned)

    def position(self, topic: str, partition: int) -> int | None:
        return self._positions.get(TopicPartition(topic, partition))

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[ConsumedRecord]:
        """Records from the owned partitions (possibly none), waiting up to ``timeout``
        seconds. Applies assignment changes first (see the module docstring)."""
        return self._poll(timeout, max_records, False)

    def poll_batches(self, timeout: float = 1.0,
                     max_records: int | None = None) -> list[ConsumedBatch]:
        """:meth:`poll` by whole stored batches: :class:`ConsumedBatch` objects (offsets,
        keys, values, timestamps, headers as one list each, one topic partition each),
        the first whole, then more while they total at most ``max_records``. No object
        per record is built (about 2x faster over a backlog of small records); positions,
        commits and rebalances work as with ``poll``."""
        return self._poll(timeout, max_records, True)

    def _poll(self, timeout: float, max_records: int | None, batches: bool) -> list:
        self._check_open()
        limit = max_records or self._max_poll_records
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            self._apply_assignment_changes()
            records = self._take(limit, batches)
            if records:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._cond:
                if not self._ready_locked():
                    self._cond.wait(min(remaining, 0.1))
        if self._auto_commit and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + self._auto_commit_interval_s
            try:
                self.commit()
            except RaftkaError as exc:
                log.warning("auto-commit of group %s failed: %s", self.group_id, exc)
        return records

    def __iter__(self) -> Iterator[ConsumedRecord]:
        while not self._closed:
            yield from self.poll(1.0)

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's identity for ``Producer.send_offsets_to_transaction`` (KIP-447):
        group id, member id and the member epoch of the assignment poll applied."""
        group = self._group
        return ConsumerGroupMetadata(self.group_id, group.member_id, group.acked_epoch
                                     if group.member_id else -1)

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None, *,
               timeout: float = 10.0) -> None:
        """Commit ``offsets`` ({(topic, partition): next offset}) or, by default, the current
        position of every owned partition. Blocks until durable (replicated by a
        majority). Raises :class:`CommitFailedError` when a partition is not owned any more."""
        self._check_open()
        group = self._group
        if offsets is None:
            offsets = {tp: pos for tp, pos in self._positions.items() if tp in group.owned}
        if not offsets:
            return
        run_sync(self._cluster, commit_ops(
            self._coordinator, self.group_id, group.member_id, lambda: group.acked_epoch,
            offsets, timeout), self._coordinator._stubs_for)

    def committed(self, partitions: Iterable[tuple[str, int]] | None = None, *,
                  timeout: float = 10.0) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed); by default for
        the owned partitions."""
        self._check_open()
        wanted = sorted(TopicPartition(*tp) for tp in (partitions if partitions is not None
                                                       else self._group.owned))
        return {tp: (o if o >= 0 else None) for tp, o in self._fetch_committed(wanted,
                                                                               timeout).items()}

    def seek(self, topic: str, partition: int, offset: int | str) -> None:
        """Continue ``topic/partition`` (owned) from ``offset`` ('earliest', 'latest' or an
        int) at the next poll."""
        self._check_open()
        tp = TopicPartition(topic, partition)
        if tp not in self._group.owned:
            raise ValueError(f"{topic}/{partition} is not assigned to this consumer "
                             f"(assignment: {sorted(self._group.owned)})")
        if isinstance(offset, int) and offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if tp in self._paused:  # stays paused; resumes from there
            self._paused[tp] = offset
            if isinstance(offset, int):
                self._positions[tp] = offset
            else:
                self._positions.pop(tp, None)
            return
        self._restart_fetcher(tp, offset)

    def pause(self, topic: str, partition: int) -> None:
        """Stop fetching ``topic/partition`` (owned) until ``resume``: ``poll`` returns
        nothing of it; its position (the next record to hand out) stays and commits as
        it is. A revoked partition is no longer paused."""
        self._check_open()
        tp = TopicPartition(topic, partition)
        if tp not in self._group.owned:
            raise ValueError(f"{topic}/{partition} is not assigned to this consumer")
        f = self._fetchers.pop(tp, None)
        if f is not None:
            f.stop()
        self._paused[tp] = self._positions.get(tp, self._auto_offset_reset)

    def resume(self, topic: str, partition: int) -> None:
        """Fetch a paused partition again, from its position."""
        self._check_open()
        tp = TopicPartition(topic, partition)
        start = self._paused.pop(tp, None)
        if start is not None and tp in self._group.owned:
            self._restart_fetcher(tp, start)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)  # the keys

    def process(self, handler: Callable[[ConsumedRecord], Any], timeout: float = 1.0,
                max_records: int | None = None) -> int:
        """One round of the ``retry_topics`` option (``_retry_topics.py``): poll, hand
        each record to ``handler``; a record whose handler raised goes to the retry topic
        (or, at the last attempt, to the dead-letter topic) and its partition moves on;
        once those records are acknowledged, commit the offsets of the batch. Returns
        the number of records handed to the handler (failed ones included). A commit
        refused because the partitions moved (CommitFailedError) is logged: their new
        owner redoes those records (at-least-once)."""
        router = self._router
        if router is None:
            raise ValueError("process() needs the retry_topics option (Consumer(..., "
                             "retry_topics=RetryTopics(...)))")
        for tp in router.due(now_ms()):
            self.resume(tp.topic, tp.partition)
        records = self.poll(router.wait_s(now_ms(), timeout), max_records)
        handled, sends, ends = 0, [], {}
        firsts: dict[TopicPartition, int] = {}  # where each partition's batch began
        for r in records:
            firsts.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        try:
            waiting: set[tuple[str, int]] = set()
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                if tp in waiting:
                    continue
                at = router.not_yet(r, now_ms())
                if at:  # not due: wait at this record, then read on from it
                    waiting.add(tp)
                    self._positions[tp] = r.offset
                    self.pause(r.topic, r.partition)
                    router.paused_until_ms[tp] = at
                    continue
                handled += 1
                try:
                    result = handler(router.view(r))
                except Exception as exc:  # noqa: BLE001 - the handler's failure is the input
                    send = router.on_failure(r, exc, now_ms())
                    log.info("group %s: %s/%d@%d failed (%s); to %s", self.group_id,
                             r.topic, r.partition, r.offset, exc, send.topic)
                    sends.append(self._producer().send(
                        send.topic, send.value, key=send.key, headers=send.headers))
                else:
                    check_handler_result(result)  # a coroutine: a usage error, raised
                ends[tp] = r.offset + 1
            for f in sends:
                f.result(timeout=self._request_timeout_ms / 1000 * 6)
        except BaseException:
            # nothing of this batch is committed: read it again (at-least-once), not past it
            for tp, offset in firsts.items():
                if tp in self._group.owned and not self._closed:
                    self.seek(tp.topic, tp.partition, offset)
            raise
        if ends:
            try:
                self.commit(ends)
            except CommitFailedError as exc:
                log.warning("group %s: %s; the new owner redoes these records",
                            self.group_id, exc)
        return handled

    def _producer(self) -> Any:
        if self._retry_producer is None:
            from raftka.client._producer import Producer  # noqa: PLC0415 - only for retries
            self._retry_producer = Producer(self._bootstrap, security=self._security,
                                            request_timeout_ms=self._request_timeout_ms)
        return self._retry_producer

    def close(self, timeout: float = 5.0) -> None:
        """Commit (with auto-commit), leave the group and stop every thread."""
        if self._closed:
            return
        if self._auto_commit:
            try:
                self.commit(timeout=timeout)
            except RaftkaError as exc:
                log.warning("final auto-commit of group %s failed: %s", self.group_id, exc)
        self._closed = True
        if self._retry_producer is not None:
            self._retry_producer.close(timeout)
        self._hb_stop.set()
        self._hb_wake.set()
        self._hb_thread.join(timeout)
        for f in self._fetchers.values():
            f.stop()
        for f in self._fetchers.values():
            f.join(timeout)
        self._fetchers.clear()
        if self._group.member_id:
            leave = leave_request(self.group_id, self._group.member_id)
            try:
                self._coordinator.call("Heartbeat", leave, min(timeout, 2.0))
            except RaftkaError as exc:
                log.info("leaving group %s: %s (the coordinator removes the member after "
                         "its session timeout)", self.group_id, exc)
        self._cluster.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ poll internals
    def _check_open(self) -> None:
        if self._closed:
            raise RaftkaError("the consumer is closed")

    def _ready_locked(self) -> bool:
        return (self._group.has_news or any(f.reader.fetched_batches or f.error
                       for f in self._fetchers.values()))

    def _take(self, limit: int, batches: bool = False) -> list:
        """Up to ``limit`` records (ConsumedRecords, or ConsumedBatches when
        ``batches``) from the fetchers' readers, partitions in rotation."""
        out: list = []
        count = 0
        fetchers = list(self._fetchers.values())
        if not fetchers:
            return out
        with self._cond:
            for f in fetchers:
                if f.error is not None:
                    err, f.error = f.error, None
                    self._on_fetch_error(f, err)
        n = len(fetchers)
        for i in range(n):  # rotate the start so no partition starves the others
            f = fetchers[(self._rotation + i) % n]
            if not f.reader.fetched_batches:
                continue
            try:
                records = (f.reader.take_batches(limit - count, not out) if batches
                           else f.reader.take(limit - count))  # decodes here, not in the fetcher
            except CorruptBatchError as err:
                if out:
                    break  # hand these out first; the next poll raises it
                self._on_fetch_error(f, err)
            if records:
                last = records[-1]
                self._positions[f.tp] = last.next_offset if batches else last.offset + 1
                count += sum(map(len, records)) if batches else len(records)
                if out:
                    out += records
                else:
                    out = records
            if count >= limit:
                break
        self._rotation += 1
        if any(f.reader.fetched_batches < READ_AHEAD_BATCHES for f in fetchers):
            with self._cond:
                self._cond.notify_all()  # fetchers waiting for room
        return out

    def _on_fetch_error(self, f: _Fetcher, err: BaseException) -> None:
        if isinstance(err, (OffsetOutOfRangeError, UnknownTopicError)):
            raise err
        raise RaftkaError(f"reading {f.tp.topic}/{f.tp.partition} failed: {err}") from err

    def _apply_assignment_changes(self) -> None:
        group = self._group
        with self._cond:
            err, dropped, incoming = group.take()
        if err is not None:
            raise err
        if dropped is not None:
            log.info("group %s: membership lost; dropping partitions %s and rejoining",
                     self.group_id, sorted(dropped))
            self._drop(dropped)
        if incoming is None:
            return
        with self._cond:
            plan = group.plan(incoming)
        if plan is None:
            return  # from a membership that has been lost since
        revoked, added = plan
        try:  # where the new partitions start; first, so a failure here changes nothing
            committed = self._fetch_committed(sorted(added), 10.0)
        except RaftkaError as exc:
            if not (exc.retriable or isinstance(exc, RaftkaTimeoutError)):
                raise
            log.info("group %s: cannot read committed offsets yet (%s); keeping the current "
                     "assignment and retrying at the next poll", self.group_id, exc)
            with self._cond:
                group.keep(incoming)
            return
        if revoked:
            if self._auto_commit:
                offsets = {tp: self._positions[tp] for tp in revoked if tp in self._positions}
                try:
                    self.commit(offsets)
                except RaftkaError as exc:
                    log.warning("group %s: commit before revoking %s failed: %s",
                                self.group_id, sorted(revoked), exc)
            self._drop(revoked)
        for tp in sorted(added):
            offset = committed.get(tp, -1)
            start: int | str = offset if offset >= 0 else self._auto_offset_reset
            self._restart_fetcher(tp, start)
        with self._cond:
            group.applied(incoming)
        self._hb_wake.set()  # acknowledge now: the partitions we let go move on sooner

    def _drop(self, tps: Iterable[TopicPartition]) -> None:
        tps = list(tps)
        stopped = []
        for tp in tps:
            f = self._fetchers.pop(tp, None)
            if f is not None:
                f.stop()
                stopped.append(f)
            self._positions.pop(tp, None)
            self._paused.pop(tp, None)
        if self._router is not None:
            self._router.forget(tps)
        with self._cond:
            self._cond.notify_all()
        for f in stopped:
            f.join(0)

    def _restart_fetcher(self, tp: TopicPartition, start: int | str) -> None:
        old = self._fetchers.pop(tp, None)
        if old is not None:
            old.stop()
        if isinstance(start, int):
            self._positions[tp] = start
        else:
            self._positions.pop(tp, None)
        self._fetchers[tp] = _Fetcher(self, tp, start)

    def _fetch_committed(self, tps: list[TopicPartition], timeout: float) -> dict[TopicPartition, int]:
        return run_sync(self._cluster, fetch_committed_ops(self._coordinator, tps, timeout),
                        self._coordinator._stubs_for)

    # ------------------------------------------------------------------ heartbeat thread
    def _heartbeat_loop(self) -> None:
        if self._router is not None:  # the retry and dead-letter topics, before joining
            try:
                run_sync(self._cluster, self._router.ensure_topics_ops(
                    AdminOps(self._cluster), self.topics, self._session_timeout_ms / 1000 * 3))
            except RaftkaError as exc:
                with self._cond:
                    self._group.on_fatal(exc)
                    self._cond.notify_all()
                return
        retry = HEARTBEAT_RETRY.start()  # no deadline: the membership lasts until close
        interval = 0.0
        while not self._hb_stop.is_set():
            self._hb_wake.wait(interval)
            self._hb_wake.clear()
            if self._hb_stop.is_set():
                return
            with self._cond:
                request = self._group.heartbeat(self)
            try:
                response = self._coordinator.call(
                    "Heartbeat", request, self._session_timeout_ms / 1000 / 2)
            except (UnknownMemberIdError, FencedMemberEpochError) as exc:
                log.info("group %s: %s; rejoining", self.group_id, exc)
                with self._cond:
                    self._group.on_fenced()
                    self._cond.notify_all()
                interval = 0.0
                continue
            except RaftkaError as exc:
                if not exc.retriable:
                    with self._cond:
                        self._group.on_fatal(exc)
                        self._cond.notify_all()
                    return
                retry.classify(exc)
                interval = retry.delay()
                continue
            retry.succeeded()
            with self._cond:
                if self._group.on_answer(response):
                    self._cond.notify_all()
            interval = max(response.heartbeat_interval_ms, 10) / 1000
