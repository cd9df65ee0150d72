"""gRPC handlers for the client-facing services (Broker, Admin) of ``raftka.v1``.

Every handler maps ``BrokerError`` to its status + ``ErrorInfo`` trailer, and any other
exception to INTERNAL with a short message (logged with its traceback here, never sent to
the client). Nothing a client sends can stop the node.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from typing import Any, Awaitable, Callable

import grpc

from raftka.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, broker_pb2_grpc, txn_pb2, txn_pb2_grpc
from raftka.v1.recordbatch import BatchBuilder, CorruptBatchError, parse_header, raw_records
from raftka.raft import Role

from ._authz import CALLER, JOINER, Denied, Held
from ._broker import Broker
from ._controller_commands import (
    encode_register_node,
    encode_alter_replication_factor,
    encode_cancel_decommission,
    encode_cancel_reassignment,
    encode_complete_reassignment,
    encode_decommission_node,
    encode_reassign_partition,
    encode_set_reassignment_throttle,
    encode_set_balancer,
    encode_add_partitions,
    encode_allocate_producer_ids,
    encode_alter_topic_configs,
    encode_create_topic,
    encode_delete_topic,
)
from ._controller_state import TopicMeta
from ._topic_configs import TOPIC_CONFIGS, normalize_configs
from ._errors import BrokerError, Code, abort_with
from ._forwarding import ControllerForwarder, forwarded_metadata

log = logging.getLogger("raftka.rpc")

FETCH_MAX_BYTES_DEFAULT = 1 << 20
FETCH_MAX_BYTES_MAX = 32 << 20
FETCH_WAIT_MS_MAX = 30_000
PRODUCE_TIMEOUT_MS_DEFAULT = 10_000
PRODUCE_TIMEOUT_MS_MAX = 120_000
ADMIN_TIMEOUT_S = 10.0
DEAD_SILENCE_S = 5.0  # remove --dead: a node heard from more recently is alive
READ_YOUR_WRITES_S = 2.0  # a forwarded topic change: wait this long for this node to apply it
PRODUCE_STREAM_IN_FLIGHT_MAX = 1000  # requests of one ProduceStream queued or unanswered
PRODUCER_ID_BLOCK = 1000  # ids a node reserves from the controller at a time
_ACKS = {broker_pb2.ACKS_ALL: -1, broker_pb2.ACKS_LEADER: 1, broker_pb2.ACKS_NONE: 0}
# a record batch's attributes (byte 21) and producer id and epoch (byte 43): enough to know
# a validated batch is transactional and whose (``BrokerService._joined``)
_ATTRIBUTES = struct.Struct(">h")
_PRODUCER = struct.Struct(">qh")
_TRANSACTIONAL_BIT = 0x10


def _handler(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Errors to statuses (module docstring); counts each error by method and code."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: _Service, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except BrokerError as exc:
            self.broker.metrics.error(name, exc.code)
            await abort_with(context, self.complete(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except CorruptBatchError as exc:  # bad data is the sender's or the log's, not a bug
            self.broker.metrics.error(name, Code.CORRUPT_BATCH)
            await abort_with(context, BrokerError(Code.CORRUPT_BATCH, str(exc)))
        except Exception as exc:  # noqa: BLE001
            log.exception("%s failed", method.__name__)
            self.broker.metrics.error(name, Code.INTERNAL_ERROR)
            await abort_with(context, BrokerError(
                Code.INTERNAL_ERROR, f"internal error in {method.__name__} "
                f"({type(exc).__name__}); the node keeps serving, please report this"))
    return wrapper


class _Service:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def complete(self, exc: BrokerError) -> BrokerError:
        if exc.leader_id and not exc.leader_address:
            exc.leader_address = self.broker.address_of(exc.leader_id)
        return exc

    def topic_info(self, topic: TopicMeta) -> broker_pb2.TopicInfo:
        b = self.broker
        info = broker_pb2.TopicInfo(name=topic.name, replication_factor=topic.replication_factor,
                                    configs=topic.effective_configs(), topic_id=topic.topic_id)
        for meta in topic.partitions:
            p = info.partitions.add(partition=meta.partition, replicas=list(meta.replicas),
                                    leader_id=b.leader_of(topic, meta))
            replica = b.partitions.get((topic.name, meta.partition))
            if replica is not None and replica.group is not None:
                p.high_watermark = replica.high_watermark
                p.log_start_offset = replica.log_start_offset
                p.leader_term = replica.group.node.term
                p.stored_bytes = replica.stored_bytes()
                if replica.config.compact:
                    p.dirty_ratio = replica.dirty_ratio
        return info


class _AtControllerLeader(_Service):
    """A service with calls only the controller leader serves: writes to the controller
    log, and reads only the leader answers for sure. They run at the leader, forwarded
    there from any other node (``_forwarding.py``)."""

    stub_class: Any = None  # this service's gRPC stub: calls the same method at the leader

    def __init__(self, broker: Broker, forwarder: ControllerForwarder) -> None:
        super().__init__(broker)
        self.forwarder = forwarder

    async def at_controller_leader(self, context: grpc.aio.ServicerContext, method: str,
                                   request: Any, what: str,
                                   local: Callable[[float], Awaitable[Any]],
                                   retry_if_leader_moves: bool = False) -> Any:
        """``local`` at the controller leader: here, or at the leader by calling the same
        ``method`` of this service there with the same request (a write, or a read only the
        leader answers for sure: ``AdminService._topic_read``). ``retry_if_leader_moves``:
        see ``_forwarding.py`` (only for calls whose repetition is harmless)."""
        stub_class = self.stub_class

        async def remote(channel: grpc.aio.Channel, timeout_s: float,
                         metadata: tuple[tuple[str, str], ...]) -> Any:
            return await getattr(stub_class(channel), method)(
                request, timeout=timeout_s, metadata=metadata)

        return await self.forwarder.call(context, what, ADMIN_TIMEOUT_S, local, remote,
                                         retry_if_leader_moves)


def _require_leader(broker: Broker, topic: str, partition: int):
    replica = broker.partition(topic, partition)
    group = replica.group
    if group is None or group.node.role != Role.LEADER:
        leader = group.node.leader_id if group is not None else 0
        raise BrokerError(
            Code.NOT_LEADER,
            f"node {broker.node_id} is not the leader of {topic}/{partition}"
            + (f"; the leader is node {leader}" if leader else "; an election is in progress"),
            retriable=True, leader_id=leader)
    return replica


def _require_producible_leader(broker: Broker, topic: str, partition: int):
    """The leader replica of a topic clients may write to: an internal topic holds the
    node's own records (``__consumer_offsets``: committed offsets, group state), which a
    client's batch would corrupt when replicas apply it."""
    meta = broker.controller.state.topic(topic)
    if meta is not None and meta.internal:
        raise BrokerError(Code.INVALID_REQUEST, f"topic {topic} is internal: only the nodes "
                          "write to it (commit offsets with CommitOffsets)")
    return _require_leader(broker, topic, partition)


