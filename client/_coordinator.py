"""Talking to a consumer group's coordinator (``raftka.v1.GroupCoordinator``).

The coordinator of a group is the leader of one partition of ``__consumer_offsets``; any
node answers ``FindCoordinator(group_id)`` with its id and address (node 0 while that
partition has no leader). :class:`GroupCoordinatorClient` finds the coordinator, caches it,
and runs group RPCs against it, following moves:

The retries are the client's one policy (``_retry.py``); for a group that means:

1. No cached coordinator: ask ``FindCoordinator`` of the brokers in
   ``Cluster.candidate_addresses()`` order (the next one on a connection failure). An
   answer without a coordinator (node 0) is retried after a backoff.
2. Call the coordinator. ``NOT_COORDINATOR`` naming the new coordinator: go there directly
   (policy rule 2: at most ``_REDIRECTS_MAX`` hops in a row, then find again).
   ``NOT_COORDINATOR`` without a name, an unreachable or timed-out node, ``SHUTTING_DOWN``
   or another retriable error with ``invalid_metadata``: forget the coordinator (the
   group's "metadata refresh", rule 3), back off, find again. ``COORDINATOR_LOADING`` (a
   new coordinator catching up; retriable, not ``invalid_metadata``): back off, same
   coordinator.
3. Every other error is raised as is (``UNKNOWN_MEMBER_ID``, ``FENCED_MEMBER_EPOCH``, ...:
   the caller decides). Retries stop at the caller's ``timeout_s`` or after ``attempts_max``
   attempts, whichever comes first, with a ``RaftkaTimeoutError`` whose ``__cause__`` is
   the last error. That timeout error is ``retriable`` (every error behind it was): a
   caller with a longer horizon, like a consumer's heartbeat loop, simply tries again.

Threading: ``call`` may run from several threads at once (a consumer's poll and heartbeat
threads); the cached coordinator is guarded by a lock and a stale one is only forgotten
if it is still the one that failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from raftka.client._cluster import ClusterState
from raftka.client._ops import Ops, Rpc, backoff, run_sync
from raftka.client._retry import RetryPolicy, Step, named_leader
from raftka.v1.errors import RaftkaError
from raftka.v1 import group_pb2, group_pb2_grpc

__all__ = ["Coordinator", "GroupCoordinatorClient", "GroupCoordinatorNotAvailableError"]

_REDIRECTS_MAX = 3  # NOT_COORDINATOR hints followed in a row before asking FindCoordinator
ATTEMPTS_MAX_DEFAULT = 100  # a bound besides the deadline: backoff reaches 1 s quickly


class GroupCoordinatorNotAvailableError(RaftkaError):
    """FindCoordinator answered, but the group's offsets partition has no leader yet (an
    election, or ``__consumer_offsets`` is being created). Retriable."""

    retriable = True
    invalid_metadata = True


class Coordinator:
    """Where a group's coordinator was last found."""

    __slots__ = ("node_id", "address")

    def __init__(self, node_id: int, address: str) -> None:
        self.node_id = node_id
        self.address = address

    def __repr__(self) -> str:
        return f"Coordinator(node_id={self.node_id}, address={self.address!r})"


StubFactory = Callable[[str], Any]


