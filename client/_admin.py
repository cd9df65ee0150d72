"""``Admin``: topics, cluster status and consumer groups.

Topics go through the ``raftka.v1.Admin`` service, groups through the group's coordinator
(``raftka.v1.GroupCoordinator``, found and followed by ``GroupCoordinatorClient``), offsets
through ``Broker.ListOffsets`` on each partition's leader.

Topic changes go through the controller Raft group. Any node accepts an admin call and
forwards a write to the controller leader itself (KIP-590); a node that cannot (an older
node, or no leader known within its forwarding deadline) answers NOT_LEADER naming the
controller leader when it knows one. Every call retries by the
client's one policy (``_retry.py``): it follows that redirect at once, refreshes the
metadata on ``invalid_metadata`` errors, and on retriable errors (no controller leader yet,
node down or paused) tries the other brokers with backoff until the call's overall
``timeout``. UNKNOWN_TOPIC from the controller is definitive (not retried).

Retries after an *ambiguous* failure (rule 6 of the policy: the request may have been
applied: a deadline, a dropped connection, NO_QUORUM) are made safe by checking the
outcome: a create that then meets TOPIC_EXISTS returns the existing topic if it has the
partition count and replication factor asked for; a delete that then meets UNKNOWN_TOPIC
succeeds; an add-partitions that then meets "already has N partitions" succeeds if N is
the total asked for; a group delete that then meets UNKNOWN_GROUP succeeds.

Offset resets resolve their targets on the client, like ``kafka-consumer-groups``: earliest,
latest or a timestamp become offsets through ``ListOffsets`` on each partition's leader, an
explicit offset is clamped into [log start, high watermark]; then one ``ResetOffsets`` call
commits them all. The coordinator refuses it (GROUP_NOT_EMPTY) while the group has members.

``cluster_status`` asks every node (in parallel) for its metadata and its view of its
peers and merges them: a partition's leader is the replica that claims leadership with the
newest term; a partition is under-replicated when one of its replicas is on a node that did
not answer, that its leader cannot reach, or that does not run the replica.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from raftka.client._cluster import Cluster
from raftka.client._coordinator import GroupCoordinatorClient
from raftka.client._retry import RetryPolicy, Step, named_leader
from raftka.v1.errors import (
    InvalidRequestError,
    NoBrokersAvailable,
    NotLeaderError,
    OffsetOutOfRangeError,
    RaftkaError,
    RaftkaTimeoutError,
    TopicExistsError,
    UnknownGroupError,
    UnknownPartitionError,
    UnknownTopicError,
)
from raftka.client._types import (
    BrokerDescription,
    ClusterDescription,
    ClusterStatus,
    ConfigEntry,
    GroupDescription,
    GroupListing,
    GroupMemberDescription,
    GroupOffsetReset,
    GroupPartitionLag,
    NodeStats,
    NodeStatus,
    PartitionOffsets,
    PartitionStatus,
    TopicDescription,
    TopicPartition,
)
from raftka.v1 import admin_pb2, broker_pb2, group_pb2, group_pb2_grpc

__all__ = ["Admin"]

# Calls (controller, partition leader, any node): backoff 50 ms-1 s, 3 redirects in a
# row, metadata refreshed at most every 0.5 s (_retry.py).
CALL_RETRY = RetryPolicy(backoff_initial_s=0.05, backoff_max_s=1.0, redirects_max=3,
                         refresh_min_age_s=0.5)
# Waiting for brokers or a topic's leaders: backoff 50-500 ms.
WAIT_RETRY = RetryPolicy(backoff_initial_s=0.05, backoff_max_s=0.5)
_LEADER_REFRESH_MIN_AGE_S = 0.2  # no leader known for a partition: refresh this often
_EARLIEST = -2  # ListOffsets' timestamp_ms for the log start
_LATEST = -1  # ... and for the high watermark
_STATUS_CALL_TIMEOUT_S = 2.0  # per node in cluster_status: a dead node costs this, once
_GROUP_CLIENTS_MAX = 64  # cached coordinator clients (one per group asked about)


class Admin:
    """Create, delete, list, describe and grow topics; list partition offsets; describe the
    cluster (one node's view, or every node's merged); list, describe, reset and delete
    consumer groups.

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
        self._retry = CALL_RETRY
        self._rotation = 0
        self._groups: dict[str, GroupCoordinatorClient] = {}

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
        retry = WAIT_RETRY.start(timeout)
        while True:
            try:
                self._cluster.refresh_metadata(max(retry.remaining(), 0.1))
                return self._cluster.brokers()
            except NoBrokersAvailable as e:
                if retry.remaining() <= 0.05:
                    raise NoBrokersAvailable(e.tried, e.last_error, timeout) from e
            retry.pause()

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

    def add_partitions(self, topic: str, total_count: int, *,
                       timeout: float | None = None) -> TopicDescription:
        """Grow ``topic`` to ``total_count`` partitions (Kafka's create-partitions). The new
        partitions are placed like a create's; their leaders may not be elected yet (see
        :meth:`wait_for_topic_ready`). Keys may hash to other partitions afterwards.
        Raises UnknownTopicError, or InvalidRequestError when ``total_count`` is not more
        than the current count (partitions are never removed) or the topic is internal."""
        if isinstance(total_count, bool) or not isinstance(total_count, int):
            raise TypeError(f"total_count must be an int, got {total_count!r}")
        if total_count < 1:
            raise ValueError(f"total_count must be at least 1, got {total_count}")
        request = admin_pb2.AddPartitionsRequest(name=topic, total_count=total_count)
        ambiguous: list[bool] = [False]
        try:
            resp = self._call("AddPartitions", request, timeout,
                              f"add partitions to {topic!r}", ambiguous)
        except InvalidRequestError:
            if not ambiguous[0]:
                raise
            # Our earlier attempt may have done it: accept the count we asked for.
            existing = self.describe_topic(topic, timeout=timeout)
            if existing.partition_count == total_count:
                return existing
            raise
        if resp.HasField("topic"):
            return TopicDescription.from_pb(resp.topic)
        return self.describe_topic(topic, timeout=timeout)

    def alter_topic_config(
        self,
        topic: str,
        set: Mapping[str, Any] | None = None,  # noqa: A002 - Kafka's operation name
        delete: Iterable[str] | None = None,
        validate_only: bool = False,
        *,
        timeout: float | None = None,
    ) -> list[ConfigEntry]:
        """Set configs of ``topic`` and return the ``delete``d ones to their defaults
        (Kafka's incremental alter-configs); the whole change applies on every replica, or
        nothing does. Returns every config of the topic as altered (with
        ``validate_only``: as it would be, changing nothing). Raises InvalidConfigError
        naming an unknown config or a bad value and what it allows, InvalidRequestError
        (a config both set and deleted, an internal topic), or UnknownTopicError."""
        set_ = {str(k): str(v) for k, v in (set or {}).items()}
        deleted = [str(k) for k in (delete or ())]
        if isinstance(delete, str):
            raise TypeError("delete is a list of config names, not a string")
        request = admin_pb2.AlterTopicConfigsRequest(
            name=topic, set=set_, delete=deleted, validate_only=validate_only)
        # Setting and deleting are idempotent, so a retry after an ambiguous failure is safe.
        resp = self._call("AlterTopicConfigs", request, timeout,
                          f"alter configs of topic {topic!r}")
        return [ConfigEntry.from_pb(c) for c in resp.configs]

    def describe_topic_configs(self, topic: str, *,
                               timeout: float | None = None) -> list[ConfigEntry]:
        """Every config the node knows for ``topic``, by name: its value, whether it is set
        on the topic (``source == "TOPIC"``) or the default, whether it is read-only, and
        what it means. Raises UnknownTopicError if the topic does not exist."""
        resp = self._call("DescribeTopicConfigs",
                          admin_pb2.DescribeTopicConfigsRequest(name=topic), timeout,
                          f"describe configs of topic {topic!r}")
        return [ConfigEntry.from_pb(c) for c in resp.configs]

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
        """The answering node's own view (reachability and leaders as it sees them); see
        :meth:`cluster_status` for the merged cluster-wide view."""
        resp = self._call("DescribeCluster", admin_pb2.DescribeClusterRequest(), timeout,
                          "describe cluster")
        return ClusterDescription.from_pb(resp)

    def describe_node_stats(self, *, timeout: float | None = None) -> dict[int, NodeStats]:
        """Every node's request statistics since it started (cumulative: produce and fetch
        latency histograms, records and bytes), asked in parallel; nodes that do not
        answer are left out. The web console charts latency from two of these."""
        timeout = self._default_timeout if timeout is None else timeout
        brokers = dict(self._cluster.refresh_metadata(timeout).brokers)

        def ask(address: str) -> NodeStats | None:
            try:
                return NodeStats.from_pb(self._cluster.call_admin(
                    address, "DescribeNodeStats", admin_pb2.DescribeNodeStatsRequest(),
                    timeout))
            except RaftkaError:
                return None

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(brokers), 16) or 1,
                                                   thread_name_prefix="raftka-stats") as pool:
            answers = dict(zip(brokers, pool.map(ask, brokers.values())))
        return {nid: s for nid, s in sorted(answers.items()) if s is not None}

    def cluster_status(self, *, timeout: float | None = None) -> ClusterStatus:
        """A cluster-wide view: every node asked in parallel (see the module docstring).
        ``describe_cluster`` is one node's local view; this merges all of them."""
        brokers, answers = self._node_answers(timeout)
        return merge_cluster_status(brokers, answers)

    def _node_answers(self, timeout: float | None) -> tuple[dict[int, str],
                                                              dict[int, tuple[Any, Any]]]:
        """Every node asked in parallel for its Metadata and DescribeCluster: (node id ->
        address, node id -> (MetadataResponse, DescribeClusterResponse) of those that
        answered). ``cluster_status`` and ``raftka top`` merge them."""
        timeout = self._default_timeout if timeout is None else timeout
        md = self._cluster.refresh_metadata(timeout)
        brokers = dict(md.brokers)
        per_call = min(_STATUS_CALL_TIMEOUT_S, self._cluster.request_timeout_s, timeout)

        def ask(address: str) -> tuple[Any, Any] | None:
            try:
                meta = self._cluster.call_broker(address, "Metadata",
                                                 broker_pb2.MetadataRequest(), per_call)
                peers = self._cluster.call_admin(address, "DescribeCluster",
                                                 admin_pb2.DescribeClusterRequest(), per_call)
            except RaftkaError:
                return None
            return meta, peers

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(brokers), 16) or 1,
                                                   thread_name_prefix="raftka-status") as pool:
            futures = {nid: pool.submit(ask, addr) for nid, addr in brokers.items()}
            answers = {nid: f.result() for nid, f in futures.items()}
        return brokers, {n: a for n, a in answers.items() if a}

    # ------------------------------------------------------------------ offsets

    def list_offsets(self, topic: str, partition: int, spec: str | int = "latest", *,
                     timeout: float | None = None) -> PartitionOffsets:
        """The offset of ``spec`` in a partition, asked of its leader: ``"earliest"`` (the
        log start), ``"latest"`` (the high watermark: the next offset to be written) or a
        time in ms since the epoch (the first offset appended at or after it; the high
        watermark if none was)."""
        if isinstance(spec, bool):
            raise TypeError("spec must be 'earliest', 'latest' or a timestamp in ms")
        if isinstance(spec, int):
            if spec < 0:
                raise ValueError(f"a timestamp must be >= 0 ms, got {spec}")
            timestamp_ms = spec
        elif str(spec).strip().lower() in ("earliest", "beginning"):
            timestamp_ms = _EARLIEST
        elif str(spec).strip().lower() in ("latest", "end"):
            timestamp_ms = _LATEST
        else:
            raise ValueError(f"spec must be 'earliest', 'latest' or a timestamp in ms, "
                             f"got {spec!r}")
        request = broker_pb2.ListOffsetsRequest(topic=topic, partition=partition,
                                                timestamp_ms=timestamp_ms)
        resp = self._call_leader(topic, partition, "ListOffsets", request, timeout,
                                 f"ListOffsets {topic}/{partition}")
        return PartitionOffsets(topic, partition, resp.offset, resp.high_watermark,
                                resp.log_start_offset)

    # ------------------------------------------------------------------ groups

    def list_groups(self, *, timeout: float | None = None) -> list[GroupListing]:
        """Every consumer group, sorted by id. A node lists the groups with offsets in the
        ``__consumer_offsets`` partitions it holds plus the groups it coordinates, so every
        node is asked (in parallel) and the answers merged; a group's entry from its own
        coordinator wins (it knows the members). Raises NoBrokersAvailable when no node
        answered."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        brokers = dict(self._cluster.refresh_metadata(timeout).brokers)
        per_call = min(_STATUS_CALL_TIMEOUT_S, self._cluster.request_timeout_s, timeout)

        def ask(address: str) -> Any:
            stub = group_pb2_grpc.GroupCoordinatorStub(self._cluster.channel(address))
            try:
                return self._cluster.call(address, stub.ListGroups,
                                          group_pb2.ListGroupsRequest(), per_call, "ListGroups")
            except RaftkaError as e:
                return e

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(brokers), 16) or 1,
                                                   thread_name_prefix="raftka-groups") as pool:
            futures = {nid: pool.submit(ask, addr) for nid, addr in brokers.items()}
            answers = {nid: f.result() for nid, f in futures.items()}
        merged: dict[str, GroupListing] = {}
        errors: list[RaftkaError] = []
        listed_by = {nid: {g.group_id for g in resp.groups} for nid, resp in answers.items()
                     if not isinstance(resp, RaftkaError)}
        for nid in sorted(answers):
            resp = answers[nid]
            if isinstance(resp, RaftkaError):
                errors.append(resp)
                continue
            for g in resp.groups:
                listing = GroupListing.from_pb(g)
                known = merged.get(listing.group_id)
                from_coordinator = g.coordinator_id == nid
                # A follower replica of the offsets partition may not have applied a delete
                # yet: when the coordinator it names answered without the group, it is gone.
                stale = (not from_coordinator and g.coordinator_id in listed_by
                         and g.group_id not in listed_by[g.coordinator_id])
                if stale:
                    continue
                if known is None or from_coordinator:
                    merged[listing.group_id] = listing
        if len(errors) == len(answers):
            if errors and not errors[0].retriable:
                raise errors[0]
            # nobody answered: fall back to one node, retrying until the deadline
            resp = self._call_any_group("ListGroups", group_pb2.ListGroupsRequest(),
                                        max(deadline - time.monotonic(), 0.1), "list groups")
            return sorted((GroupListing.from_pb(g) for g in resp.groups),
                          key=lambda g: g.group_id)
        return [merged[g] for g in sorted(merged)]

    def describe_group(self, group_id: str, *,
                       timeout: float | None = None) -> GroupDescription:
        """Members with their assignments, and per partition the committed offset, the log
        end and the lag. A log end the coordinator did not know is asked of the
        partition's leader. Raises UnknownGroupError."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        resp = self._group(group_id).call(
            "DescribeGroup", group_pb2.DescribeGroupRequest(group_id=group_id), timeout,
            f"describe group {group_id!r}")
        partitions = []
        for p in resp.partitions:
            lag = GroupPartitionLag.from_pb(p)
            if lag.log_end_offset is None:
                lag = self._with_log_end(lag, deadline)
            partitions.append(lag)
        partitions.sort(key=lambda p: (p.topic, p.partition))
        return GroupDescription(
            group_id=resp.group_id or group_id,
            state=resp.state,
            group_epoch=resp.group_epoch,
            assignor=resp.assignor,
            coordinator_id=resp.coordinator_id,
            members=tuple(sorted((GroupMemberDescription.from_pb(m) for m in resp.members),
                                 key=lambda m: m.member_id)),
            partitions=tuple(partitions),
        )

    def _with_log_end(self, lag: GroupPartitionLag, deadline: float) -> GroupPartitionLag:
        remaining = min(deadline - time.monotonic(), self._cluster.request_timeout_s)
        if remaining <= 0:
            return lag
        try:
            end = self.list_offsets(lag.topic, lag.partition, "latest",
                                    timeout=remaining).high_watermark
        except RaftkaError:
            return lag  # unknown stays unknown; the description is still useful
        return GroupPartitionLag(
            lag.topic, lag.partition, lag.committed_offset, end,
            None if lag.committed_offset is None else max(end - lag.committed_offset, 0),
            lag.member_id)

    def committed_offsets(self, group_id: str,
                          partitions: Iterable[tuple[str, int]] | None = None, *,
                          timeout: float | None = None) -> dict[TopicPartition, int]:
        """The group's committed offsets (every one, or those of ``partitions``); a
        partition without a commit is left out."""
        request = group_pb2.OffsetFetchRequest(group_id=group_id)
        by_topic: dict[str, list[int]] = {}
        for t, p in partitions or ():
            by_topic.setdefault(t, []).append(p)
        for t in sorted(by_topic):
            request.partitions.add(topic=t, partitions=sorted(by_topic[t]))
        resp = self._group(group_id).call("FetchOffsets", request,
                                          self._default_timeout if timeout is None else timeout,
                                          f"fetch offsets of group {group_id!r}")
        return {TopicPartition(o.topic, o.partition): o.offset for o in resp.offsets
                if o.offset >= 0}

    def reset_group_offsets(
        self,
        group_id: str,
        topic: str | None = None,
        *,
        partitions: Iterable[tuple[str, int]] | None = None,
        to: str | int | None = None,
        timestamp_ms: int | None = None,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> list[GroupOffsetReset]:
        """Set the committed offsets of an empty group, like ``kafka-consumer-groups
        --reset-offsets``. Targets: every partition of ``topic``, or the ``(topic,
        partition)`` pairs in ``partitions``. Where to: ``to="earliest"`` (log start),
        ``to="latest"`` (high watermark), ``to=N`` (an offset, clamped into [log start,
        high watermark]) or ``timestamp_ms=T`` (the first record appended at or after T).
        ``dry_run`` only computes the plan. Returns one entry per partition, sorted.
        Raises GroupNotEmptyError while the group has members."""
        if (to is None) == (timestamp_ms is None):
            raise ValueError("give exactly one of to='earliest'|'latest'|OFFSET or "
                             "timestamp_ms=MS")
        if to is not None and not isinstance(to, int):
            name = str(to).strip().lower()
            if name not in ("earliest", "latest"):
                raise ValueError(f"to must be 'earliest', 'latest' or an offset, got {to!r}")
            to = name
        if isinstance(to, bool):
            raise TypeError("to must be 'earliest', 'latest' or an int offset")
        if isinstance(to, int) and to < 0:
            raise ValueError(f"an offset must be >= 0, got {to}")
        if timestamp_ms is not None and (isinstance(timestamp_ms, bool) or timestamp_ms < 0):
            raise ValueError(f"timestamp_ms must be >= 0, got {timestamp_ms!r}")
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        targets = self._reset_targets(topic, partitions, timeout)
        previous = self.committed_offsets(group_id, targets, timeout=timeout)
        plan: list[GroupOffsetReset] = []
        for tp in targets:
            remaining = max(deadline - time.monotonic(), 0.1)
            if timestamp_ms is not None:
                new = self.list_offsets(tp.topic, tp.partition, timestamp_ms,
                                        timeout=remaining).offset
            elif isinstance(to, int):
                bounds = self.list_offsets(tp.topic, tp.partition, "latest", timeout=remaining)
                new = min(max(to, bounds.log_start_offset), bounds.high_watermark)
            else:
                new = self.list_offsets(tp.topic, tp.partition, to, timeout=remaining).offset
            plan.append(GroupOffsetReset(tp.topic, tp.partition, previous.get(tp), new))
        if not dry_run:
            request = group_pb2.ResetOffsetsRequest(group_id=group_id)
            for r in plan:
                request.offsets.add(topic=r.topic, partition=r.partition, offset=r.new_offset)
            self._group(group_id).call("ResetOffsets", request,
                                       max(deadline - time.monotonic(), 0.1),
                                       f"reset offsets of group {group_id!r}")
        return plan

    def _reset_targets(self, topic: str | None, partitions: Iterable[tuple[str, int]] | None,
                       timeout: float) -> list[TopicPartition]:
        if (topic is None) == (partitions is None):
            raise ValueError("give either a topic (every partition) or partitions "
                             "[(topic, partition), ...]")
        try:  # a fresh view: partitions may have been added a moment ago
            self._cluster.refresh_metadata(min(timeout, 5.0))
        except RaftkaError:
            pass  # wait_for_topic below retries and reports
        if topic is not None:
            desc = self._cluster.wait_for_topic(topic, min(timeout, 10.0))
            return [TopicPartition(topic, p.partition) for p in desc.partitions]
        wanted = sorted({TopicPartition(t, int(p)) for t, p in partitions or ()})
        if not wanted:
            raise ValueError("partitions is empty: name at least one (topic, partition)")
        for t in sorted({tp.topic for tp in wanted}):
            desc = self._cluster.wait_for_topic(t, min(timeout, 10.0))
            count = desc.partition_count
            for tp in wanted:
                if tp.topic == t and not 0 <= tp.partition < count:
                    raise UnknownPartitionError(
                        f"topic {t!r} has partitions 0..{count - 1}; partition "
                        f"{tp.partition} does not exist")
        return wanted

    def delete_group(self, group_id: str, *, timeout: float | None = None) -> None:
        """Delete an empty group and its committed offsets. Raises UnknownGroupError, or
        GroupNotEmptyError while it has members."""
        ambiguous: list[bool] = [False]
        try:
            self._group(group_id).call(
                "DeleteGroup", group_pb2.DeleteGroupRequest(group_id=group_id),
                self._default_timeout if timeout is None else timeout,
                f"delete group {group_id!r}", ambiguous)
        except UnknownGroupError:
            if not ambiguous[0]:
                raise
            # our earlier attempt deleted it

    def _group(self, group_id: str) -> GroupCoordinatorClient:
        client = self._groups.get(group_id)
        if client is None:
            if len(self._groups) >= _GROUP_CLIENTS_MAX:
                self._groups.pop(next(iter(self._groups)))
            client = self._groups[group_id] = GroupCoordinatorClient(self._cluster, group_id)
        return client

    def wait_for_topic_ready(self, name: str, timeout: float = 30.0) -> TopicDescription:
        """Wait until every partition of the topic has a leader that serves it: the topic
        description names a leader for each partition and each of those leaders answers a
        zero-wait Fetch (not NOT_LEADER). Returns the last description; raises
        RaftkaTimeoutError (or UnknownTopicError if it never appears)."""
        retry = WAIT_RETRY.start(timeout)
        deadline = retry.deadline
        ready: set[int] = set()
        last: BaseException | None = None
        desc: TopicDescription | None = None
        while True:
            remaining = retry.remaining()
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
                retry.pause()
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
            retry.pause()

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
        """Run one admin RPC against the controller leader, retrying by the policy
        (``_retry.py``) until ``timeout``: NOT_LEADER is followed to the controller it
        names, other retriable errors try other brokers. ``ambiguous[0]`` is set when an
        attempt failed in a way that may have applied the request (rule 6)."""
        cluster = self._cluster
        retry = self._retry.start(self._default_timeout if timeout is None else timeout)
        target = cluster.controller_address()
        while retry.next_attempt():
            address = target or self._next_address()
            try:
                return cluster.call_admin(address, method, request,
                                          retry.attempt_timeout(cluster.request_timeout_s),
                                          what)
            except UnknownTopicError:
                raise  # retriable for data requests, but an admin answer is definitive
            except RaftkaError as e:
                leader = named_leader(e, cluster.broker_address)
                step = retry.on_error(e, failed=address, leader=leader)
                if ambiguous is not None and retry.ambiguous:
                    ambiguous[0] = True
                if step is Step.RAISE:
                    raise
            if step is Step.FOLLOW:
                target = leader
                continue
            target = None
            if step is Step.REFRESH:
                cluster.try_refresh(min(max(retry.remaining(), 0.1), 2.0),
                                    retry.policy.refresh_min_age_s)
                controller = cluster.controller_address()
                # a stale view may keep naming the node that just failed: rotate instead
                target = controller if controller and controller != address else None
            retry.pause()
        raise retry.timeout_error(what) from retry.last

    def _call_any_group(self, method: str, request: Any, timeout: float | None,
                        what: str) -> Any:
        """A GroupCoordinator RPC any node answers (ListGroups), rotating over brokers on
        retriable errors until ``timeout`` (the next broker is its metadata refresh)."""
        cluster = self._cluster
        retry = self._retry.start(self._default_timeout if timeout is None else timeout)
        while retry.next_attempt():
            address = self._next_address()
            stub = group_pb2_grpc.GroupCoordinatorStub(cluster.channel(address))
            try:
                return cluster.call(address, getattr(stub, method), request,
                                    retry.attempt_timeout(cluster.request_timeout_s), what)
            except RaftkaError as e:
                if retry.classify(e) is Step.RAISE:
                    raise
            retry.pause()
        raise retry.timeout_error(what) from retry.last

    def _call_leader(self, topic: str, partition: int, method: str, request: Any,
                     timeout: float | None, what: str) -> Any:
        """A Broker RPC for one partition, sent to its leader and retried by the policy
        (``_retry.py``) until ``timeout``: NOT_LEADER is followed to the leader it names,
        other ``invalid_metadata`` errors forget the leader and refresh the metadata."""
        cluster = self._cluster
        retry = self._retry.start(self._default_timeout if timeout is None else timeout)
        while retry.next_attempt():
            address = cluster.leader_address(topic, partition)
            if address is None:
                cluster.try_refresh(min(retry.remaining(), 5.0), _LEADER_REFRESH_MIN_AGE_S)
                t = cluster.topic(topic)
                if t is None:
                    cluster.wait_for_topic(topic, max(retry.remaining(), 0.1))
                    continue
                if t.partition(partition) is None:
                    raise UnknownPartitionError(
                        f"topic {topic!r} has partitions 0..{t.partition_count - 1}; "
                        f"partition {partition} does not exist")
                address = cluster.leader_address(topic, partition)
                if address is None:
                    retry.last = RaftkaError(f"{topic}/{partition} has no leader yet",
                                             retriable=True)
                    retry.pause()
                    continue
            try:
                return cluster.call_broker(address, method, request,
                                           retry.attempt_timeout(cluster.request_timeout_s),
                                           what)
            except RaftkaError as e:
                leader = named_leader(e, cluster.broker_address)
                step = retry.on_error(e, failed=address, leader=leader)
                if step is Step.RAISE:
                    raise
                if isinstance(e, NotLeaderError):
                    cluster.note_not_leader(topic, partition, e)  # the hint, or none
                else:
                    cluster.forget_leader(topic, partition)
                if step is Step.FOLLOW:
                    continue
                if step is Step.REFRESH:
                    if (cluster.try_refresh(min(max(retry.remaining(), 0.1), 2.0),
                                            retry.policy.refresh_min_age_s)
                            and isinstance(e, UnknownTopicError)
                            and cluster.topic(topic) is None):
                        raise  # deleted: the fresh metadata agrees
            retry.pause()
        raise retry.timeout_error(what) from retry.last


def merge_cluster_status(brokers: Mapping[int, str],
                         answers: Mapping[int, tuple[Any, Any]]) -> ClusterStatus:
    """Merge every answering node's (MetadataResponse, DescribeClusterResponse) into one
    cluster-wide view. ``brokers``: every node id -> address; nodes missing from
    ``answers`` did not answer. Pure (tested without a cluster)."""
    # who each answering node cannot reach
    unreachable_from: dict[int, set[int]] = {
        nid: {n.id for n in peers.nodes if not n.reachable and n.id != nid}
        for nid, (_, peers) in answers.items()
    }
    controllers = Counter(meta.controller_id for meta, _ in answers.values()
                          if meta.controller_id)
    # (topic, partition) -> node id -> that node's PartitionInfo
    views: dict[tuple[str, int], dict[int, Any]] = {}
    replicas_of: dict[tuple[str, int], tuple[int, ...]] = {}
    for nid, (meta, _) in answers.items():
        for t in meta.topics:
            for p in t.partitions:
                key = (t.name, p.partition)
                views.setdefault(key, {})[nid] = p
                replicas_of.setdefault(key, tuple(p.replicas))
    leader_counts: Counter[int] = Counter()
    replica_counts: Counter[int] = Counter()
    leaderless: list[TopicPartition] = []
    under: list[PartitionStatus] = []
    for key in sorted(views):
        replicas = replicas_of[key]
        replica_counts.update(replicas)
        claims = [(info.leader_term, nid) for nid, info in views[key].items()
                  if info.leader_id == nid]
        leader = max(claims)[1] if claims else 0
        if leader:
            leader_counts[leader] += 1
        else:
            leaderless.append(TopicPartition(*key))
        missing = tuple(
            r for r in replicas
            if r not in answers  # down, or not answering us
            or (leader and r in unreachable_from.get(leader, ()))  # cut off from its leader
            or key not in views or r not in views[key]
            or not views[key][r].leader_term  # the node does not run the replica (yet)
        )
        if missing or not leader:
            under.append(PartitionStatus(key[0], key[1], leader, replicas, missing))
    nodes = tuple(
        NodeStatus(
            id=nid, address=brokers[nid], reachable=nid in answers,
            leader_count=leader_counts.get(nid, 0), replica_count=replica_counts.get(nid, 0),
            seen_down_by=tuple(sorted(o for o, down in unreachable_from.items()
                                      if nid in down)))
        for nid in sorted(brokers)
    )
    return ClusterStatus(
        nodes=nodes,
        controller_id=controllers.most_common(1)[0][0] if controllers else 0,
        partition_count=len(views),
        leaderless=tuple(leaderless),
        under_replicated=tuple(under),
    )