def _readable(broker: Broker, request):
    """The replica a Fetch reads: the leader, or with ``allow_follower`` a follower that
    hears from its leader (node-level liveness). A follower applies only what its leader
    told it is committed, so its high watermark never passes the leader's. A replica
    without a live leader (an election, cut off from the leader) answers NOT_LEADER, and
    the reader goes to the leader."""
    if not request.allow_follower:
        return _require_leader(broker, request.topic, request.partition)
    replica = broker.partition(request.topic, request.partition)
    group = replica.group
    if group is not None:
        node = group.node
        if node.role == Role.LEADER or (
                node.role == Role.FOLLOWER and node.leader_id
                and broker.host.driver.heard_recently(node.leader_id)):
            return replica
    return _require_leader(broker, request.topic, request.partition)


def _read_committed(request) -> bool:
    level = request.isolation_level
    if level not in (broker_pb2.READ_UNCOMMITTED, broker_pb2.READ_COMMITTED):
        raise BrokerError(Code.INVALID_REQUEST, f"unknown isolation_level {level}; use "
                          "READ_UNCOMMITTED (0) or READ_COMMITTED (1)")
    return level == broker_pb2.READ_COMMITTED


MARKER_TIMEOUT_MS_DEFAULT = 30_000


class TxnMarkersService(_Service, txn_pb2_grpc.TxnMarkersServicer):
    """``TxnMarkers.WriteTxnMarkers`` (txn.proto): a transaction coordinator (or an
    operator's tool) ends a producer's transaction on partitions this node leads. Each
    marker goes through its partition's Raft log (``PartitionReplica.write_marker``); the
    partitions are written concurrently and answered one by one (a partition this node does
    not lead answers NOT_LEADER in its result, the others are still written)."""

    joins: Any = None  # the node's TxnJoins (_txn_join.py rule 5), set by the server

    @_handler
    async def WriteTxnMarkers(self, request, context):  # noqa: N802
        if request.result not in (txn_pb2.TXN_COMMIT, txn_pb2.TXN_ABORT):
            raise BrokerError(Code.INVALID_REQUEST, "result must be TXN_COMMIT or TXN_ABORT")
        if request.timeout_ms < 0:
            raise BrokerError(Code.INVALID_REQUEST, f"timeout_ms {request.timeout_ms} is "
                              "negative; use 0 for the default or a time in ms")
        if not request.partitions:
            raise BrokerError(Code.INVALID_REQUEST, "name at least one partition")
        timeout_s = min(request.timeout_ms or MARKER_TIMEOUT_MS_DEFAULT,
                        PRODUCE_TIMEOUT_MS_MAX) / 1000
        commit = request.result == txn_pb2.TXN_COMMIT

        async def one(tp) -> txn_pb2.TxnMarkerResult:
            result = txn_pb2.TxnMarkerResult(topic=tp.topic, partition=tp.partition, offset=-1)
            try:
                replica = _require_leader(self.broker, tp.topic, tp.partition)
                joins = self.joins
                if joins is not None and request.joined_epoch > request.producer_epoch:
                    meta = self.broker.controller.state.topic(tp.topic)
                    if meta is not None and not meta.internal:  # _txn_join.py rule 5
                        joins.prejoined(replica, request.producer_id, request.joined_epoch)
                result.offset = await replica.write_marker(
                    request.producer_id, request.producer_epoch, commit,
                    request.coordinator_epoch, timeout_s)
                if joins is not None:
                    joins.marked(replica, request.producer_id, request.producer_epoch)
            except BrokerError as exc:
                self.broker.metrics.error("WriteTxnMarkers", exc.code)
                result.error.CopyFrom(self.complete(exc).info())
            return result

        results = await asyncio.gather(*(one(tp) for tp in request.partitions))
        return txn_pb2.WriteTxnMarkersResponse(results=results)


def _produce_args(broker: Broker, request) -> tuple[Any, bytes, int, float]:
    """(leader replica, payload, acks, timeout_s) of a ProduceRequest; raises BrokerError."""
    replica = _require_producible_leader(broker, request.topic, request.partition)
    acks = _ACKS.get(request.acks)
    if acks is None:
        raise BrokerError(Code.INVALID_REQUEST, f"unknown acks value {request.acks}")
    which = request.WhichOneof("payload")
    if which == "record_batches":
        payload = request.record_batches
    elif which == "records":
        payload = _batch_from_records(request.records.records)
    else:
        raise BrokerError(Code.INVALID_REQUEST,
                          "the produce request needs record_batches or records")
    if request.timeout_ms < 0:
        raise BrokerError(Code.INVALID_REQUEST, f"timeout_ms {request.timeout_ms} is negative; "
                          "use 0 for the broker default or a time in ms")
    timeout_ms = min(request.timeout_ms or PRODUCE_TIMEOUT_MS_DEFAULT, PRODUCE_TIMEOUT_MS_MAX)
    return replica, payload, acks, max(timeout_ms, 1) / 1000


