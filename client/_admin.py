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

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from raftka.client._cluster import Cluster, ClusterState
from raftka.client._cluster_ops import BalancerStatus, ClusterNode, Reassignment
from raftka.client._security import Acl, ClientSecurity, Quota, UserDescription
from raftka.client._ops import Gather, Ops, Refresh, Rpc, backoff, run_sync
from raftka.client._coordinator import GroupCoordinatorClient
from raftka.client._dlq import DeadLetter, DeadLetterOps
from raftka.client._transactions import TransactionDescription, TxnCoordinatorClient
from raftka.client._retry import RetryPolicy, Step, named_leader
from raftka.client._rolling import NodeRestart, rolling_restart
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
from raftka.v1 import admin_pb2, broker_pb2, group_pb2, txn_pb2

__all__ = ["Admin", "AdminOps"]

T = TypeVar("T")

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


class AdminOps(DeadLetterOps):
    """Admin's operations (``_ops.py`` generators) over a :class:`ClusterState`: the
    logic of :class:`Admin` and of the asyncio ``raftka.client.aio.Admin``, which run
    them with blocking and ``grpc.aio`` I/O respectively."""

    def __init__(self, cluster: ClusterState, default_timeout: float = 30.0) -> None:
        self._cluster = cluster
        self._default_timeout = default_timeout
        self._retry = CALL_RETRY
        self._rotation = 0
        self._groups: dict[str, GroupCoordinatorClient] = {}

    def wait_for_brokers_ops(self, timeout: float = 5.0) -> Ops[list[BrokerDescription]]:
        """Wait until some broker answers a metadata request; returns the brokers it
        knows. Raises NoBrokersAvailable after ``timeout``. A cheap first call that tells
        "nothing is running there" apart from slower failures."""
        retry = WAIT_RETRY.start(timeout)
        while True:
            try:
                yield Refresh(max(retry.remaining(), 0.1), raise_errors=True)
                return self._cluster.brokers()
            except NoBrokersAvailable as e:
                if retry.remaining() <= 0.05:
                    raise NoBrokersAvailable(e.tried, e.last_error, timeout) from e
            yield backoff(retry)

    # ------------------------------------------------------------------ topics

    def create_topic_ops(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 3,
        configs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Ops[TopicDescription]:
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
            resp = (yield from self._call_ops("CreateTopic", request, timeout,
                                              f"create topic {name!r}", ambiguous))
        except TopicExistsError:
            if not ambiguous[0]:
                raise
            # Our earlier attempt may have created it: accept it if it is what we asked for.
            existing = (yield from self.describe_topic_ops(name, timeout=timeout))
            if (existing.partition_count == partitions
                    and existing.replication_factor == replication_factor):
                return existing
            raise
        if resp.HasField("topic"):
            return TopicDescription.from_pb(resp.topic)
        return (yield from self.describe_topic_ops(name, timeout=timeout))

    def delete_topic_ops(self, name: str, *, timeout: float | None = None) -> Ops[None]:
        """Delete a topic. Raises UnknownTopicError if it does not exist."""
        ambiguous: list[bool] = [False]
        try:
            (yield from self._call_ops("DeleteTopic", admin_pb2.DeleteTopicRequest(name=name),
                                       timeout,
                       f"delete topic {name!r}", ambiguous))
        except UnknownTopicError:
            if not ambiguous[0]:
                raise

    def add_partitions_ops(self, topic: str, total_count: int, *,
                       timeout: float | None = None) -> Ops[TopicDescription]:
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
            resp = (yield from self._call_ops("AddPartitions", request, timeout,
                              f"add partitions to {topic!r}", ambiguous))
        except InvalidRequestError:
            if not ambiguous[0]:
                raise
            # Our earlier attempt may have done it: accept the count we asked for.
            existing = (yield from self.describe_topic_ops(topic, timeout=timeout))
            if existing.partition_count == total_count:
                return existing
            raise
        if resp.HasField("topic"):
            return TopicDescription.from_pb(resp.topic)
        return (yield from self.describe_topic_ops(topic, timeout=timeout))

    def alter_topic_config_ops(
        self,
        topic: str,
        set: Mapping[str, Any] | None = None,  # noqa: A002 - Kafka's operation name
        delete: Iterable[str] | None = None,
        validate_only: bool = False,
        *,
        timeout: float | None = None,
    ) -> Ops[list[ConfigEntry]]:
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
        resp = (yield from self._call_ops("AlterTopicConfigs", request, timeout,
                          f"alter configs of topic {topic!r}"))
        return [ConfigEntry.from_pb(c) for c in resp.configs]

    def describe_topic_configs_ops(self, topic: str, *,
                               timeout: float | None = None) -> Ops[list[ConfigEntry]]:
        """Every config the node knows for ``topic``, by name: its value, whether it is set
        on the topic (``source == "TOPIC"``) or the default, whether it is read-only, and
        what it means. Raises UnknownTopicError if the topic does not exist."""
        resp = (yield from self._call_ops("DescribeTopicConfigs",
                          admin_pb2.DescribeTopicConfigsRequest(name=topic), timeout,
                          f"describe configs of topic {topic!r}"))
        return [ConfigEntry.from_pb(c) for c in resp.configs]

    def list_topics_ops(self, *, timeout: float | None = None) -> Ops[list[str]]:
        """Topic names, sorted."""
        resp = (yield from self._call_ops("ListTopics", admin_pb2.ListTopicsRequest(), timeout,
                                          "list topics"))
        return sorted(resp.names)

    def describe_topic_ops(self, name: str, *,
                           timeout: float | None = None) -> Ops[TopicDescription]:
        """Partitions, leaders, replicas, watermarks and configs of a topic. Raises
        UnknownTopicError if it does not exist."""
        resp = (yield from self._call_ops("DescribeTopic",
                                          admin_pb2.DescribeTopicRequest(name=name), timeout,
                          f"describe topic {name!r}"))
        return TopicDescription.from_pb(resp.topic)

    def describe_topics_ops(self, names: Iterable[str] | None = None, *,
                        timeout: float | None = None) -> Ops[list[TopicDescription]]:
        """Every topic (or the named ones that exist), sorted by name, from one broker's
        metadata in one request. That node may lag the controller by a moment; use
        :meth:`describe_topic` for the controller's view of one topic."""
        md = yield Refresh(self._default_timeout if timeout is None else timeout,
                           raise_errors=True)
        wanted = None if names is None else set(names)
        return [md.topics[n] for n in sorted(md.topics) if wanted is None or n in wanted]

    def describe_cluster_ops(self, *, timeout: float | None = None) -> Ops[ClusterDescription]:
        """The answering node's own view (reachability and leaders as it sees them); see
        :meth:`cluster_status` for the merged cluster-wide view."""
        resp = (yield from self._call_ops("DescribeCluster", admin_pb2.DescribeClusterRequest(),
                                          timeout,
                          "describe cluster"))
        return ClusterDescription.from_pb(resp)

    def describe_node_stats_ops(self, *, timeout: float | None = None
                                ) -> Ops[dict[int, NodeStats]]:
        """Every node's request statistics since it started (cumulative: produce and fetch
        latency histograms, records and bytes), asked in parallel; nodes that do not
        answer are left out. The web console charts latency from two of these."""
        timeout = self._default_timeout if timeout is None else timeout
        brokers = dict((yield Refresh(timeout, raise_errors=True)).brokers)

        def ask(address: str) -> Ops[NodeStats | None]:
            try:
                return NodeStats.from_pb((yield Rpc(
                    address, "admin", "DescribeNodeStats", admin_pb2.DescribeNodeStatsRequest(),
                    timeout)))
            except RaftkaError:
                return None

        nids = list(brokers)
        results = yield Gather([ask(brokers[nid]) for nid in nids])
        answers = dict(zip(nids, results))
        return {nid: s for nid, s in sorted(answers.items()) if s is not None}

    def cluster_status_ops(self, *, timeout: float | None = None) -> Ops[ClusterStatus]:
        """A cluster-wide view: every node asked in parallel (see the module docstring).
        ``describe_cluster`` is one node's local view; this merges all of them."""
        brokers, answers = (yield from self._node_answers_ops(timeout))
        return merge_cluster_status(brokers, answers)

    def _node_answers_ops(self, timeout: float | None) -> Ops[tuple[dict[int, str],
                                                              dict[int, tuple[Any, Any]]]]:
        """Every node asked in parallel for its Metadata and DescribeCluster: (node id ->
        address, node id -> (MetadataResponse, DescribeClusterResponse) of those that
        answered). ``cluster_status`` and ``raftka top`` merge them."""
        timeout = self._default_timeout if timeout is None else timeout
        md = yield Refresh(timeout, raise_errors=True)
        brokers = dict(md.brokers)
        per_call = min(_STATUS_CALL_TIMEOUT_S, self._cluster.request_timeout_s, timeout)

        def ask(address: str) -> Ops[tuple[Any, Any] | None]:
            try:
                meta = yield Rpc(address, "broker", "Metadata", broker_pb2.MetadataRequest(),
                                 per_call)
                peers = yield Rpc(address, "admin", "DescribeCluster",
                                  admin_pb2.DescribeClusterRequest(), per_call)
            except RaftkaError:
                return None
            return meta, peers

        nids = list(brokers)
        results = yield Gather([ask(brokers[nid]) for nid in nids])
        answers = dict(zip(nids, results))
        return brokers, {n: a for n, a in answers.items() if a}

    # ------------------------------------------------------------------ offsets

    def list_offsets_ops(self, topic: str, partition: int, spec: str | int = "latest", *,
                     timeout: float | None = None) -> Ops[PartitionOffsets]:
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
        resp = (yield from self._call_leader_ops(topic, partition, "ListOffsets", request, timeout,
                                 f"ListOffsets {topic}/{partition}"))
        stable = resp.last_stable_offset if resp.HasField("last_stable_offset") else None
        return PartitionOffsets(topic, partition, resp.offset, resp.high_watermark,
                                resp.log_start_offset, stable)

    # ------------------------------------------------------------------ groups

    def list_groups_ops(self, *, timeout: float | None = None) -> Ops[list[GroupListing]]:
        """Every consumer group, sorted by id. A node lists the groups with offsets in the
        ``__consumer_offsets`` partitions it holds plus the groups it coordinates, so every
        node is asked (in parallel) and the answers merged; a group's entry from its own
        coordinator wins (it knows the members). Raises NoBrokersAvailable when no node
        answered."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        brokers = dict((yield Refresh(timeout, raise_errors=True)).brokers)
        per_call = min(_STATUS_CALL_TIMEOUT_S, self._cluster.request_timeout_s, timeout)

        def ask(address: str) -> Ops[Any]:
            try:
                return (yield Rpc(address, "group", "ListGroups",
                                  group_pb2.ListGroupsRequest(), per_call, "ListGroups"))
            except RaftkaError as e:
                return e

        nids = list(brokers)
        results = yield Gather([ask(brokers[nid]) for nid in nids])
        answers = dict(zip(nids, results))
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
            resp = (yield from self._call_any_group_ops("ListGroups", group_pb2.ListGroupsRequest(),
                                        max(deadline - time.monotonic(), 0.1), "list groups"))
            return sorted((GroupListing.from_pb(g) for g in resp.groups),
                          key=lambda g: g.group_id)
        return [merged[g] for g in sorted(merged)]

    def describe_group_ops(self, group_id: str, *,
                       timeout: float | None = None) -> Ops[GroupDescription]:
        """Members with their assignments, and per partition the committed offset, the log
        end and the lag. A log end the coordinator did not know is asked of the
        partition's leader. Raises UnknownGroupError."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        resp = (yield from self._group(group_id).call_ops(
            "DescribeGroup", group_pb2.DescribeGroupRequest(group_id=group_id), timeout,
            f"describe group {group_id!r}"))
        partitions = []
        read_committed = resp.isolation_level == "read_committed"
        for p in resp.partitions:
            lag = GroupPartitionLag.from_pb(p)
            if lag.log_end_offset is None:
                lag = (yield from self._with_log_end_ops(lag, deadline, read_committed))
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
            isolation_level=resp.isolation_level or "read_uncommitted",
        )

    def _with_log_end_ops(self, lag: GroupPartitionLag, deadline: float,
                          read_committed: bool = False) -> Ops[GroupPartitionLag]:
        remaining = min(deadline - time.monotonic(), self._cluster.request_timeout_s)
        if remaining <= 0:
            return lag
        try:
            offsets = (yield from self.list_offsets_ops(lag.topic, lag.partition, "latest",
                                                        timeout=remaining))
        except RaftkaError:
            return lag  # unknown stays unknown; the description is still useful
        end, stable = offsets.high_watermark, offsets.last_stable_offset
        reach = stable if read_committed and stable is not None else end
        return GroupPartitionLag(
            lag.topic, lag.partition, lag.committed_offset, end,
            None if lag.committed_offset is None else max(reach - lag.committed_offset, 0),
            lag.member_id, stable)

    def committed_offsets_ops(self, group_id: str,
                          partitions: Iterable[tuple[str, int]] | None = None, *,
                          timeout: float | None = None) -> Ops[dict[TopicPartition, int]]:
        """The group's committed offsets (every one, or those of ``partitions``); a
        partition without a commit is left out."""
        request = group_pb2.OffsetFetchRequest(group_id=group_id)
        by_topic: dict[str, list[int]] = {}
        for t, p in partitions or ():
            by_topic.setdefault(t, []).append(p)
        for t in sorted(by_topic):
            request.partitions.add(topic=t, partitions=sorted(by_topic[t]))
        resp = (yield from self._group(group_id).call_ops("FetchOffsets", request,
                                          self._default_timeout if timeout is None else timeout,
                                          f"fetch offsets of group {group_id!r}"))
        return {TopicPartition(o.topic, o.partition): o.offset for o in resp.offsets
                if o.offset >= 0}

    def reset_group_offsets_ops(
        self,
        group_id: str,
        topic: str | None = None,
        *,
        partitions: Iterable[tuple[str, int]] | None = None,
        to: str | int | None = None,
        timestamp_ms: int | None = None,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> Ops[list[GroupOffsetReset]]:
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
        targets = (yield from self._reset_targets_ops(topic, partitions, timeout))
        previous = (yield from self.committed_offsets_ops(group_id, targets, timeout=timeout))
        plan: list[GroupOffsetReset] = []
        for tp in targets:
            remaining = max(deadline - time.monotonic(), 0.1)
            if timestamp_ms is not None:
                new = (yield from self.list_offsets_ops(tp.topic, tp.partition, timestamp_ms,
                                        timeout=remaining)).offset
            elif isinstance(to, int):
                bounds = (yield from self.list_offsets_ops(tp.topic, tp.partition, "latest",
                                                           timeout=remaining))
                new = min(max(to, bounds.log_start_offset), bounds.high_watermark)
            else:
                new = (yield from self.list_offsets_ops(tp.topic, tp.partition, to,
                                                        timeout=remaining)).offset
            plan.append(GroupOffsetReset(tp.topic, tp.partition, previous.get(tp), new))
        if not dry_run:
            request = group_pb2.ResetOffsetsRequest(group_id=group_id)
            for r in plan:
                request.offsets.add(topic=r.topic, partition=r.partition, offset=r.new_offset)
            (yield from self._group(group_id).call_ops("ResetOffsets", request,
                                       max(deadline - time.monotonic(), 0.1),
                                       f"reset offsets of group {group_id!r}"))
        return plan

    def _reset_targets_ops(self, topic: str | None, partitions: Iterable[tuple[str, int]] | None,
                       timeout: float) -> Ops[list[TopicPartition]]:
        if (topic is None) == (partitions is None):
            raise ValueError("give either a topic (every partition) or partitions "
                             "[(topic, partition), ...]")
        try:  # a fresh view: partitions may have been added a moment ago
            yield Refresh(min(timeout, 5.0), raise_errors=True)
        except RaftkaError:
            pass  # wait_for_topic below retries and reports
        if topic is not None:
            desc = (yield from self._cluster.wait_for_topic_ops(topic, min(timeout, 10.0)))
            return [TopicPartition(topic, p.partition) for p in desc.partitions]
        wanted = sorted({TopicPartition(t, int(p)) for t, p in partitions or ()})
        if not wanted:
            raise ValueError("partitions is empty: name at least one (topic, partition)")
        for t in sorted({tp.topic for tp in wanted}):
            desc = (yield from self._cluster.wait_for_topic_ops(t, min(timeout, 10.0)))
            count = desc.partition_count
            for tp in wanted:
                if tp.topic == t and not 0 <= tp.partition < count:
                    raise UnknownPartitionError(
                        f"topic {t!r} has partitions 0..{count - 1}; partition "
                        f"{tp.partition} does not exist")
        return wanted

    def delete_group_ops(self, group_id: str, *, timeout: float | None = None) -> Ops[None]:
        """Delete an empty group and its committed offsets. Raises UnknownGroupError, or
        GroupNotEmptyError while it has members."""
        ambiguous: list[bool] = [False]
        try:
            (yield from self._group(group_id).call_ops(
                "DeleteGroup", group_pb2.DeleteGroupRequest(group_id=group_id),
                self._default_timeout if timeout is None else timeout,
                f"delete group {group_id!r}", ambiguous))
        except UnknownGroupError:
            if not ambiguous[0]:
                raise
            # our earlier attempt deleted it

    # ------------------------------------------------------------------ transactions

    def list_transactions_ops(self, *, states: Iterable[str] = (),
                              timeout: float | None = None
                              ) -> Ops[list[TransactionDescription]]:
        """Every transactional id (in ``states``, if given), sorted by id: each node lists
        the ids it coordinates, so every node is asked (in parallel) and the answers
        merged. Raises NoBrokersAvailable when no node answered."""
        timeout = self._default_timeout if timeout is None else timeout
        brokers = dict((yield Refresh(timeout, raise_errors=True)).brokers)
        per_call = min(_STATUS_CALL_TIMEOUT_S, self._cluster.request_timeout_s, timeout)
        request = txn_pb2.ListTransactionsRequest(states=list(states))

        def ask(address: str) -> Ops[Any]:
            try:
                return (yield Rpc(address, "txn", "ListTransactions", request, per_call,
                                  "ListTransactions"))
            except RaftkaError as e:
                return e

        results = yield Gather([ask(brokers[nid]) for nid in brokers])
        answers = [r for r in results if not isinstance(r, RaftkaError)]
        if not answers:
            errors = [r for r in results if isinstance(r, RaftkaError)]
            if errors and not errors[0].retriable:
                raise errors[0]
            raise NoBrokersAvailable(list(brokers.values()), errors[0] if errors else None)
        merged: dict[str, TransactionDescription] = {}
        for r in answers:
            for t in r.transactions:
                merged[t.transactional_id] = TransactionDescription.from_pb(t)
        return [merged[k] for k in sorted(merged)]

    def describe_transaction_ops(self, transactional_id: str, *,
                                 timeout: float | None = None) -> Ops[TransactionDescription]:
        """The id's state at its coordinator. Raises TransactionalIdNotFoundError."""
        resp = (yield from self._txn(transactional_id).call_ops(
            "DescribeTransactions", txn_pb2.DescribeTransactionsRequest(
                transactional_ids=[transactional_id]),
            self._default_timeout if timeout is None else timeout,
            f"describe transactional id {transactional_id!r}"))
        return TransactionDescription.from_pb(resp.transactions[0])

    def abort_transaction_ops(self, transactional_id: str, *,
                              timeout: float | None = None) -> Ops[None]:
        """An operator's abort of the id's open transaction (its producer is fenced: its
        epoch is bumped). Raises TransactionalIdNotFoundError, InvalidTxnStateError when no
        transaction is open."""
        (yield from self._txn(transactional_id).call_ops(
            "AbortTransaction", txn_pb2.AbortTransactionRequest(
                transactional_id=transactional_id),
            self._default_timeout if timeout is None else timeout,
            f"abort the transaction of {transactional_id!r}"))

    def _txn(self, transactional_id: str) -> TxnCoordinatorClient:
        key = "\0txn:" + transactional_id  # shares the group clients' bounded cache
        client = self._groups.get(key)
        if client is None:
            if len(self._groups) >= _GROUP_CLIENTS_MAX:
                self._groups.pop(next(iter(self._groups)))
            client = self._groups[key] = TxnCoordinatorClient(self._cluster, transactional_id)
        return client  # type: ignore[return-value]

    def _group(self, group_id: str) -> GroupCoordinatorClient:
        client = self._groups.get(group_id)
        if client is None:
            if len(self._groups) >= _GROUP_CLIENTS_MAX:
                self._groups.pop(next(iter(self._groups)))
            client = self._groups[group_id] = GroupCoordinatorClient(self._cluster, group_id)
        return client

    def wait_for_topic_ready_ops(self, name: str, timeout: float = 30.0) -> Ops[TopicDescription]:
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
                desc = (yield from self.describe_topic_ops(name, timeout=remaining))
            except UnknownTopicError as e:  # creation not applied on that node yet
                last = e
                yield backoff(retry)
                continue
            except RaftkaTimeoutError as e:
                last = e.__cause__ or e
                continue
            try:  # for the leaders' addresses
                yield Refresh(min(remaining, 5.0), 0.2, raise_errors=True)
            except RaftkaError as e:
                last = e
            for p in desc.partitions:
                if p.partition in ready:
                    continue
                if not p.has_leader:
                    last = RaftkaError(f"partition {p.partition} has no leader yet")
                    continue
                if (yield from self._probe_leader_ops(name, p.partition, p.leader_id, deadline)):
                    ready.add(p.partition)
            if desc.partitions and len(ready) >= desc.partition_count:
                return desc
            yield backoff(retry)

    def _probe_leader_ops(self, topic: str, partition: int, leader_id: int,
                          deadline: float) -> Ops[bool]:
        address = self._cluster.broker_address(leader_id)
        if address is None:
            return False
        request = broker_pb2.FetchRequest(topic=topic, partition=partition, offset=0,
                                          max_bytes=1, max_wait_ms=0)
        try:
            yield Rpc(address, "broker", "Fetch", request,
                      min(deadline - time.monotonic(), self._cluster.request_timeout_s),
                      f"Fetch {topic}/{partition}")
        except OffsetOutOfRangeError:
            return True  # the leader answered; the log just does not start at 0
        except RaftkaError:
            return False
        return True

    # ------------------------------------------------------------------ cluster operations

    def reassign_partition_ops(self, topic: str, partition: int, replicas: Iterable[int], *,
                               timeout: float | None = None) -> Ops[None]:
        """Move ``topic``/``partition`` to ``replicas`` (``[0]``: the preferred leader).
        Returns once the controller recorded the move; it runs in the background (see
        :meth:`list_reassignments`). InvalidRequestError for an empty, duplicated or
        wrong-sized set, an unknown or draining node, or a partition already moving."""
        request = admin_pb2.ReassignPartitionRequest(topic=topic, partition=partition,
                                                     replicas=list(replicas))
        yield from self._call_ops("ReassignPartition", request, timeout,
                                  f"reassign {topic}/{partition}")

    def cancel_reassignment_ops(self, topic: str, partition: int, *,
                                timeout: float | None = None) -> Ops[None]:
        """Send the move of ``topic``/``partition`` back to its old replicas."""
        request = admin_pb2.CancelReassignmentRequest(topic=topic, partition=partition)
        yield from self._call_ops("CancelReassignment", request, timeout,
                                  f"cancel the move of {topic}/{partition}")

    def list_reassignments_ops(self, topic: str = "", *, timeout: float | None = None
                               ) -> Ops[list[Reassignment]]:
        """The moves in progress, with each replica's progress as its leader knows it."""
        resp = yield from self._call_ops("ListReassignments", admin_pb2.ListReassignmentsRequest(
            topic=topic), timeout, "list reassignments")
        return [Reassignment.from_pb(r) for r in resp.reassignments]

    def alter_replication_factor_ops(self, topic: str, replication_factor: int, *,
                                     timeout: float | None = None) -> Ops[None]:
        """Move every partition of ``topic`` to ``replication_factor`` replicas."""
        request = admin_pb2.AlterReplicationFactorRequest(
            topic=topic, replication_factor=replication_factor)
        yield from self._call_ops("AlterReplicationFactor", request, timeout,
                                  f"alter the replication factor of {topic!r}")

    def set_reassignment_throttle_ops(self, bytes_per_s: int, *,
                                      timeout: float | None = None) -> Ops[None]:
        """What each node may send per second to catch up moving replicas (0: the nodes'
        default pace, 16 MiB/s)."""
        request = admin_pb2.SetReassignmentThrottleRequest(bytes_per_s=bytes_per_s)
        yield from self._call_ops("SetReassignmentThrottle", request, timeout,
                                  "set the reassignment throttle")

    def decommission_node_ops(self, node_id: int, *, cancel: bool = False,
                              dead: bool = False,
                              timeout: float | None = None) -> Ops[None]:
        """Drain node ``node_id`` (its replicas move away; it is then removed), or stop
        draining it (``cancel``). NotEnoughReplicasError if no node could take them.
        ``dead``: the node is gone for good; its replicas are re-created from the others
        (InvalidRequestError if the controller heard from it in the last 5 s)."""
        request = admin_pb2.DecommissionNodeRequest(node_id=node_id, cancel=cancel, dead=dead)
        yield from self._call_ops("DecommissionNode", request, timeout,
                                  f"{'cancel the decommission of' if cancel else 'decommission'}"
                                  f" node {node_id}")

    def list_nodes_ops(self, *, timeout: float | None = None) -> Ops[list[ClusterNode]]:
        resp = yield from self._call_ops("ListNodes", admin_pb2.ListNodesRequest(), timeout,
                                         "list nodes")
        return [ClusterNode.from_pb(n) for n in resp.nodes]

    def describe_balancer_ops(self, *, timeout: float | None = None) -> Ops[BalancerStatus]:
        """The automatic balancer's status, every active node's load and its plan (what it
        would move next, in order: `raftka cluster balance --dry-run`)."""
        resp = yield from self._call_ops("DescribeBalancer",
                                         admin_pb2.DescribeBalancerRequest(), timeout,
                                         "describe the balancer")
        return BalancerStatus.from_pb(resp)

    def set_balancer_paused_ops(self, paused: bool, *,
                                timeout: float | None = None) -> Ops[None]:
        """Pause the balancer (it plans no new move; moves under way finish) or resume it.
        A replicated setting: it survives restarts and controller failover."""
        yield from self._call_ops("SetBalancer", admin_pb2.SetBalancerRequest(paused=paused),
                                  timeout, "pause the balancer" if paused
                                  else "resume the balancer")

    # ------------------------------------------------------------------ security

    def _security_ops(self, method: str, request: Any, timeout: float | None,
                      what: str) -> Ops[Any]:
        return (yield from self._call_ops(method, request, timeout, what, service="security"))

    def create_user_ops(self, name: str, password: str, *, replace: bool = False,
                        iterations: int = 0, timeout: float | None = None) -> Ops[None]:
        from raftka.v1 import security_pb2
        yield from self._security_ops("CreateUser", security_pb2.CreateUserRequest(
            name=name, password=password, replace=replace, iterations=iterations),
            timeout, f"create user {name!r}")

    def delete_user_ops(self, name: str, *, timeout: float | None = None) -> Ops[None]:
        from raftka.v1 import security_pb2
        yield from self._security_ops("DeleteUser", security_pb2.DeleteUserRequest(name=name),
                                      timeout, f"delete user {name!r}")

    def list_users_ops(self, *, timeout: float | None = None) -> Ops[list[UserDescription]]:
        from raftka.v1 import security_pb2
        resp = yield from self._security_ops("ListUsers", security_pb2.ListUsersRequest(),
                                             timeout, "list users")
        return [UserDescription(u.name, u.mechanism, u.iterations) for u in resp.users]

    def create_acls_ops(self, acls: Iterable[Acl], *,
                        timeout: float | None = None) -> Ops[None]:
        from raftka.v1 import security_pb2
        request = security_pb2.CreateAclsRequest(acls=[a.to_pb() for a in acls])
        yield from self._security_ops("CreateAcls", request, timeout, "create ACLs")

    def delete_acls_ops(self, acls: Iterable[Acl], *, timeout: float | None = None) -> Ops[int]:
        from raftka.v1 import security_pb2
        request = security_pb2.DeleteAclsRequest(acls=[a.to_pb() for a in acls])
        resp = yield from self._security_ops("DeleteAcls", request, timeout, "delete ACLs")
        return resp.deleted

    def list_acls_ops(self, *, principal: str = "", resource_type: str = "",
                      resource_name: str = "", timeout: float | None = None) -> Ops[list[Acl]]:
        from raftka.v1 import security_pb2
        rtype = (security_pb2.ResourceType.Value("RESOURCE_TYPE_" + resource_type.upper())
                 if resource_type else 0)
        resp = yield from self._security_ops("ListAcls", security_pb2.ListAclsRequest(
            principal=principal, resource_type=rtype, resource_name=resource_name),
            timeout, "list ACLs")
        return [Acl.from_pb(a) for a in resp.acls]

    def set_quota_ops(self, entity: str, *, produce_bytes_per_s: int = 0,
                      fetch_bytes_per_s: int = 0, requests_per_s: int = 0,
                      timeout: float | None = None) -> Ops[None]:
        from raftka.v1 import security_pb2
        yield from self._security_ops("SetQuota", security_pb2.SetQuotaRequest(
            quota=security_pb2.Quota(entity=entity, produce_bytes_per_s=produce_bytes_per_s,
                                     fetch_bytes_per_s=fetch_bytes_per_s,
                                     requests_per_s=requests_per_s)),
            timeout, f"set the quota of {entity}")

    def list_quotas_ops(self, *, timeout: float | None = None) -> Ops[list[Quota]]:
        from raftka.v1 import security_pb2
        resp = yield from self._security_ops("ListQuotas", security_pb2.ListQuotasRequest(),
                                             timeout, "list quotas")
        return [Quota(q.entity, q.produce_bytes_per_s, q.fetch_bytes_per_s, q.requests_per_s)
                for q in resp.quotas]

    def whoami_ops(self, *, timeout: float | None = None) -> Ops[str]:
        from raftka.v1 import security_pb2
        resp = yield from self._security_ops("WhoAmI", security_pb2.WhoAmIRequest(), timeout,
                                             "whoami")
        return resp.principal

    # ------------------------------------------------------------------ calls

    def _next_address(self) -> str:
        candidates = self._cluster.candidate_addresses()
        address = candidates[self._rotation % len(candidates)]
        self._rotation += 1
        return address

    def _call_ops(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        what: str,
        ambiguous: list[bool] | None = None,
        service: str = "admin",
    ) -> Ops[Any]:
        """Run one admin RPC (``service``: "admin" or "security") against the controller leader, retrying by the policy
        (``_retry.py``) until ``timeout``: NOT_LEADER is followed to the controller it
        names, other retriable errors try other brokers. ``ambiguous[0]`` is set when an
        attempt failed in a way that may have applied the request (rule 6)."""
        cluster = self._cluster
        retry = self._retry.start(self._default_timeout if timeout is None else timeout)
        target = cluster.controller_address()
        while retry.next_attempt():
            address = target or self._next_address()
            try:
                return (yield Rpc(address, service, method, request,
                                  retry.attempt_timeout(cluster.request_timeout_s), what))
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
                yield Refresh(min(max(retry.remaining(), 0.1), 2.0),
                              retry.policy.refresh_min_age_s)
                controller = cluster.controller_address()
                # a stale view may keep naming the node that just failed: rotate instead
                target = controller if controller and controller != address else None
            yield backoff(retry)
        raise retry.timeout_error(what) from retry.last

    def _call_any_group_ops(self, method: str, request: Any, timeout: float | None,
                        what: str) -> Ops[Any]:
        """A GroupCoordinator RPC any node answers (ListGroups), rotating over brokers on
        retriable errors until ``timeout`` (the next broker is its metadata refresh)."""
        cluster = self._cluster
        retry = self._retry.start(self._default_timeout if timeout is None else timeout)
        while retry.next_attempt():
            address = self._next_address()
            try:
                return (yield Rpc(address, "group", method, request,
                                  retry.attempt_timeout(cluster.request_timeout_s), what))
            except RaftkaError as e:
                if retry.classify(e) is Step.RAISE:
                    raise
            yield backoff(retry)
        raise retry.timeout_error(what) from retry.last

    def _call_leader_ops(self, topic: str, partition: int, method: str, request: Any,
                     timeout: float | None, what: str) -> Ops[Any]:
        """A Broker RPC for one partition, sent to its leader and retried by the policy
        (``_retry.py``) until ``timeout``: NOT_LEADER is followed to the leader it names,
        other ``invalid_metadata`` errors forget the leader and refresh the metadata."""
        cluster = self._cluster
        retry = self._retry.start(self._default_timeout if timeout is None else timeout)
        while retry.next_attempt():
            address = cluster.leader_address(topic, partition)
            if address is None:
                yield Refresh(min(retry.remaining(), 5.0), _LEADER_REFRESH_MIN_AGE_S)
                t = cluster.topic(topic)
                if t is None:
                    yield from cluster.wait_for_topic_ops(topic, max(retry.remaining(), 0.1))
                    continue
                if t.partition(partition) is None:
                    raise UnknownPartitionError(
                        f"topic {topic!r} has partitions 0..{t.partition_count - 1}; "
                        f"partition {partition} does not exist")
                address = cluster.leader_address(topic, partition)
                if address is None:
                    retry.last = RaftkaError(f"{topic}/{partition} has no leader yet",
                                             retriable=True)
                    yield backoff(retry)
                    continue
            try:
                return (yield Rpc(address, "broker", method, request,
                                  retry.attempt_timeout(cluster.request_timeout_s), what))
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
                    if ((yield Refresh(min(max(retry.remaining(), 0.1), 2.0),
                                       retry.policy.refresh_min_age_s))
                            and isinstance(e, UnknownTopicError)
                            and cluster.topic(topic) is None):
                        raise e  # deleted: the fresh metadata agrees
            yield backoff(retry)
        raise retry.timeout_error(what) from retry.last


class Admin(AdminOps):
    """Create, delete, list, describe and grow topics; list partition offsets; describe the
    cluster (one node's view, or every node's merged); list, describe, reset and delete
    consumer groups.

    ``timeout`` arguments are seconds for the whole operation, retries included; each RPC
    attempt has a deadline of at most ``request_timeout_ms``. Blocking; the asyncio twin
    is ``raftka.aio.Admin`` (the same operations, see ``AdminOps``).
    """

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        request_timeout_ms: int = 5000,
        default_timeout: float = 30.0,
        security: ClientSecurity | None = None,
    ) -> None:
        """``security``: TLS and credentials (README, Security); plain text if None."""
        super().__init__(Cluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                 security=security), default_timeout)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._cluster.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self, ops: Ops[T]) -> T:
        return run_sync(self._cluster, ops)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ security

    def create_user(self, name: str, password: str, *, replace: bool = False,
                    iterations: int = 0, timeout: float | None = None) -> None:
        """Create a user with this password (the node stores only salted SCRAM-SHA-256
        keys). ``replace``: change the password of an existing user. Raises
        UserExistsError (an existing user without ``replace``)."""
        return self._run(self.create_user_ops(name, password, replace=replace,
                                              iterations=iterations, timeout=timeout))

    def delete_user(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a user. Raises UnknownUserError."""
        return self._run(self.delete_user_ops(name, timeout=timeout))

    def list_users(self, *, timeout: float | None = None) -> list[UserDescription]:
        return self._run(self.list_users_ops(timeout=timeout))

    def create_acls(self, acls: Iterable[Acl], *, timeout: float | None = None) -> None:
        """Add ACLs (adding an existing one changes nothing)."""
        return self._run(self.create_acls_ops(acls, timeout=timeout))

    def delete_acls(self, acls: Iterable[Acl], *, timeout: float | None = None) -> int:
        """Remove these exact ACLs; how many existed."""
        return self._run(self.delete_acls_ops(acls, timeout=timeout))

    def list_acls(self, *, principal: str = "", resource_type: str = "",
                  resource_name: str = "", timeout: float | None = None) -> list[Acl]:
        """Every ACL, or those matching the given filters."""
        return self._run(self.list_acls_ops(principal=principal, resource_type=resource_type,
                                            resource_name=resource_name, timeout=timeout))

    def set_quota(self, entity: str, *, produce_bytes_per_s: int = 0,
                  fetch_bytes_per_s: int = 0, requests_per_s: int = 0,
                  timeout: float | None = None) -> None:
        """Limit what ``entity`` (``User:<name>`` or ``<default>``) may produce to / fetch
        from each node, in bytes per second, and how many requests per second it may send
        to each (0: no limit; all 0 removes the quota). Over it, a node holds the requests
        back: nothing is refused."""
        return self._run(self.set_quota_ops(entity, produce_bytes_per_s=produce_bytes_per_s,
                                            fetch_bytes_per_s=fetch_bytes_per_s,
                                            requests_per_s=requests_per_s, timeout=timeout))

    def list_quotas(self, *, timeout: float | None = None) -> list[Quota]:
        return self._run(self.list_quotas_ops(timeout=timeout))

    def whoami(self, *, timeout: float | None = None) -> str:
        """The principal this client authenticates as (``User:...``)."""
        return self._run(self.whoami_ops(timeout=timeout))

    def reassign_partition(self, topic: str, partition: int, replicas: Iterable[int], *,
                           timeout: float | None = None) -> None:
        """See :meth:`AdminOps.reassign_partition_ops`."""
        self._run(self.reassign_partition_ops(topic, partition, replicas, timeout=timeout))

    def cancel_reassignment(self, topic: str, partition: int, *,
                            timeout: float | None = None) -> None:
        self._run(self.cancel_reassignment_ops(topic, partition, timeout=timeout))

    def list_reassignments(self, topic: str = "", *,
                           timeout: float | None = None) -> list[Reassignment]:
        return self._run(self.list_reassignments_ops(topic, timeout=timeout))

    def alter_replication_factor(self, topic: str, replication_factor: int, *,
                                 timeout: float | None = None) -> None:
        self._run(self.alter_replication_factor_ops(topic, replication_factor,
                                                    timeout=timeout))

    def set_reassignment_throttle(self, bytes_per_s: int, *,
                                  timeout: float | None = None) -> None:
        self._run(self.set_reassignment_throttle_ops(bytes_per_s, timeout=timeout))

    def decommission_node(self, node_id: int, *, cancel: bool = False, dead: bool = False,
                          timeout: float | None = None) -> None:
        self._run(self.decommission_node_ops(node_id, cancel=cancel, dead=dead,
                                             timeout=timeout))

    def list_nodes(self, *, timeout: float | None = None) -> list[ClusterNode]:
        return self._run(self.list_nodes_ops(timeout=timeout))

    def describe_balancer(self, *, timeout: float | None = None) -> BalancerStatus:
        """See :meth:`AdminOps.describe_balancer_ops`."""
        return self._run(self.describe_balancer_ops(timeout=timeout))

    def pause_balancer(self, *, timeout: float | None = None) -> None:
        """Stop the balancer from planning new moves (moves under way finish)."""
        self._run(self.set_balancer_paused_ops(True, timeout=timeout))

    def resume_balancer(self, *, timeout: float | None = None) -> None:
        self._run(self.set_balancer_paused_ops(False, timeout=timeout))

    def wait_for_brokers(self, timeout: float = 5.0) -> list[BrokerDescription]:
        """Wait until some broker answers a metadata request; returns the brokers it
        knows. Raises NoBrokersAvailable after ``timeout``. A cheap first call that tells
        "nothing is running there" apart from slower failures."""
        return self._run(self.wait_for_brokers_ops(timeout))

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
        return self._run(self.create_topic_ops(name, partitions, replication_factor, configs,
                                               timeout=timeout))

    def delete_topic(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a topic. Raises UnknownTopicError if it does not exist."""
        return self._run(self.delete_topic_ops(name, timeout=timeout))

    def add_partitions(self, topic: str, total_count: int, *,
                       timeout: float | None = None) -> TopicDescription:
        """Grow ``topic`` to ``total_count`` partitions (Kafka's create-partitions). The new
        partitions are placed like a create's; their leaders may not be elected yet (see
        :meth:`wait_for_topic_ready`). Keys may hash to other partitions afterwards.
        Raises UnknownTopicError, or InvalidRequestError when ``total_count`` is not more
        than the current count (partitions are never removed) or the topic is internal."""
        return self._run(self.add_partitions_ops(topic, total_count, timeout=timeout))

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
        return self._run(self.alter_topic_config_ops(topic, set, delete, validate_only,
                                                          timeout=timeout))

    def describe_topic_configs(self, topic: str, *,
                               timeout: float | None = None) -> list[ConfigEntry]:
        """Every config the node knows for ``topic``, by name: its value, whether it is set
        on the topic (``source == "TOPIC"``) or the default, whether it is read-only, and
        what it means. Raises UnknownTopicError if the topic does not exist."""
        return self._run(self.describe_topic_configs_ops(topic, timeout=timeout))

    def list_topics(self, *, timeout: float | None = None) -> list[str]:
        """Topic names, sorted."""
        return self._run(self.list_topics_ops(timeout=timeout))

    def describe_topic(self, name: str, *, timeout: float | None = None) -> TopicDescription:
        """Partitions, leaders, replicas, watermarks and configs of a topic. Raises
        UnknownTopicError if it does not exist."""
        return self._run(self.describe_topic_ops(name, timeout=timeout))

    def describe_topics(self, names: Iterable[str] | None = None, *,
                        timeout: float | None = None) -> list[TopicDescription]:
        """Every topic (or the named ones that exist), sorted by name, from one broker's
        metadata in one request. That node may lag the controller by a moment; use
        :meth:`describe_topic` for the controller's view of one topic."""
        return self._run(self.describe_topics_ops(names, timeout=timeout))

    def describe_cluster(self, *, timeout: float | None = None) -> ClusterDescription:
        """The answering node's own view (reachability and leaders as it sees them); see
        :meth:`cluster_status` for the merged cluster-wide view."""
        return self._run(self.describe_cluster_ops(timeout=timeout))

    def describe_node_stats(self, *, timeout: float | None = None) -> dict[int, NodeStats]:
        """Every node's request statistics since it started (cumulative: produce and fetch
        latency histograms, records and bytes), asked in parallel; nodes that do not
        answer are left out. The web console charts latency from two of these."""
        return self._run(self.describe_node_stats_ops(timeout=timeout))

    def cluster_status(self, *, timeout: float | None = None) -> ClusterStatus:
        """A cluster-wide view: every node asked in parallel (see the module docstring).
        ``describe_cluster`` is one node's local view; this merges all of them."""
        return self._run(self.cluster_status_ops(timeout=timeout))

    def list_offsets(self, topic: str, partition: int, spec: str | int = "latest", *,
                     timeout: float | None = None) -> PartitionOffsets:
        """The offset of ``spec`` in a partition, asked of its leader: ``"earliest"`` (the
        log start), ``"latest"`` (the high watermark: the next offset to be written) or a
        time in ms since the epoch (the first offset appended at or after it; the high
        watermark if none was)."""
        return self._run(self.list_offsets_ops(topic, partition, spec, timeout=timeout))

    def list_groups(self, *, timeout: float | None = None) -> list[GroupListing]:
        """Every consumer group, sorted by id. A node lists the groups with offsets in the
        ``__consumer_offsets`` partitions it holds plus the groups it coordinates, so every
        node is asked (in parallel) and the answers merged; a group's entry from its own
        coordinator wins (it knows the members). Raises NoBrokersAvailable when no node
        answered."""
        return self._run(self.list_groups_ops(timeout=timeout))

    def list_transactions(self, *, states: Iterable[str] = (),
                          timeout: float | None = None) -> list[TransactionDescription]:
        """Every transactional id (in ``states``, if given), sorted by id."""
        return self._run(self.list_transactions_ops(states=states, timeout=timeout))

    def describe_transaction(self, transactional_id: str, *,
                             timeout: float | None = None) -> TransactionDescription:
        """The id's state at its coordinator: producer id and epoch, state, partitions,
        start time. Raises TransactionalIdNotFoundError."""
        return self._run(self.describe_transaction_ops(transactional_id, timeout=timeout))

    def abort_transaction(self, transactional_id: str, *,
                          timeout: float | None = None) -> None:
        """Abort the id's open transaction (an operator clearing a stuck one); its
        producer is fenced. Raises InvalidTxnStateError when none is open."""
        self._run(self.abort_transaction_ops(transactional_id, timeout=timeout))

    def describe_group(self, group_id: str, *,
                       timeout: float | None = None) -> GroupDescription:
        """Members with their assignments, and per partition the committed offset, the log
        end and the lag. A log end the coordinator did not know is asked of the
        partition's leader. Raises UnknownGroupError."""
        return self._run(self.describe_group_ops(group_id, timeout=timeout))

    def committed_offsets(self, group_id: str,
                          partitions: Iterable[tuple[str, int]] | None = None, *,
                          timeout: float | None = None) -> dict[TopicPartition, int]:
        """The group's committed offsets (every one, or those of ``partitions``); a
        partition without a commit is left out."""
        return self._run(self.committed_offsets_ops(group_id, partitions, timeout=timeout))

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
        return self._run(self.reset_group_offsets_ops(
            group_id, topic, partitions=partitions, to=to, timestamp_ms=timestamp_ms,
            dry_run=dry_run, timeout=timeout))

    def delete_group(self, group_id: str, *, timeout: float | None = None) -> None:
        """Delete an empty group and its committed offsets. Raises UnknownGroupError, or
        GroupNotEmptyError while it has members."""
        return self._run(self.delete_group_ops(group_id, timeout=timeout))

    # ------------------------------------------------------------------ dead letters
    # (``_dlq.py``: whose dead-letter topic, the headers, replay and its markers)

    def list_dead_letters(self, group_id: str, *, include_replayed: bool = False,
                          dead_letter_topic: str | None = None,
                          timeout: float | None = None) -> list[DeadLetter]:
        """The group's dead letters (a share group's, or a consumer group's written by the
        Consumer's retry option), in (partition, offset) order; replayed ones only with
        ``include_replayed``. Raises UnknownGroupError, UnknownTopicError (nothing
        dead-lettered yet)."""
        return self._run(self.list_dead_letters_ops(
            group_id, include_replayed=include_replayed,
            dead_letter_topic=dead_letter_topic, timeout=timeout))

    def dead_letter(self, group_id: str, partition: int, offset: int, *,
                    dead_letter_topic: str | None = None,
                    timeout: float | None = None) -> DeadLetter:
        """The dead letter at ``partition:offset`` of the group's dead-letter topic.
        Raises ValueError if none is there."""
        return self._run(self.dead_letter_ops(group_id, partition, offset,
                                              dead_letter_topic=dead_letter_topic,
                                              timeout=timeout))

    def replay_dead_letters(self, group_id: str,
                            places: Iterable[tuple[int, int]] | None = None, *,
                            dead_letter_topic: str | None = None,
                            timeout: float | None = None) -> list[tuple[DeadLetter, int, int]]:
        """Send the dead letters at ``places`` ((partition, offset) in the dead-letter
        topic; None: every one not replayed) back to their source topic and partition and
        mark them replayed. Every place is checked first (ValueError, nothing sent).
        Returns ``(letter, partition, offset)`` of each copy."""
        return self._run(self.replay_dead_letters_ops(
            group_id, places, dead_letter_topic=dead_letter_topic, timeout=timeout))

    def replay_letters(self, letters: Iterable[DeadLetter], *,
                       timeout: float | None = None) -> list[tuple[DeadLetter, int, int]]:
        """Replay these dead letters (from ``list_dead_letters``)."""
        return self._run(self.replay_letters_ops(letters, timeout=timeout))

    def rolling_restart(self, restart: Callable[[BrokerDescription], None] | None = None, *,
                        nodes: Sequence[int] | None = None, node_timeout: float = 300.0,
                        allow_unavailable: bool = False,
                        progress: Callable[[str], None] = lambda line: None
                        ) -> list[NodeRestart]:
        """Restart ``nodes`` (default all) one at a time, each back and caught up on every
        partition it replicates before the next; ``restart(node)`` restarts one node
        (``raftka.client.exec_restart(template)`` runs a shell command; None: the
        operator does, when ``progress`` says so). Refuses to begin on an unhealthy cluster
        or, unless ``allow_unavailable``, with partitions of fewer than 3 replicas. Raises
        ``RollingRestartError``. See ``client/_rolling.py`` for the procedure."""
        return rolling_restart(self, restart, nodes=nodes, node_timeout=node_timeout,
                               allow_unavailable=allow_unavailable, progress=progress)

    def wait_for_topic_ready(self, name: str, timeout: float = 30.0) -> TopicDescription:
        """Wait until every partition of the topic has a leader that serves it: the topic
        description names a leader for each partition and each of those leaders answers a
        zero-wait Fetch (not NOT_LEADER). Returns the last description; raises
        RaftkaTimeoutError (or UnknownTopicError if it never appears)."""
        return self._run(self.wait_for_topic_ready_ops(name, timeout))

    def _node_answers(self, timeout: float | None) -> tuple[dict[int, str],
                                                              dict[int, tuple[Any, Any]]]:
        """Every node asked in parallel for its Metadata and DescribeCluster: (node id ->
        address, node id -> (MetadataResponse, DescribeClusterResponse) of those that
        answered). ``cluster_status`` and ``raftka top`` merge them."""
        return self._run(self._node_answers_ops(timeout))

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
