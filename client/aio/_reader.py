"""``raftka.aio.PartitionReader``: the asyncio twin of :class:`raftka.client.PartitionReader`.

The state, the fetch operation (leader following, retries, offset resets, read-ahead of
one Fetch while a backlog remains) and the decoding are the blocking reader's
(``PartitionReaderCore``); this class runs them with ``grpc.aio``. Records are decoded
one batch at a time as ``poll`` hands them out, so one call holds the loop for at most
one batch's decoding plus ``max_records`` records.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

from raftka.client._security import ClientSecurity
from raftka.client._cluster import ClusterState
from raftka.client._reader import PartitionReaderCore
from raftka.client._types import ConsumedBatch, ConsumedRecord
from raftka.client.aio._cluster import AsyncCluster, run

__all__ = ["PartitionReader"]


class PartitionReader(PartitionReaderCore):
    """Reads one partition from ``offset`` on, as coroutines::

        async with raftka.aio.PartitionReader(bootstrap, "orders", 0) as reader:
            async for record in reader:
                ...

    ``await poll(timeout)`` returns the next records (possibly none) within ``timeout``
    seconds; ``async for`` yields records until the reader is closed. One task at a time.
    """

    _cluster: AsyncCluster

    def _new_cluster(self, bootstrap: str | Iterable[str], request_timeout_ms: int,
                     security: ClientSecurity | None = None) -> ClusterState:
        return AsyncCluster(bootstrap, request_timeout_ms=request_timeout_ms,
                            security=security)

    async def poll(self, timeout: float = 1.0,
                   max_records: int | None = None) -> list[ConsumedRecord]:
        """The next records at ``position`` (advancing it; at most ``max_records``, by
        default 10,000), waiting up to ``timeout`` seconds for some to be committed.
        Retriable failures are retried inside the timeout; the others raise."""
        return await run(self._cluster, self._poll_ops(timeout, max_records))

    async def poll_batches(self, timeout: float = 1.0,
                           max_records: int | None = None) -> list[ConsumedBatch]:
        """:meth:`poll` by whole batches (see the blocking reader's ``poll_batches``)."""
        return await run(self._cluster, self._poll_batches_ops(timeout, max_records))

    async def fetch(self, timeout: float = 1.0) -> None:
        """One fetch (with its retries) into the reader, without decoding (see
        :meth:`take`)."""
        self._check_open()
        await run(self._cluster, self._fetch_once_ops(
            max(timeout, 0.0), time.monotonic() + max(timeout, 0.0)))

    async def __aiter__(self) -> AsyncIterator[ConsumedRecord]:
        while not self._closed:
            for record in await self.poll(1.0):
                yield record

    async def close(self) -> None:
        self._closed = True
        self._cancel_read_ahead()
        if self._owns_cluster:
            await self._cluster.close()

    async def __aenter__(self) -> PartitionReader:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