class BrokerService(_AtControllerLeader, broker_pb2_grpc.BrokerServicer):
    """Produce pipelining: ``ProduceStream`` reads one stream's requests in order and
    queues each on its partition (``PartitionReplica.submit``, synchronous) before reading
    the next, so a client's pipelined batches reach the Raft log in the order it sent
    them. Unary ``Produce`` calls give no such order: several calls on one HTTP/2
    connection are separate handler tasks. Answers are written as writes complete."""

    stub_class = broker_pb2_grpc.BrokerStub

    def __init__(self, broker: Broker, forwarder: ControllerForwarder) -> None:
        super().__init__(broker, forwarder)
        self._producer_ids = (0, 0)  # [next, end) of the block this node reserved
        self._producer_ids_lock = asyncio.Lock()
        # the partitions' joins to transactions (``_txn_join.py``), set by the server
        self.joins: Any = None

    @_handler
    async def Produce(self, request, context):  # noqa: N802
        metrics = self.broker.metrics
        acks_level = _ACKS.get(request.acks, -1)
        metrics.produce_requests[acks_level].inc()
        started = time.perf_counter()
        try:
            replica, payload, acks, timeout_s = _produce_args(self.broker, request)
            joined = False
            if request.transactional_id and self.joins is not None:
                future = replica.submit(payload, acks, deliver_at_ms=request.deliver_at_ms)
                answer = self._joined(replica, request, payload, future)
                joined = answer is not future
                base, last = await replica.wait_acked(answer, acks, timeout_s)
            else:
                base, last = await replica.produce(payload, acks, timeout_s,
                                                   deliver_at_ms=request.deliver_at_ms)
        finally:
            metrics.produce_latency[acks_level].observe(time.perf_counter() - started)
        return broker_pb2.ProduceResponse(base_offset=base, last_offset=last,
                                          high_watermark=replica.high_watermark,
                                          transaction_joined=joined)

    async def ProduceStream(self, request_iterator, context):  # noqa: N802
        answers: asyncio.Queue[broker_pb2.ProduceStreamResponse] = asyncio.Queue()
        slots = asyncio.Semaphore(PRODUCE_STREAM_IN_FLIGHT_MAX)

        async def write_answers() -> None:
            while True:
                answer = await answers.get()
                await context.write(answer)
                slots.release()

        writer = asyncio.create_task(write_answers())
        streams = self.broker.metrics.streams["produce"]
        streams.inc()
        try:
            async for item in request_iterator:
                await slots.acquire()  # bounds the requests of one stream in flight
                if writer.done():
                    break
                self._stream_produce(item, answers)
            for _ in range(PRODUCE_STREAM_IN_FLIGHT_MAX):  # until every answer is written
                acquire = asyncio.ensure_future(slots.acquire())
                await asyncio.wait([acquire, writer], return_when=asyncio.FIRST_COMPLETED)
                if not acquire.done():
                    acquire.cancel()
                    break
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:  # noqa: BLE001 - a broken stream must not stop the node
            log.exception("ProduceStream failed")
        finally:
            streams.dec()
            writer.cancel()

    def _stream_produce(self, item, answers: asyncio.Queue) -> None:
        """Validate and queue one stream request now; answer it when it completes. A
        ``Denied`` item (the caller may not write its topic: ``_authz.py``) is answered
        with its error and never written."""
        denied = item if isinstance(item, Denied) else None
        if denied is not None:
            item = denied.item
        throttle_ms = 0
        if isinstance(item, Held):  # held back by a quota first: the answer says how long
            item, throttle_ms = item.item, item.throttle_time_ms
        cid = item.correlation_id
        metrics = self.broker.metrics
        acks_level = _ACKS.get(item.request.acks, -1)
        metrics.produce_requests[acks_level].inc()
        started = time.perf_counter()
        latency = metrics.produce_latency[acks_level]

        def fail(exc: BrokerError) -> None:
            metrics.error("ProduceStream", exc.code)
            latency.observe(time.perf_counter() - started)
            answers.put_nowait(broker_pb2.ProduceStreamResponse(
                correlation_id=cid, error=self.complete(exc).info()))

        if denied is not None:
            fail(denied.error)
            return
        joined = False
        try:
            replica, payload, acks, timeout_s = _produce_args(self.broker, item.request)
            future = replica.submit(payload, acks, deliver_at_ms=item.request.deliver_at_ms)
            if item.request.transactional_id and self.joins is not None and future is not None:
                answer = self._joined(replica, item.request, payload, future)
                joined, future = answer is not future, answer
        except BrokerError as exc:
            fail(exc)
            return
        except Exception as exc:  # noqa: BLE001
            log.exception("ProduceStream request failed")
            fail(BrokerError(Code.INTERNAL_ERROR, f"internal error in ProduceStream "
                             f"({type(exc).__name__}); the node keeps serving, please report"))
            return
        if future is None:  # acks=0
            latency.observe(time.perf_counter() - started)
            answers.put_nowait(broker_pb2.ProduceStreamResponse(
                correlation_id=cid, response=broker_pb2.ProduceResponse(
                    base_offset=-1, last_offset=-1, high_watermark=replica.high_watermark)))
            return
        timer = asyncio.get_running_loop().call_later(timeout_s, future.cancel)

        def done(f: asyncio.Future) -> None:
            timer.cancel()
            if f.cancelled():
                fail(BrokerError(
                    Code.NO_QUORUM,
                    f"not {'committed by a majority' if acks < 0 else 'persisted'} within "
                    f"{timeout_s:.1f}s (a replica may be down or partitioned); the write may "
                    "still be committed later, retry with idempotence to avoid a duplicate",
                    retriable=True))
                return
            exc = f.exception()
            if exc is None:
                base, last = f.result()
                latency.observe(time.perf_counter() - started)
                answers.put_nowait(broker_pb2.ProduceStreamResponse(
                    correlation_id=cid, response=broker_pb2.ProduceResponse(
                        base_offset=base, last_offset=last,
                        high_watermark=replica.high_watermark,
                        throttle_time_ms=throttle_ms, transaction_joined=joined)))
            elif isinstance(exc, BrokerError):
                fail(exc)
            else:
                log.error("ProduceStream write failed: %r", exc)
                fail(BrokerError(Code.INTERNAL_ERROR, f"internal error ({type(exc).__name__})"))

        future.add_done_callback(done)

    def _joined(self, replica, request, payload: bytes, future: asyncio.Future
                ) -> asyncio.Future:
        """``_txn_join.py`` rule 1: a transactional batch of a request naming its
        transactional id is answered once its partition joined the transaction too."""
        attributes, = _ATTRIBUTES.unpack_from(payload, 21)
        if not attributes & _TRANSACTIONAL_BIT:
            return future
        producer_id, epoch = _PRODUCER.unpack_from(payload, 43)
        return self.joins.joined(replica, request.transactional_id, producer_id, epoch,
                                 list(request.transaction_partitions), future)

    @_handler
    async def InitProducerId(self, request, context):  # noqa: N802
        """A fresh producer id with epoch 0, from this node's reserved block. When the
        block runs out, a new one of PRODUCER_ID_BLOCK ids is reserved through the
        controller log, which only the controller leader can do: any other node forwards
        the call to the leader, which answers from its own block. Ids left unused in a
        block (restart, leader change) are skipped, never reused."""
        return await self.new_producer_id(context)

    async def new_producer_id(self, context) -> broker_pb2.InitProducerIdResponse:
        """``InitProducerId``'s answer (also the transaction coordinator's source of ids)."""
        request = broker_pb2.InitProducerIdRequest()
        async with self._producer_ids_lock:
            nxt, end = self._producer_ids
            if nxt < end:
                self._producer_ids = (nxt + 1, end)
                return broker_pb2.InitProducerIdResponse(producer_id=nxt, producer_epoch=0)

        async def local(timeout_s: float) -> broker_pb2.InitProducerIdResponse:
            async with self._producer_ids_lock:
                nxt, end = self._producer_ids
                if nxt >= end:
                    result = await self.broker.controller.propose(
                        encode_allocate_producer_ids(PRODUCER_ID_BLOCK), timeout_s)
                    if not result.ok:
                        raise BrokerError(result.code, result.message)
                    nxt = int(result.value)  # type: ignore[arg-type]
                    end = nxt + PRODUCER_ID_BLOCK
                self._producer_ids = (nxt + 1, end)
            return broker_pb2.InitProducerIdResponse(producer_id=nxt, producer_epoch=0)

        # repeating it only skips ids (never reused): follow a new leader at once
        return await self.at_controller_leader(context, "InitProducerId", request,
                                               "InitProducerId", local,
                                               retry_if_leader_moves=True)

    @_handler
    async def Fetch(self, request, context):  # noqa: N802
        started = time.perf_counter()
        try:
            replica = _readable(self.broker, request)
            committed = _read_committed(request)
            wait_ms = min(max(request.max_wait_ms, 0), FETCH_WAIT_MS_MAX)
            if committed:
                if wait_ms and request.offset >= replica.last_stable_offset:
                    await replica.wait_for_stable(request.offset, wait_ms / 1000)
                    replica = _require_leader(self.broker, request.topic, request.partition)
            elif wait_ms and request.offset >= replica.high_watermark:
                await replica.wait_for_data(request.offset, wait_ms / 1000)
                replica = _readable(self.broker, request)
            if request.allow_follower and request.offset > replica.high_watermark and \
                    replica.group.node.role != Role.LEADER:
                # a follower behind the reader (it read further elsewhere): nothing yet,
                # not OFFSET_OUT_OF_RANGE; the leader decides what is out of range
                self.broker.metrics.fetched(0, 0, follower=True)
                return broker_pb2.FetchResponse(
                    high_watermark=replica.high_watermark,
                    log_start_offset=replica.log_start_offset, next_offset=request.offset)
            return self._read(replica, request, request.offset)
        finally:
            self.broker.metrics.fetch_latency.observe(time.perf_counter() - started)

    @_handler
    async def FetchStream(self, request, context):  # noqa: N802
        offset = request.offset
        committed = _read_committed(request)
        streams = self.broker.metrics.streams["fetch"]
        streams.inc()
        try:
            while True:
                replica = _readable(self.broker, request)
                if committed:
                    if offset >= replica.last_stable_offset:
                        await replica.wait_for_stable(offset, 5.0)
                        continue
                elif offset >= replica.high_watermark:
                    await replica.wait_for_data(offset, 5.0)
                    continue
                response = self._read(replica, request, offset)
                offset = response.next_offset
                await context.write(response)
        finally:
            streams.dec()

    def _read(self, replica, request, offset: int) -> broker_pb2.FetchResponse:
        max_bytes = min(request.max_bytes or FETCH_MAX_BYTES_DEFAULT, FETCH_MAX_BYTES_MAX)
        if request.isolation_level == broker_pb2.READ_COMMITTED:
            data, next_offset = replica.read_committed(offset, max_bytes)
        else:
            data, next_offset = replica.read(offset, max_bytes)
        self.broker.metrics.fetched(next_offset - offset, len(data),
                                    follower=replica.group.node.role != Role.LEADER)
        response = broker_pb2.FetchResponse(
            high_watermark=replica.high_watermark, log_start_offset=replica.log_start_offset,
            next_offset=next_offset, last_stable_offset=replica.last_stable_offset)
        if request.decode_records:
            _add_decoded_records(response, data, offset,
                                 f"{request.topic}/{request.partition}")
        else:
            response.record_batches = data
        return response

    @_handler
    async def ListOffsets(self, request, context):  # noqa: N802
        replica = _require_leader(self.broker, request.topic, request.partition)
        offset = replica.offset_for_time(request.timestamp_ms)
        return broker_pb2.ListOffsetsResponse(offset=offset,
                                              high_watermark=replica.high_watermark,
                                              log_start_offset=replica.log_start_offset,
                                              last_stable_offset=replica.last_stable_offset)

    @_handler
    async def Metadata(self, request, context):  # noqa: N802
        b = self.broker
        if not b.metadata_ready():
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"node {b.node_id} has just started "
                              "and has not caught up with the cluster metadata yet; ask another "
                              "node or retry", retriable=True)
        state = b.controller.state
        response = broker_pb2.MetadataResponse(controller_id=b.controller.leader_id())
        for nid, addr in sorted(b.config.peers.items()):
            response.brokers.add(id=nid, address=addr, rack=b.racks.get(nid, ""))
        names = list(request.topics) or [t.name for t in state.topics_sorted()]
        for name in names:
            topic = state.topic(name)
            if topic is None:
                raise BrokerError(Code.UNKNOWN_TOPIC, f"topic {name!r} does not exist")
            response.topics.append(self.topic_info(topic))
        return response


