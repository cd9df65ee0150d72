"""``raftka.aio.Admin``: the asyncio twin of :class:`raftka.client.Admin`.

Every method is a coroutine that runs the same operation as the blocking Admin
(``raftka.client._admin.AdminOps``: the same retries, redirects, ambiguity checks) with
``grpc.aio`` I/O (``_cluster.run``). ``cluster_status`` and ``list_groups`` ask every
node concurrently (``asyncio.gather``), not on threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from raftka.client._security import Acl, ClientSecurity, Quota, UserDescription
from raftka.client._admin import AdminOps
from raftka.client._dlq import DeadLetter
from raftka.client._transactions import TransactionDescription
from raftka.client._ops import Ops
from raftka.client._types import (
    BrokerDescription,
    ClusterDescription,
    ClusterStatus,
    ConfigEntry,
    GroupDescription,
    GroupListing,
    GroupOffsetReset,
    NodeStats,
    PartitionOffsets,
    TopicDescription,
    TopicPartition,
)
from raftka.client.aio._cluster import AsyncCluster, run

__all__ = ["Admin"]

T = TypeVar("T")


class Admin(AdminOps):
    """Topics, offsets, cluster status and consumer groups, as coroutines::

        async with raftka.aio.Admin("127.0.0.1:7001") as admin:
            await admin.create_topic("orders", partitions=3)
            await admin.wait_for_topic_ready("orders")

    ``timeout`` arguments are seconds for the whole operation, retries included; each RPC
    attempt has a deadline of at most ``request_timeout_ms``. Use it from one event loop.
    """

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        request_timeout_ms: int = 5000,
        security: ClientSecurity | None = None,
        default_timeout: float = 30.0,
    ) -> None:
        super().__init__(AsyncCluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                  security=security),
                         default_timeout)

    async def close(self) -> None:
        await self._cluster.close()  # type: ignore[attr-defined]

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _run(self, ops: Ops[T]) -> T:
        return await run(self._cluster, ops)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ security

    async def create_user(self, name: str, password: str, *, replace: bool = False,
                          iterations: int = 0, timeout: float | None = None) -> None:
        """As ``raftka.Admin.create_user``."""
        return await self._run(self.create_user_ops(name, password, replace=replace,
                                                    iterations=iterations, timeout=timeout))

    async def delete_user(self, name: str, *, timeout: float | None = None) -> None:
        return await self._run(self.delete_user_ops(name, timeout=timeout))

    async def list_users(self, *, timeout: float | None = None) -> list[UserDescription]:
        return await self._run(self.list_users_ops(timeout=timeout))

    async def create_acls(self, acls: Iterable[Acl], *, timeout: float | None = None) -> None:
        return await self._run(self.create_acls_ops(acls, timeout=timeout))

    async def delete_acls(self, acls: Iterable[Acl], *, timeout: float | None = None) -> int:
        return await self._run(self.delete_acls_ops(acls, timeout=timeout))

    async def list_acls(self, *, principal: str = "", resource_type: str = "",
                        resource_name: str = "", timeout: float | None = None) -> list[Acl]:
        return await self._run(self.list_acls_ops(
            principal=principal, resource_type=resource_type, resource_name=resource_name,
            timeout=timeout))

    async def set_quota(self, entity: str, *, produce_bytes_per_s: int = 0,
                        fetch_bytes_per_s: int = 0, requests_per_s: int = 0,
                        timeout: float | None = None) -> None:
        return await self._run(self.set_quota_ops(
            entity, produce_bytes_per_s=produce_bytes_per_s,
            fetch_bytes_per_s=fetch_bytes_per_s, requests_per_s=requests_per_s,
            timeout=timeout))

    async def list_quotas(self, *, timeout: float | None = None) -> list[Quota]:
        return await self._run(self.list_quotas_ops(timeout=timeout))

    async def whoami(self, *, timeout: float | None = None) -> str:
        return await self._run(self.whoami_ops(timeout=timeout))

    async def wait_for_brokers(self, timeout: float = 5.0) -> list[BrokerDescription]:
        """Wait until some broker answers a metadata request; returns the brokers it
        knows. Raises NoBrokersAvailable after ``timeout``. A cheap first call that tells
        "nothing is running there" apart from slower failures."""
        return await self._run(self.wait_for_brokers_ops(timeout))

    async def create_topic(
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
        return await self._run(self.create_topic_ops(name, partitions, replication_factor,
                                                     configs, timeout=timeout))

    async def delete_topic(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a topic. Raises UnknownTopicError if it does not exist."""
        return await self._run(self.delete_topic_ops(name, timeout=timeout))

    # cluster operations (the sync Admin's docstrings; README "Cluster operations")
    async def reassign_partition(self, topic: str, partition: int, replicas, *,
                                 timeout: float | None = None) -> None:
        await self._run(self.reassign_partition_ops(topic, partition, replicas,
                                                    timeout=timeout))

    async def cancel_reassignment(self, topic: str, partition: int, *,
                                  timeout: float | None = None) -> None:
        await self._run(self.cancel_reassignment_ops(topic, partition, timeout=timeout))

    async def list_reassignments(self, topic: str = "", *, timeout: float | None = None):
        return await self._run(self.list_reassignments_ops(topic, timeout=timeout))

    async def alter_replication_factor(self, topic: str, replication_factor: int, *,
                                       timeout: float | None = None) -> None:
        await self._run(self.alter_replication_factor_ops(topic, replication_factor,
                                                          timeout=timeout))

    async def set_reassignment_throttle(self, bytes_per_s: int, *,
                                        timeout: float | None = None) -> None:
        await self._run(self.set_reassignment_throttle_ops(bytes_per_s, timeout=timeout))

    async def decommission_node(self, node_id: int, *, cancel: bool = False,
                                dead: bool = False, timeout: float | None = None) -> None:
        await self._run(self.decommission_node_ops(node_id, cancel=cancel, dead=dead,
                                                   timeout=timeout))

    async def list_nodes(self, *, timeout: float | None = None):
        return await self._run(self.list_nodes_ops(timeout=timeout))

    async def describe_balancer(self, *, timeout: float | None = None):
        return await self._run(self.describe_balancer_ops(timeout=timeout))

    async def pause_balancer(self, *, timeout: float | None = None) -> None:
        await self._run(self.set_balancer_paused_ops(True, timeout=timeout))

    async def resume_balancer(self, *, timeout: float | None = None) -> None:
        await self._run(self.set_balancer_paused_ops(False, timeout=timeout))

    async def add_partitions(self, topic: str, total_count: int, *,
                       timeout: float | None = None) -> TopicDescription:
        """Grow ``topic`` to ``total_count`` partitions (Kafka's create-partitions). The new
        partitions are placed like a create's; their leaders may not be elected yet (see
        :meth:`wait_for_topic_ready`). Keys may hash to other partitions afterwards.
        Raises UnknownTopicError, or InvalidRequestError when ``total_count`` is not more
        than the current count (partitions are never removed) or the topic is internal."""
        return await self._run(self.add_partitions_ops(topic, total_count, timeout=timeout))

    async def alter_topic_config(
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
        return await self._run(self.alter_topic_config_ops(topic, set, delete, validate_only,
                                                          timeout=timeout))

    async def describe_topic_configs(self, topic: str, *,
                               timeout: float | None = None) -> list[ConfigEntry]:
        """Every config the node knows for ``topic``, by name: its value, whether it is set
        on the topic (``source == "TOPIC"``) or the default, whether it is read-only, and
        what it means. Raises UnknownTopicError if the topic does not exist."""
        return await self._run(self.describe_topic_configs_ops(topic, timeout=timeout))

    async def list_topics(self, *, timeout: float | None = None) -> list[str]:
        """Topic names, sorted."""
        return await self._run(self.list_topics_ops(timeout=timeout))

    async def describe_topic(self, name: str, *, timeout: float | None = None) -> TopicDescription:
        """Partitions, leaders, replicas, watermarks and configs of a topic. Raises
        UnknownTopicError if it does not exist."""
        return await self._run(self.describe_topic_ops(name, timeout=timeout))

    async def describe_topics(self, names: Iterable[str] | None = None, *,
                        timeout: float | None = None) -> list[TopicDescription]:
        """Every topic (or the named ones that exist), sorted by name, from one broker's
        metadata in one request. That node may lag the controller by a moment; use
        :meth:`describe_topic` for the controller's view of one topic."""
        return await self._run(self.describe_topics_ops(names, timeout=timeout))

    async def describe_cluster(self, *, timeout: float | None = None) -> ClusterDescription:
        """The answering node's own view (reachability and leaders as it sees them); see
        :meth:`cluster_status` for the merged cluster-wide view."""
        return await self._run(self.describe_cluster_ops(timeout=timeout))

    async def describe_node_stats(self, *,
                                  timeout: float | None = None) -> dict[int, NodeStats]:
        """Every node's request statistics since it started (cumulative: produce and fetch
        latency histograms, records and bytes), asked concurrently; nodes that do not
        answer are left out."""
        return await self._run(self.describe_node_stats_ops(timeout=timeout))

    async def cluster_status(self, *, timeout: float | None = None) -> ClusterStatus:
        """A cluster-wide view: every node asked in parallel (see the module docstring).
        ``describe_cluster`` is one node's local view; this merges all of them."""
        return await self._run(self.cluster_status_ops(timeout=timeout))

    async def list_offsets(self, topic: str, partition: int, spec: str | int = "latest", *,
                     timeout: float | None = None) -> PartitionOffsets:
        """The offset of ``spec`` in a partition, asked of its leader: ``"earliest"`` (the
        log start), ``"latest"`` (the high watermark: the next offset to be written) or a
        time in ms since the epoch (the first offset appended at or after it; the high
        watermark if none was)."""
        return await self._run(self.list_offsets_ops(topic, partition, spec, timeout=timeout))

    async def list_groups(self, *, timeout: float | None = None) -> list[GroupListing]:
        """Every consumer group, sorted by id. A node lists the groups with offsets in the
        ``__consumer_offsets`` partitions it holds plus the groups it coordinates, so every
        node is asked (in parallel) and the answers merged; a group's entry from its own
        coordinator wins (it knows the members). Raises NoBrokersAvailable when no node
        answered."""
        return await self._run(self.list_groups_ops(timeout=timeout))

    async def list_transactions(self, *, states: Iterable[str] = (),
                                timeout: float | None = None) -> list[TransactionDescription]:
        """Every transactional id (in ``states``, if given), sorted by id."""
        return await self._run(self.list_transactions_ops(states=states, timeout=timeout))

    async def describe_transaction(self, transactional_id: str, *,
                                   timeout: float | None = None) -> TransactionDescription:
        """The id's state at its coordinator. Raises TransactionalIdNotFoundError."""
        return await self._run(self.describe_transaction_ops(transactional_id,
                                                             timeout=timeout))

    async def abort_transaction(self, transactional_id: str, *,
                                timeout: float | None = None) -> None:
        """Abort the id's open transaction; its producer is fenced."""
        await self._run(self.abort_transaction_ops(transactional_id, timeout=timeout))

    async def describe_group(self, group_id: str, *,
                       timeout: float | None = None) -> GroupDescription:
        """Members with their assignments, and per partition the committed offset, the log
        end and the lag. A log end the coordinator did not know is asked of the
        partition's leader. Raises UnknownGroupError."""
        return await self._run(self.describe_group_ops(group_id, timeout=timeout))

    async def committed_offsets(self, group_id: str,
                          partitions: Iterable[tuple[str, int]] | None = None, *,
                          timeout: float | None = None) -> dict[TopicPartition, int]:
        """The group's committed offsets (every one, or those of ``partitions``); a
        partition without a commit is left out."""
        return await self._run(self.committed_offsets_ops(group_id, partitions, timeout=timeout))

    async def reset_group_offsets(
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
        return await self._run(self.reset_group_offsets_ops(
            group_id, topic, partitions=partitions, to=to, timestamp_ms=timestamp_ms,
            dry_run=dry_run, timeout=timeout))

    async def delete_group(self, group_id: str, *, timeout: float | None = None) -> None:
        """Delete an empty group and its committed offsets. Raises UnknownGroupError, or
        GroupNotEmptyError while it has members."""
        return await self._run(self.delete_group_ops(group_id, timeout=timeout))

    # ------------------------------------------------------------------ dead letters

    async def list_dead_letters(self, group_id: str, *, include_replayed: bool = False,
                                dead_letter_topic: str | None = None,
                                timeout: float | None = None) -> list[DeadLetter]:
        """As ``raftka.Admin.list_dead_letters``."""
        return await self._run(self.list_dead_letters_ops(
            group_id, include_replayed=include_replayed,
            dead_letter_topic=dead_letter_topic, timeout=timeout))

    async def dead_letter(self, group_id: str, partition: int, offset: int, *,
                          dead_letter_topic: str | None = None,
                          timeout: float | None = None) -> DeadLetter:
        """As ``raftka.Admin.dead_letter``."""
        return await self._run(self.dead_letter_ops(group_id, partition, offset,
                                                    dead_letter_topic=dead_letter_topic,
                                                    timeout=timeout))

    async def replay_dead_letters(self, group_id: str,
                                  places: Iterable[tuple[int, int]] | None = None, *,
                                  dead_letter_topic: str | None = None,
                                  timeout: float | None = None
                                  ) -> list[tuple[DeadLetter, int, int]]:
        """As ``raftka.Admin.replay_dead_letters``."""
        return await self._run(self.replay_dead_letters_ops(
            group_id, places, dead_letter_topic=dead_letter_topic, timeout=timeout))

    async def replay_letters(self, letters: Iterable[DeadLetter], *,
                             timeout: float | None = None) -> list[tuple[DeadLetter, int, int]]:
        """As ``raftka.Admin.replay_letters``."""
        return await self._run(self.replay_letters_ops(letters, timeout=timeout))

    async def wait_for_topic_ready(self, name: str, timeout: float = 30.0) -> TopicDescription:
        """Wait until every partition of the topic has a leader that serves it: the topic
        description names a leader for each partition and each of those leaders answers a
        zero-wait Fetch (not NOT_LEADER). Returns the last description; raises
        RaftkaTimeoutError (or UnknownTopicError if it never appears)."""
        return await self._run(self.wait_for_topic_ready_ops(name, timeout))
