"""The Kafka APIs, each answered from the broker's own partitions, groups and controller.

Every handler calls what the gRPC door calls: ``PartitionReplica.submit`` / ``read`` /
``offset_for_time`` for data, the gRPC services' own methods for the controller and the
groups (their undecorated bodies, ``__wrapped__``, which raise ``BrokerError`` instead of
ending a gRPC call), so a rule (and later an authorization check) lives in one place. A
``BrokerError`` becomes the Kafka error code clients act on (``_errors.py``), per
partition where the API answers per partition. Answers are dicts with Kafka's field names,
fitted to the request's version by ``_codec.build``.

``SUPPORTED`` is exactly what ApiVersions advertises; the README's compatibility table
lists the same versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

from kio.index import load_response_schema
from kio.schema.consumer_protocol_assignment.v0.data import ConsumerProtocolAssignment
from kio.schema.consumer_protocol_subscription.v0.data import ConsumerProtocolSubscription
from kio.schema.errors import ErrorCode as K

from raftka.v1 import admin_pb2, broker_pb2, group_pb2

from .._authz import NodeSecurity
from .._broker import Broker
from .._errors import BrokerError, Code
from .._group_service import GroupCoordinatorService
from .._offsets import OFFSETS_TOPIC
from .._services import (
    FETCH_WAIT_MS_MAX,
    PRODUCE_TIMEOUT_MS_MAX,
    AdminService,
    BrokerService,
    _require_leader,
    _require_producible_leader,
    config_entries,
)
from ._classic import ClassicGroups
from ._codec import encode_data
from ._consumer_protocol import ConsumerProtocol
from ._errors import kafka_code
from ._security import APIS, Connection, Ctx, ListenerSecurity, request_denial
from ._share import KafkaShareGroups
from . import _acls
from ._txn import KafkaTransactions

log = logging.getLogger("raftka.kafka")

CLUSTER_ID = "raftka"
FETCH_MAX_BYTES_MAX = 32 << 20
# api key: (name, min version, max version) this listener serves
SUPPORTED: dict[int, tuple[str, int, int]] = {
    0: ("Produce", 3, 12),
    1: ("Fetch", 4, 12),
    2: ("ListOffsets", 1, 6),
    3: ("Metadata", 1, 12),
    8: ("OffsetCommit", 2, 9),
    9: ("OffsetFetch", 1, 9),
    10: ("FindCoordinator", 0, 6),
    11: ("JoinGroup", 0, 9),
    12: ("Heartbeat", 0, 4),
    13: ("LeaveGroup", 0, 5),
    14: ("SyncGroup", 0, 5),
    15: ("DescribeGroups", 0, 5),
    16: ("ListGroups", 0, 4),
    18: ("ApiVersions", 0, 4),
    19: ("CreateTopics", 2, 7),
    20: ("DeleteTopics", 1, 5),
    22: ("InitProducerId", 0, 4),
    32: ("DescribeConfigs", 1, 4),
    37: ("CreatePartitions", 0, 3),
    42: ("DeleteGroups", 0, 2),
    44: ("IncrementalAlterConfigs", 0, 1),
    47: ("OffsetDelete", 0, 0),
    60: ("DescribeCluster", 0, 1),
    68: ("ConsumerGroupHeartbeat", 0, 1),
    29: ("DescribeAcls", 1, 3),
    30: ("CreateAcls", 1, 3),
    31: ("DeleteAcls", 1, 3),
}
# served when the node runs share groups (``_share.py``, KIP-932)
SHARE_APIS: dict[int, tuple[str, int, int]] = {
    76: ("ShareGroupHeartbeat", 1, 1),
    77: ("ShareGroupDescribe", 1, 1),
    78: ("ShareFetch", 1, 1),  # v2: acquire modes and lock renewal (RENEW) are not served
    79: ("ShareAcknowledge", 1, 1),
}
# served when the node runs a transaction coordinator (``_txn.py``)
TXN_APIS: dict[int, tuple[str, int, int]] = {
    24: ("AddPartitionsToTxn", 0, 3),  # v4+: between brokers (KIP-890)
    25: ("AddOffsetsToTxn", 0, 3),
    26: ("EndTxn", 0, 3),
    28: ("TxnOffsetCommit", 0, 3),
}
# served only when the node authenticates with passwords
SASL_APIS: dict[int, tuple[str, int, int]] = {
    17: ("SaslHandshake", 0, 1),  # v0: raw SASL tokens follow (``Connection.raw``)
    36: ("SaslAuthenticate", 0, 2),
}

_CONFIG_SOURCE_TOPIC = 1  # DYNAMIC_TOPIC_CONFIG
_CONFIG_SOURCE_DEFAULT = 5  # DEFAULT_CONFIG
_RESOURCE_TOPIC = 2
_RESOURCE_BROKER = 4


_CODECS = (0, 1, 2, 3, 4)  # none, gzip, snappy, lz4, zstd: what the partition accepts
_ATTRIBUTES_AT = 21  # of a RecordBatch v2 header: int16, bits 0-2 the codec


def _codec_of(records: bytes) -> int:
    """The compression codec of the first batch (0 when too short: the partition's own
    checks name what is wrong)."""
    if len(records) < _ATTRIBUTES_AT + 2:
        return 0
    return records[_ATTRIBUTES_AT + 1] & 0x07


class _Refused:
    """A partition's produce answer decided before the partition saw the batch."""

    def __init__(self, code: K, message: str) -> None:
        self.code = code
        self.message = message