def _add_decoded_records(response: broker_pb2.FetchResponse, data: bytes, offset: int,
                         where: str) -> None:
    """Decode the batches of a read into ``response.records`` (what precedes ``offset`` in
    its first batch skipped: a read starts at the batch holding it).

    A batch that does not decode (written before produce checked records, or damaged)
    never becomes INTERNAL: the response ends before it, with ``next_offset`` at its first
    offset, so the records before it are delivered and the next fetch starts at it; a
    fetch that starts at it fails with CORRUPT_BATCH naming its offsets, and the reader
    seeks past it (``next_offset`` in the error's metadata) or fetches its raw bytes."""
    records = response.records
    pos, size = 0, len(data)
    first_offset = offset
    while pos < size:
        try:
            header = parse_header(data, pos)
        except CorruptBatchError as exc:
            # the header itself is damaged: its offsets cannot be trusted, so name the
            # rest of this read (its end comes from the node's own entry headers)
            _stop_at_corrupt_batch(response, first_offset, response.next_offset - 1, exc,
                                   where)
            return
        try:
            decoded = raw_records(data, pos, verify=False)
        except CorruptBatchError as exc:
            _stop_at_corrupt_batch(response, header.base_offset, header.last_offset, exc,
                                   where)
            return
        for r in decoded:
            if r.offset < offset:
                continue
            pr = records.add(timestamp_ms=r.timestamp, offset=r.offset)
            if r.key is not None:
                pr.key = r.key
            if r.value is not None:
                pr.value = r.value
            for hk, hv in r.headers:
                h = pr.headers.add(key=hk)
                if hv is not None:
                    h.value = hv
        first_offset = header.next_offset
        pos += header.size


