"""Client operations written once, run by the threaded client and the asyncio client.

An operation that talks to the cluster (an admin call with its retries, a metadata
refresh, finding a group's coordinator, one fetch of a partition reader, getting a
producer id) is a *generator* that yields what it needs done and receives the outcome:

- :class:`Rpc` — one unary RPC to one address; the answer is sent back into the
  generator, a failure is thrown into it as the contract's :class:`RaftkaError` (the
  cluster has noted a connection-level failure first, as ``Cluster.call`` does);
- :class:`Sleep` — a backoff; ``None`` comes back;
- :class:`Refresh` — a metadata refresh shared by concurrent callers and rate limited by
  ``min_age_s``; ``True`` comes back when some broker answered (``Cluster.try_refresh``);
- :class:`Start` / :class:`Join` — an RPC started without waiting (a reader's read-ahead)
  and, later, its outcome; the handle has ``cancel()``;
- :class:`Gather` — operations run side by side (every node asked at once); the list of
  their results comes back, in order.

The decisions (the retry policy of ``_retry.py``, which node to ask next, what an answer
means) live in the generator and nowhere else. A *driver* does the I/O: :func:`run_sync`
here (blocking gRPC calls, ``time.sleep``, a thread per :class:`Gather` member) for the
threaded client, ``raftka.client.aio._driver.run`` (``grpc.aio`` calls, ``asyncio.sleep``)
for the asyncio client. So both clients behave alike by construction, and the threaded
client's blocking shape is unchanged: a blocking method is ``run_sync(self._x_ops(...))``.

Writing one: ``response = yield Rpc(address, "broker", "Fetch", request, timeout_s, what)``
inside ``try/except RaftkaError``; ``yield from other_ops(...)`` composes operations.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from raftka.v1.errors import RaftkaError

if TYPE_CHECKING:
    from raftka.client._cluster import Cluster
    from raftka.client._retry import Retry

__all__ = ["Gather", "Join", "Ops", "Refresh", "Rpc", "Sleep", "Start", "backoff",
           "run_sync"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rpc:
    """One unary RPC: ``service`` is ``"broker"``, ``"admin"``, ``"group"``, ``"security"``,
    ``"txn"`` or ``"share"`` (the ``raftka.v1`` services Broker, Admin, GroupCoordinator,
    Security, TransactionCoordinator, Share), ``method`` its RPC name."""

    address: str
    service: str
    method: str
    request: Any
    timeout_s: float
    what: str = ""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``. ``sleep`` is the retry policy's (``time.sleep`` unless a test
    injected a fake clock): the asyncio driver awaits instead only for ``time.sleep``."""

    seconds: float
    sleep: Callable[[float], None] = time.sleep


def backoff(retry: Retry, until: float | None = None) -> Sleep:
    """The effect of ``retry.pause(until)``: its next backoff, slept by the driver."""
    return Sleep(retry.pause_s(until), retry.policy.sleep)


@dataclass(frozen=True, slots=True)
class Refresh:
    """A metadata refresh; ``raise_errors``: throw NoBrokersAvailable into the
    operation instead of answering False."""

    timeout_s: float
    min_age_s: float = 0.0
    raise_errors: bool = False


@dataclass(frozen=True, slots=True)
class Start:
    """An :class:`Rpc` started without waiting; the driver returns a handle for
    :class:`Join` (``cancel()`` drops it)."""

    rpc: Rpc


@dataclass(frozen=True, slots=True)
class Join:
    handle: Any


@dataclass(frozen=True, slots=True)
class Gather:
    ops: Sequence[Generator[Any, Any, Any]]


Ops = Generator[Any, Any, T]


def run_sync(cluster: Cluster, ops: Ops[T], stubs: Any = None) -> T:
    """Run ``ops`` with blocking I/O on ``cluster`` (the threaded client's driver).
    ``stubs(address, service)``, when given, supplies the stubs (tests pass fakes)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = ops.throw(error) if error is not None else ops.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value = error = None
        kind = type(effect)
        if kind is Rpc:
            try:
                value = _call(cluster, effect, stubs)
            except RaftkaError as e:
                error = e
        elif kind is Sleep:
            effect.sleep(effect.seconds)
        elif kind is Refresh:
            if effect.raise_errors:
                try:
                    value = cluster.refresh_metadata(effect.timeout_s, effect.min_age_s)
                except RaftkaError as e:
                    error = e
            else:
                value = cluster.try_refresh(effect.timeout_s, effect.min_age_s)
        elif kind is Start:
            rpc = effect.rpc
            value = cluster.start_broker_call(rpc.address, rpc.method, rpc.request,
                                              rpc.timeout_s, rpc.what)
        elif kind is Join:
            try:
                value = effect.handle.result()
            except RaftkaError as e:
                error = e
        elif kind is Gather:
            members = list(effect.ops)
            if not members:
                value = []
                continue
            with concurrent.futures.ThreadPoolExecutor(
                    max_workers=min(len(members), 16),
                    thread_name_prefix="raftka-gather") as pool:
                futures = [pool.submit(run_sync, cluster, op, stubs) for op in members]
                try:
                    value = [f.result() for f in futures]
                except RaftkaError as e:
                    error = e
        else:
            error = TypeError(f"an operation yielded {effect!r}, which is not an effect")


def _call(cluster: Cluster, rpc: Rpc, stubs: Any) -> Any:
    what = rpc.what or rpc.method
    if stubs is not None:
        fn = getattr(stubs(rpc.address, rpc.service), rpc.method)
    elif rpc.service == "broker":
        return cluster.call_broker(rpc.address, rpc.method, rpc.request, rpc.timeout_s, what)
    elif rpc.service == "admin":
        return cluster.call_admin(rpc.address, rpc.method, rpc.request, rpc.timeout_s, what)
    else:
        fn = getattr(cluster.stub(rpc.address, rpc.service), rpc.method)
    return cluster.call(rpc.address, fn, rpc.request, rpc.timeout_s, what)
