"""The broker: one node's composition of storage, Raft host, controller and partitions.

Asyncio tasks (besides gRPC's): the host's ticker and ready loop (``_host.py``), one sender
per peer (``_transport.py``), and ``_maintenance`` here: retention, controller snapshots and
moving leadership back to preferred leaders, every ``MAINTENANCE_INTERVAL_S``; and
``_compaction`` here: log compaction of ``cleanup.policy=compact`` partitions (propose a
compaction where this node leads and one is due; run each replica's background pass), every
``COMPACTION_INTERVAL_S``, one replica's pass at a time; and ``_reassignments``
(``_reassignment.py``): partition moves this node leads, decommission planning on the
controller leader; and ``balancer`` (``_balancer.py``): automatic balancing on the
controller leader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from raftka.raft import ConfState, Message, Role, Snapshot
from raftka.v1 import admin_pb2, raft_pb2
from raftka.raft.rocksdb import RocksLogDB

from ._config import NodeConfig
from ._controller_commands import encode_create_topic
from ._controller_replica import ControllerReplica, controller_conf
from ._controller_state import FIRST_PARTITION_GROUP_ID, PartitionMeta, TopicMeta
from ._delayed import RocksScheduleStore
from ._errors import BrokerError, Code
from ._host import RaftHost, RaftTiming
from ._metrics import NodeMetrics
from ._offsets import OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIGS, OffsetsReplica
from ._periodic import every
from ._txn_state import TXN_TOPIC, TxnStateReplica
from ._tls import peer_channels
from ._watchlist import ReplicaWatchlist
from ._partition import PartitionConfig, PartitionReplica
from ._produce_coalescer import ENTRY_FORMAT
from ._reassignment import ReassignmentDriver, run as run_reassignments
from ._balancer import Balancer, run as run_balancer

log = logging.getLogger("raftka.broker")

MAINTENANCE_INTERVAL_S = 2.0
COMPACTION_INTERVAL_S = 1.0
OFFSETS_TOPIC_PARTITIONS = 6
OFFSETS_TOPIC_CHECK_S = 0.2


def _observe(histogram: Any, started: float) -> float:
    """Observe the seconds since ``started`` in ``histogram``; now, for the next step."""
    now = time.perf_counter()
    histogram.observe(now - started)
    return now


def _log_abort_failure(task: asyncio.Future) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:  # retried at the next maintenance pass
        log.info("aborting an expired transaction failed: %s; will retry", exc)


class Broker:
    def __init__(self, config: NodeConfig) -> None:
        # The cluster's nodes: config.peers (client addresses), config.kafka_peers and
        # peer_channels.addresses start from --peers (or the membership file of a node that
        # joined) and grow with every node registered in the controller metadata
        # (``_learn_nodes``); config.peers is never shrunk (a removed node keeps its
        # address), but a removed node leaves the Raft transport.
        self.config = config
        self.node_id = config.node_id
        self._txn_aborts: set[asyncio.Future] = set()  # expired transactions being aborted
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = RocksLogDB(config.data_dir / "raft")
        # delayed delivery's pending keys (derived from the partition logs, rebuilt at start)
        self.schedule = RocksScheduleStore(config.data_dir / "schedule")
        self.metrics = NodeMetrics(config.node_id)  # served only with --metrics-listen
        timing = RaftTiming(config.tick_ms / 1000, config.election_ticks, config.heartbeat_ticks)
        self.peer_channels = peer_channels(config)  # where and how Raft traffic goes
        self.host = RaftHost(config.node_id, self.db, self.peer_channels.addresses, timing,
                             observer=self.metrics, open_channel=self.peer_channels.open)
        self.controller = ControllerReplica(
            list(config.initial_node_ids or config.peers), self._reconcile, self.host.mark)
        # node id -> rack (follower fetching): ours from the config, the peers' from the
        # hello that opens each of their Raft streams to us (_transport.py)
        self.racks: dict[int, str] = {nid: "" for nid in config.peers}
        self.racks[config.node_id] = config.rack
        # node id -> the log entry format of its last hello (_transport.py): the
        # partitions' produce coalescing reads it (_produce_coalescer.py rule 5)
        self.peer_entry_formats: dict[int, int] = {}
        self._metadata_ready = False  # metadata_ready()
        self.host.transport.hello = raft_pb2.NodeHello(rack=config.rack,
                                                       entry_format=ENTRY_FORMAT)
        self.partitions: dict[tuple[str, int], PartitionReplica] = {}
        # What the periodic passes visit, so an idle node with thousands of replicas does
        # not walk them all several times a second: the watch lists (``_watchlist.py``) of
        # the replicas that hold share-group state (share maintenance), data entries
        # (retention) and an open transaction (transaction expiry, the settle pass); the
        # compacted replicas' keys (None: rebuild at the next compaction pass, after any
        # metadata change); and whether a leadership may be off its preferred replica (set
        # by every role change and metadata change, cleared by a preferred-leader pass
        # that found none waiting).
        self.share_replicas: ReplicaWatchlist[PartitionReplica] = ReplicaWatchlist()
        self.data_replicas: ReplicaWatchlist[PartitionReplica] = ReplicaWatchlist()
        self.txn_replicas: ReplicaWatchlist[PartitionReplica] = ReplicaWatchlist()
        self._compacted_keys: list[tuple[str, int]] | None = None
        # topic name -> the TopicMeta this node's replicas were last reconciled with
        self._reconciled_topics: dict[str, TopicMeta] = {}
        self._preferred_check_due = True
        self._topic_ids: dict[str, str] = {}
        # Topic names deleted (or re-created under a new id) with the wall-clock ms this
        # node applied it; the group service drops their committed offsets and prunes this.
        self.deleted_topics: dict[str, int] = {}
        # Look for tombstones of deleted topics' groups (_drop_stale_tombstones): at start
        # (a topic may have been deleted while this node was down) and after a deletion.
        self._tombstone_sweep_due = True
        self._tasks: list[asyncio.Task] = []
        self._metadata_applied = asyncio.Event()  # set and replaced at every metadata change
        self.reassignments = ReassignmentDriver(self)
        self.host.transport.hold = self.reassignments.pacer.hold  # the catch-up pace
        self.host.deliver_many = self._deliver_paced(self.host.deliver_many)
        self.balancer = Balancer(self, config.balancer, config.balance_delay_s)

    def _deliver_paced(self, deliver: Callable[[list[tuple[int, Message]], int], None]
                       ) -> Callable[[list[tuple[int, Message]], int], None]:
        """``deliver`` (the host's, for the Raft stream handler) that holds back what the
        catch-up pacer says must wait (``CatchUpPacer.admit``)."""
        pacer = self.reassignments.pacer

        def deliver_many(items: list[tuple[int, Message]], frm: int = 0) -> None:
            if pacer.holding:
                items = [(g, m) for g, m in items if pacer.admit(g, m, frm)]
            deliver(items, frm)
        return deliver_many

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        # A node that joined starts outside the controller group's configuration: the
        # controller leader adds it as a learner and catches it up (_reassignment.py).
        group = self.host.add_group(
            self.controller.group_id, self.controller,
            ConfState() if self.config.joined else controller_conf(self.config.peers))
        self.controller.group = group
        self.host.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._maintenance(), name="broker-maintenance"))
        self._tasks.append(loop.create_task(self._compaction(), name="broker-compaction"))
        self._tasks.append(loop.create_task(run_reassignments(self.reassignments),
                                            name="broker-reassignments"))
        self._tasks.append(loop.create_task(run_balancer(self.balancer), name="balancer"))
        self._tasks.append(loop.create_task(self._ensure_offsets_topic(),
                                            name="offsets-topic"))

    async def stop(self, graceful: bool) -> None:
        if graceful:
            await self.host.transfer_leaderships_away(self.config.shutdown_transfer_s)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.host.stop()
        shutting = BrokerError(Code.SHUTTING_DOWN, "the node is shutting down; retry on "
                               "another node", retriable=True)
        for p in self.partitions.values():
            p.fail_waiters(shutting)
        self.db.close()
        self.schedule.close()

    # ------------------------------------------------------------------ metadata
    def _reconcile(self) -> None:
        """Start the replicas the committed metadata gives this node, stop the others, and
        hand every replica its topic's current configs (an alter takes effect at once)."""
        state = self.controller.state
        self._learn_nodes()
        ids = {name: meta.topic_id for name, meta in state.topics.items()}
        now_ms = int(time.time() * 1000)
        for name, topic_id in self._topic_ids.items():
            if ids.get(name) != topic_id:
                self.deleted_topics[name] = now_ms
                self._tombstone_sweep_due = True
        self._topic_ids = ids
        # Only the topics whose metadata changed since the last reconcile (a TopicMeta is
        # immutable and replaced whole by every change to it): a reconcile of every
        # partition at every metadata change was 85% of the nodes' CPU while a node of a
        # 10,000-partition cluster drained (a metadata change per move started or ended).
        topics = state.topics
        done = self._reconciled_topics
        changed = [name for name, meta in topics.items() if done.get(name) is not meta]
        changed += [name for name in done if name not in topics]
        for name in changed:  # stop first (what this node no longer hosts), then start
            self._stop_unwanted(name, topics.get(name), done.get(name))
        for name in changed:
            meta = topics.get(name)
            if meta is None:
                del done[name]
                continue
            self._start_wanted(meta)
            done[name] = meta  # only once done: a failure above retries it next time
        self._compacted_keys = None
        self._preferred_check_due = True
        self._metadata_applied.set()
        self._metadata_applied = asyncio.Event()

    def _wants(self, part: PartitionMeta) -> bool:
        """Whether this node hosts ``part`` (during a move: also as a target)."""
        return self.node_id in part.replicas or self.node_id in part.target

    def _stop_unwanted(self, name: str, meta: TopicMeta | None, old: TopicMeta | None) -> None:
        """Stop this node's replicas of topic ``name`` that ``meta`` (None: deleted) no
        longer gives it, or gives it in another Raft group (a re-created topic). What it
        hosts of the topic came from ``old``, the metadata of its last reconcile."""
        count = max(len(meta.partitions) if meta else 0, len(old.partitions) if old else 0)
        for p in range(count):
            replica = self.partitions.get((name, p))
            if replica is None:
                continue
            part = meta.partitions[p] if meta is not None and p < len(meta.partitions) else None
            if part is None or not self._wants(part) or part.group_id != replica.group_id:
                self._stop_partition((name, p))

    def _start_wanted(self, meta: TopicMeta) -> None:
        """Start this node's replicas of ``meta`` it does not run yet, and hand the running
        ones the topic's current configs (an alter takes effect at once)."""
        config: PartitionConfig | None = None
        for part in meta.partitions:
            if not self._wants(part):
                continue
            key = (meta.name, part.partition)
            replica = self.partitions.get(key)
            if replica is None:
                self._start_partition(meta, part)
                continue
            if config is None:  # parsed once per topic, not per partition
                config = PartitionConfig.from_topic_configs(meta.configs)
            if config != replica.config:
                replica.config = config
                log.info("%s/%d: configs now %s", key[0], key[1],
                         dict(meta.configs) or "the defaults")

    def _learn_nodes(self) -> None:
        """Take the addresses of the nodes registered in the metadata (nodes that joined):
        the transport connects to new ones; Metadata, DescribeCluster and the Kafka
        listener name them. A departed node (``forget_departed_nodes``) is not dialed."""
        config = self.config
        departed = self.forget_departed_nodes()
        for nid, addr in self.controller.state.node_addresses.items():
            if config.peers.get(nid) != addr.address:
                config.peers[nid] = addr.address
            peer = addr.peer_address or addr.address
            identity = self.peer_channels.identity
            if identity is not None:  # its peer certificate is a member's now
                identity.add(nid)
            if (nid != self.node_id and nid not in departed
                    and self.peer_channels.addresses.get(nid) != peer):
                self.peer_channels.addresses[nid] = peer
                if self.host.transport.add_peer(nid, peer):
                    self.host.driver.add_peer(nid)
                    log.info("node %d joined the cluster at %s", nid, addr.address)
            if addr.rack or nid not in self.racks:
                self.racks[nid] = addr.rack if nid != self.node_id else config.rack
            if config.kafka_listen:
                port = config.kafka_advertised.rpartition(":")[2]
                kafka = addr.kafka_address or f"{addr.address.rpartition(':')[0]}:{port}"
                if nid != self.node_id:
                    config.kafka_peers[nid] = kafka

    def forget_departed_nodes(self) -> frozenset[int]:
        """Removed nodes (final: ids are never reused) that have left the controller group
        as this node sees it: dropped from the Raft transport and liveness watch, so no
        node dials them again. Not before they left the group: a removed node still running
        must first learn of its own removal from the controller log (ReassignmentDriver).
        Returns them. Called at every metadata change and reassignment step."""
        group = self.controller.group
        if group is None:
            return frozenset()
        members = group.node.conf_state.all_nodes()
        departed = frozenset(n for n in self.controller.state.removed_nodes
                             if n not in members and n != self.node_id)
        for nid in departed:
            if self.host.transport.remove_peer(nid):
                self.host.driver.remove_peer(nid)
                self.peer_channels.addresses.pop(nid, None)
                log.info("node %d was removed from the cluster and left the controller "
                         "group; no longer connecting to it", nid)
        return departed

    def cluster_nodes(self) -> list[admin_pb2.ClusterNode]:
        """Every node this node knows, with its addresses (the join answer)."""
        config = self.config
        registered = self.controller.state.node_addresses
        out = []
        for nid in sorted(set(config.peers) | set(registered)):
            addr = registered.get(nid)
            out.append(admin_pb2.ClusterNode(
                id=nid, address=config.peers.get(nid, addr.address if addr else ""),
                peer_address=(addr.peer_address if addr else
                              config.peer_peers.get(nid, "")),
                kafka_address=config.kafka_peers.get(nid, ""),
                rack=self.racks.get(nid, "")))
        return out

    async def wait_for_metadata(self, predicate: Callable[[Any], bool], timeout_s: float) -> bool:
        """Wait until ``predicate(controller state)`` holds in this node's applied metadata,
        at most ``timeout_s``; whether it holds. (After a change made at the controller
        leader, so that this node's next answers already show it.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self.controller.state):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._metadata_applied.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    def _start_partition(self, topic: TopicMeta, meta: PartitionMeta) -> None:
        args = (topic.name, meta.partition, meta.group_id,
                PartitionConfig.from_topic_configs(topic.configs), self.host.mark)
        if topic.name == OFFSETS_TOPIC:
            replica: PartitionReplica = OffsetsReplica(
                *args, compact_after=self.config.offsets_compact_entries)
        elif topic.name == TXN_TOPIC:
            replica = TxnStateReplica(*args, compact_after=self.config.offsets_compact_entries)
        else:
            replica = PartitionReplica(*args,
                                       schedule_index=self.schedule.index(meta.group_id))
            replica.on_accepted = self.metrics.produce_accepted
        replica.peer_entry_formats = self.peer_entry_formats
        replica.on_role_change = self._leadership_changed
        # before attach(): restoring a snapshot may list the replica at once
        replica.share_groups_listing.watchlist = self.share_replicas
        replica.data_listing.watchlist = self.data_replicas
        replica.transactions_listing.watchlist = self.txn_replicas
        storage = self.db.group(meta.group_id)
        # A node only in a move's target starts empty, outside any configuration: the
        # leader adds it as a learner and catches it up (_reassignment.py).
        conf = (ConfState(frozenset(meta.replicas)) if self.node_id in meta.replicas
                else ConfState())
        # Entries up to the stored commit index are already reflected in the log itself;
        # the replica recovers its high watermark from the log tail instead of replaying.
        applied = storage.hard_state().commit
        group = self.host.add_group(
            meta.group_id, replica, conf, applied=applied)
        replica.attach(group)
        self.partitions[(topic.name, meta.partition)] = replica
        if group.bootstrapped and not meta.target and meta.replicas[0] == self.node_id:
            group.node.campaign()  # preferred leader: spread leaders from the start
        log.info("started replica of %s/%d (group %d, replicas %s)", topic.name,
                 meta.partition, meta.group_id, list(meta.replicas))

    def _leadership_changed(self) -> None:
        self._preferred_check_due = True

    def replicas_with_open_transactions(self) -> list[PartitionReplica]:
        """The hosted replicas with a transaction open; forgets (until one opens again)
        those whose transactions all ended."""
        return list(self.txn_replicas.visit(
            lambda r: self.partitions.get((r.topic, r.partition)) is r and bool(r.txns.open)))

    def _stop_partition(self, key: tuple[str, int]) -> None:
        replica = self.partitions.pop(key)
        for watchlist in (self.share_replicas, self.data_replicas, self.txn_replicas):
            watchlist.discard(replica)
        # A replica moved off this node (its group lives on) leaves a tombstone: a replica
        # of the group re-created here later must vote as this one would have (rule 13 of
        # raft/core/_raft.py). Group ids are never reused, so one of a deleted topic goes.
        moved_off = self.controller.state.partition_by_group(replica.group_id) is not None
        self.host.remove_group(replica.group_id, drop_data=True, tombstone=moved_off)
        replica.delayed.reset()  # its pending keys (the scheduled entries went with the log)
        meta = self.controller.state.topic(key[0])
        if meta is not None and key[1] < len(meta.partitions):  # moved off this node
            leader = meta.partitions[key[1]].replicas[0]
            replica.fail_waiters(BrokerError(
                Code.NOT_LEADER, f"{key[0]}/{key[1]} moved off node {self.node_id}",
                retriable=True, leader_id=leader, leader_address=self.address_of(leader)))
        else:
            replica.fail_waiters(BrokerError(Code.UNKNOWN_TOPIC,
                                             f"topic {key[0]} was deleted"))
        log.info("stopped replica of %s/%d (group %d)", key[0], key[1], replica.group_id)

    def partition(self, topic: str, partition: int) -> PartitionReplica:
        replica = self.partitions.get((topic, partition))
        if replica is not None:
            return replica
        meta = self.controller.state.topic(topic)
        if meta is None or not 0 <= partition < len(meta.partitions):
            if not self.metadata_ready():
                # not replayed yet: the topic or partition may well exist (a caller that
                # took this for "deleted" would give up on it, see Metadata)
                raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"node {self.node_id} has just "
                                  "started and has not caught up with the cluster metadata "
                                  f"yet, so it cannot serve {topic}/{partition}; ask another "
                                  "node or retry", retriable=True)
        if meta is None:
            raise BrokerError(Code.UNKNOWN_TOPIC, f"topic {topic!r} does not exist; create it "
                              "first (raftka topic create)")
        if not 0 <= partition < len(meta.partitions):
            raise BrokerError(Code.UNKNOWN_PARTITION, f"topic {topic!r} has partitions "
                              f"0..{len(meta.partitions) - 1}; partition {partition} does not exist")
        preferred = meta.partitions[partition].replicas[0]
        raise BrokerError(
            Code.NOT_LEADER, f"node {self.node_id} holds no replica of {topic}/{partition}; "
            f"try node {preferred}", retriable=True, leader_id=preferred,
            leader_address=self.address_of(preferred))

    def metadata_ready(self) -> bool:
        """:meth:`metadata_caught_up` once since this node started (a latch: later
        controller elections do not take it back). Before it, a node restarted with a
        controller log it has not replayed yet would answer Metadata without topics that
        exist, and a client takes a missing topic for a deleted one."""
        if not self._metadata_ready and self.metadata_caught_up():
            self._metadata_ready = True
        return self._metadata_ready

    def metadata_caught_up(self) -> bool:
        """Whether this node can answer for the cluster's metadata: it knows a controller
        leader and has applied every controller entry it knows to be committed, including
        those a leader said are committed that its log does not hold yet (a node whose
        store was recreated empty: its own commit index stays 0 until the entries come).
        (The readiness the health service reports; it does not go back to False on a
        later controller election.)"""
        group = self.controller.group
        if group is None or group.closed:
            return False
        node = group.node
        return node.leader_id != 0 and \
            node.applied_index >= max(node.commit_index, node.leader_commit)

    def address_of(self, node_id: int) -> str:
        return self.config.peers.get(node_id, "")

    def leader_of(self, topic: TopicMeta, meta: PartitionMeta) -> int:
        replica = self.partitions.get((topic.name, meta.partition))
        if replica is not None and replica.group is not None:
            return replica.group.node.leader_id
        # A hint (a replica answers NOT_LEADER naming the leader): the preferred replica,
        # unless this node has not heard from it within an election timeout, then the
        # first replica it has, so clients are not sent to a dead node until it moves off.
        heard = self.host.driver.heard_recently
        return next((n for n in meta.replicas if heard(n)), meta.replicas[0])

    # ------------------------------------------------------------------ maintenance
    async def _ensure_offsets_topic(self) -> None:
        """The controller leader creates ``__consumer_offsets`` (consumer groups' committed
        offsets) as soon as the cluster has one, so the first group need not wait for it."""
        ctl = self.controller
        while ctl.state.topic(OFFSETS_TOPIC) is None:
            await asyncio.sleep(OFFSETS_TOPIC_CHECK_S)
            if ctl.group is None or ctl.group.node.role != Role.LEADER:
                continue
            command = encode_create_topic(
                OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, min(3, len(self.config.peers)),
                OFFSETS_TOPIC_CONFIGS, internal=True)
            try:
                result = await ctl.propose(command, 5.0)
            except BrokerError:
                continue  # lost leadership or no quorum yet: check again
            if not result.ok and result.code != Code.TOPIC_EXISTS:
                log.warning("cannot create %s yet: %s; retrying", OFFSETS_TOPIC, result.message)
                await asyncio.sleep(1.0)

    async def _maintenance(self) -> None:
        await every(MAINTENANCE_INTERVAL_S, self._maintenance_pass, "maintenance pass", log)

    async def _maintenance_pass(self) -> None:
        # each step timed (raftka_maintenance_step_duration_seconds): a step that reads
        # storage on the event loop stalls every partition's traffic, and shows here first
        timed = self.metrics.maintenance_seconds
        started = time.perf_counter()
        await self._apply_retention()
        started = _observe(timed["retention"], started)
        await self._drop_stale_tombstones()
        started = _observe(timed["tombstones"], started)
        self._expire_transactions()
        started = _observe(timed["transaction_expiry"], started)
        await self._snapshot_controller()
        started = _observe(timed["controller_snapshot"], started)
        self._prefer_preferred_leaders()
        _observe(timed["preferred_leaders"], started)

    async def _drop_stale_tombstones(self) -> None:
        """Drop what replicas moved off this node left behind (``_stop_partition``) once
        their topic is deleted: group ids are never reused, so nothing will read it again.
        Only with the metadata caught up: a topic missing from a state still being
        replayed after a restart is not a deleted one."""
        if not self._tombstone_sweep_due or not self.metadata_caught_up():
            return
        self._tombstone_sweep_due = False
        state = self.controller.state
        stored = await asyncio.to_thread(self.db.group_ids)
        for group_id in stored:
            if (FIRST_PARTITION_GROUP_ID <= group_id < state.next_group_id
                    and group_id not in self.host.groups
                    and state.partition_by_group(group_id) is None):
                self.db.drop_group(group_id)
                log.info("dropped the tombstone of group %d: its topic was deleted", group_id)

    def _expire_transactions(self) -> None:
        """Abort the transactions open on a partition this node leads for longer than
        ``transaction_max_timeout_ms`` (in the background: a marker waits for its commit).
        Visits only the replicas with a transaction open."""
        max_ms = self.config.transaction_max_timeout_ms
        for replica in self.replicas_with_open_transactions():
            for pid, epoch in replica.expired_transactions(max_ms):
                log.warning("%s/%d: aborting the transaction of producer id %d epoch %d, "
                            "open for more than %d ms", replica.topic, replica.partition,
                            pid, epoch, max_ms)
                task = asyncio.ensure_future(replica.abort_expired(pid, epoch, 30.0))
                self._txn_aborts.add(task)
                task.add_done_callback(self._txn_aborts.discard)
                task.add_done_callback(_log_abort_failure)

    async def _compaction(self) -> None:
        while True:
            await asyncio.sleep(COMPACTION_INTERVAL_S)
            if self._compacted_keys is None:
                self._compacted_keys = [key for key, replica in self.partitions.items()
                                        if replica.config.compact]
            for key in self._compacted_keys:
                replica = self.partitions.get(key)
                if replica is None or not replica.config.compact:
                    continue  # stopped or altered meanwhile: the next list leaves it out
                try:
                    replica.maybe_propose_compaction()
                    if replica.compaction_pending:
                        await replica.run_compaction()
                except asyncio.CancelledError:
                    raise
                except BrokerError:
                    continue  # the replica went away meanwhile
                except Exception:  # noqa: BLE001 - compaction must never stop the node
                    log.exception("compaction of %s/%d failed; will retry", replica.topic,
                                  replica.partition)

    async def _apply_retention(self) -> None:
        # only the replicas holding data entries (they list themselves, PartitionReplica.
        # data_listing): thousands of idle empty partitions cost nothing here
        for replica in self.data_replicas.visit(lambda r: r.holds_data):
            group = replica.group
            if group is None or group.closed:
                continue
            point = replica.retention_point()
            if point is None:
                continue
            index, data = point
            if index > group.node.applied_index:
                # The replica applied it in a pass whose advance() has not run yet (the
                # pass awaits its sync): Raft cannot snapshot there yet. Next time.
                continue
            snapshot = Snapshot(group.node.snapshot_meta(index), data)
            # Hide the entries first: a fetch running while the worker thread deletes them
            # then sees OFFSET_OUT_OF_RANGE, never a half-deleted range.
            replica.compacted(index, data)
            await asyncio.to_thread(group.storage.compact, snapshot)

    async def _snapshot_controller(self) -> None:
        ctl = self.controller
        if not ctl.snapshot_due() or ctl.group is None:
            return
        node = ctl.group.node
        index = node.applied_index
        snapshot = Snapshot(node.snapshot_meta(index), ctl.snapshot_data())
        await asyncio.to_thread(ctl.group.storage.compact, snapshot)

    def _prefer_preferred_leaders(self) -> None:
        """Kafka's preferred-leader election: a leader that is not its partition's
        preferred replica hands over once that replica is reachable and caught up.
        Walks the replicas only after a role or metadata change, or while a leadership
        found off its preferred replica waits (for that replica to vote or be reachable,
        or for the transfer to happen)."""
        if not self._preferred_check_due:
            return
        self._preferred_check_due = False
        state = self.controller.state
        for (topic, pnum), replica in self.partitions.items():
            group = replica.group
            if group is None or group.node.role != Role.LEADER:
                continue
            meta = state.topic(topic)
            if meta is None or pnum >= len(meta.partitions):
                continue
            # during a move: the target's first node, once it votes (_reassignment.py)
            preferred = meta.partitions[pnum].desired[0]
            if preferred == self.node_id:
                continue
            self._preferred_check_due = True  # look again until the handover happened
            if preferred not in group.node.conf_state.voters:
                continue
            if self.host.transport.is_reachable(preferred):
                group.node.transfer_leader(preferred)
                self.host.mark(group.group_id)