def _stop_at_corrupt_batch(response: broker_pb2.FetchResponse, first: int, last: int,
                           exc: CorruptBatchError, where: str) -> None:
    if response.records:  # deliver what came before; the next fetch starts at the batch
        response.next_offset = first
        return
    log.warning("%s: records at offsets %d..%d do not decode: %s", where, first, last, exc)
    raise BrokerError(
        Code.CORRUPT_BATCH,
        f"{where}: the records at offsets {first}..{last} do not decode ({exc}); fetch from "
        f"offset {last + 1} to skip them, or without decode_records to get their bytes",
        metadata={"first_offset": str(first), "last_offset": str(last),
                  "next_offset": str(last + 1)})


def _batch_from_records(records) -> bytes:
    builder = BatchBuilder(compression="lz4", max_bytes=64 << 20)
    now_ms = int(time.time() * 1000)
    try:
        for r in records:
            headers = tuple((h.key, h.value if h.HasField("value") else None)
                            for h in r.headers)
            builder.append(r.key if r.HasField("key") else None,
                           r.value if r.HasField("value") else None,
                           headers, r.timestamp_ms or now_ms)
        if not len(builder):
            raise BrokerError(Code.INVALID_REQUEST, "the produce request holds no records")
        return builder.build()
    except ValueError as exc:  # CorruptBatchError too: a field the batch format cannot hold
        raise BrokerError(Code.INVALID_REQUEST, f"the records do not fit a record batch: "
                          f"{exc}; timestamps are milliseconds since the epoch and must lie "
                          "within 2^63 ms of each other") from None


def config_entries(configs: Any, internal: bool) -> list[admin_pb2.ConfigEntry]:
    """Every known config, by name: the value set on the topic (``configs``) or the default."""
    entries = []
    for name, spec in sorted(TOPIC_CONFIGS.items()):
        is_set = name in configs
        entries.append(admin_pb2.ConfigEntry(
            name=name, value=configs[name] if is_set else spec.default,
            source=admin_pb2.CONFIG_SOURCE_TOPIC if is_set else admin_pb2.CONFIG_SOURCE_DEFAULT,
            read_only=internal, doc=spec.doc, default_value=spec.default))
    return entries


