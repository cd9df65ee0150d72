"""``raftka.aio.ShareConsumer``: a share-group member (KIP-932) on an event loop.

    async with raftka.aio.ShareConsumer(bootstrap, "workers", ["tasks"]) as consumer:
        async for record in consumer:          # auto_accept=True (the default)
            await handle(record)               # returned: accepted; raised: released
    # or explicitly:
        for record in await consumer.poll(1.0):
            try:
                await handle(record)
                await consumer.accept(record)
            except Poison as exc:
                await consumer.reject(record, error=str(exc))
            except Exception as exc:
                await consumer.release(record, delay_s=5, error=str(exc))

The same member as :class:`raftka.client.ShareConsumer` (its rules: acquisition locks,
delivery counts, acknowledgements queued and sent as ranges at the next ``poll``,
``flush`` or ``close``): the state, the requests and the leader-following fetch and
acknowledge operations are ``ShareMember``'s (``client/_share.py``), run here by the
asyncio driver with ``grpc.aio``. A task, instead of a thread, keeps the membership
alive. The member joins in ``async with`` (or at the first ``poll``/``start``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

from raftka.client._security import ClientSecurity
from raftka.client._share import (
    ACCEPT,
    LONG_POLL_MS,
    REJECT,
    RELEASE,
    ShareMember,
    ShareRecord,
    partition_leader_ops,
    share_coordinator,
)
from raftka.client.aio._cluster import AsyncCluster, run
from raftka.v1.errors import RaftkaError

__all__ = ["ShareConsumer"]

log = logging.getLogger("raftka.share")


class ShareConsumer(ShareMember):
    """A share-group member whose methods are coroutines (see the module docstring and
    :class:`raftka.client.ShareConsumer` for the group settings). One task at a time
    polls and acknowledges; the heartbeat runs in its own task."""

    def __init__(self, bootstrap: str | Iterable[str], group_id: str,
                 topics: str | Iterable[str], *, auto_accept: bool = True,
                 max_records: int = 500, client_id: str = "raftka-share-aio",
                 record_lock_duration_ms: int = 0, max_delivery_attempts: int = 0,
                 dead_letter_topic: str = "", max_in_flight_records: int = 0,
                 redelivery_backoff_initial_ms: int = 0,
                 redelivery_backoff_multiplier: float = 0.0,
                 redelivery_backoff_max_ms: int = 0,
                 request_timeout_ms: int = 5000, join_timeout_s: float = 30.0,
                 security: ClientSecurity | None = None) -> None:
        super().__init__(
            group_id, topics, auto_accept=auto_accept, max_records=max_records,
            client_id=client_id, record_lock_duration_ms=record_lock_duration_ms,
            max_delivery_attempts=max_delivery_attempts, dead_letter_topic=dead_letter_topic,
            max_in_flight_records=max_in_flight_records,
            redelivery_backoff_initial_ms=redelivery_backoff_initial_ms,
            redelivery_backoff_multiplier=redelivery_backoff_multiplier,
            redelivery_backoff_max_ms=redelivery_backoff_max_ms)
        asyncio.get_running_loop()  # raises outside a loop: say so early
        self._join_timeout_s = join_timeout_s
        self._cluster = AsyncCluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                     security=security)
        self._coordinator = share_coordinator(self._cluster, group_id)
        self._hb_task: asyncio.Task[None] | None = None
        self._joined = False
        self._join_lock = asyncio.Lock()

    # ------------------------------------------------------------------ membership
    async def start(self) -> None:
        """Join the group (done by ``async with`` or the first ``poll``). Raises
        UnknownTopicError for a topic that does not exist, RaftkaError if the
        coordinator did not answer within ``join_timeout_s``."""
        self._check_open()
        async with self._join_lock:
            if self._joined:
                return
            for topic in self.topics:  # fail fast on a topic that does not exist
                await self._cluster.wait_for_topic(topic, min(self._join_timeout_s, 5.0))
            await self._heartbeat(self._join_timeout_s)
            self._joined = True
            self._hb_task = asyncio.ensure_future(self._heartbeats())

    async def _heartbeat(self, timeout_s: float, leave: bool = False) -> None:
        answer = await run(self._cluster, self._coordinator.call_ops(
            "ShareGroupHeartbeat", self._heartbeat_request(leave), timeout_s))
        if not leave:
            self._heartbeat_answered(answer)

    async def _heartbeats(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._interval_s)
            if self._closed:
                return
            try:
                await self._heartbeat(max(self._interval_s, 5.0))
            except RaftkaError as exc:
                log.warning("share group %s: heartbeat failed: %s", self.group_id, exc)

    # ------------------------------------------------------------------ consuming
    async def poll(self, timeout_s: float = 1.0,
                   max_records: int | None = None) -> list[ShareRecord]:
        """:meth:`raftka.client.ShareConsumer.poll` as a coroutine: send the queued
        acknowledgements (with ``auto_accept``, first accept every record of the previous
        poll not yet acknowledged), then acquire records from every assigned partition
        at once, waiting up to ``timeout_s`` for some."""
        self._check_open()
        if not self._joined:
            await self.start()
        if self.auto_accept:
            self._queue_all(ACCEPT)
        await self.flush()
        deadline = time.monotonic() + max(timeout_s, 0)
        wait_ms = 0
        while True:
            records = await self._fetch_round(max_records or self.max_records, wait_ms)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            wait_ms = int(min(remaining * 1000, LONG_POLL_MS))

    async def _fetch_round(self, max_records: int, wait_ms: int) -> list[ShareRecord]:
        partitions = self._assigned()
        if not partitions:
            await asyncio.sleep(wait_ms / 1000)
            return []
        results = await asyncio.gather(
            *(run(self._cluster, self._fetch_ops(self._cluster, tp, max_records, wait_ms))
              for tp in partitions), return_exceptions=True)
        out: list[ShareRecord] = []
        errors: list[RaftkaError] = []
        for result in results:
            if isinstance(result, RaftkaError):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                out.extend(result)
        fatal = self._first_fatal(errors, bool(out))
        if fatal is not None:
            raise fatal
        return out

    async def __aiter__(self) -> AsyncIterator[ShareRecord]:
        """Records one by one. With ``auto_accept``, a record is accepted when the loop
        body returns for it; if the body raises, ``close`` releases it."""
        while not self._closed:
            for record in await self.poll(1.0):
                yield record
                if self.auto_accept and not self._closed:
                    self._queue(record, ACCEPT, 0, "")

    # ------------------------------------------------------------------ acknowledging
    # Acknowledgements are queued (no I/O) and sent at the next poll, flush or close;
    # they are coroutines so that a later version may send them sooner.
    async def accept(self, record: ShareRecord) -> None:
        """Done with it: it is never delivered again."""
        self._queue(record, ACCEPT, 0, "")

    async def release(self, record: ShareRecord, delay_s: float = 0.0,
                      error: str = "") -> None:
        """Give it back to be delivered again (to any member), after ``delay_s``."""
        self._queue(record, RELEASE, self._check_release_delay(delay_s), error)

    async def reject(self, record: ShareRecord, error: str = "") -> None:
        """Poison: straight to the group's dead-letter topic, ``error`` in its headers."""
        self._queue(record, REJECT, 0, error)

    async def accept_all(self) -> None:
        self._queue_all(ACCEPT)

    async def release_all(self, delay_s: float = 0.0, error: str = "") -> None:
        self._queue_all(RELEASE, self._check_release_delay(delay_s), error)

    async def reject_all(self, error: str = "") -> None:
        self._queue_all(REJECT, 0, error)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Send the queued acknowledgements (one request per partition, concurrently).
        Raises the first error; the other partitions' acknowledgements were still sent."""
        requests = self._ack_requests()
        if not requests:
            return
        results = await asyncio.gather(
            *(run(self._cluster, partition_leader_ops(self._cluster, r.topic, r.partition,
                                                      "ShareAcknowledge", r, timeout_s))
              for r in requests), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # ------------------------------------------------------------------ closing
    async def close(self, timeout_s: float = 10.0) -> None:
        """Send queued acknowledgements, release every record still unacknowledged,
        leave the group."""
        if self._closed:
            return
        self._closed = True
        if self._hb_task is not None:
            self._hb_task.cancel()
        try:
            if self._joined:
                await self._leave(timeout_s)
        finally:
            if self._hb_task is not None:
                try:
                    await self._hb_task
                except (asyncio.CancelledError, RaftkaError):
                    pass
            await self._cluster.close()

    async def _leave(self, timeout_s: float) -> None:
        self._queue_all(RELEASE)
        try:
            await self.flush(timeout_s)
        except RaftkaError as exc:
            log.warning("share group %s: acknowledgements at close failed: %s",
                        self.group_id, exc)
        for request in self._leave_requests():
            try:
                await run(self._cluster, partition_leader_ops(
                    self._cluster, request.topic, request.partition, "ShareAcknowledge",
                    request, timeout_s))
            except RaftkaError as exc:
                log.warning("share group %s: leaving %s/%d failed (its records return "
                            "when their locks expire): %s", self.group_id, request.topic,
                            request.partition, exc)
        try:
            await self._heartbeat(timeout_s, leave=True)
        except RaftkaError:
            pass

    async def __aenter__(self) -> ShareConsumer:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