def _err(exc: BrokerError) -> dict:
    return {"error_code": kafka_code(exc.code), "error_message": exc.message}


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _ms(value: Any) -> int:
    """A kio ``timedelta`` field in whole milliseconds."""
    return int(value.total_seconds() * 1000)


class KafkaApis:
    def __init__(self, broker: Broker, broker_service: BrokerService,
                 admin: AdminService, groups: GroupCoordinatorService,
                 security: NodeSecurity | None = None, txns: Any = None,
                 shares: Any = None) -> None:
        self.broker = broker
        self.listener_security = ListenerSecurity(
            security, broker.config.secured, lambda: broker.controller.state.users)
        self.supported = dict(SUPPORTED)
        if self.listener_security.mechanisms:
            self.supported.update(SASL_APIS)
        self.acls = _acls.KafkaAcls(broker, admin)
        self.txns: KafkaTransactions | None = None
        self.broker_service = broker_service
        self.admin = admin
        self.groups = groups
        self.classic = ClassicGroups(broker, groups)
        self.consumer_protocol = ConsumerProtocol(broker, groups)
        self._handlers: dict[int, Callable[..., Awaitable[Any]]] = {
            0: self.produce, 1: self.fetch, 2: self.list_offsets, 3: self.metadata,
            8: self.offset_commit, 9: self.offset_fetch, 10: self.find_coordinator,
            11: self.classic.join_group, 12: self.classic.heartbeat,
            13: self.classic.leave_group, 14: self.classic.sync_group,
            15: self.describe_groups, 16: self.list_groups, 18: self.api_versions,
            19: self.create_topics, 20: self.delete_topics, 22: self.init_producer_id,
            32: self.describe_configs, 37: self.create_partitions, 42: self.delete_groups,
            44: self.incremental_alter_configs, 47: self.classic.offset_delete,
            60: self.describe_cluster,
            68: self.consumer_protocol.heartbeat,
            29: self.acls.describe, 30: self.acls.create, 31: self.acls.delete,
        }
        if shares is not None:
            share_groups = KafkaShareGroups(broker, shares)
            self.supported.update(SHARE_APIS)
            self._handlers.update({
                76: share_groups.heartbeat, 77: share_groups.describe,
                78: share_groups.fetch, 79: share_groups.acknowledge})
        if txns is not None:
            self.txns = KafkaTransactions(txns, self.classic)
            self.supported.update(TXN_APIS)
            self._handlers.update({
                24: self.txns.add_partitions, 25: self.txns.add_offsets,
                26: self.txns.end_txn, 28: self.txns.txn_offset_commit})

    def start(self) -> None:
        self.classic.start()

    async def stop(self) -> None:
        await self.classic.stop()

    # ------------------------------------------------------------------ dispatch
    def supports(self, api_key: int, version: int) -> bool:
        entry = self.supported.get(api_key)
        return entry is not None and entry[1] <= version <= entry[2]

    def unsupported_api_versions(self, api_key: int, version: int) -> tuple[type, dict] | None:
        """KIP-511: ApiVersions at a version this node does not know is answered (v0, with
        UNSUPPORTED_VERSION and the served versions); any other unsupported request is
        not (None: the connection closes)."""
        if api_key != 18 or version < 0:
            return None
        return load_response_schema(18, 0), {
            "error_code": K.unsupported_version, "api_keys": self._api_keys()}

    async def handle(self, api_key: int, version: int, header: Any, request: Any,
                     peer: str, auth: Connection, request_bytes: int = 0) -> dict | None:
        if api_key == 17:
            return auth.handshake(request.mechanism, raw=version == 0)
        if api_key == 36:
            return await auth.authenticate(bytes(request.auth_bytes))
        ctx = auth.ctx(peer)
        api = self.supported[api_key][0]
        values = request_denial(api_key, request, version, ctx, api)
        if values is None:
            values = await self._handlers[api_key](request, version, ctx, header)
        if ctx.security is not None and values is not None:
            answer_bytes = ctx.answer_bytes if api_key == 1 else 0
            throttle_ms = auth.throttle(ctx, api_key, request_bytes, answer_bytes)
            if throttle_ms:
                values["throttle_time"] = throttle_ms
        return values

    def _api_keys(self) -> list[dict]:
        return [{"api_key": k, "min_version": lo, "max_version": hi}
                for k, (_, lo, hi) in sorted(self.supported.items())]

    # ------------------------------------------------------------------ cluster
    async def api_versions(self, request, version, ctx, header) -> dict:
        return {"error_code": K.none, "api_keys": self._api_keys()}

    def _brokers(self) -> list[dict]:
        out = []
        for nid, address in sorted(self.broker.config.kafka_peers.items()):
            host, port = _host_port(address)
            out.append({"node_id": nid, "host": host, "port": port, "broker_id": nid})
        return out

    async def metadata(self, request, version, ctx, header) -> dict:
        state = self.broker.controller.state
        unknown_ids: list = []
        every = request.topics is None or (version == 0 and not request.topics)
        if every:
            names = [t.name for t in state.topics_sorted() if t.name != OFFSETS_TOPIC
                     and ctx.allowed("DESCRIBE", "TOPIC", t.name)]
        else:
            by_id = {}
            if any(t.name is None for t in request.topics):  # v10+: asked by topic id
                by_id = {uuid.UUID(t.topic_id): t.name for t in state.topics_sorted()}
            names = [t.name if t.name is not None else by_id.get(getattr(t, "topic_id", None))
                     for t in request.topics]
            unknown_ids = [t.topic_id for t in request.topics
                           if t.name is None and getattr(t, "topic_id", None) not in by_id]
            names = [n for n in names if n is not None]
        topics = []
        for name in names:
            meta = state.topic(name)
            denied = None if every else ctx.denied("DESCRIBE", "TOPIC", name, "Metadata")
            if denied is not None:  # before existence: names are not disclosed
                topics.append({"error_code": denied, "name": name, "partitions": []})
                continue
            if meta is None:
                topics.append({"error_code": K.unknown_topic_or_partition, "name": name,
                               "partitions": []})
                continue
            topics.append({"error_code": K.none, "name": name, "topic_id": meta.topic_id,
                           "is_internal": meta.internal,
                           "partitions": [self._partition_metadata(meta, p)
                                          for p in meta.partitions]})
        topics.extend({"error_code": K.unknown_topic_id, "name": None, "topic_id": tid,
                       "partitions": []} for tid in unknown_ids)
        controller = self.broker.controller.leader_id()
        return {"brokers": self._brokers(), "cluster_id": CLUSTER_ID,
                "controller_id": controller or -1, "topics": topics}

    def _partition_metadata(self, topic, meta) -> dict:
        """Leader, replicas, ISR and offline replicas as this node knows them. ISR: on the
        leader, itself and the followers whose log reaches its commit index and that it
        can reach; elsewhere the replicas this node can reach."""
        b = self.broker
        transport = b.host.transport
        leader = b.leader_of(topic, meta)
        replica = b.partitions.get((topic.name, meta.partition))
        node = replica.group.node if replica is not None and replica.group is not None \
            else None
        replicas = list(meta.replicas)
        offline = [r for r in replicas if r != b.node_id and not transport.is_reachable(r)]
        if node is not None and leader == b.node_id:
            matches = node.follower_matches()
            commit = node.commit_index
            isr = [r for r in replicas if r == b.node_id or (
                matches.get(r, 0) >= commit and transport.is_reachable(r))]
        else:
            isr = [r for r in replicas if r not in offline]
        return {"error_code": K.none if leader else K.leader_not_available,
                "partition_index": meta.partition, "leader_id": leader or -1,
                "leader_epoch": -1, "replica_nodes": replicas, "isr_nodes": isr,
                "offline_replicas": offline}

    async def describe_cluster(self, request, version, ctx, header) -> dict:
        return {"error_code": K.none, "cluster_id": CLUSTER_ID,
                "controller_id": self.broker.controller.leader_id() or -1,
                "brokers": self._brokers(), "endpoint_type": 1}

    # ------------------------------------------------------------------ data
    async def produce(self, request, version, ctx, header) -> dict | None:
        """Every partition's batches are queued (``submit``, synchronous) before the first
        await: the listener's ordering rule 2."""
        transactional = request.transactional_id is not None
        refused = None
        if transactional and self.txns is None:
            refused = {"error_code": K.transactional_id_authorization_failed,
                       "error_message": "this node serves no transactions"}
        elif transactional:
            code = ctx.denied("WRITE", "TRANSACTIONAL_ID", request.transactional_id, "Produce")
            if code is not None:
                refused = {"error_code": code, "error_message": "not authorized to WRITE "
                           f"transactional id {request.transactional_id!r}"}
        if refused is not None:
            error = refused
            return {"responses": [
                {"name": t.name, "partition_responses": [
                    {"index": p.index, "base_offset": -1, **error} for p in t.partition_data]}
                for t in request.topic_data]}
        acks = request.acks
        metrics = self.broker.metrics
        started = time.perf_counter()
        timeout_s = min(max(_ms(request.timeout), 1), PRODUCE_TIMEOUT_MS_MAX) / 1000
        pending: list[tuple[str, int, Any, Any]] = []
        for t in request.topic_data:
            denied = ctx.denied("WRITE", "TOPIC", t.name, "Produce") \
                if ctx.security is not None else None
            for p in t.partition_data:
                if denied is not None:  # nothing of it is written
                    pending.append((t.name, p.index, None, _Refused(
                        denied, f"{ctx.caller.principal} may not WRITE topic {t.name!r}")))
                    continue
                try:
                    if acks not in (0, 1, -1):
                        raise BrokerError(Code.INVALID_REQUEST, f"acks {acks} is not 0, 1 "
                                          "or -1")
                    replica = _require_producible_leader(self.broker, t.name, p.index)
                    records = bytes(p.records or b"")
                    codec = _codec_of(records)
                    if codec not in _CODECS:
                        pending.append((t.name, p.index, None, _Refused(
                            K.unsupported_compression_type, f"compression codec {codec} is "
                            "not supported; use none, gzip, snappy, lz4 or zstd")))
                        continue
                    # transactional batches only in a transactional request (the partition
                    # checks them against the producer's epoch and opens the transaction)
                    future = replica.submit(records, acks, transactional=transactional)
                    pending.append((t.name, p.index, replica, future))
                except BrokerError as exc:
                    pending.append((t.name, p.index, None, exc))
        level = acks if acks in (0, 1, -1) else -1
        metrics.produce_requests[level].inc(len(pending))
        if acks == 0:
            metrics.produce_latency[level].observe(time.perf_counter() - started)
            return None
        by_topic: dict[str, list[dict]] = {}
        if len(pending) == 1:  # the usual request: no task for gather to make
            results = [await self._produced(*pending[0], acks, timeout_s)]
        else:
            results = await asyncio.gather(*(self._produced(*item, acks, timeout_s)
                                             for item in pending))
        elapsed = time.perf_counter() - started
        for _ in pending:  # one per partition request, as the gRPC door counts them
            metrics.produce_latency[level].observe(elapsed)
        for (name, _, _, _), result in zip(pending, results):
            by_topic.setdefault(name, []).append(result)
        return {"responses": [{"name": n, "partition_responses": ps}
                              for n, ps in by_topic.items()]}

    async def _produced(self, topic: str, partition: int, replica, future, acks: int,
                        timeout_s: float) -> dict:
        if isinstance(future, BrokerError):
            self.broker.metrics.error("Kafka.Produce", future.code)
            return {"index": partition, "base_offset": -1, **_err(future)}
        if isinstance(future, _Refused):
            return {"index": partition, "base_offset": -1, "error_code": future.code,
                    "error_message": future.message}
        try:
            base, _ = await replica.wait_acked(future, acks, timeout_s)
        except BrokerError as exc:
            self.broker.metrics.error("Kafka.Produce", exc.code)
            return {"index": partition, "base_offset": -1, **_err(exc)}
        return {"index": partition, "error_code": K.none, "base_offset": base,
                "log_start_offset": replica.log_start_offset}

    async def fetch(self, request, version, ctx, header) -> dict:
        """Long polling: answer once ``min_bytes`` are there, any partition has an error,
        or ``max_wait`` passed. Fetch sessions (KIP-227) are refused cleanly: the answer's
        session id is always 0 (no session), so the client sends full fetch requests; a
        request naming a session gets FETCH_SESSION_ID_NOT_FOUND."""
        session_id = getattr(request, "session_id", 0)
        if session_id or getattr(request, "session_epoch", -1) > 0:
            return {"error_code": K.fetch_session_id_not_found, "session_id": 0,
                    "responses": []}
        wait_s = min(max(_ms(request.max_wait), 0), FETCH_WAIT_MS_MAX) / 1000
        started = time.monotonic()
        deadline = started + wait_s
        total_max = min(max(request.max_bytes or FETCH_MAX_BYTES_MAX, 1), FETCH_MAX_BYTES_MAX) \
            if version >= 3 else FETCH_MAX_BYTES_MAX
        denied = {t.topic: code for t in request.topics
                  if (code := ctx.denied("READ", "TOPIC", t.topic, "Fetch")) is not None} \
            if ctx.security is not None else {}
        while True:
            answers, size, replicas, counts = self._read_all(request, total_max, denied)
            if size >= request.min_bytes or any(
                    p["error_code"] != K.none for ps in answers.values() for p in ps):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not replicas:
                break
            waits = [asyncio.ensure_future(r.wait_for_data(o, remaining)) for r, o in replicas]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        metrics = self.broker.metrics
        for records, size_bytes in counts:  # what the answer carries (the last read)
            metrics.fetched(records, size_bytes)
        metrics.fetch_latency.observe(time.monotonic() - started)
        ctx.answer_bytes = size
        return {"error_code": K.none, "session_id": 0,
                "responses": [{"topic": t, "partitions": ps} for t, ps in answers.items()]}

    def _read_all(self, request, total_max: int, denied: dict):
        answers: dict[str, list[dict]] = {}
        replicas = []  # (replica, offset) of the partitions that returned nothing
        counts: list[tuple[int, int]] = []  # (records, bytes) per partition read
        size = 0
        metrics = self.broker.metrics
        # read_committed (isolation_level 1): the node leaves out aborted transactions and
        # markers itself and stops at the last stable offset, so the answer lists no
        # aborted transactions for the client to filter
        committed = getattr(request, "isolation_level", 0) == 1
        for t in request.topics:
            out = answers.setdefault(t.topic, [])
            refused = denied.get(t.topic) if denied else None
            for p in t.partitions:
                if refused is not None:
                    out.append({"partition_index": p.partition, "error_code": refused,
                                "high_watermark": -1, "last_stable_offset": -1,
                                "log_start_offset": -1, "aborted_transactions": None,
                                "preferred_read_replica": -1, "records": None})
                    continue
                try:
                    replica = _require_leader(self.broker, t.topic, p.partition)
                    budget = min(max(p.partition_max_bytes, 1), max(total_max - size, 0))
                    data = b""
                    if budget or not size:  # at least one batch for the first (KIP-74)
                        read = replica.read_committed if committed else replica.read
                        data, next_offset = read(p.fetch_offset, max(budget, 1))
                        counts.append((next_offset - p.fetch_offset, len(data)))
                    if not data:
                        replicas.append((replica, p.fetch_offset))
                    size += len(data)
                    hw = replica.high_watermark
                    out.append({"partition_index": p.partition, "error_code": K.none,
                                "high_watermark": hw,
                                "last_stable_offset": replica.last_stable_offset,
                                "log_start_offset": replica.log_start_offset,
                                "aborted_transactions": None, "preferred_read_replica": -1,
                                "records": data})
                except BrokerError as exc:
                    metrics.error("Kafka.Fetch", exc.code)
                    out.append({"partition_index": p.partition,
                                "error_code": kafka_code(exc.code), "high_watermark": -1,
                                "last_stable_offset": -1, "log_start_offset": -1,
                                "aborted_transactions": None, "preferred_read_replica": -1,
                                "records": None})
        return answers, size, replicas, counts

    async def list_offsets(self, request, version, ctx, header) -> dict:
        topics = []
        for t in request.topics:
            parts = []
            denied = ctx.denied("DESCRIBE", "TOPIC", t.name, "ListOffsets")
            for p in t.partitions:
                if denied is not None:
                    parts.append({"partition_index": p.partition_index, "error_code": denied,
                                  "timestamp": -1, "offset": -1})
                    continue
                try:
                    replica = _require_leader(self.broker, t.name, p.partition_index)
                    if p.timestamp < -2:
                        raise BrokerError(Code.INVALID_REQUEST, f"timestamp {p.timestamp} "
                                          "is not served: use -2, -1 or a time in ms")
                    offset = replica.offset_for_time(p.timestamp)
                    if p.timestamp == -1 and getattr(request, "isolation_level", 0) == 1:
                        offset = replica.last_stable_offset  # latest, read_committed
                    timestamp = -1
                    if p.timestamp >= 0:
                        if offset >= replica.high_watermark:
                            offset = -1
                        else:
                            timestamp = replica.append_time_ms_at(offset) or p.timestamp
                    parts.append({"partition_index": p.partition_index, "error_code": K.none,
                                  "timestamp": timestamp, "offset": offset,
                                  "leader_epoch": -1})
                except BrokerError as exc:
                    parts.append({"partition_index": p.partition_index,
                                  "error_code": kafka_code(exc.code), "timestamp": -1,
                                  "offset": -1})
            topics.append({"name": t.name, "partitions": parts})
        return {"topics": topics}

    async def init_producer_id(self, request, version, ctx, header) -> dict:
        if request.transactional_id is not None:
            if self.txns is None:
                return {"error_code": K.transactional_id_authorization_failed,
                        "producer_id": -1, "producer_epoch": -1}
            return await self.txns.init_producer_id(request, ctx)
        try:
            answer = await BrokerService.InitProducerId.__wrapped__(
                self.broker_service, broker_pb2.InitProducerIdRequest(), ctx)
        except BrokerError as exc:
            code = kafka_code(exc.code)
            if exc.code in (Code.NOT_LEADER, Code.LEADER_NOT_AVAILABLE, Code.NO_QUORUM):
                code = K.coordinator_not_available  # the producer retries
            return {"error_code": code, "producer_id": -1, "producer_epoch": -1}
        return {"error_code": K.none, "producer_id": answer.producer_id,
                "producer_epoch": answer.producer_epoch}

    # ------------------------------------------------------------------ groups
    async def find_coordinator(self, request, version, ctx, header) -> dict:
        keys = list(request.coordinator_keys) if version >= 4 else [request.key]
        out = []
        for key in keys:
            entry: dict[str, Any] = {"key": key, "node_id": -1, "host": "", "port": -1}
            key_type = getattr(request, "key_type", 0)
            denied = ctx.denied("DESCRIBE", "TRANSACTIONAL_ID" if key_type == 1 else "GROUP",
                                key, "FindCoordinator") if key_type in (0, 1) else None
            if denied is not None:
                entry.update(error_code=denied, error_message="not authorized to DESCRIBE "
                             f"{key!r}")
                out.append(entry)
                continue
            if key_type == 1 and self.txns is not None:
                try:
                    node_id = await self.txns.find_coordinator(key, ctx)
                    address = self.broker.config.kafka_peers.get(node_id)
                    if not address:
                        raise BrokerError(Code.LEADER_NOT_AVAILABLE, "the coordinator is "
                                          "being elected; retry")
                    host, port = _host_port(address)
                    entry.update(node_id=node_id, host=host, port=port, error_code=K.none)
                except BrokerError as exc:
                    code = K.coordinator_not_available
                    if exc.code == Code.INVALID_REQUEST:
                        code = K.invalid_request
                    entry.update(error_code=code, error_message=exc.message)
                out.append(entry)
                continue
            if key_type != 0:
                entry.update(error_code=K.coordinator_not_available,
                             error_message="transactions are not supported yet")
                out.append(entry)
                continue
            try:
                answer = await GroupCoordinatorService.FindCoordinator.__wrapped__(
                    self.groups, group_pb2.FindCoordinatorRequest(group_id=key), ctx)
                address = self.broker.config.kafka_peers.get(answer.node_id)
                if not answer.node_id or not address:
                    raise BrokerError(Code.LEADER_NOT_AVAILABLE, "the coordinator is being "
                                      "elected; retry")
                host, port = _host_port(address)
                entry.update(node_id=answer.node_id, host=host, port=port, error_code=K.none)
            except BrokerError as exc:
                code = K.coordinator_not_available
                if exc.code == Code.INVALID_REQUEST:
                    code = K.invalid_group_id
                entry.update(error_code=code, error_message=exc.message)
            out.append(entry)
        if version >= 4:
            return {"coordinators": out}
        return out[0]

    async def offset_commit(self, request, version, ctx, header) -> dict:
        if ctx.security is None:
            return await self.classic.offset_commit(request, version)
        group_denied = ctx.denied("READ", "GROUP", request.group_id, "OffsetCommit")
        refused = {t.name: group_denied or ctx.denied("READ", "TOPIC", t.name, "OffsetCommit")
                   for t in request.topics}
        allowed = tuple(t for t in request.topics if refused[t.name] is None)
        answer = {"topics": []}
        if allowed:
            answer = await self.classic.offset_commit(
                dataclasses.replace(request, topics=allowed), version)
        answer["topics"].extend(
            {"name": t.name, "partitions": [{"partition_index": p.partition_index,
                                             "error_code": refused[t.name]}
                                            for p in t.partitions]}
            for t in request.topics if refused[t.name] is not None)
        return answer

    async def offset_fetch(self, request, version, ctx, header) -> dict:
        if version >= 8:
            groups = []
            for g in request.groups:
                topics = None if g.topics is None else \
                    [(t.name, list(t.partition_indexes)) for t in g.topics]
                error, answer = await self._offsets_of(g.group_id, topics, ctx)
                groups.append({"group_id": g.group_id, "topics": answer, "error_code": error})
            return {"groups": groups}
        topics = None if request.topics is None else \
            [(t.name, list(t.partition_indexes)) for t in request.topics]
        error, answer = await self._offsets_of(request.group_id, topics, ctx)
        return {"topics": answer, "error_code": error}

    async def _offsets_of(self, group_id: str, topics, ctx) -> tuple[K, list[dict]]:
        denied = ctx.denied("DESCRIBE", "GROUP", group_id, "OffsetFetch")
        if denied is not None:
            return denied, []
        if topics is not None and ctx.security is not None:
            topics = [(n, ps) for n, ps in topics
                      if ctx.denied("DESCRIBE", "TOPIC", n, "OffsetFetch") is None]
            if not topics:
                return K.none, []
        pb = group_pb2.OffsetFetchRequest(group_id=group_id)
        for name, partitions in topics or ():
            pb.partitions.add(topic=name, partitions=partitions)
        try:
            answer = await GroupCoordinatorService.FetchOffsets.__wrapped__(self.groups, pb, ctx)
        except BrokerError as exc:
            return kafka_code(exc.code), []
        by_topic: dict[str, list[dict]] = {}
        for o in answer.offsets:
            if not ctx.allowed("DESCRIBE", "TOPIC", o.topic):
                continue
            by_topic.setdefault(o.topic, []).append({
                "partition_index": o.partition, "committed_offset": o.offset,
                "committed_leader_epoch": -1, "metadata": o.metadata, "error_code": K.none})
        return K.none, [{"name": t, "partitions": ps} for t, ps in by_topic.items()]

    async def list_groups(self, request, version, ctx, header) -> dict:
        try:
            answer = await GroupCoordinatorService.ListGroups.__wrapped__(
                self.groups, group_pb2.ListGroupsRequest(), ctx)
        except BrokerError as exc:
            return {"error_code": kafka_code(exc.code), "groups": []}
        listed = {}
        for g in answer.groups:
            if g.coordinator_id == self.broker.node_id:  # each coordinator lists its own
                listed[g.group_id] = {"group_id": g.group_id, "protocol_type": "consumer",
                                      "group_state": _state_name(g.state),
                                      "group_type": "consumer"}
        for group_id, state in self.classic.listing().items():
            listed[group_id] = {"group_id": group_id, "protocol_type": "consumer",
                                "group_state": state, "group_type": "classic"}
        wanted = set(getattr(request, "states_filter", ()) or ())
        groups = [g for _, g in sorted(listed.items())
                  if (not wanted or g["group_state"] in wanted)
                  and ctx.allowed("DESCRIBE", "GROUP", g["group_id"])]
        return {"error_code": K.none, "groups": groups}

    async def describe_groups(self, request, version, ctx, header) -> dict:
        out = []
        for group_id in request.groups:
            denied = ctx.denied("DESCRIBE", "GROUP", group_id, "DescribeGroups")
            if denied is not None:
                out.append({"error_code": denied, "group_id": group_id, "group_state": "",
                            "protocol_type": "", "protocol_data": "", "members": []})
                continue
            described = self.classic.describe(group_id)
            if described is None:
                described = await self._describe_consumer_group(group_id, ctx)
            out.append(described)
        return {"groups": out}

    async def _describe_consumer_group(self, group_id: str, ctx) -> dict:
        try:
            answer = await GroupCoordinatorService.DescribeGroup.__wrapped__(
                self.groups, group_pb2.DescribeGroupRequest(group_id=group_id), ctx)
        except BrokerError as exc:
            code = K.none if exc.code == Code.UNKNOWN_GROUP else kafka_code(exc.code)
            return {"error_code": code, "group_id": group_id,
                    "group_state": "Dead" if code == K.none else "", "protocol_type": "",
                    "protocol_data": "", "members": []}
        # the members' subscriptions and assignments in the consumer protocol's own format,
        # as Kafka's tools (kafka-consumer-groups --describe) decode them
        return {"error_code": K.none, "group_id": group_id,
                "group_state": _state_name(answer.state), "protocol_type": "consumer",
                "protocol_data": answer.assignor,
                "members": [{"member_id": m.member_id, "client_id": m.client_id,
                             "client_host": m.host,
                             "member_metadata": encode_data(
                                 ConsumerProtocolSubscription, {"topics": list(m.topics)}),
                             "member_assignment": encode_data(
                                 ConsumerProtocolAssignment, {"assigned_partitions": [
                                     {"topic": tp.topic, "partitions": list(tp.partitions)}
                                     for tp in m.assignment]})}
                            for m in answer.members]}

    # ------------------------------------------------------------------ admin
    async def create_topics(self, request, version, ctx, header) -> dict:
        results = await asyncio.gather(*(self._create_topic(t, request, ctx)
                                          for t in request.topics))
        return {"topics": results}

    async def _create_topic(self, t, request, ctx) -> dict:
        entry: dict[str, Any] = {"name": t.name, "num_partitions": -1,
                                 "replication_factor": -1}
        if ctx.security is not None and not ctx.allowed("CREATE", "CLUSTER", "kafka-cluster"):
            denied = ctx.denied("CREATE", "TOPIC", t.name, "CreateTopics")
            if denied is not None:
                entry.update(error_code=denied, error_message="CREATE on the cluster or the "
                             "topic is needed")
                return entry
        try:
            if t.assignments:
                raise BrokerError(Code.INVALID_REQUEST, "manual replica assignments are not "
                                  "supported; give a partition count and replication factor")
            if request.validate_only:
                raise BrokerError(Code.INVALID_REQUEST, "validate_only is not supported")
            pb = admin_pb2.CreateTopicRequest(
                name=t.name, partitions=max(t.num_partitions, 0),
                replication_factor=max(t.replication_factor, 0),
                configs={c.name: c.value for c in t.configs if c.value is not None})
            answer = await AdminService.CreateTopic.__wrapped__(self.admin, pb, ctx)
        except BrokerError as exc:
            code = kafka_code(exc.code)
            if exc.code == Code.INVALID_REQUEST and "name" in exc.message:
                code = K.invalid_topic_exception
            entry.update(error_code=code, error_message=exc.message)
            return entry
        topic = answer.topic
        meta = self.broker.controller.state.topic(t.name)
        configs = meta.configs if meta is not None else {}
        entry.update(error_code=K.none, topic_id=meta.topic_id if meta is not None else None,
                     num_partitions=len(topic.partitions),
                     replication_factor=topic.replication_factor,
                     configs=[{"name": c.name, "value": c.value, "read_only": False,
                               "config_source": _CONFIG_SOURCE_TOPIC
                               if c.source == admin_pb2.CONFIG_SOURCE_TOPIC
                               else _CONFIG_SOURCE_DEFAULT, "is_sensitive": False}
                              for c in config_entries(configs, False)])
        return entry

    async def delete_topics(self, request, version, ctx, header) -> dict:
        async def one(name: str) -> dict:
            denied = ctx.denied("DELETE", "TOPIC", name, "DeleteTopics")
            if denied is not None:
                return {"name": name, "error_code": denied}
            try:
                await AdminService.DeleteTopic.__wrapped__(
                    self.admin, admin_pb2.DeleteTopicRequest(name=name), ctx)
            except BrokerError as exc:
                return {"name": name, **_err(exc)}
            return {"name": name, "error_code": K.none}
        return {"responses": await asyncio.gather(*(one(n) for n in request.topic_names))}

    async def create_partitions(self, request, version, ctx, header) -> dict:
        async def one(t) -> dict:
            denied = ctx.denied("ALTER", "TOPIC", t.name, "CreatePartitions")
            if denied is not None:
                return {"name": t.name, "error_code": denied}
            try:
                if t.assignments:
                    raise BrokerError(Code.INVALID_REQUEST, "manual replica assignments are "
                                      "not supported")
                if request.validate_only:
                    raise BrokerError(Code.INVALID_REQUEST, "validate_only is not supported")
                await AdminService.AddPartitions.__wrapped__(
                    self.admin, admin_pb2.AddPartitionsRequest(name=t.name, total_count=t.count),
                    ctx)
            except BrokerError as exc:
                code = kafka_code(exc.code)
                if exc.code == Code.INVALID_REQUEST:
                    code = K.invalid_partitions
                return {"name": t.name, "error_code": code, "error_message": exc.message}
            return {"name": t.name, "error_code": K.none}
        return {"results": await asyncio.gather(*(one(t) for t in request.topics))}

    async def describe_configs(self, request, version, ctx, header) -> dict:
        results = []
        for r in request.resources:
            entry: dict[str, Any] = {"resource_type": r.resource_type,
                                     "resource_name": r.resource_name, "configs": []}
            denied = ctx.denied("DESCRIBE_CONFIGS", "CLUSTER", "kafka-cluster",
                                "DescribeConfigs") if r.resource_type == _RESOURCE_BROKER \
                else ctx.denied("DESCRIBE_CONFIGS", "TOPIC", r.resource_name, "DescribeConfigs") \
                if r.resource_type == _RESOURCE_TOPIC else None
            if denied is not None:
                entry["error_code"] = denied
            elif r.resource_type == _RESOURCE_BROKER:
                entry["error_code"] = K.none
            elif r.resource_type != _RESOURCE_TOPIC:
                entry.update(error_code=K.invalid_request,
                             error_message="only topic and broker configs are described")
            else:
                meta = self.broker.controller.state.topic(r.resource_name)
                if meta is None:
                    entry.update(error_code=K.unknown_topic_or_partition,
                                 error_message=f"topic {r.resource_name!r} does not exist")
                else:
                    keys = set(r.configuration_keys or ())
                    entry.update(error_code=K.none, configs=[
                        {"name": c.name, "value": c.value, "read_only": c.read_only,
                         "config_source": _CONFIG_SOURCE_TOPIC
                         if c.source == admin_pb2.CONFIG_SOURCE_TOPIC
                         else _CONFIG_SOURCE_DEFAULT,
                         "is_default": c.source != admin_pb2.CONFIG_SOURCE_TOPIC,
                         "is_sensitive": False, "synonyms": [], "config_type": 0,
                         "documentation": c.doc if getattr(request, "include_documentation", False)
                         else None}
                        for c in config_entries(meta.configs, meta.internal)
                        if not keys or c.name in keys])
            results.append(entry)
        return {"results": results}


    async def incremental_alter_configs(self, request, version, ctx, header) -> dict:
        """Topic configs: SET and DELETE (APPEND and SUBTRACT are for list-valued configs,
        which topics here do not have); broker configs are not alterable."""
        async def one(r) -> dict:
            entry = {"resource_type": r.resource_type, "resource_name": r.resource_name}
            denied = ctx.denied("ALTER_CONFIGS", "TOPIC", r.resource_name,
                                "IncrementalAlterConfigs") \
                if r.resource_type == _RESOURCE_TOPIC else None
            if denied is not None:
                return {**entry, "error_code": denied}
            try:
                if r.resource_type != _RESOURCE_TOPIC:
                    raise BrokerError(Code.INVALID_REQUEST, "only topic configs can be altered")
                pb = admin_pb2.AlterTopicConfigsRequest(name=r.resource_name,
                                                        validate_only=request.validate_only)
                for c in r.configs:
                    if c.config_operation == 0 and c.value is not None:
                        pb.set[c.name] = c.value
                    elif c.config_operation == 1:
                        pb.delete.append(c.name)
                    else:
                        raise BrokerError(Code.INVALID_REQUEST, f"config {c.name}: only SET "
                                          "(with a value) and DELETE are supported")
                await AdminService.AlterTopicConfigs.__wrapped__(self.admin, pb, ctx)
            except BrokerError as exc:
                return {**entry, **_err(exc)}
            return {**entry, "error_code": K.none}
        return {"responses": await asyncio.gather(*(one(r) for r in request.resources))}

    async def delete_groups(self, request, version, ctx, header) -> dict:
        async def one(group_id: str) -> dict:
            denied = ctx.denied("DELETE", "GROUP", group_id, "DeleteGroups")
            if denied is not None:
                return {"group_id": group_id, "error_code": denied}
            if self.classic.has_members(group_id):
                return {"group_id": group_id, "error_code": K.non_empty_group}
            try:
                await GroupCoordinatorService.DeleteGroup.__wrapped__(
                    self.groups, group_pb2.DeleteGroupRequest(group_id=group_id), ctx)
            except BrokerError as exc:
                code = kafka_code(exc.code)
                if exc.code == Code.INVALID_REQUEST:
                    code = K.invalid_group_id
                return {"group_id": group_id, "error_code": code}
            return {"group_id": group_id, "error_code": K.none}
        return {"results": await asyncio.gather(*(one(g) for g in request.groups_names))}


_STATES = {"empty": "Empty", "stable": "Stable", "reconciling": "Reconciling",
           "assigning": "Assigning", "dead": "Dead"}


def _state_name(state: str) -> str:
    return _STATES.get(state, state.capitalize())