class AdminService(_AtControllerLeader, admin_pb2_grpc.AdminServicer):
    """Topic changes run at the controller leader; any other node forwards them there
    (``_forwarding.py``) and answers once its own metadata shows the change (at most
    READ_YOUR_WRITES_S), so the caller's next call to this node sees it. Reads answer
    from this node's applied metadata."""

    stub_class = admin_pb2_grpc.AdminStub

    @_handler
    async def CreateTopic(self, request, context):  # noqa: N802
        async def local(timeout_s: float) -> admin_pb2.CreateTopicResponse:
            command = encode_create_topic(
                request.name, request.partitions or 1,
                request.replication_factor or min(3, len(self.broker.config.peers)),
                dict(request.configs))
            result = await self.broker.controller.propose(command, timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            topic = result.value
            assert isinstance(topic, TopicMeta)
            return admin_pb2.CreateTopicResponse(topic=self.topic_info(topic))

        response = await self.at_controller_leader(context, "CreateTopic", request,
                                                   f"CreateTopic {request.name}", local)
        await self.broker.wait_for_metadata(
            lambda state: state.topic(request.name) is not None, READ_YOUR_WRITES_S)
        return response

    @_handler
    async def DeleteTopic(self, request, context):  # noqa: N802
        async def local(timeout_s: float) -> admin_pb2.DeleteTopicResponse:
            result = await self.broker.controller.propose(encode_delete_topic(request.name),
                                                          timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            return admin_pb2.DeleteTopicResponse()

        response = await self.at_controller_leader(context, "DeleteTopic", request,
                                                   f"DeleteTopic {request.name}", local)
        await self.broker.wait_for_metadata(
            lambda state: state.topic(request.name) is None, READ_YOUR_WRITES_S)
        return response

    @_handler
    async def AddPartitions(self, request, context):  # noqa: N802
        if not request.name:
            raise BrokerError(Code.INVALID_REQUEST, "AddPartitions needs a topic name")

        async def local(timeout_s: float) -> admin_pb2.AddPartitionsResponse:
            result = await self.broker.controller.propose(
                encode_add_partitions(request.name, request.total_count), timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            topic = result.value
            assert isinstance(topic, TopicMeta)
            return admin_pb2.AddPartitionsResponse(topic=self.topic_info(topic))

        def grown(state: Any) -> bool:
            topic = state.topic(request.name)
            return topic is not None and len(topic.partitions) >= request.total_count

        response = await self.at_controller_leader(context, "AddPartitions", request,
                                                   f"AddPartitions {request.name}", local)
        await self.broker.wait_for_metadata(grown, READ_YOUR_WRITES_S)
        return response

    @_handler
    async def AlterTopicConfigs(self, request, context):  # noqa: N802
        if not request.name:
            raise BrokerError(Code.INVALID_REQUEST, "AlterTopicConfigs needs a topic name")
        command = encode_alter_topic_configs(request.name, dict(request.set), list(request.delete))

        async def local(timeout_s: float) -> admin_pb2.AlterTopicConfigsResponse:
            controller = self.broker.controller
            if request.validate_only:
                controller.require_leader()
                result = controller.state.check(command)
                if not result.ok:
                    raise BrokerError(result.code, result.message)
                topic = controller.state.topic(request.name)
                assert topic is not None  # check() passed
                configs = {k: v for k, v in topic.configs.items() if k not in request.delete}
                configs.update(normalize_configs(dict(request.set))[0] or {})
                return admin_pb2.AlterTopicConfigsResponse(
                    configs=config_entries(configs, topic.internal))
            result = await controller.propose(command, timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            topic = result.value
            assert isinstance(topic, TopicMeta)
            return admin_pb2.AlterTopicConfigsResponse(
                configs=config_entries(topic.configs, topic.internal))

        response = await self.at_controller_leader(context, "AlterTopicConfigs", request,
                                                   f"AlterTopicConfigs {request.name}", local)
        if not request.validate_only:
            expected = {c.name: c.value for c in response.configs
                        if c.source == admin_pb2.CONFIG_SOURCE_TOPIC}

            def altered(state: Any) -> bool:
                topic = state.topic(request.name)
                return topic is not None and dict(topic.configs) == expected
            await self.broker.wait_for_metadata(altered, READ_YOUR_WRITES_S)
        return response

    async def _topic_read(self, context, method: str, request,
                          answer: Callable[[TopicMeta], Any]) -> Any:
        """``answer`` for the topic ``request.name`` from this node's metadata. A topic it
        does not know is asked of the controller leader, whose UNKNOWN_TOPIC is final
        (clients take it so): this node may not have applied its creation yet (a
        controller follower learns a commit with the leader's next message, and a client
        whose view of the controller is stale asks it as if it were the leader)."""
        topic = self.broker.controller.state.topic(request.name)
        if topic is not None:
            return answer(topic)

        async def local(_timeout_s: float) -> Any:
            known = self.broker.controller.state.topic(request.name)
            if known is None:
                raise BrokerError(Code.UNKNOWN_TOPIC, f"topic {request.name!r} does not exist")
            return answer(known)
        return await self.at_controller_leader(context, method, request,
                                               f"{method} of topic {request.name!r}", local)

    @_handler
    async def DescribeTopicConfigs(self, request, context):  # noqa: N802
        return await self._topic_read(
            context, "DescribeTopicConfigs", request,
            lambda topic: admin_pb2.DescribeTopicConfigsResponse(
                configs=config_entries(topic.configs, topic.internal)))

    @_handler
    async def ListTopics(self, request, context):  # noqa: N802
        state = self.broker.controller.state
        return admin_pb2.ListTopicsResponse(names=[t.name for t in state.topics_sorted()])

    @_handler
    async def DescribeTopic(self, request, context):  # noqa: N802
        return await self._topic_read(
            context, "DescribeTopic", request,
            lambda topic: admin_pb2.DescribeTopicResponse(topic=self.topic_info(topic)))

    @_handler
    async def DescribeCluster(self, request, context):  # noqa: N802
        b = self.broker
        leaders: dict[int, int] = {}
        under = 0
        for replica in b.partitions.values():
            group = replica.group
            if group is None:
                continue
            leader = group.node.leader_id
            if leader:
                leaders[leader] = leaders.get(leader, 0) + 1
            if group.node.role == Role.LEADER and any(
                    not b.host.transport.is_reachable(v) for v in group.node.conf_state.voters):
                under += 1
        response = admin_pb2.DescribeClusterResponse(
            controller_id=b.controller.leader_id(), under_replicated_partitions=under)
        for nid, addr in sorted(b.config.peers.items()):
            response.nodes.add(id=nid, address=addr, reachable=b.host.transport.is_reachable(nid),
                               leader_count=leaders.get(nid, 0), rack=b.racks.get(nid, ""))
        return response

    @_handler
    async def DescribeNodeStats(self, request, context):  # noqa: N802
        return self.broker.metrics.node_stats()

    # ------------------------------------------------------------ cluster operations
    async def _command(self, context, method: str, request: Any, what: str, command: bytes,
                       response: Any, applied: Callable[[Any], bool] | None = None) -> Any:
        """Propose ``command`` at the controller leader (forwarded there if need be); its
        refusal is the call's error. Then wait (bounded) until ``applied(state)`` holds
        here, so the caller's next call to this node sees the change."""
        async def local(timeout_s: float) -> Any:
            result = await self.broker.controller.propose(command, timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            return response

        answer = await self.at_controller_leader(context, method, request, what, local)
        if applied is not None:
            await self.broker.wait_for_metadata(applied, READ_YOUR_WRITES_S)
        return answer

    def _partition_of(self, state: Any, topic: str, partition: int) -> Any:
        meta = state.topic(topic)
        if meta is None or not 0 <= partition < len(meta.partitions):
            return None
        return meta.partitions[partition]

    @_handler
    async def ReassignPartition(self, request, context):  # noqa: N802
        if not request.topic:
            raise BrokerError(Code.INVALID_REQUEST, "ReassignPartition needs a topic name")
        replicas = tuple(request.replicas)

        def moving(state: Any) -> bool:
            part = self._partition_of(state, request.topic, request.partition)
            return part is not None and replicas in (part.target, part.replicas)

        return await self._command(
            context, "ReassignPartition", request,
            f"ReassignPartition {request.topic}/{request.partition}",
            encode_reassign_partition(request.topic, request.partition, replicas),
            admin_pb2.ReassignPartitionResponse(), moving)

    @_handler
    async def CancelReassignment(self, request, context):  # noqa: N802
        if not request.topic:
            raise BrokerError(Code.INVALID_REQUEST, "CancelReassignment needs a topic name")

        def cancelled(state: Any) -> bool:
            part = self._partition_of(state, request.topic, request.partition)
            return part is None or part.cancelled or not part.target

        return await self._command(
            context, "CancelReassignment", request,
            f"CancelReassignment {request.topic}/{request.partition}",
            encode_cancel_reassignment(request.topic, request.partition),
            admin_pb2.CancelReassignmentResponse(), cancelled)

    @_handler
    async def CompleteReassignment(self, request, context):  # noqa: N802
        return await self._command(
            context, "CompleteReassignment", request,
            f"CompleteReassignment {request.topic}/{request.partition}",
            encode_complete_reassignment(request.topic, request.partition, request.group_id,
                                         list(request.replicas)),
            admin_pb2.CompleteReassignmentResponse())

    async def complete_reassignment(self, request: Any) -> None:
        """A move this node leads is done: record it at the controller leader (the
        ``ReassignmentDriver``'s ``controller_write``)."""
        async def local(timeout_s: float) -> Any:
            result = await self.broker.controller.propose(encode_complete_reassignment(
                request.topic, request.partition, request.group_id, list(request.replicas)),
                timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            return admin_pb2.CompleteReassignmentResponse()

        stub_class = self.stub_class

        async def remote(channel: grpc.aio.Channel, timeout_s: float,
                         metadata: tuple[tuple[str, str], ...]) -> Any:
            return await stub_class(channel).CompleteReassignment(
                request, timeout=timeout_s, metadata=metadata)

        await self.forwarder.call(None, f"CompleteReassignment {request.topic}/"
                                  f"{request.partition}", ADMIN_TIMEOUT_S, local, remote)

    @_handler
    async def AlterReplicationFactor(self, request, context):  # noqa: N802
        if not request.topic:
            raise BrokerError(Code.INVALID_REQUEST, "AlterReplicationFactor needs a topic name")

        def altered(state: Any) -> bool:
            meta = state.topic(request.topic)
            return meta is not None and meta.replication_factor == request.replication_factor

        return await self._command(
            context, "AlterReplicationFactor", request,
            f"AlterReplicationFactor {request.topic}",
            encode_alter_replication_factor(request.topic, request.replication_factor),
            admin_pb2.AlterReplicationFactorResponse(), altered)

    @_handler
    async def SetReassignmentThrottle(self, request, context):  # noqa: N802
        return await self._command(
            context, "SetReassignmentThrottle", request, "SetReassignmentThrottle",
            encode_set_reassignment_throttle(request.bytes_per_s),
            admin_pb2.SetReassignmentThrottleResponse(),
            lambda state: state.reassign_throttle_bytes_per_s == request.bytes_per_s)

    @_handler
    async def DecommissionNode(self, request, context):  # noqa: N802
        node_id = request.node_id
        if request.cancel:
            command = encode_cancel_decommission(node_id)
            what = f"cancel the decommission of node {node_id}"
        else:
            command = encode_decommission_node(node_id)
            what = f"DecommissionNode {node_id}"
        wanted = ("active",) if request.cancel else ("decommissioning", "removed")
        if request.dead and not request.cancel:
            what = f"remove dead node {node_id}"

            async def local(timeout_s: float) -> Any:
                b = self.broker
                b.controller.require_leader()
                silent = b.host.driver.silent_for(node_id)
                if node_id == b.node_id or (node_id in b.config.peers
                                            and silent < DEAD_SILENCE_S):
                    raise BrokerError(Code.INVALID_REQUEST, f"node {node_id} is alive (the "
                                      f"controller leader heard from it {silent:.1f}s ago); "
                                      "drain it with `raftka cluster decommission` instead")
                result = await b.controller.propose(command, timeout_s)
                if not result.ok:
                    raise BrokerError(result.code, result.message)
                return admin_pb2.DecommissionNodeResponse()

            answer = await self.at_controller_leader(context, "DecommissionNode", request,
                                                     what, local)
            await self.broker.wait_for_metadata(
                lambda state: state.node_state(node_id) in wanted, READ_YOUR_WRITES_S)
            return answer
        return await self._command(
            context, "DecommissionNode", request, what, command,
            admin_pb2.DecommissionNodeResponse(),
            lambda state: state.node_state(node_id) in wanted)

    @_handler
    async def ListNodes(self, request, context):  # noqa: N802
        b = self.broker
        state = b.controller.state
        loads = state.host_loads()
        leaders: dict[int, int] = {}
        for replica in b.partitions.values():
            if replica.group is not None and replica.group.node.leader_id:
                leader = replica.group.node.leader_id
                leaders[leader] = leaders.get(leader, 0) + 1
        response = admin_pb2.ListNodesResponse(controller_id=b.controller.leader_id())
        group = b.controller.group
        voters = group.node.conf_state.voters if group is not None else frozenset()
        for nid in state.node_ids:
            response.nodes.add(
                id=nid, address=b.address_of(nid), state=state.node_state(nid),
                reachable=b.host.transport.is_reachable(nid),
                replica_count=loads.get(nid, 0), leader_count=leaders.get(nid, 0),
                controller_voter=nid in voters)
        return response

    @_handler
    async def JoinCluster(self, request, context):  # noqa: N802
        """A new node joins (``_join.py``): registered at the controller leader."""
        b = self.broker
        if request.node_id < 0:
            raise BrokerError(Code.INVALID_REQUEST, f"a node id is positive (0: let the "
                              f"controller pick one), got {request.node_id}")
        joiner = JOINER.get()
        if joiner:  # on the peer port, proven by a peer certificate made out to `joiner`
            if request.node_id != joiner:
                raise BrokerError(Code.INVALID_REQUEST, f"the peer certificate is node "
                                  f"{joiner}'s; join with --id {joiner}")
            # forwarded to the controller leader as this member's own call: the joiner's
            # certificate was checked here, and it has no principal the ACLs know
            CALLER.set(None)

        async def local(timeout_s: float) -> Any:
            b.controller.require_leader()
            state = b.controller.state
            for nid, address in sorted(b.config.peers.items()):  # the first nodes'
                if (address == request.address and nid != request.node_id
                        and nid not in state.node_addresses):
                    raise BrokerError(Code.INVALID_REQUEST, f"address {address} is node "
                                      f"{nid}'s; give the new node its own --advertise address")
            result = await b.controller.propose(encode_register_node(
                request.node_id, request.address, request.peer_address,
                request.kafka_address, request.rack), timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            return admin_pb2.JoinClusterResponse(
                node_id=result.value, nodes=b.cluster_nodes(),
                initial_node_ids=list(b.controller.state.initial_node_ids))

        return await self.at_controller_leader(
            context, "JoinCluster", request,
            f"JoinCluster {request.node_id or '(any id)'} at {request.address}", local)

    @_handler
    async def DescribeBalancer(self, request, context):  # noqa: N802
        """The balancer's status and plan, from the controller leader's balancer."""
        async def local(timeout_s: float) -> Any:
            self.broker.controller.require_leader()
            return await self.broker.balancer.describe()

        return await self.at_controller_leader(context, "DescribeBalancer", request,
                                               "DescribeBalancer", local,
                                               retry_if_leader_moves=True)

    @_handler
    async def SetBalancer(self, request, context):  # noqa: N802
        paused = bool(request.paused)
        return await self._command(
            context, "SetBalancer", request,
            "pause the balancer" if paused else "resume the balancer",
            encode_set_balancer(paused), admin_pb2.SetBalancerResponse(),
            lambda state: state.balancer_paused == paused)

    @_handler
    async def DescribeReplicaSizes(self, request, context):  # noqa: N802
        sizes = sorted(self.broker.balancer.local_sizes().items())
        return admin_pb2.DescribeReplicaSizesResponse(
            group_ids=[g for g, _ in sizes], size_bytes=[s for _, s in sizes])

    @_handler
    async def ListReassignments(self, request, context):  # noqa: N802
        b = self.broker
        state = b.controller.state
        response = admin_pb2.ListReassignmentsResponse(
            throttle_bytes_per_s=state.reassign_throttle_bytes_per_s)
        elsewhere: set[int] = set()
        for topic, part in state.reassignments():
            if request.topic and topic.name != request.topic:
                continue
            entry = self._reassignment(topic, part)
            if entry.leader_id == b.node_id or request.local_only:
                if entry.leader_id == b.node_id:
                    response.reassignments.append(entry)
                continue
            if entry.leader_id:
                elsewhere.add(entry.leader_id)
            response.reassignments.append(entry)
        if elsewhere:  # the leaders know the progress: ask each once
            answers = await asyncio.gather(*(
                self._reassignments_at(node, request.topic) for node in sorted(elsewhere)))
            progress = {(r.topic, r.partition): r for answer in answers for r in answer}
            for i, entry in enumerate(response.reassignments):
                fresh = progress.get((entry.topic, entry.partition))
                if fresh is not None:
                    response.reassignments[i].CopyFrom(fresh)
        return response

    def _reassignment(self, topic: TopicMeta, part: Any) -> admin_pb2.Reassignment:
        b = self.broker
        entry = admin_pb2.Reassignment(
            topic=topic.name, partition=part.partition, replicas=list(part.replicas),
            target=list(part.target), cancelled=part.cancelled)
        replica = b.partitions.get((topic.name, part.partition))
        if replica is None or replica.group is None:
            return entry
        node = replica.group.node
        entry.leader_id = node.leader_id
        if node.role != Role.LEADER:
            return entry
        entry.leader_last_index = node.last_index
        entry.high_watermark = replica.high_watermark
        conf = node.conf_state
        matches = node.follower_matches()
        for n in part.hosts:
            match = node.last_index if n == b.node_id else matches.get(n, 0)
            entry.progress.add(
                node_id=n, match_index=match,
                role="voter" if n in conf.voters else
                "learner" if n in conf.learners else "absent",
                caught_up_offset=replica.offset_after_index(match) if n in matches
                or n == b.node_id else 0)
        return entry

    async def _reassignments_at(self, node: int, topic: str) -> list[admin_pb2.Reassignment]:
        try:
            channel = self.forwarder.channel(node)
            answer = await admin_pb2_grpc.AdminStub(channel).ListReassignments(
                admin_pb2.ListReassignmentsRequest(topic=topic, local_only=True),
                timeout=2.0, metadata=forwarded_metadata(self.broker.node_id))
        except (grpc.aio.AioRpcError, BrokerError):
            return []  # that leader is unreachable: its moves show without progress
        return list(answer.reassignments)
