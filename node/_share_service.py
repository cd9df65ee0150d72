"""The Share gRPC service: share groups (KIP-932) on top of the partitions' Raft groups.

Two roles (``proto/raftka/v1/share.proto``; the design is in node/README.md, "Share
groups"):

- **Coordinator** (``ShareGroupHeartbeat``, ``DescribeShareGroup``): the leader of the
  group's ``__consumer_offsets`` partition, as for consumer groups. The group's record
  (``{"type": "share", <config>}``, a ``G`` record of ``_offsets.py``) is written there
  by the first member's heartbeat, acks=all, before the answer; a group id whose offsets
  partition holds a consumer group (members, a group record or committed offsets) is
  refused INCONSISTENT_GROUP_TYPE, and the consumer-group RPCs refuse a share group the
  same way. Members are kept in memory only (they hold nothing here; what they hold is in
  the share-partition state): after a coordinator move each member is listed again at its
  next heartbeat.
- **Share-partition leader** (``ShareFetch``, ``ShareAcknowledge``,
  ``DescribeSharePartition``): the leader of the data partition. Every change of a
  record's state is an operation replicated through the partition's Raft group before the
  answer (``PartitionReplica.share_op``, rules in ``_share_state.py``). It learns the
  group's configuration from the coordinator (here if it is this node, else by
  ``DescribeShareGroup`` over gRPC; cached ``CONFIG_CACHE_S``) and refuses UNKNOWN_GROUP
  for a group that does not exist.

Background (``share-maintenance`` task, every ``TICK_S`` on every node): for each share
state of a partition this node leads, a ``tick`` operation once some lock expired (so
records return to others, or to the dead-letter topic, without waiting for a fetch), and
a dead-letter writer when records wait for it (``_DeadLetterWriter``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc

from raftka.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, broker_pb2_grpc
from raftka.v1 import group_pb2, share_pb2, share_pb2_grpc
from raftka.v1.errors import error_details
from raftka.v1.recordbatch import BatchBuilder, CorruptBatchError, decode_batches

from ._broker import Broker
from ._forwarding import forwarded_metadata
from ._errors import BrokerError, Code
from ._forwarding import CHANNEL_OPTIONS
from ._offsets import OffsetsReplica, encode_group_changes, offsets_partition_for
from ._partition import PartitionReplica
from ._services import _handler, _require_leader, _Service
from ._share_state import ACCEPT, REJECT, RELEASE

log = logging.getLogger("raftka.share")

LOCK_MS_DEFAULT, LOCK_MS_MIN, LOCK_MS_MAX = 30_000, 1_000, 3_600_000
ATTEMPTS_DEFAULT, ATTEMPTS_MAX = 5, 100
IN_FLIGHT_DEFAULT, IN_FLIGHT_MAX = 2_000, 100_000
MAX_RECORDS_DEFAULT, MAX_RECORDS_MAX = 500, 10_000
FETCH_WAIT_MS_MAX = 30_000
RELEASE_DELAY_MS_MAX = 86_400_000
ACK_RANGES_MAX = 10_000
MEMBER_ID_MAX = 100
SESSION_TIMEOUT_S = 15.0
HEARTBEAT_INTERVAL_MS = 3_000
OP_TIMEOUT_S = 10.0
CONFIG_CACHE_S = 10.0
TICK_S = 0.2
RECHECK_S = 0.1  # a long poll re-checks for released records whose delay passed
READ_BYTES_MAX = 64 << 20
FIRST_READ_BYTES = 16 << 10  # of a ShareFetch answer, before the bytes per offset are known
DLQ_BATCH_MAX = 500
DLQ_BATCH_BYTES = 512 << 10  # below the default max.message.bytes (1 MiB)
DLQ_HEADER = "raftka.dlq."
ERROR_TEXT_MAX = 1000


class _Member:
    __slots__ = ("client_id", "topics", "host", "deadline")

    def __init__(self, client_id: str, topics: list[str], host: str, deadline: float) -> None:
        self.client_id = client_id
        self.topics = topics
        self.host = host
        self.deadline = deadline


def _config_record(group_id: str, cfg: share_pb2.ShareGroupConfig) -> dict:
    """The group's record from the configuration the first member asked for; raises
    BrokerError for a value out of range."""
    lock_ms = cfg.record_lock_duration_ms or LOCK_MS_DEFAULT
    attempts = cfg.max_delivery_attempts or ATTEMPTS_DEFAULT
    in_flight = cfg.max_in_flight_records or IN_FLIGHT_DEFAULT
    dlq = cfg.dead_letter_topic or f"{group_id}.dlq"
    for name, value, lo, hi in (("record_lock_duration_ms", lock_ms, LOCK_MS_MIN, LOCK_MS_MAX),
                                ("max_delivery_attempts", attempts, 1, ATTEMPTS_MAX),
                                ("max_in_flight_records", in_flight, 1, IN_FLIGHT_MAX)):
        if not lo <= value <= hi:
            raise BrokerError(Code.INVALID_CONFIG, f"{name} must be from {lo} to {hi}, got "
                              f"{value}")
    if len(dlq) > 249 or not dlq.isprintable() or dlq.startswith("__"):
        raise BrokerError(Code.INVALID_CONFIG, f"dead_letter_topic {dlq[:300]!r} is not a "
                          "valid topic name")
    initial = cfg.redelivery_backoff_initial_ms
    multiplier = cfg.redelivery_backoff_multiplier or 2.0
    maximum = cfg.redelivery_backoff_max_ms or max(60_000, initial)
    if not (0 <= initial <= 3_600_000 and 1.0 <= multiplier <= 10.0
            and initial <= maximum <= 86_400_000):
        raise BrokerError(Code.INVALID_CONFIG, "redelivery backoff: initial must be from 0 "
                          "to 3600000 ms, the multiplier from 1.0 to 10.0 and the maximum "
                          f"from initial to 86400000 ms; got {initial}, {multiplier}, "
                          f"{maximum}")
    return {"type": "share", "lock_ms": lock_ms, "attempts": attempts, "in_flight": in_flight,
            "dlq": dlq, "backoff": [initial, multiplier, maximum]}


def _config_pb(record: dict) -> share_pb2.ShareGroupConfig:
    initial, multiplier, maximum = record.get("backoff") or (0, 2.0, 60_000)
    return share_pb2.ShareGroupConfig(
        record_lock_duration_ms=record["lock_ms"], max_delivery_attempts=record["attempts"],
        dead_letter_topic=record["dlq"], max_in_flight_records=record["in_flight"],
        redelivery_backoff_initial_ms=initial, redelivery_backoff_multiplier=multiplier,
        redelivery_backoff_max_ms=maximum)


def _record_from_pb(cfg: share_pb2.ShareGroupConfig) -> dict:
    return {"type": "share", "lock_ms": cfg.record_lock_duration_ms,
            "attempts": cfg.max_delivery_attempts, "in_flight": cfg.max_in_flight_records,
            "dlq": cfg.dead_letter_topic,
            "backoff": [cfg.redelivery_backoff_initial_ms, cfg.redelivery_backoff_multiplier,
                        cfg.redelivery_backoff_max_ms]}


def _backoff(cfg: dict) -> list:
    return list(cfg.get("backoff") or (0, 2.0, 60_000))


def is_share_record(record: dict | None) -> bool:
    return isinstance(record, dict) and record.get("type") == "share"


def _check_member_id(member_id: str) -> None:
    if not member_id or len(member_id) > MEMBER_ID_MAX or not member_id.isprintable():
        raise BrokerError(Code.INVALID_REQUEST, f"member_id must be 1 to {MEMBER_ID_MAX} "
                          f"printable characters (e.g. a UUID), got {member_id[:200]!r}")


class ShareService(_Service, share_pb2_grpc.ShareServicer):
    def __init__(self, broker: Broker, groups) -> None:
        super().__init__(broker)
        self._groups = groups  # GroupCoordinatorService: routing to the coordinator
        self._members: dict[str, dict[str, _Member]] = {}
        self._creating: dict[str, asyncio.Lock] = {}
        self._configs: dict[str, tuple[float, dict]] = {}
        self._channels: dict[int, grpc.aio.Channel] = {}  # by node id
        self._writers: dict[tuple[str, int, str], asyncio.Task] = {}
        self._ticking: set[tuple[str, int, str]] = set()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._maintenance(),
                                                            name="share-maintenance")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._writers.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()

    # ------------------------------------------------------------------ coordinator
    @_handler
    async def ShareGroupHeartbeat(self, request, context):  # noqa: N802
        replica = self._groups._replica(request.group_id)
        _check_member_id(request.member_id)
        group_id = request.group_id
        record = await self._share_group(replica, group_id, request.config,
                                         create=not request.leave)
        members = self._members.setdefault(group_id, {})
        self._expire_members(group_id)
        if request.leave:
            members.pop(request.member_id, None)
            return share_pb2.ShareGroupHeartbeatResponse(config=_config_pb(record))
        topics = sorted(set(request.topics))
        if not topics:
            raise BrokerError(Code.INVALID_REQUEST, "a share group member must subscribe to "
                              "at least one topic")
        assignment = []
        for t in topics:
            meta = self.broker.controller.state.topic(t)
            if meta is None or meta.internal:
                raise BrokerError(Code.UNKNOWN_TOPIC, f"topic {t!r} does not exist; create "
                                  "it first (raftka topic create)")
            assignment.append(group_pb2.TopicPartitions(
                topic=t, partitions=range(len(meta.partitions))))
        known = record.get("topics", [])
        if not set(topics) <= set(known):  # remembered for describe (written, acks=all)
            # queue topics first: the group's state on every partition, so that what it
            # has not read yet is kept (the record is written only once that succeeded)
            await self._initialize_queues(group_id, [t for t in topics if t not in known])
            record = {**record, "topics": sorted(set(known) | set(topics))}
            for payload in encode_group_changes(group_id, {}, record, int(time.time() * 1000)):
                await replica.produce(payload, -1, OP_TIMEOUT_S)
        members[request.member_id] = _Member(request.client_id, topics, context.peer() or "",
                                             time.monotonic() + SESSION_TIMEOUT_S)
        return share_pb2.ShareGroupHeartbeatResponse(
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, config=_config_pb(record),
            assignment=assignment)

    async def _initialize_queues(self, group_id: str, topics: list[str]) -> None:
        """``InitializeSharePartition`` on every partition of each queue topic
        (``retention.share.groups=true``) among ``topics``, at its leader; raises
        BrokerError (retriable while a leader is unknown: the member retries its join)."""
        async def initialize(meta, p: int) -> None:
            leader = self.broker.leader_of(meta, meta.partitions[p])
            request = share_pb2.InitializeSharePartitionRequest(group_id=group_id,
                                                                topic=meta.name, partition=p)
            for _ in range(5):  # leader_of may be a hint: follow NOT_LEADER's leader
                address = self.broker.address_of(leader) if leader else ""
                if not address:
                    break
                try:
                    await self.call(address, share_pb2_grpc.ShareStub,
                                    "InitializeSharePartition", request, OP_TIMEOUT_S)
                    return
                except BrokerError as exc:
                    if exc.code != Code.NOT_LEADER or not exc.leader_id:
                        raise
                    leader = exc.leader_id
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"{meta.name}/{p} has no leader yet; "
                              "retry", retriable=True)

        state = self.broker.controller.state
        calls = [initialize(meta, p) for meta in map(state.topic, topics)
                 if meta is not None and meta.configs.get("retention.share.groups") == "true"
                 for p in range(len(meta.partitions))]
        if calls:
            await asyncio.gather(*calls)

    @_handler
    async def DescribeShareGroup(self, request, context):  # noqa: N802
        replica = self._groups._replica(request.group_id)
        record = replica.groups.get(request.group_id)
        if not is_share_record(record):
            if self._is_consumer_group(replica, request.group_id):
                raise BrokerError(Code.INCONSISTENT_GROUP_TYPE, f"group {request.group_id!r} "
                                  "is a consumer group, not a share group")
            raise BrokerError(Code.UNKNOWN_GROUP, f"share group {request.group_id!r} does not "
                              "exist (a member creates it when it first joins)")
        self._expire_members(request.group_id)
        members = [share_pb2.ShareMember(member_id=m, client_id=v.client_id, topics=v.topics,
                                         host=v.host)
                   for m, v in sorted(self._members.get(request.group_id, {}).items())]
        return share_pb2.DescribeShareGroupResponse(config=_config_pb(record), members=members,
                                                    coordinator_id=self.broker.node_id,
                                                    topics=record.get("topics", []))

    def _expire_members(self, group_id: str) -> None:
        members = self._members.get(group_id)
        if members:
            now = time.monotonic()
            for m in [m for m, v in members.items() if v.deadline < now]:
                del members[m]

    def _is_consumer_group(self, replica: OffsetsReplica, group_id: str) -> bool:
        record = replica.groups.get(group_id)
        if record is not None and not is_share_record(record):
            return True
        coordinated = self._groups._groups.get(group_id)
        return bool(replica.members.get(group_id) or replica.offsets.get(group_id)
                    or (coordinated is not None and coordinated.group.members))

    async def _share_group(self, replica: OffsetsReplica, group_id: str,
                           cfg: share_pb2.ShareGroupConfig, create: bool) -> dict:
        """The group's record; written first if ``create`` and it does not exist."""
        record = replica.groups.get(group_id)
        if is_share_record(record):
            return record
        if self._is_consumer_group(replica, group_id):
            raise BrokerError(Code.INCONSISTENT_GROUP_TYPE, f"group id {group_id!r} is used "
                              "by a consumer group; a share group needs another id")
        if not create:
            raise BrokerError(Code.UNKNOWN_GROUP, f"share group {group_id!r} does not exist")
        new = _config_record(group_id, cfg)
        lock = self._creating.setdefault(group_id, asyncio.Lock())
        async with lock:
            record = replica.groups.get(group_id)
            if is_share_record(record):
                return record
            for payload in encode_group_changes(group_id, {}, new, int(time.time() * 1000)):
                await replica.produce(payload, -1, OP_TIMEOUT_S)
            log.info("share group %s created: %s", group_id, new)
        self._creating.pop(group_id, None)
        return replica.groups.get(group_id) or new

    # ------------------------------------------------------------------ partition leader
    async def _config(self, group_id: str, fresh: bool = False) -> dict:
        """The group's record, from the coordinator; raises BrokerError."""
        cached = self._configs.get(group_id)
        now = time.monotonic()
        if cached is not None and not fresh and now - cached[0] < CONFIG_CACHE_S:
            return cached[1]
        try:
            replica = self._groups._replica(group_id)
        except BrokerError as exc:
            if exc.code != Code.NOT_COORDINATOR:
                raise
            record = await self._remote_config(group_id)
        else:
            record = replica.groups.get(group_id)
            if not is_share_record(record):
                raise BrokerError(Code.UNKNOWN_GROUP, f"share group {group_id!r} does not "
                                  "exist; a member creates it by joining "
                                  "(ShareGroupHeartbeat)")
        self._configs[group_id] = (now, record)
        return record

    async def _remote_config(self, group_id: str) -> dict:
        meta = self._groups._offsets_topic()
        pnum = offsets_partition_for(group_id, len(meta.partitions))
        leader = self.broker.leader_of(meta, meta.partitions[pnum])
        if not leader or leader == self.broker.node_id:
            raise BrokerError(Code.COORDINATOR_LOADING, f"the coordinator of group "
                              f"{group_id!r} is being elected; retry", retriable=True)
        stub = share_pb2_grpc.ShareStub(self._channel(leader))
        try:
            answer = await stub.DescribeShareGroup(
                share_pb2.DescribeShareGroupRequest(group_id=group_id), timeout=5.0,
                metadata=forwarded_metadata(self.broker.node_id))
        except grpc.aio.AioRpcError as exc:
            raise _remote_error(exc, f"asking node {leader} for group {group_id!r}") from None
        return _record_from_pb(answer.config)

    def _channel(self, node: int | str) -> grpc.aio.Channel:
        """To another node (by id, or by its client address) as Raft traffic goes: its
        peer port and certificate when the cluster has them (``_tls.PeerChannels``)."""
        node_id = node if isinstance(node, int) else next(
            (n for n, a in self.broker.config.peers.items() if a == node), 0)
        if not node_id:
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"{node} is not a cluster member",
                              retriable=True)
        channel = self._channels.get(node_id)
        if channel is None:
            channel = self._channels[node_id] = self.broker.peer_channels.open(
                node_id, CHANNEL_OPTIONS)
        return channel

    def _leader_replica(self, topic: str, partition: int) -> PartitionReplica:
        replica = _require_leader(self.broker, topic, partition)
        meta = self.broker.controller.state.topic(topic)
        if meta is not None and meta.internal:
            raise BrokerError(Code.INVALID_REQUEST, f"{topic} is internal; share groups read "
                              "ordinary topics")
        if not replica.leader_ready():
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"the new leader of {topic}/"
                              f"{partition} is catching up on its log; retry shortly",
                              retriable=True)
        return replica

    @_handler
    async def ShareFetch(self, request, context):  # noqa: N802
        _check_member_id(request.member_id)
        if not 0 <= request.max_records <= MAX_RECORDS_MAX or request.max_wait_ms < 0:
            raise BrokerError(Code.INVALID_REQUEST, f"max_records must be from 0 to "
                              f"{MAX_RECORDS_MAX} and max_wait_ms >= 0")
        if len(request.request_id) > 64 or len(request.acknowledge_request_id) > 64:
            raise BrokerError(Code.INVALID_REQUEST, "request_id and acknowledge_request_id "
                              "are limited to 64 characters")
        acks = _parse_acks(request.acknowledgements)
        replica = self._leader_replica(request.topic, request.partition)
        cfg = await self._config(request.group_id)
        group_id, max_records = request.group_id, request.max_records or MAX_RECORDS_DEFAULT
        deadline = time.monotonic() + min(request.max_wait_ms, FETCH_WAIT_MS_MAX) / 1000
        ack_task: asyncio.Future | None = None
        ack_id = ""
        if acks:  # proposed first: the acquisition below lands after it in the log
            if group_id not in replica.shares.groups:
                raise BrokerError(Code.INVALID_RECORD_STATE, f"group {group_id!r} holds no "
                                  f"records of {request.topic}/{request.partition}")
            ack_id = request.acknowledge_request_id or uuid.uuid4().hex
            ack_task = asyncio.ensure_future(replica.share_op(
                {"g": group_id, "m": request.member_id, "attempts": cfg["attempts"],
                 "log_start": replica.log_start_offset, "backoff": _backoff(cfg),
                 "op": "ack", "now": int(time.time() * 1000), "acks": acks, "id": ack_id},
                OP_TIMEOUT_S))
            await asyncio.sleep(0)  # let it propose (the next step of the loop's tasks)
        try:
            return await self._share_fetch(request, replica, cfg, group_id, max_records,
                                           deadline, ack_task, ack_id)
        finally:
            if ack_task is not None and not ack_task.done():
                ack_task.cancel()  # the operation stays proposed; only its waiter goes
            elif ack_task is not None and not ack_task.cancelled():
                ack_task.exception()  # retrieved (the answer carried it, or another error)

    async def _share_fetch(self, request, replica, cfg, group_id, max_records, deadline,
                           ack_task, ack_id):
        async def answer(response):
            if ack_task is not None:
                await ack_task  # raises the acknowledgement's error (nothing acquired)
                response.acknowledged = True
            return response

        while True:
            if ack_task is not None and ack_task.done() and ack_task.exception():
                raise ack_task.exception()  # refused: answer now, not after the long poll
            replica = self._leader_replica(request.topic, request.partition)
            now_ms = int(time.time() * 1000)
            sp = replica.shares.groups.get(group_id)
            hw = replica.high_watermark
            retry = request.request_id and sp is not None and any(
                i == request.request_id for i, _, _ in sp.fetch_ids)
            if retry or (sp is None and hw > replica.log_start_offset) or (
                    sp is not None and sp.acquirable(now_ms, hw, cfg["in_flight"])):
                op = {"g": group_id, "op": "acquire", "m": request.member_id, "now": now_ms,
                      "lock_ms": cfg["lock_ms"], "max": max_records, "cap": cfg["in_flight"],
                      "attempts": cfg["attempts"], "log_start": replica.log_start_offset,
                      "backoff": _backoff(cfg), "id": request.request_id}
                if ack_task is not None and not ack_task.done():
                    op["after_ack"] = ack_id  # nothing if the acknowledgement is refused
                acquired = await replica.share_op(op, OP_TIMEOUT_S)
                if acquired:
                    return await answer(self._fetched(replica, acquired,
                                                      now_ms + cfg["lock_ms"]))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return await answer(share_pb2.ShareFetchResponse(
                    high_watermark=replica.high_watermark))
            waits = [asyncio.ensure_future(replica.wait_for_data(hw, remaining)),
                     asyncio.ensure_future(replica.share_changed.wait())]
            await asyncio.wait(waits, timeout=min(remaining, RECHECK_S),
                               return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()

    def _fetched(self, replica: PartitionReplica, acquired, lock_deadline_ms: int):
        """The answer to a ShareFetch: the acquired ranges and the batches that hold them.
        Reads only about as many bytes as the ranges need (a read returns whole entries
        up to a byte budget, at least one): the budget is the range's length times the
        bytes per offset the previous read saw, so a member asking for 1,000 records is
        not sent (and does not decode) the megabyte that follows them."""
        parts: list[bytes] = []
        covered, size = -1, 0  # offsets below ``covered`` are in ``parts`` already
        per_offset = 0.0  # bytes per offset of the last read (0: unknown yet)
        for first, last, _ in acquired:
            offset = max(first, covered)
            while offset <= last and size < READ_BYTES_MAX:
                want = (last - offset + 1) * per_offset if per_offset else FIRST_READ_BYTES
                budget = int(min(max(want, FIRST_READ_BYTES), 1 << 20))
                try:
                    data, nxt = replica.read(offset, budget)
                    if nxt <= offset and budget < 1 << 20:  # only share control entries
                        data, nxt = replica.read(offset, 1 << 20)  # fitted: read on
                except BrokerError:
                    break  # removed by retention meanwhile: the member accepts the gap
                if nxt <= offset:
                    break
                parts.append(data)
                size += len(data)
                per_offset = len(data) / (nxt - offset)
                offset = covered = nxt
        return share_pb2.ShareFetchResponse(
            acquired=[share_pb2.AcquiredRecords(first_offset=f, last_offset=lst,
                                                delivery_count=c) for f, lst, c in acquired],
            record_batches=b"".join(parts), lock_deadline_ms=lock_deadline_ms,
            high_watermark=replica.high_watermark)

    @_handler
    async def ShareAcknowledge(self, request, context):  # noqa: N802
        _check_member_id(request.member_id)
        acks = _parse_acks(request.ranges)
        if len(request.request_id) > 64:
            raise BrokerError(Code.INVALID_REQUEST, "request_id is limited to 64 characters")
        replica = self._leader_replica(request.topic, request.partition)
        cfg = await self._config(request.group_id)
        if request.group_id not in replica.shares.groups and acks:
            raise BrokerError(Code.INVALID_RECORD_STATE, f"group {request.group_id!r} holds "
                              f"no records of {request.topic}/{request.partition}")
        base = {"g": request.group_id, "m": request.member_id, "attempts": cfg["attempts"],
                "log_start": replica.log_start_offset, "backoff": _backoff(cfg)}
        if acks:
            await replica.share_op({**base, "op": "ack", "now": int(time.time() * 1000),
                                    "acks": acks, "id": request.request_id}, OP_TIMEOUT_S)
        if request.leave and request.group_id in replica.shares.groups:
            await replica.share_op({**base, "op": "leave", "now": int(time.time() * 1000)},
                                   OP_TIMEOUT_S)
        return share_pb2.ShareAcknowledgeResponse()

    @_handler
    async def DescribeSharePartition(self, request, context):  # noqa: N802
        replica = self._leader_replica(request.topic, request.partition)
        await self._config(request.group_id)
        sp = replica.shares.groups.get(request.group_id)
        if sp is None:
            return share_pb2.DescribeSharePartitionResponse(
                start_offset=replica.log_start_offset, end_offset=replica.log_start_offset,
                high_watermark=replica.high_watermark)
        s = sp.summary()
        c = s["counts"]
        return share_pb2.DescribeSharePartitionResponse(
            start_offset=s["start"], end_offset=s["end"], high_watermark=replica.high_watermark,
            acquired=c["acquired"], available=c["available"],
            dead_lettering=c["dead"] + c["dead-lettering"], dead_lettered=s["dead_lettered"],
            accepted=s["accepted"], members=s["members"])

    @_handler
    async def InitializeSharePartition(self, request, context):  # noqa: N802
        replica = self._leader_replica(request.topic, request.partition)
        await self._config(request.group_id)
        if request.group_id not in replica.shares.groups:
            await replica.share_op({"g": request.group_id, "op": "tick",
                                    "now": int(time.time() * 1000),
                                    "log_start": replica.log_start_offset}, OP_TIMEOUT_S)
        sp = replica.shares.groups.get(request.group_id)
        return share_pb2.InitializeSharePartitionResponse(
            start_offset=sp.start if sp is not None else replica.log_start_offset)

    # ------------------------------------------------------------------ maintenance
    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._maintain()
            except Exception:  # noqa: BLE001 - a bug here must not stop the loop
                log.exception("share maintenance failed")

    def _maintain(self) -> None:
        now_ms = int(time.time() * 1000)
        # only the replicas that hold share-group state (listed as they first do), five
        # times a second
        for replica in self.broker.share_replicas.visit():
            topic, partition = replica.topic, replica.partition
            groups = replica.shares.groups
            if not groups or not replica.leader_ready():
                continue
            for group_id, sp in list(groups.items()):
                key = (topic, partition, group_id)
                if sp.needs_tick(now_ms) and key not in self._ticking:
                    self._ticking.add(key)
                    task = asyncio.ensure_future(self._tick(replica, group_id, now_ms))
                    task.add_done_callback(lambda _t, k=key: self._ticking.discard(k))
                if sp.has_dead() and key not in self._writers:
                    writer = _DeadLetterWriter(self, replica, group_id)
                    task = asyncio.ensure_future(writer.run())
                    self._writers[key] = task
                    task.add_done_callback(lambda _t, k=key: self._writers.pop(k, None))

    async def _tick(self, replica: PartitionReplica, group_id: str, now_ms: int) -> None:
        try:
            cfg = await self._config(group_id)
            await replica.share_op({"g": group_id, "op": "tick", "now": now_ms,
                                    "attempts": cfg["attempts"], "backoff": _backoff(cfg),
                                    "log_start": replica.log_start_offset}, OP_TIMEOUT_S)
        except BrokerError as exc:
            log.debug("share group %s: tick on %s/%d failed: %s", group_id, replica.topic,
                      replica.partition, exc.message)

    # ------------------------------------------------------------------ internal calls
    async def call(self, address: str, stub_class, method: str, request, timeout_s: float):
        stub = stub_class(self._channel(address))
        try:
            return await getattr(stub, method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _remote_error(exc, f"{method} at {address}") from None


def _parse_acks(ranges) -> list[list]:
    """Acknowledgement ranges as share operations' ``acks``; raises BrokerError."""
    if len(ranges) > ACK_RANGES_MAX:
        raise BrokerError(Code.INVALID_REQUEST, f"at most {ACK_RANGES_MAX} ranges per "
                          "acknowledgement")
    acks = []
    for r in ranges:
        if r.type not in (ACCEPT, RELEASE, REJECT):
            raise BrokerError(Code.INVALID_REQUEST, f"unknown acknowledgement type "
                              f"{r.type}; use ACCEPT, RELEASE or REJECT")
        if not 0 <= r.release_delay_ms <= RELEASE_DELAY_MS_MAX:
            raise BrokerError(Code.INVALID_REQUEST, f"release_delay_ms must be from 0 to "
                              f"{RELEASE_DELAY_MS_MAX}, got {r.release_delay_ms}")
        if r.first_offset < 0 or r.last_offset < r.first_offset:
            raise BrokerError(Code.INVALID_REQUEST, f"bad offset range {r.first_offset}-"
                              f"{r.last_offset}")
        acks.append([r.first_offset, r.last_offset, r.type, r.release_delay_ms,
                     r.error[:ERROR_TEXT_MAX]])
    return acks


def _remote_error(exc: grpc.aio.AioRpcError, what: str) -> BrokerError:
    info = error_details(exc.trailing_metadata())
    if info is not None:
        return BrokerError(info.code, info.message, retriable=info.retriable,
                           leader_id=info.leader_id)
    return BrokerError(Code.LEADER_NOT_AVAILABLE, f"{what}: {exc.code().name} "
                       f"{exc.details() or ''}".strip(), retriable=True)


class _DeadLetterWriter:
    """Writes a share-partition's dead letters to the group's dead-letter topic: one
    prepared batch at a time (``_share_state.py`` rule 5), exactly once.

    1. The dead-letter topic exists (created with the source topic's partition count and
       replication factor through the controller, as any CreateTopic), and the
       share-partition has its own idempotent producer id and dead-letter partition
       (``dlq_init``, replicated; chosen once: ``source partition % dead-letter
       partitions``).
    2. ``dlq_prepare`` freezes the next records as the batch of sequence ``dlq_seq``.
    3. The batch is produced acks=all with that producer id, epoch 0 and base sequence,
       the records read from the source log with their key, value and headers plus the
       ``raftka.dlq.*`` headers.
    4. Only once it is acknowledged, ``dlq_done`` marks the records finished.
    After a failover between 3 and 4 the new leader starts again at 2, gets the same
    prepared batch, and writes it with the same producer id and sequence: the dead-letter
    partition answers a duplicate with the original offsets instead of writing it twice.
    """

    def __init__(self, service: ShareService, replica: PartitionReplica, group_id: str):
        self.service = service
        self.broker = service.broker
        self.replica = replica
        self.group_id = group_id

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if not await self._step():
                    return
                backoff = 0.2
            except BrokerError as exc:
                if not self.replica.leader_ready():
                    return  # not the leader any more: the next one redoes it
                log.warning("share group %s: dead-lettering from %s/%d failed (%s); retrying",
                            self.group_id, self.replica.topic, self.replica.partition,
                            exc.message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _base(self, op: str) -> dict:
        return {"g": self.group_id, "op": op, "now": int(time.time() * 1000),
                "log_start": self.replica.log_start_offset}

    async def _step(self) -> bool:
        replica = self.replica
        if not replica.leader_ready():
            return False
        sp = replica.shares.groups.get(self.group_id)
        if sp is None or not sp.has_dead():
            return False
        cfg = await self.service._config(self.group_id)
        dlq = cfg["dlq"]
        meta = await self._dlq_topic(dlq)
        if sp.dlq_producer_id < 0:
            await self._init_producer(meta)
            sp = replica.shares.groups[self.group_id]
        ranges = await replica.share_op({**self._base("dlq_prepare"),
                                         "max": self._fitting(sp)}, OP_TIMEOUT_S)
        sp = replica.shares.groups[self.group_id]
        if not ranges:
            return False
        seq = sp.prepared_seq
        records = self._records(sp, ranges, dlq)
        if records:
            builder = BatchBuilder("lz4", sp.dlq_producer_id, 0, seq, max_bytes=2**31 - 1)
            for key, value, headers, ts in records:
                builder.append(key, value, headers, ts)
            try:
                await self._produce(dlq, meta, sp.dlq_partition, builder.build())
            except BrokerError as exc:
                if exc.code not in (Code.UNKNOWN_PRODUCER_ID, Code.OUT_OF_ORDER_SEQUENCE):
                    raise
                # the dead-letter partition no longer knows our producer id (its state
                # expired): continue under a fresh id from sequence 0; the next step
                # writes the same prepared batch
                log.warning("share group %s: %s/%d: dead-letter producer id %d was "
                            "forgotten by %s (%s); taking a fresh one", self.group_id,
                            replica.topic, replica.partition, sp.dlq_producer_id, dlq,
                            exc.message)
                await self._init_producer(meta, reset_from=sp.dlq_producer_id)
                return True
        await replica.share_op({**self._base("dlq_done"), "seq": seq, "n": len(records)},
                               OP_TIMEOUT_S)
        log.debug("share group %s: %d record(s) of %s/%d dead-lettered to %s", self.group_id,
                 len(records), replica.topic, replica.partition, dlq)
        return True

    def _fitting(self, sp) -> int:
        """How many dead offsets to prepare so that the batch stays under
        ``DLQ_BATCH_BYTES`` (at least one; at most ``DLQ_BATCH_MAX``). Only decides the
        size of the *next* prepared batch: a prepared batch is written as it is."""
        counted, size, records = 0, 0, 0  # dead offsets before the current span
        for first, last in sp.dead():
            offset = first
            while offset <= last:
                try:
                    data, nxt = self.replica.read(offset, 1 << 20)
                    decoded = decode_batches(data)
                except (BrokerError, CorruptBatchError):
                    break
                if nxt <= offset:
                    break
                for r in decoded:
                    if not offset <= r.offset <= last:
                        continue
                    size += len(r.key or b"") + len(r.value or b"") + 200 + sum(
                        len(k) + len(v or b"") for k, v in r.headers)
                    if records and size > DLQ_BATCH_BYTES:
                        return max(min(counted + r.offset - first, DLQ_BATCH_MAX), 1)
                    records += 1
                offset = nxt
            counted += last - first + 1
            if counted >= DLQ_BATCH_MAX:
                break
        return max(min(counted, DLQ_BATCH_MAX), 1)

    def _records(self, sp, ranges, dlq: str) -> list:
        """The prepared records as read from the source log, with the dead-letter headers;
        the same on every leader (the log and the replicated state decide them)."""
        out = []
        replica = self.replica
        for first, last in ranges:
            offset = first
            while offset <= last:
                try:
                    data, nxt = replica.read(offset, 1 << 20)
                except BrokerError:
                    break  # removed by retention: nothing left to dead-letter
                if nxt <= offset:
                    break
                try:
                    decoded = decode_batches(data)
                except CorruptBatchError:
                    decoded = []
                for r in decoded:
                    if first <= r.offset <= last and r.offset >= offset:
                        span = sp.record_info(r.offset)
                        headers = tuple(r.headers) + tuple(
                            (DLQ_HEADER + k, v.encode()) for k, v in (
                                ("topic", replica.topic), ("partition", str(replica.partition)),
                                ("offset", str(r.offset)), ("group", self.group_id),
                                ("delivery.count", str(span.count if span else 0)),
                                ("reason", span.reason if span else ""),
                                ("error", span.error if span else "")))
                        out.append((r.key, r.value, headers, r.timestamp_ms))
                offset = nxt
        return out

    async def _init_producer(self, meta, reset_from: int | None = None) -> None:
        answer = await self.service.call(
            self.broker.address_of(self.broker.node_id), broker_pb2_grpc.BrokerStub,
            "InitProducerId", broker_pb2.InitProducerIdRequest(), OP_TIMEOUT_S)
        op = {**self._base("dlq_init"), "pid": answer.producer_id,
              "partition": self.replica.partition % len(meta.partitions)}
        if reset_from is not None:
            op.update(reset=True, old=reset_from)
        await self.replica.share_op(op, OP_TIMEOUT_S)

    async def _dlq_topic(self, name: str):
        state = self.broker.controller.state
        meta = state.topic(name)
        if meta is not None:
            return meta
        source = state.topic(self.replica.topic)
        if source is None:
            raise BrokerError(Code.UNKNOWN_TOPIC, f"topic {self.replica.topic} was deleted")
        try:
            await self.service.call(
                self.broker.address_of(self.broker.node_id), admin_pb2_grpc.AdminStub,
                "CreateTopic", admin_pb2.CreateTopicRequest(
                    name=name, partitions=len(source.partitions),
                    replication_factor=source.replication_factor), OP_TIMEOUT_S)
            log.info("share group %s: created dead-letter topic %s", self.group_id, name)
        except BrokerError as exc:
            if exc.code != Code.TOPIC_EXISTS:
                raise
        await self.broker.wait_for_metadata(lambda s: s.topic(name) is not None, 2.0)
        meta = state.topic(name) or self.broker.controller.state.topic(name)
        if meta is None:
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"dead-letter topic {name} is being "
                              "created", retriable=True)
        return meta

    async def _produce(self, name: str, meta, partition: int, batch: bytes) -> None:
        if partition >= len(meta.partitions):
            raise BrokerError(Code.UNKNOWN_PARTITION, f"{name}/{partition} does not exist")
        leader = self.broker.leader_of(meta, meta.partitions[partition])
        for _ in range(5):
            address = self.broker.address_of(leader) if leader else ""
            if not address:
                raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"{name}/{partition} has no "
                                  "leader yet", retriable=True)
            try:
                await self.service.call(address, broker_pb2_grpc.BrokerStub, "Produce",
                                        broker_pb2.ProduceRequest(
                                            topic=name, partition=partition,
                                            acks=broker_pb2.ACKS_ALL, record_batches=batch),
                                        OP_TIMEOUT_S)
                return
            except BrokerError as exc:
                if exc.code != Code.NOT_LEADER or not exc.leader_id:
                    raise
                leader = exc.leader_id
        raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"{name}/{partition}: leader moving",
                          retriable=True)

