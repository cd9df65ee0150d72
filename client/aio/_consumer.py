"""``raftka.aio.Consumer``: a consumer-group member on an event loop.

The same protocol and rules as :class:`raftka.client.Consumer` (see its module
docstring: broker-side assignment, KIP-848 style), with tasks where it has threads:

- a **heartbeat task** keeps the membership alive while the application awaits
  something else, and brings new target assignments;
- a **fetch task per owned partition** reads ahead (``PartitionReaderCore`` fetch
  operations: leader following, retries), up to two fetched batches per partition;
  ``poll`` decodes them and hands the records out.

Assignment changes are applied inside ``poll`` (never behind the application's back):
revoked partitions stop (with auto-commit their positions are committed first), added
ones start at the group's committed offset (or ``auto_offset_reset``); only then does
the heartbeat acknowledge the new epoch. The membership's bookkeeping
(``GroupMembership``: what the heartbeat learned, what poll applied and acknowledges),
the requests and the commit rules (``commit_ops``, ``fetch_committed_ops``) are the
threaded consumer's; the coordinator calls are ``GroupCoordinatorClient``'s operations.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from types import TracebackType

from raftka.client._security import ClientSecurity
from raftka.client._consumer import (
    _RESETS,
    FETCH_RETRY,
    HEARTBEAT_RETRY,
    READ_AHEAD_BATCHES,
    CommitFailedError,
    GroupMembership,
    commit_ops,
    fetch_committed_ops,
    leave_request,
)
from raftka.client._admin import AdminOps
from raftka.client._coordinator import GroupCoordinatorClient
from raftka.client._retry_topics import RetryRouter, RetryTopics, now_ms
from raftka.client._transactions import ConsumerGroupMetadata
from raftka.client._types import ConsumedBatch, ConsumedRecord, TopicPartition
from raftka.client.aio._cluster import AsyncCluster, run
from raftka.client._reader import check_read_from
from raftka.client.aio._reader import PartitionReader
from raftka.client._reader import _isolation
from raftka.client.aio._waits import wait_event
from raftka.v1.errors import (
    CorruptBatchError,
    FencedMemberEpochError,
    OffsetOutOfRangeError,
    RaftkaError,
    RaftkaTimeoutError,
    UnknownMemberIdError,
    UnknownTopicError,
)

__all__ = ["CommitFailedError", "Consumer"]

log = logging.getLogger("raftka.consumer")


class _Fetcher:
    """Fetches one partition ahead of ``poll`` in its own task (no decoding here)."""

    def __init__(self, consumer: Consumer, tp: TopicPartition, start: int | str) -> None:
        self.tp = tp
        self.error: BaseException | None = None
        self._consumer = consumer
        self.reader = PartitionReader(
            consumer._cluster, tp.topic, tp.partition, start,
            offset_reset=consumer._auto_offset_reset, max_wait_ms=consumer._fetch_max_wait_ms,
            max_bytes=consumer._fetch_max_bytes, request_timeout_ms=consumer._request_timeout_ms,
            read_ahead=False,  # this task is the read-ahead
            read_from=consumer._read_from, rack=consumer._rack,
            isolation_level=consumer._isolation_level)
        self._room = asyncio.Event()
        self._stopped = False
        self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        self._room.set()

    async def _run(self) -> None:
        reader = self.reader
        retry = FETCH_RETRY.start()
        consumer = self._consumer
        while not self._stopped:  # the flag too: a cancellation may be lost (_waits.py)
            while reader.fetched_batches >= READ_AHEAD_BATCHES and not self._stopped:
                self._room.clear()
                await self._room.wait()
            try:
                await reader.fetch(0.5)
            except RaftkaError as exc:
                if exc.retriable:  # the reader retried within its fetch already
                    retry.classify(exc)
                    await asyncio.sleep(retry.delay())
                    continue
                self.error = exc
                consumer._data.set()
                return
            except Exception as exc:  # noqa: BLE001 - surfaced to the poll caller
                self.error = exc
                consumer._data.set()
                return
            retry.succeeded()
            if reader.fetched_batches:
                consumer._data.set()

    def stop(self) -> None:
        self._stopped = True
        self._room.set()
        self._task.cancel()

    async def join(self) -> None:
        await asyncio.wait([self._task])
        await self.reader.close()


class Consumer:
    """A consumer-group member whose methods are coroutines. Create it inside a running
    loop and use it from one task (``close`` excepted). Settings as
    :class:`raftka.client.Consumer`'s."""

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
        asyncio.get_running_loop()  # raises outside a loop: say so early
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
        self._client_id = client_id or f"raftka-python-aio@{socket.gethostname()}"
        self._max_poll_records = max_poll_records
        self._fetch_max_bytes = fetch_max_bytes
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._request_timeout_ms = request_timeout_ms
        self._read_from = read_from  # follower fetching (_reader.py)
        self._rack = rack
        self._cluster = AsyncCluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                  security=security)
        self._coordinator = GroupCoordinatorClient(self._cluster, group_id)

        self._data = asyncio.Event()  # something for poll: records, an error, a change
        self._group = GroupMembership()  # the heartbeat task's and poll's shared view
        self._fetchers: dict[TopicPartition, _Fetcher] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._next_auto_commit = time.monotonic() + self._auto_commit_interval_s
        self._rotation = 0
        self._closed = False
        self._hb_wake = asyncio.Event()
        self._hb_task = asyncio.ensure_future(self._heartbeat_loop())

    # ------------------------------------------------------------------ public API

    @property
    def member_id(self) -> str:
        return self._group.member_id

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer owns now (as of the last ``poll``)."""
        return set(self._group.owned)

    def position(self, topic: str, partition: int) -> int | None:
        return self._positions.get(TopicPartition(topic, partition))

    async def poll(self, timeout: float = 1.0,
                   max_records: int | None = None) -> list[ConsumedRecord]:
        """Records from the owned partitions (possibly none), waiting up to ``timeout``
        seconds. Applies assignment changes first."""
        return await self._poll(timeout, max_records, False)

    async def poll_batches(self, timeout: float = 1.0,
                           max_records: int | None = None) -> list[ConsumedBatch]:
        """:meth:`poll` by whole batches (see the blocking Consumer's ``poll_batches``)."""
        return await self._poll(timeout, max_records, True)

    async def _poll(self, timeout: float, max_records: int | None, batches: bool) -> list:
        self._check_open()
        limit = max_records or self._max_poll_records
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            await self._apply_assignment_changes()
            records = self._take(limit, batches)
            if records:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not self._ready():
                self._data.clear()
                await wait_event(self._data, min(remaining, 0.1))
        if self._auto_commit and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + self._auto_commit_interval_s
            try:
                await self.commit()
            except RaftkaError as exc:
                log.warning("auto-commit of group %s failed: %s", self.group_id, exc)
        return records

    async def __aiter__(self) -> AsyncIterator[ConsumedRecord]:
        while not self._closed:
            for record in await self.poll(1.0):
                yield record

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's identity for ``Producer.send_offsets_to_transaction`` (KIP-447):
        group id, member id and the member epoch of the assignment poll applied."""
        group = self._group
        return ConsumerGroupMetadata(self.group_id, group.member_id, group.acked_epoch
                                     if group.member_id else -1)

    async def commit(self, offsets: Mapping[tuple[str, int], int] | None = None, *,
                     timeout: float = 10.0) -> None:
        """Commit ``offsets`` ({(topic, partition): next offset}) or, by default, the
        position of every owned partition; returns once durable. Raises
        :class:`CommitFailedError` when a partition is not owned any more."""
        self._check_open()
        group = self._group
        if offsets is None:
            offsets = {tp: pos for tp, pos in self._positions.items() if tp in group.owned}
        if not offsets:
            return
        await run(self._cluster, commit_ops(
            self._coordinator, self.group_id, group.member_id, lambda: group.acked_epoch,
            offsets, timeout))

    async def committed(self, partitions: Iterable[tuple[str, int]] | None = None, *,
                        timeout: float = 10.0) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed); by default
        for the owned partitions."""
        self._check_open()
        wanted = sorted(TopicPartition(*tp) for tp in (partitions if partitions is not None
                                                       else self._group.owned))
        got = await run(self._cluster, fetch_committed_ops(self._coordinator, wanted, timeout))
        return {tp: (o if o >= 0 else None) for tp, o in got.items()}

    def seek(self, topic: str, partition: int, offset: int | str) -> None:
        """Continue ``topic/partition`` (owned) from ``offset`` at the next poll."""
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
        """As ``raftka.Consumer.pause``."""
        self._check_open()
        tp = TopicPartition(topic, partition)
        if tp not in self._group.owned:
            raise ValueError(f"{topic}/{partition} is not assigned to this consumer")
        f = self._fetchers.pop(tp, None)
        if f is not None:
            f.stop()
            asyncio.ensure_future(f.join())
        self._paused[tp] = self._positions.get(tp, self._auto_offset_reset)

    def resume(self, topic: str, partition: int) -> None:
        """As ``raftka.Consumer.resume``."""
        self._check_open()
        tp = TopicPartition(topic, partition)
        start = self._paused.pop(tp, None)
        if start is not None and tp in self._group.owned:
            self._restart_fetcher(tp, start)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def process(self, handler: Callable[[ConsumedRecord], Any], timeout: float = 1.0,
                      max_records: int | None = None) -> int:
        """As ``raftka.Consumer.process``; ``handler`` may be a coroutine function."""
        router = self._router
        if router is None:
            raise ValueError("process() needs the retry_topics option (Consumer(..., "
                             "retry_topics=RetryTopics(...)))")
        for tp in router.due(now_ms()):
            self.resume(tp.topic, tp.partition)
        records = await self.poll(router.wait_s(now_ms(), timeout), max_records)
        handled, sends, ends = 0, [], {}
        firsts: dict[TopicPartition, int] = {}  # where each partition's batch began
        for r in records:
            firsts.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        try:
            waiting: set[TopicPartition] = set()
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
                    if hasattr(result, "__await__"):
                        await result
                except Exception as exc:  # noqa: BLE001 - the handler's failure is the input
                    send = router.on_failure(r, exc, now_ms())
                    log.info("group %s: %s/%d@%d failed (%s); to %s", self.group_id,
                             r.topic, r.partition, r.offset, exc, send.topic)
                    sends.append(await self._producer().send(
                        send.topic, send.value, key=send.key, headers=send.headers))
                ends[tp] = r.offset + 1
            if sends:
                await asyncio.wait_for(asyncio.gather(*sends),
                                       self._request_timeout_ms / 1000 * 6)
        except BaseException:
            # nothing of this batch is committed: read it again (at-least-once), not past it
            for tp, offset in firsts.items():
                if tp in self._group.owned and not self._closed:
                    self.seek(tp.topic, tp.partition, offset)
            raise
        if ends:
            try:
                await self.commit(ends)
            except CommitFailedError as exc:
                log.warning("group %s: %s; the new owner redoes these records",
                            self.group_id, exc)
        return handled

    def _producer(self) -> Any:
        if self._retry_producer is None:
            from raftka.client.aio._producer import Producer  # noqa: PLC0415 - retries only
            self._retry_producer = Producer(self._bootstrap, security=self._security,
                                            request_timeout_ms=self._request_timeout_ms)
        return self._retry_producer

    async def close(self, timeout: float = 5.0) -> None:
        """Commit (with auto-commit), leave the group and stop every task."""
        if self._closed:
            return
        if self._auto_commit:
            try:
                await self.commit(timeout=timeout)
            except RaftkaError as exc:
                log.warning("final auto-commit of group %s failed: %s", self.group_id, exc)
        self._closed = True
        if self._retry_producer is not None:
            await self._retry_producer.close(timeout)
        self._hb_task.cancel()
        await asyncio.wait([self._hb_task])
        fetchers = list(self._fetchers.values())
        self._fetchers.clear()
        for f in fetchers:
            f.stop()
        for f in fetchers:
            await f.join()
        if self._group.member_id:
            try:
                await run(self._cluster, self._coordinator.call_ops(
                    "Heartbeat", leave_request(self.group_id, self._group.member_id),
                    min(timeout, 2.0)))
            except RaftkaError as exc:
                log.info("leaving group %s: %s (the coordinator removes the member after "
                         "its session timeout)", self.group_id, exc)
        await self._cluster.close()

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ poll internals

    def _check_open(self) -> None:
        if self._closed:
            raise RaftkaError("the consumer is closed")

    def _ready(self) -> bool:
        return (self._group.has_news or any(f.reader.fetched_batches or f.error for f in self._fetchers.values()))

    def _take(self, limit: int, batches: bool = False) -> list:
        """Up to ``limit`` records (ConsumedRecords, or ConsumedBatches when
        ``batches``) from the fetchers' readers, partitions in rotation."""
        out: list = []
        count = 0
        fetchers = list(self._fetchers.values())
        if not fetchers:
            return out
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
                           else f.reader.take(limit - count))
            except CorruptBatchError as err:
                if out:
                    break  # hand these out first; the next poll raises it
                self._on_fetch_error(f, err)
            if records:
                last = records[-1]
                self._positions[f.tp] = last.next_offset if batches else last.offset + 1
                count += sum(map(len, records)) if batches else len(records)
                out += records
            if f.reader.fetched_batches < READ_AHEAD_BATCHES:
                f.wake()
            if count >= limit:
                break
        self._rotation += 1
        return out

    def _on_fetch_error(self, f: _Fetcher, err: BaseException) -> None:
        if isinstance(err, (OffsetOutOfRangeError, UnknownTopicError)):
            raise err
        raise RaftkaError(f"reading {f.tp.topic}/{f.tp.partition} failed: {err}") from err

    async def _apply_assignment_changes(self) -> None:
        group = self._group
        err, dropped, incoming = group.take()
        if err is not None:
            raise err
        if dropped is not None:
            log.info("group %s: membership lost; dropping partitions %s and rejoining",
                     self.group_id, sorted(dropped))
            self._drop(dropped)
        if incoming is None:
            return
        plan = group.plan(incoming)
        if plan is None:
            return  # from a membership that has been lost since
        revoked, added = plan
        try:  # where the new partitions start; first, so a failure here changes nothing
            committed = await run(self._cluster, fetch_committed_ops(
                self._coordinator, sorted(added), 10.0))
        except RaftkaError as exc:
            if not (exc.retriable or isinstance(exc, RaftkaTimeoutError)):
                raise
            log.info("group %s: cannot read committed offsets yet (%s); keeping the current "
                     "assignment and retrying at the next poll", self.group_id, exc)
            group.keep(incoming)
            return
        if revoked:
            if self._auto_commit:
                offsets = {tp: self._positions[tp] for tp in revoked if tp in self._positions}
                try:
                    await self.commit(offsets)
                except RaftkaError as exc:
                    log.warning("group %s: commit before revoking %s failed: %s",
                                self.group_id, sorted(revoked), exc)
            self._drop(revoked)
        for tp in sorted(added):
            offset = committed.get(tp, -1)
            start: int | str = offset if offset >= 0 else self._auto_offset_reset
            self._restart_fetcher(tp, start)
        group.applied(incoming)
        self._hb_wake.set()  # acknowledge now: the partitions we let go move on sooner

    def _drop(self, tps: Iterable[TopicPartition]) -> None:
        tps = list(tps)
        for tp in tps:
            f = self._fetchers.pop(tp, None)
            if f is not None:
                f.stop()
                asyncio.ensure_future(f.join())
            self._positions.pop(tp, None)
            self._paused.pop(tp, None)
        if self._router is not None:
            self._router.forget(tps)

    def _restart_fetcher(self, tp: TopicPartition, start: int | str) -> None:
        old = self._fetchers.pop(tp, None)
        if old is not None:
            old.stop()
            asyncio.ensure_future(old.join())
        if isinstance(start, int):
            self._positions[tp] = start
        else:
            self._positions.pop(tp, None)
        self._fetchers[tp] = _Fetcher(self, tp, start)

    # ------------------------------------------------------------------ heartbeat task

    async def _heartbeat_loop(self) -> None:
        if self._router is not None:  # the retry and dead-letter topics, before joining
            try:
                await run(self._cluster, self._router.ensure_topics_ops(
                    AdminOps(self._cluster), self.topics, self._session_timeout_ms / 1000 * 3))
            except RaftkaError as exc:
                self._group.on_fatal(exc)
                self._data.set()
                return
        retry = HEARTBEAT_RETRY.start()  # no deadline: the membership lasts until close
        interval = 0.0
        while not self._closed:
            await wait_event(self._hb_wake, interval)
            self._hb_wake.clear()
            request = self._group.heartbeat(self)
            try:
                response = await run(self._cluster, self._coordinator.call_ops(
                    "Heartbeat", request, self._session_timeout_ms / 1000 / 2))
            except (UnknownMemberIdError, FencedMemberEpochError) as exc:
                log.info("group %s: %s; rejoining", self.group_id, exc)
                self._group.on_fenced()
                self._data.set()
                interval = 0.0
                continue
            except RaftkaError as exc:
                if not exc.retriable:
                    self._group.on_fatal(exc)
                    self._data.set()
                    return
                retry.classify(exc)
                interval = retry.delay()
                continue
            retry.succeeded()
            if self._group.on_answer(response):
                self._data.set()
            interval = max(response.heartbeat_interval_ms, 10) / 1000
