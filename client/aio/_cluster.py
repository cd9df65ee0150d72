"""The asyncio client's connections and its driver of the shared operations.

:class:`AsyncCluster` is :class:`~raftka.client._cluster.ClusterState` (the metadata
cache, leader hints, failed addresses: the same code as the threaded client's
``Cluster``) plus ``grpc.aio`` channels, one per broker address, made by
:func:`~raftka.client._cluster.aio_channel` with the threaded client's options.

:func:`run` is the asyncio driver of ``raftka.client._ops``: it runs an operation
generator (an admin call with its retries, a metadata refresh, a group coordinator call,
one reader fetch) and does its I/O with ``await``: an :class:`~raftka.client._ops.Rpc`
awaits the ``grpc.aio`` call, a :class:`~raftka.client._ops.Sleep` awaits
``asyncio.sleep``, a :class:`~raftka.client._ops.Refresh` shares one refresh between
concurrent tasks (an ``asyncio.Lock``), :class:`~raftka.client._ops.Start` makes a task,
:class:`~raftka.client._ops.Gather` runs its members with ``asyncio.gather``. Nothing
here blocks the event loop: the only lock taken synchronously is the state's, around
dictionary updates.

A task cancelled while it awaits an effect closes the operation (its ``finally`` blocks
run) and cancels the RPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

from raftka.client._cluster import ClusterMetadata, ClusterState, aio_channel
from raftka.client._ops import Gather, Join, Ops, Refresh, Rpc, Sleep, Start
from raftka.client._types import TopicDescription
from raftka.v1 import admin_pb2_grpc, broker_pb2_grpc, group_pb2_grpc, security_pb2_grpc
from raftka.v1 import share_pb2_grpc, txn_pb2_grpc
from raftka.client._security import ClientSecurity
from raftka.v1.errors import BrokerNotAvailableError, RaftkaError, error_from_rpc
from raftka.client.aio._waits import cancellation_kept

__all__ = ["AsyncCluster", "run"]

T = TypeVar("T")

_STUBS = {
    "broker": broker_pb2_grpc.BrokerStub,
    "admin": admin_pb2_grpc.AdminStub,
    "group": group_pb2_grpc.GroupCoordinatorStub,
    "security": security_pb2_grpc.SecurityStub,
    "txn": txn_pb2_grpc.TransactionCoordinatorStub,
    "share": share_pb2_grpc.ShareStub,
}


class AsyncCluster(ClusterState):
    """``grpc.aio`` channels to brokers plus the shared metadata cache. Used from one
    event loop; ``await close()`` closes every channel."""

    def __init__(self, bootstrap: str | Iterable[str], *, request_timeout_ms: int = 5000,
                 security: ClientSecurity | None = None) -> None:
        super().__init__(bootstrap, request_timeout_ms=request_timeout_ms, security=security)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._refresh_lock: asyncio.Lock | None = None  # made on the loop, at first use

    # ------------------------------------------------------------------ connections

    def channel(self, address: str) -> grpc.aio.Channel:
        if self._closed:
            raise RaftkaError("the client is closed")
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = aio_channel(address, self.security)
        return channel

    def stub(self, address: str, service: str) -> Any:
        stub = self._stubs.get((address, service))
        if stub is None:
            stub = self._stubs[(address, service)] = _STUBS[service](self.channel(address))
        return stub

    async def call(self, address: str, service: str, method: str, request: Any,
                   timeout_s: float, what: str = "") -> Any:
        """One unary RPC with a deadline; a failure raises the contract's
        :class:`RaftkaError` (and notes a connection-level failure of ``address``)."""
        fn = getattr(self.stub(address, service), method)
        try:
            # cancellation_kept: a grpc.aio call can swallow its caller's cancellation
            response = await cancellation_kept(fn(request, timeout=max(timeout_s, 0.001)))
        except grpc.RpcError as e:  # grpc.aio.AioRpcError
            err = error_from_rpc(e, f"{what or method} at {address}")
            if not err.retriable and e.code() == grpc.StatusCode.CANCELLED:
                err = BrokerNotAvailableError(str(err))  # a channel closed under it
            self.note_failure(address, err)
            raise err from e
        self.note_success(address)
        return response

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()

    # ------------------------------------------------------------------ metadata

    async def refresh_metadata(self, timeout_s: float | None = None,
                               min_age_s: float = 0.0) -> ClusterMetadata:
        """``Cluster.refresh_metadata``: concurrent callers share one request."""
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        async with self._refresh_lock:
            return await run(self, self.refresh_ops(timeout_s, min_age_s, started))

    async def try_refresh(self, timeout_s: float, min_age_s: float) -> bool:
        try:
            await self.refresh_metadata(timeout_s, min_age_s)
        except RaftkaError:
            return False
        return True

    async def wait_for_topic(self, name: str, timeout_s: float) -> TopicDescription:
        return await run(self, self.wait_for_topic_ops(name, timeout_s))


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A read-ahead nobody joined: its error is not news (no 'never retrieved' log)."""
    if not task.cancelled():
        task.exception()


async def run(cluster: AsyncCluster, ops: Ops[T]) -> T:
    """Run an operation of ``_ops.py`` on the event loop (see the module docstring)."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                effect = ops.throw(error) if error is not None else ops.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value = error = None
            kind = type(effect)
            if kind is Rpc:
                try:
                    value = await cluster.call(effect.address, effect.service, effect.method,
                                               effect.request, effect.timeout_s, effect.what)
                except RaftkaError as e:
                    error = e
            elif kind is Sleep:
                if effect.sleep is time.sleep:
                    await asyncio.sleep(max(effect.seconds, 0.0))
                else:  # a test's fake clock: it does not block
                    effect.sleep(effect.seconds)
            elif kind is Refresh:
                if effect.raise_errors:
                    try:
                        value = await cluster.refresh_metadata(effect.timeout_s,
                                                               effect.min_age_s)
                    except RaftkaError as e:
                        error = e
                else:
                    value = await cluster.try_refresh(effect.timeout_s, effect.min_age_s)
            elif kind is Start:
                rpc = effect.rpc
                task = asyncio.ensure_future(cluster.call(
                    rpc.address, rpc.service, rpc.method, rpc.request, rpc.timeout_s,
                    rpc.what))
                task.add_done_callback(_retrieve)
                value = task
            elif kind is Join:
                try:
                    value = await effect.handle
                except RaftkaError as e:
                    error = e
            elif kind is Gather:
                try:
                    value = list(await asyncio.gather(*(run(cluster, op)
                                                        for op in effect.ops)))
                except RaftkaError as e:
                    error = e
            else:
                error = TypeError(f"an operation yielded {effect!r}, which is not an effect")
    finally:
        ops.close()