class GroupCoordinatorClient:
    """Runs ``GroupCoordinator`` RPCs for one group against its current coordinator.

    ``cluster`` is shared with the owner (Consumer or Admin), which closes it.
    ``stub_factory(address)`` returns a ``GroupCoordinatorStub``-like object (tests pass
    fakes); by default a stub over the cluster's channel to that address.
    """

    service = "group"  # the Rpc service name of the calls (_ops.py)

    def __init__(
        self,
        cluster: ClusterState,
        group_id: str,
        *,
        stub_factory: StubFactory | None = None,
        attempts_max: int = ATTEMPTS_MAX_DEFAULT,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 1.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        if not group_id:
            raise ValueError("group_id must not be empty")
        if attempts_max < 1:
            raise ValueError(f"attempts_max must be at least 1, got {attempts_max}")
        self.cluster = cluster
        self.group_id = group_id
        # ``policy`` (tests inject clock, sleep and rng) wins over the three knobs above
        self._retry = policy or RetryPolicy(
            backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s,
            redirects_max=_REDIRECTS_MAX, attempts_max=attempts_max)
        self.attempts_max = self._retry.attempts_max
        self._stub_factory = stub_factory or self._default_stub
        self._stubs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._coordinator: Coordinator | None = None
        self._rotation = 0

    # ------------------------------------------------------------------ cache

    def _default_stub(self, address: str) -> Any:
        channel = self.cluster.channel(address)  # type: ignore[attr-defined]
        return group_pb2_grpc.GroupCoordinatorStub(channel)

    def _stub(self, address: str) -> Any:
        with self._lock:
            stub = self._stubs.get(address)
            if stub is None:
                stub = self._stubs[address] = self._stub_factory(address)
            return stub

    @property
    def coordinator(self) -> Coordinator | None:
        """The cached coordinator (None until found, or after it failed)."""
        return self._coordinator

    def invalidate(self, failed: Coordinator | None = None) -> None:
        """Forget the cached coordinator (only if it is still ``failed``, when given)."""
        with self._lock:
            if failed is None or self._coordinator is failed:
                self._coordinator = None

    def _set(self, node_id: int, address: str) -> Coordinator:
        found = Coordinator(node_id, address)
        with self._lock:
            self._coordinator = found
        return found

    # ------------------------------------------------------------------ finding

    def find(self, timeout_s: float) -> Coordinator:
        """The coordinator, from the cache or by asking ``FindCoordinator`` (retrying
        until ``timeout_s``). Raises RaftkaTimeoutError (with the last error) or a
        non-retriable RaftkaError."""
        return run_sync(self.cluster, self.find_ops(timeout_s), self._stubs_for)

    def call(self, method_name: str, request: Any, timeout_s: float, what: str = "",
             ambiguous: list[bool] | None = None) -> Any:
        """Run ``GroupCoordinator.<method_name>(request)`` on the group's coordinator,
        finding it first and following it when it moves (see the module docstring).
        ``timeout_s`` bounds the whole call, retries included; each attempt's deadline is
        at most ``cluster.request_timeout_s``. ``ambiguous[0]`` is set when an attempt
        failed in a way that may have applied the request (a deadline or a dropped
        connection at the coordinator), so the caller can judge a later answer."""
        return run_sync(self.cluster,
                        self.call_ops(method_name, request, timeout_s, what, ambiguous),
                        self._stubs_for)

    def _stubs_for(self, address: str, service: str) -> Any:
        return self._stub(address)

    # ------------------------------------------------------------------ operations (_ops.py)

    def find_ops(self, timeout_s: float) -> Ops[Coordinator]:
        retry = self._retry.start(timeout_s)
        while True:
            cached = self._coordinator
            if cached is not None:
                return cached
            if not retry.next_attempt():
                break
            try:
                return (yield from self._find_once_ops(retry.remaining()))
            except RaftkaError as e:
                if retry.classify(e) is Step.RAISE:
                    raise
            yield backoff(retry)
        raise retry.timeout_error(
            f"find the coordinator of group {self.group_id!r}") from retry.last

    def _find_once_ops(self, timeout_s: float) -> Ops[Coordinator]:
        """One FindCoordinator request to the next candidate broker."""
        candidates = self.cluster.candidate_addresses()
        address = candidates[self._rotation % len(candidates)]
        request = group_pb2.FindCoordinatorRequest(group_id=self.group_id)
        try:
            resp = yield Rpc(address, "group", "FindCoordinator", request,
                             min(timeout_s, self.cluster.request_timeout_s),
                             f"FindCoordinator({self.group_id!r})")
        except RaftkaError:
            self._rotation += 1  # ask the next broker next time
            raise
        target = resp.address or (self.cluster.broker_address(resp.node_id) or "")
        if not resp.node_id or not target:
            self._rotation += 1  # another node may already know the new leader
            raise GroupCoordinatorNotAvailableError(
                f"FindCoordinator({self.group_id!r}) at {address}: the group's coordinator "
                f"(leader of __consumer_offsets/{resp.offsets_partition}) is not elected yet")
        return self._set(resp.node_id, target)

    def call_ops(self, method_name: str, request: Any, timeout_s: float, what: str = "",
                 ambiguous: list[bool] | None = None) -> Ops[Any]:
        """The operation behind :meth:`call`."""
        what = what or f"{method_name}({self.group_id!r})"
        retry = self._retry.start(timeout_s)
        while retry.next_attempt():
            coordinator = self._coordinator
            if coordinator is None:
                try:
                    coordinator = yield from self._find_once_ops(retry.remaining())
                except RaftkaError as e:
                    if retry.classify(e) is Step.RAISE:
                        raise
                    yield backoff(retry)
                    continue
            remaining = retry.remaining()
            if remaining <= 0:
                break
            try:
                return (yield Rpc(coordinator.address, self.service, method_name, request,
                                  min(remaining, self.cluster.request_timeout_s), what))
            except RaftkaError as e:
                leader = named_leader(e, self.cluster.broker_address)
                leader_id = getattr(e, "leader_id", 0)
                step = retry.on_error(e, failed=coordinator.address, leader=leader)
                if ambiguous is not None and retry.ambiguous:
                    ambiguous[0] = True
                if step is Step.RAISE:
                    raise
            if step is Step.FOLLOW:  # a redirect costs one round trip, no backoff
                with self._lock:
                    if self._coordinator is coordinator or self._coordinator is None:
                        self._coordinator = Coordinator(leader_id, leader)
                continue
            if step is Step.REFRESH:  # the group's metadata is where its coordinator is
                self.invalidate(coordinator)
            yield backoff(retry)
        raise retry.timeout_error(what) from retry.last
