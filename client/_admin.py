"""``Admin``: topics and cluster description over the ``raftka.v1.Admin`` service.

Topic changes go through the controller Raft group. Any node accepts an admin call and
answers NOT_LEADER naming the controller leader if it is not it; ``Admin`` follows that
redirect, and on retriable errors (no controller leader yet, node down or paused) tries
the other brokers with backoff until the call's overall ``timeout``.

Retries after an *ambiguous* failure (the request may have been applied: a deadline, a
dropped connection, NO_QUORUM) are made safe by checking the outcome: a create that then
meets TOPIC_EXISTS returns the existing topic if it has the partition count and
replication factor asked for; a delete that then meets UNKNOWN_TOPIC succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from client._cluster import Backoff, Cluster, deadline_error, sleep_until
from client._errors import (
    BrokerNotAvailableError,
    NoBrokersAvailable,
    NoQuorumError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    TopicExistsError,
    UnknownTopicError,
)
from client._types import BrokerDescription, ClusterDescription, TopicDescription
from client.pb.raftka.v1 import admin_pb2, broker_pb2

__all__ = ["Admin"]

_AMBIGUOUS = (BrokerNotAvailableError, RequestTimedOutError, NoQuorumError)
_MAX_REDIRECTS = 3  # NOT_LEADER hops in a row before backing off (stale views can loop)


class Admin:
    """Create, delete, list and describe topics; describe the cluster.

    ``timeout`` arguments are seconds for the whole operation, retries included; each RPC
    attempt has a deadline of at most ``request_timeout_ms``.
    """

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        request_timeout_ms: int = 5000,
        default_timeout: float = 30.0,
    ) -> None:
        self._cluster = Cluster(bootstrap, request_timeout_ms=request_timeout_ms)
        self._default_timeout = default_timeout
        self._rotation = 0

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._cluster.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def wait_for_brokers(self, timeout: float = 5.0) -> list[BrokerDescription]:
        """Wait until some broker answers a metadata request; returns the brokers it
        knows. Raises NoBrokersAvailable after ``timeout``. A cheap first call that tells
        "nothing is running there" apart from slower failures."""
        deadline = time.monotonic() + timeout
        backoff = Backoff(0.05, 0.5)
        while True:
            try:
                self._cluster.refresh_metadata(max(deadline - time.monotonic(), 0.1))
                return self._cluster.brokers()
            except NoBrokersAvailable as e:
                if time.monotonic() + 0.05 >= deadline:
                    raise NoBrokersAvailable(e.tried, e.last_error, timeout) from e
            sleep_until(deadline, backoff.next())

    # ------------------------------------------------------------------ topics

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 3,
        configs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> TopicDescription:
        """Create a topic; returns it as the controller describes it (leaders may not be
        elected yet: see :meth:`wait_for_topic_ready`). Raises TopicExistsError,
        NotEnoughReplicasError, InvalidConfigError, InvalidRequestError, or
        RaftkaTimeoutError when no controller accepted it in time."""
        if not name:
            raise ValueError("topic name must not be empty")
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        if replication_factor < 1:
            raise ValueError(f"replication_factor must be at least 1, got {replication_factor}")
        request = admin_pb2.CreateTopicRequest(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            configs={str(k): str(v) for k, v in (configs or {}).items()},
        )
        ambiguous: list[bool] = [False]
        try:
            resp = self._call("CreateTopic", request, timeout, f"create topic {name!r}", ambiguous)
        except TopicExistsError:
            if not ambiguous[0]:
                raise
            # Our earlier attempt may have created it: accept it if it is what we asked for.
            existing = self.describe_topic(name, timeout=timeout)
            if (existing.partition_count == partitions
                    and existing.replication_factor == replication_factor):
                return existing
            raise
        if resp.HasField("topic"):
            return TopicDescription.from_pb(resp.topic)
        return self.describe_topic(name, timeout=timeout)

    def delete_topic(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a topic. Raises UnknownTopicError if it does not exist."""
        ambiguous: list[bool] = [False]
        try:
            self._call("DeleteTopic", admin_pb2.DeleteTopicRequest(name=name), timeout,
                       f"delete topic {name!r}", ambiguous)
        except UnknownTopicError:
            if not ambiguous[0]:
                raise

    def list_topics(self, *, timeout: float | None = None) -> list[str]:
        """Topic names, sorted."""
        resp = self._call("ListTopics", admin_pb2.ListTopicsRequest(), timeout, "list topics")
        return sorted(resp.names)

    def describe_topic(self, name: str, *, timeout: float | None = None) -> TopicDescription:
        """Partitions, leaders, replicas, watermarks and configs of a topic. Raises
        UnknownTopicError if it does not exist."""
        resp = self._call("DescribeTopic", admin_pb2.DescribeTopicRequest(name=name), timeout,
                          f"describe topic {name!r}")
        return TopicDescription.from_pb(resp.topic)

    def describe_topics(self, names: Iterable[str] | None = None, *,
                        timeout: float | None = None) -> list[TopicDescription]:
        """Every topic (or the named ones that exist), sorted by name, from one broker's
        metadata in one request. That node may lag the controller by a moment; use
        :meth:`describe_topic` for the controller's view of one topic."""
        md = self._cluster.refresh_metadata(self._default_timeout if timeout is None
                                            else timeout)
        wanted = None if names is None else set(names)
        return [md.topics[n] for n in sorted(md.topics) if wanted is None or n in wanted]

    def describe_cluster(self, *, timeout: float | None = None) -> ClusterDescription:
        resp = self._call("DescribeCluster", admin_pb2.DescribeClusterRequest(), timeout,
                          "describe cluster")
        return ClusterDescription.from_pb(resp)

    def wait_for_topic_ready(self, name: str, timeout: float = 30.0) -> TopicDescription:
        """Wait until every partition of the topic has a leader that serves it: the topic
        description names a leader for each partition and each of those leaders answers a
        zero-wait Fetch (not NOT_LEADER). Returns the last description; raises
        RaftkaTimeoutError (or UnknownTopicError if it never appears)."""
        deadline = time.monotonic() + timeout
        backoff = Backoff(0.05, 0.5)
        ready: set[int] = set()
        last: BaseException | None = None
        desc: TopicDescription | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if desc is None and isinstance(last, UnknownTopicError):
                    raise last
                waiting = ([p.partition for p in desc.partitions if p.partition not in ready]
                           if desc else "all")
                detail = f"; last error: {last}" if last else ""
                raise RaftkaTimeoutError(
                    f"topic {name!r} not ready within {timeout:g}s (partitions without a "
                    f"serving leader: {waiting}){detail}") from last
            try:
                desc = self.describe_topic(name, timeout=remaining)
            except UnknownTopicError as e:  # creation not applied on that node yet
                last = e
                sleep_until(deadline, backoff.next())
                continue
            except RaftkaTimeoutError as e:
                last = e.__cause__ or e
                continue
            try:  # for the leaders' addresses
                self._cluster.refresh_metadata(min(remaining, 5.0), min_age_s=0.2)
            except RaftkaError as e:
                last = e
            for p in desc.partitions:
                if p.partition in ready:
                    continue
                if not p.has_leader:
                    last = RaftkaError(f"partition {p.partition} has no leader yet")
                    continue
                if self._probe_leader(name, p.partition, p.leader_id, deadline):
                    ready.add(p.partition)
            if desc.partitions and len(ready) >= desc.partition_count:
                return desc
            sleep_until(deadline, backoff.next())

    def _probe_leader(self, topic: str, partition: int, leader_id: int, deadline: float) -> bool:
        address = self._cluster.broker_address(leader_id)
        if address is None:
            return False
        request = broker_pb2.FetchRequest(topic=topic, partition=partition, offset=0,
                                          max_bytes=1, max_wait_ms=0)
        try:
            self._cluster.call_broker(
                address, "Fetch", request,
                min(deadline - time.monotonic(), self._cluster.request_timeout_s),
                f"Fetch {topic}/{partition}",
            )
        except OffsetOutOfRangeError:
            return True  # the leader answered; the log just does not start at 0
        except RaftkaError:
            return False
        return True

    # ------------------------------------------------------------------ calls

    def _next_address(self) -> str:
        candidates = self._cluster.candidate_addresses()
        address = candidates[self._rotation % len(candidates)]
        self._rotation += 1
        return address

    def _call(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        what: str,
        ambiguous: list[bool] | None = None,
    ) -> Any:
        """Run one admin RPC against the controller leader, following NOT_LEADER and
        retrying retriable errors on other brokers until ``timeout``. ``ambiguous[0]`` is
        set when an attempt failed in a way that may have applied the request."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        backoff = Backoff(0.05, 1.0)
        target = self._cluster.controller_address()
        redirects = 0
        last: RaftkaError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise deadline_error(what, timeout, last) from last
            address = target or self._next_address()
            try:
                return self._cluster.call_admin(
                    address, method, request,
                    min(remaining, self._cluster.request_timeout_s), what,
                )
            except NotLeaderError as e:
                last = e
                hinted = e.leader_address or self._cluster.broker_address(e.leader_id) or ""
                if hinted and hinted != address and redirects < _MAX_REDIRECTS:
                    target = hinted
                    redirects += 1
                    continue
                target = None
                redirects = 0
            except UnknownTopicError:
                raise  # retriable for data requests, but an admin answer is definitive
            except RaftkaError as e:
                if not e.retriable:
                    raise
                last = e
                if ambiguous is not None and isinstance(e, _AMBIGUOUS):
                    ambiguous[0] = True
                target = None
            if last is not None and last.invalid_metadata:
                try:
                    self._cluster.refresh_metadata(min(max(deadline - time.monotonic(), 0.1),
                                                       2.0), min_age_s=0.5)
                except RaftkaError:
                    pass
                controller = self._cluster.controller_address()
                # a stale view may keep naming the node that just failed: rotate instead
                target = controller if controller and controller != address else None
            sleep_until(deadline, backoff.next())
