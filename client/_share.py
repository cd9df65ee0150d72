"""``ShareConsumer``: a member of a share group (Kafka KIP-932): any number of members read
the same partitions, each record is handed to one member at a time and settled on its own.

    with ShareConsumer("127.0.0.1:7001", "workers", ["tasks"]) as consumer:
        for record in consumer:                 # auto_accept=True (the default)
            handle(record)                      # returned: accepted; raised: released
    # or explicitly:
        for record in consumer.poll(1.0):
            try:
                handle(record)
                consumer.accept(record)
            except Poison as exc:
                consumer.reject(record, error=str(exc))        # to the dead-letter topic
            except Exception as exc:
                consumer.release(record, delay_s=5, error=str(exc))  # again later

Records come under an acquisition lock (the group's ``record_lock_duration_ms``, 30 s by
default): settle them before it expires, else they go to another member (with a higher
``delivery_count``) and this member's late acknowledgement fails with
InvalidRecordStateError. A record delivered ``max_delivery_attempts`` times (5) and not
accepted goes to the group's dead-letter topic (``<group>.dlq``).

Acknowledgements are queued and sent, as offset ranges, at the next ``poll`` (inside
that partition's ShareFetch: one Raft round for both) or ``flush``/``close``. With ``auto_accept`` every record of the previous ``poll`` that was
not acknowledged is accepted at the next ``poll`` (or, iterating, when the loop body
returns for it); ``close`` releases whatever is still unacknowledged and leaves the group.
A heartbeat thread keeps the membership (listed by ``raftka share describe``) alive.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from raftka.client._security import ClientSecurity
from raftka.client._cluster import Cluster, ClusterState
from raftka.client._coordinator import GroupCoordinatorClient
from raftka.client._ops import Ops, Refresh, Rpc, Sleep, run_sync
from raftka.v1 import group_pb2_grpc, share_pb2, share_pb2_grpc
from raftka.v1.errors import (
    BrokerNotAvailableError,
    CorruptBatchError,
    NotLeaderError,
    RaftkaError,
    RaftkaTimeoutError,
    UnknownTopicError,
)
from raftka.v1.recordbatch import LOG_OVERHEAD, parse_header, raw_records

__all__ = ["ShareConsumer", "ShareGroupDescription", "ShareMember", "SharePartitionState",
           "ShareRecord", "describe_share_group"]

log = logging.getLogger("raftka.share")

ACCEPT, RELEASE, REJECT = share_pb2.ACCEPT, share_pb2.RELEASE, share_pb2.REJECT
LONG_POLL_MS = 1000


class ShareRecord(NamedTuple):
    """One record acquired by a share-group member."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int
    delivery_count: int  # 1 on the first delivery


class _Stubs:
    """FindCoordinator (GroupCoordinator) plus the Share RPCs over one channel."""

    def __init__(self, channel) -> None:
        groups = group_pb2_grpc.GroupCoordinatorStub(channel)
        share = share_pb2_grpc.ShareStub(channel)
        self.FindCoordinator = groups.FindCoordinator
        self.ShareGroupHeartbeat = share.ShareGroupHeartbeat
        self.DescribeShareGroup = share.DescribeShareGroup
        self.ShareFetch = share.ShareFetch
        self.ShareAcknowledge = share.ShareAcknowledge
        self.DescribeSharePartition = share.DescribeSharePartition


def share_coordinator(cluster: ClusterState, group_id: str) -> GroupCoordinatorClient:
    """The group's coordinator client: FindCoordinator on GroupCoordinator, the calls
    (ShareGroupHeartbeat, DescribeShareGroup) on Share."""
    if isinstance(cluster, Cluster):
        coordinator = GroupCoordinatorClient(
            cluster, group_id, stub_factory=lambda a: _Stubs(cluster.channel(a)))
    else:  # the asyncio driver makes its stubs from the Rpc's service name
        coordinator = GroupCoordinatorClient(cluster, group_id)
    coordinator.service = "share"
    return coordinator


def call_partition_leader(cluster: Cluster, topic: str, partition: int, method: str,
                          request: Any, timeout_s: float) -> Any:
    """A Share RPC at the partition's leader, following leader changes until
    ``timeout_s``. Non-retriable errors are raised at once."""
    return run_sync(cluster, partition_leader_ops(cluster, topic, partition, method, request,
                                                  timeout_s))


def partition_leader_ops(cluster: ClusterState, topic: str, partition: int, method: str,
                         request: Any, timeout_s: float) -> Ops[Any]:
    """The operation behind :func:`call_partition_leader` (``_ops.py``: the threaded and
    the asyncio share consumer run the same one)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    last: RaftkaError | None = None
    while time.monotonic() < deadline:
        address = cluster.leader_address(topic, partition)
        if address is None:
            try:
                yield Refresh(cluster.request_timeout_s, min_age_s=pause, raise_errors=True)
            except RaftkaError as exc:
                last = exc
            address = cluster.leader_address(topic, partition)
            if address is None:
                if cluster.topic(topic) is None and last is None:
                    raise UnknownTopicError(f"topic {topic!r} does not exist")
                yield Sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
        remaining = deadline - time.monotonic()
        try:
            return (yield Rpc(address, "share", method, request,
                              max(min(remaining, cluster.request_timeout_s + 31), 0.01),
                              f"{method} {topic}/{partition}"))
        except NotLeaderError as exc:
            last = exc
            if cluster.note_not_leader(topic, partition, exc):
                continue
        except RaftkaError as exc:
            if not exc.retriable:
                raise
            last = exc
            cluster.forget_leader(topic, partition)
            if isinstance(exc, BrokerNotAvailableError):
                try:
                    yield Refresh(cluster.request_timeout_s, min_age_s=pause,
                                  raise_errors=True)
                except RaftkaError:
                    pass
        yield Sleep(pause)
        pause = min(pause * 2, 0.5)
    raise RaftkaTimeoutError(f"{method} {topic}/{partition}: no answer within "
                             f"{timeout_s:g}s") from last


class ShareMember:
    """A share-group member's state and requests, without I/O: what to send, what an
    answer means, which records are held and which acknowledgements are queued. The
    threaded :class:`ShareConsumer` and ``raftka.aio.ShareConsumer`` are this plus their
    I/O (blocking calls and threads, or ``grpc.aio`` and tasks); their operations
    (``fetch_ops``, ``partition_leader_ops``) are ``_ops.py`` generators run by each
    client's driver. Guarded by a lock: a threaded member polls from several threads."""

    def __init__(self, group_id: str, topics: str | Iterable[str], *, auto_accept: bool,
                 max_records: int, client_id: str, record_lock_duration_ms: int,
                 max_delivery_attempts: int, dead_letter_topic: str,
                 max_in_flight_records: int, redelivery_backoff_initial_ms: int,
                 redelivery_backoff_multiplier: float, redelivery_backoff_max_ms: int) -> None:
        self.group_id = group_id
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ValueError("subscribe to at least one topic")
        if not 1 <= max_records <= 10_000:
            raise ValueError(f"max_records must be from 1 to 10000, got {max_records}")
        self.auto_accept = auto_accept
        self.max_records = max_records
        self.client_id = client_id
        self.member_id = uuid.uuid4().hex
        self._requested = share_pb2.ShareGroupConfig(
            record_lock_duration_ms=record_lock_duration_ms,
            max_delivery_attempts=max_delivery_attempts, dead_letter_topic=dead_letter_topic,
            max_in_flight_records=max_in_flight_records,
            redelivery_backoff_initial_ms=redelivery_backoff_initial_ms,
            redelivery_backoff_multiplier=redelivery_backoff_multiplier,
            redelivery_backoff_max_ms=redelivery_backoff_max_ms)
        self._lock = threading.Lock()
        self._partitions: list[tuple[str, int]] = []
        self._unacked: dict[tuple[str, int, int], ShareRecord] = {}  # polled, not settled
        self._acks: dict[tuple[str, int], list[tuple]] = {}  # queued (offset, type, delay, error)
        self._touched: set[tuple[str, int]] = set()  # partitions we acquired from
        self._closed = False
        self._interval_s = 3.0
        self.config = share_pb2.ShareGroupConfig()

    # ------------------------------------------------------------------ membership
    def _heartbeat_request(self, leave: bool = False) -> share_pb2.ShareGroupHeartbeatRequest:
        return share_pb2.ShareGroupHeartbeatRequest(
            group_id=self.group_id, member_id=self.member_id, topics=self.topics, leave=leave,
            client_id=self.client_id, config=self._requested)

    def _heartbeat_answered(self, answer: share_pb2.ShareGroupHeartbeatResponse) -> None:
        self.config = answer.config
        self._interval_s = max(answer.heartbeat_interval_ms, 100) / 1000
        partitions = sorted((tp.topic, p) for tp in answer.assignment for p in tp.partitions)
        with self._lock:
            self._partitions = partitions

    def _assigned(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._partitions)

    # ------------------------------------------------------------------ consuming
    def _fetch_ops(self, cluster: ClusterState, tp: tuple[str, int], max_records: int,
                   wait_ms: int, acks: list[tuple] | None = None) -> Ops[Any]:
        """One ShareFetch of one partition at its leader; the records acquired. With
        ``acks`` (queued acknowledgements of that partition, applied by the server just
        before the acquisition, in one Raft round): (records, whether the server applied
        them; a server without the field does not, and they go by ShareAcknowledge)."""
        topic, partition = tp
        request = share_pb2.ShareFetchRequest(
            group_id=self.group_id, member_id=self.member_id, topic=topic,
            partition=partition, max_records=max_records, max_wait_ms=wait_ms,
            request_id=uuid.uuid4().hex)  # a retry after a lost answer gets the same records
        if acks:
            request.acknowledgements.extend(_ranges(acks))
            request.acknowledge_request_id = uuid.uuid4().hex
        answer = yield from partition_leader_ops(cluster, topic, partition, "ShareFetch",
                                                 request,
                                                 cluster.request_timeout_s + wait_ms / 1000)
        records = self._fetched(tp, answer)
        return (records, answer.acknowledged) if acks else records

    def _fetched(self, tp: tuple[str, int],
                 answer: share_pb2.ShareFetchResponse) -> list[ShareRecord]:
        """The records of a ShareFetch answer, now held by this member. Only the batches
        overlapping the acquired ranges are decoded. Offsets acquired without a record
        inside the batches sent (compacted away) are queued as accepted: nothing to do;
        offsets after the batches sent (the answer's size limit cut them) are queued as
        released: never taken as done unseen."""
        topic, partition = tp
        if not answer.acquired:
            return []
        ranges = [(a.first_offset, a.last_offset, a.delivery_count) for a in answer.acquired]
        try:
            decoded, sent_until = _decode_overlapping(answer.record_batches, ranges[0][0],
                                                      ranges[-1][1])
        except CorruptBatchError as exc:
            log.warning("share group %s: %s/%d: undecodable records (%s); releasing them",
                        self.group_id, topic, partition, exc)
            decoded, sent_until = [], -1
        records, gaps, unsent = _share_records(topic, partition, ranges, decoded, sent_until)
        with self._lock:
            self._touched.add(tp)
            self._unacked.update([((topic, partition, rec[2]), rec) for rec in records])
            if gaps or unsent:
                queued = self._acks.setdefault(tp, [])
                queued.extend((o, ACCEPT, 0, "") for o in gaps)
                queued.extend((o, RELEASE, 0, "") for o in unsent)
        return records

    @staticmethod
    def _first_fatal(errors: list[RaftkaError], got_records: bool) -> RaftkaError | None:
        """A fetch round's error to raise: a non-retriable one, when nothing came."""
        if errors and not got_records:
            fatal = [e for e in errors if not e.retriable]
            if fatal:
                return fatal[0]
        return None

    # ------------------------------------------------------------------ acknowledging
    def _take_unacked(self) -> list[ShareRecord]:
        with self._lock:
            return list(self._unacked.values())

    def _queue(self, record: ShareRecord, kind: int, delay_ms: int, error: str) -> None:
        topic, partition, offset = record[0], record[1], record[2]  # (once per record:
        with self._lock:                                           # no attribute lookups)
            if self._unacked.pop((topic, partition, offset), None) is None:
                return  # already acknowledged (or never polled by this member)
            queued = self._acks.get((topic, partition))
            if queued is None:
                queued = self._acks[(topic, partition)] = []
            queued.append((offset, kind, delay_ms, error))

    def _queue_all(self, kind: int, delay_ms: int = 0, error: str = "") -> None:
        for record in self._take_unacked():
            self._queue(record, kind, delay_ms, error)

    @staticmethod
    def _check_release_delay(delay_s: float) -> int:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        return int(delay_s * 1000)

    def _ack_request(self, tp: tuple[str, int],
                     items: list[tuple]) -> share_pb2.ShareAcknowledgeRequest:
        topic, partition = tp
        return share_pb2.ShareAcknowledgeRequest(
            group_id=self.group_id, member_id=self.member_id, topic=topic,
            partition=partition, ranges=_ranges(items),
            request_id=uuid.uuid4().hex)  # a retry after a lost answer is not refused

    def _ack_requests(self) -> list[share_pb2.ShareAcknowledgeRequest]:
        """The queued acknowledgements (taken off the queue), one request per partition."""
        with self._lock:
            acks, self._acks = self._acks, {}
        return [self._ack_request(tp, items) for tp, items in acks.items() if items]

    def _leave_requests(self) -> list[share_pb2.ShareAcknowledgeRequest]:
        """One per partition this member acquired from: its records go back at once."""
        return [share_pb2.ShareAcknowledgeRequest(group_id=self.group_id,
                                                  member_id=self.member_id, topic=topic,
                                                  partition=partition, leave=True)
                for topic, partition in sorted(self._touched)]

    def _check_open(self) -> None:
        if self._closed:
            raise RaftkaError("the share consumer is closed")


class ShareConsumer(ShareMember):
    """A share-group member (see the module docstring).

    ``record_lock_duration_ms``, ``max_delivery_attempts``, ``dead_letter_topic``,
    ``max_in_flight_records`` and the ``redelivery_backoff_*`` policy (initial ms,
    multiplier, maximum ms: a record whose lock expired, or released without a delay, is
    redelivered after ``min(max, initial * multiplier ** (deliveries - 1))``) configure
    the group when this member creates it (the first to join); later members get the
    group's configuration (``self.config``).
    """

    def __init__(self, bootstrap: str | Iterable[str], group_id: str,
                 topics: str | Iterable[str], *, auto_accept: bool = True,
                 max_records: int = 500, client_id: str = "raftka-share",
                 record_lock_duration_ms: int = 0, max_delivery_attempts: int = 0,
                 dead_letter_topic: str = "", max_in_flight_records: int = 0,
                 redelivery_backoff_initial_ms: int = 0,
                 redelivery_backoff_multiplier: float = 0.0,
                 redelivery_backoff_max_ms: int = 0,
                 request_timeout_ms: int = 5000, join_timeout_s: float = 30.0,
                 security: ClientSecurity | None = None) -> None:
        super().__init__(
            group_id, topics, auto_accept=auto_accept, max_records=max_records,
            client_id=client_id, record_lock_duration_ms=record_lock_duration_ms,
            max_delivery_attempts=max_delivery_attempts, dead_letter_topic=dead_letter_topic,
            max_in_flight_records=max_in_flight_records,
            redelivery_backoff_initial_ms=redelivery_backoff_initial_ms,
            redelivery_backoff_multiplier=redelivery_backoff_multiplier,
            redelivery_backoff_max_ms=redelivery_backoff_max_ms)
        self._cluster = Cluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                security=security)
        self._coordinator = share_coordinator(self._cluster, group_id)
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="raftka-share-fetch")
        self._stop = threading.Event()
        try:
            for topic in self.topics:  # fail fast on a topic that does not exist
                self._cluster.wait_for_topic(topic, min(join_timeout_s, 5.0))
            self._heartbeat(join_timeout_s)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._cluster.close()
            raise
        self._thread = threading.Thread(target=self._heartbeats, name="raftka-share-heartbeat",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ membership
    def _heartbeat(self, timeout_s: float, leave: bool = False) -> None:
        answer = self._coordinator.call("ShareGroupHeartbeat", self._heartbeat_request(leave),
                                        timeout_s)
        if not leave:
            self._heartbeat_answered(answer)

    def _heartbeats(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._heartbeat(max(self._interval_s, 5.0))
            except RaftkaError as exc:
                log.warning("share group %s: heartbeat failed: %s", self.group_id, exc)

    # ------------------------------------------------------------------ consuming
    def poll(self, timeout_s: float = 1.0, max_records: int | None = None) -> list[ShareRecord]:
        """Acknowledge what is queued (with ``auto_accept``, accept every record of the
        previous poll not yet acknowledged), then acquire records from every partition of
        the subscription at once (up to ``max_records`` from each), waiting up to
        ``timeout_s`` for some. Raises RaftkaError (e.g.
        InvalidRecordStateError if a queued acknowledgement names a record this member
        no longer holds: nothing of that partition's acknowledgement was applied, and the
        records this poll acquired meanwhile are given back).

        Each partition's acknowledgement and acquisition go one after the other on one
        worker thread, the partitions in parallel: a partition acquires as soon as its
        own acknowledgement is applied, not after every partition's."""
        self._check_open()
        if self.auto_accept:
            self.accept_all()
        with self._lock:
            acks, self._acks = self._acks, {}
        deadline = time.monotonic() + max(timeout_s, 0)
        wait_ms = 0
        while True:
            records = self._fetch_round(max_records or self.max_records, wait_ms, acks)
            acks = {}
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            wait_ms = int(min(remaining * 1000, LONG_POLL_MS))

    def _fetch_round(self, max_records: int, wait_ms: int,
                     acks: dict[tuple[str, int], list[tuple]] | None = None
                     ) -> list[ShareRecord]:
        """One acquisition from every partition, each after sending its queued ``acks``
        (partitions no longer assigned only send theirs)."""
        acks = {tp: items for tp, items in (acks or {}).items() if items}
        with self._lock:
            partitions = list(self._partitions)
        if not partitions and not acks:
            time.sleep(wait_ms / 1000)
            return []
        per = max_records  # each partition may give up to max_records
        futures = [(tp, self._pool.submit(self._ack_then_fetch, tp, acks.get(tp), per,
                                          wait_ms)) for tp in partitions]
        futures += [(tp, self._pool.submit(self._ack_then_fetch, tp, items, 0, 0))
                    for tp, items in acks.items() if tp not in partitions]
        out: list[ShareRecord] = []
        errors: list[RaftkaError] = []
        ack_errors: list[RaftkaError] = []
        for _, future in futures:
            try:
                out.extend(future.result())
            except _AckFailed as exc:
                ack_errors.append(exc.error)
            except RaftkaError as exc:
                errors.append(exc)
        if ack_errors:  # the caller sees the error, not the records: give them back
            for record in out:
                self._queue(record, RELEASE, 0, "")
            raise ack_errors[0]
        fatal = self._first_fatal(errors, bool(out))
        if fatal is not None:
            raise fatal
        return out

    def _ack_then_fetch(self, tp: tuple[str, int], acks: list[tuple] | None,
                        max_records: int, wait_ms: int) -> list[ShareRecord]:
        """The acknowledgements ride in the ShareFetch (``_fetch_ops``); a server that
        does not know them answers ``acknowledged=False`` and they go by ShareAcknowledge
        then. Partitions no longer assigned only send theirs."""
        if acks and not max_records:
            try:
                self._acknowledge(tp, acks, 10.0)
            except RaftkaError as exc:
                raise _AckFailed(exc) from exc
            return []
        if not acks:
            return self._fetch_one(tp, max_records, wait_ms)
        try:
            records, acknowledged = self._fetch_one(tp, max_records, wait_ms, acks)
            if not acknowledged:
                self._acknowledge(tp, acks, 10.0)
        except RaftkaError as exc:
            raise _AckFailed(exc) from exc
        return records

    def _acknowledge(self, tp: tuple[str, int], items: list[tuple], timeout_s: float) -> None:
        call_partition_leader(self._cluster, tp[0], tp[1], "ShareAcknowledge",
                              self._ack_request(tp, items), timeout_s)

    def _fetch_one(self, tp: tuple[str, int], max_records: int, wait_ms: int,
                   acks: list[tuple] | None = None):
        return run_sync(self._cluster, self._fetch_ops(self._cluster, tp, max_records,
                                                       wait_ms, acks))

    def __iter__(self) -> Iterator[ShareRecord]:
        """Records one by one (polling as needed). With ``auto_accept``, a record is
        accepted when the loop body returns for it (the next record is asked for); if the
        body raises, the record stays unacknowledged and ``close`` releases it."""
        while not self._closed:
            for record in self.poll(1.0):
                yield record
                if self.auto_accept and not self._closed:
                    self.accept(record)

    # ------------------------------------------------------------------ acknowledging
    def accept(self, record: ShareRecord) -> None:
        """Done with it: it is never delivered again."""
        self._queue(record, ACCEPT, 0, "")

    def release(self, record: ShareRecord, delay_s: float = 0.0, error: str = "") -> None:
        """Give it back to be delivered again (to any member), after ``delay_s``."""
        self._queue(record, RELEASE, self._check_release_delay(delay_s), error)

    def reject(self, record: ShareRecord, error: str = "") -> None:
        """Poison: straight to the group's dead-letter topic, with ``error`` in its
        headers."""
        self._queue(record, REJECT, 0, error)

    def accept_all(self) -> None:
        self._queue_all(ACCEPT)

    def release_all(self, delay_s: float = 0.0, error: str = "") -> None:
        self._queue_all(RELEASE, self._check_release_delay(delay_s), error)

    def reject_all(self, error: str = "") -> None:
        self._queue_all(REJECT, 0, error)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Send the queued acknowledgements: one request per partition, as ranges, to the
        partitions' leaders in parallel. Raises the first error (the other partitions'
        acknowledgements were still sent)."""
        futures = [self._pool.submit(call_partition_leader, self._cluster, r.topic,
                                     r.partition, "ShareAcknowledge", r, timeout_s)
                   for r in self._ack_requests()]
        first_error: RaftkaError | None = None
        for future in futures:
            try:
                future.result()
            except RaftkaError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    # ------------------------------------------------------------------ closing
    def close(self, timeout_s: float = 10.0) -> None:
        """Send queued acknowledgements, release every record still unacknowledged,
        leave the group."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self.release_all()
            try:
                self.flush(timeout_s)
            except RaftkaError as exc:
                log.warning("share group %s: acknowledgements at close failed: %s",
                            self.group_id, exc)
            for request in self._leave_requests():
                try:
                    call_partition_leader(self._cluster, request.topic, request.partition,
                                          "ShareAcknowledge", request, timeout_s)
                except RaftkaError as exc:
                    log.warning("share group %s: leaving %s/%d failed (its records return "
                                "when their locks expire): %s", self.group_id, request.topic,
                                request.partition, exc)
            try:
                self._heartbeat(timeout_s, leave=True)
            except RaftkaError:
                pass
        finally:
            self._thread.join(timeout=1.0)
            self._pool.shutdown(wait=False)
            self._cluster.close()

    def __enter__(self) -> ShareConsumer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _AckFailed(Exception):
    """A partition's acknowledgement failed (``error``) before its acquisition."""

    def __init__(self, error: RaftkaError) -> None:
        super().__init__(str(error))
        self.error = error


def _decode_overlapping(buf: bytes, lo: int, hi: int) -> tuple[list, int]:
    """The records (``raw_records``: ``offset``, ``key``, ``value``, ``headers``,
    ``timestamp``) of the batches in ``buf`` that overlap offsets ``[lo, hi]`` (the others
    are not decoded), in log order, and the last offset the batches cover (-1: none)."""
    out: list = []
    pos, n, sent_until = 0, len(buf), -1
    while pos < n:
        h = parse_header(buf, pos)  # validates the header and the CRC
        last = h.base_offset + h.last_offset_delta
        sent_until = max(sent_until, last)
        if last >= lo and h.base_offset <= hi:
            out.extend(raw_records(buf, pos, verify=False))
        pos += h.batch_length + LOG_OVERHEAD
    return out, sent_until


_new = tuple.__new__  # a NamedTuple without its Python-level __new__ (once per record)


def _share_records(topic: str, partition: int, ranges: list[tuple[int, int, int]],
                   decoded: list, sent_until: int) -> tuple[list, list[int], list[int]]:
    """(records, gaps, unsent) of an answer: a ShareRecord per decoded record inside an
    acquired range (``ranges``: first, last, delivery count), the acquired offsets without
    a record inside the batches sent (``gaps``: compacted away) and those after them
    (``unsent``: the answer's size limit cut them). One merge pass over the records and
    the ranges, both in offset order (the broker answers ranges in order; out of order,
    they are sorted first)."""
    if any(ranges[k][0] <= ranges[k - 1][1] for k in range(1, len(ranges))):
        ranges = sorted(ranges)
    records: list = []
    gaps: list[int] = []
    unsent: list[int] = []
    append = records.append
    i, n = 0, len(decoded)

    def missing(first: int, last: int) -> None:  # acquired, no record: [first, last]
        if first > last:
            return
        if first <= sent_until:
            gaps.extend(range(first, min(last, sent_until) + 1))
        if last > sent_until:
            unsent.extend(range(max(first, sent_until + 1), last + 1))

    for first, last, count in ranges:
        while i < n and decoded[i].offset < first:
            i += 1
        expect = first
        while i < n:
            r = decoded[i]
            offset = r.offset
            if offset > last:
                break
            i += 1
            if offset < expect:
                continue  # (a record twice in the answer: taken once)
            if offset != expect:
                missing(expect, offset - 1)
            headers = r.headers
            append(_new(ShareRecord, (topic, partition, offset, r.key, r.value,
                                      tuple(headers) if headers else (), r.timestamp,
                                      count)))
            expect = offset + 1
        missing(expect, last)
    return records, gaps, unsent


def _ranges(items: list) -> list[share_pb2.AcknowledgeRange]:
    """Queued per-offset acknowledgements ``(offset, type, delay_ms, error)`` as ordered
    ranges (consecutive offsets with the same type, delay and error merged). A later
    acknowledgement of the same offset wins. Queued in increasing offset order (the common
    case: records acknowledged as polled) they are merged as they come; else sorted first."""
    out = _merged(items)
    if out is None:
        latest = {item[0]: item for item in items}
        out = _merged([latest[o] for o in sorted(latest)])
    return out


def _merged(items: list) -> list[share_pb2.AcknowledgeRange] | None:
    """``_ranges`` of items in strictly increasing offset order; None if they are not."""
    spans: list[tuple] = []
    first = last = -2
    kind = delay = error = None
    for o, k, d, e in items:
        if o <= last:
            return None
        if o == last + 1 and k == kind and d == delay and e == error:
            last = o
            continue
        if first >= 0:
            spans.append((first, last, kind, delay, error))
        first = last = o
        kind, delay, error = k, d, e
    if first >= 0:
        spans.append((first, last, kind, delay, error))
    return [share_pb2.AcknowledgeRange(first_offset=f, last_offset=la, type=k,
                                       release_delay_ms=d, error=e)
            for f, la, k, d, e in spans]


class SharePartitionState(NamedTuple):
    """A share group's state on one partition (``describe_share_group``)."""

    topic: str
    partition: int
    start_offset: int  # everything below is finished (accepted or dead-lettered)
    end_offset: int  # offsets from here were never delivered
    high_watermark: int
    acquired: int  # records held by members now
    available: int  # released, awaiting redelivery
    dead_lettering: int  # on their way to the dead-letter topic
    dead_lettered: int  # written to the dead-letter topic (total)
    accepted: int  # accepted (total)
    members: tuple[str, ...]  # members holding records

    @property
    def in_flight(self) -> int:
        return self.end_offset - self.start_offset

    @property
    def lag(self) -> int:
        """Records not finished yet: in flight or never delivered."""
        return max(self.high_watermark - self.start_offset, 0)


class ShareGroupDescription(NamedTuple):
    group_id: str
    coordinator_id: int
    record_lock_duration_ms: int
    max_delivery_attempts: int
    dead_letter_topic: str
    max_in_flight_records: int
    redelivery_backoff: tuple[int, float, int]  # initial ms (0: none), multiplier, max ms
    members: tuple[tuple[str, str, tuple[str, ...], str], ...]  # (id, client id, topics, host)
    partitions: tuple[SharePartitionState, ...]


def describe_share_group(bootstrap: str | Iterable[str] | Cluster, group_id: str,
                         timeout_s: float = 30.0,
                         security: ClientSecurity | None = None) -> ShareGroupDescription:
    """The group's configuration and members (from its coordinator) and its state on
    every partition of every topic it ever read (from each partition leader). Raises
    UnknownGroupError, InconsistentGroupTypeError (a consumer group), RaftkaError."""
    if isinstance(bootstrap, Cluster):
        return _describe(bootstrap, group_id, timeout_s)
    cluster = Cluster(bootstrap, security=security)
    try:
        return _describe(cluster, group_id, timeout_s)
    finally:
        cluster.close()


def _describe(cluster: Cluster, group_id: str, timeout_s: float) -> ShareGroupDescription:
    answer = share_coordinator(cluster, group_id).call(
        "DescribeShareGroup", share_pb2.DescribeShareGroupRequest(group_id=group_id),
        timeout_s)
    states = []
    if answer.topics:
        cluster.refresh_metadata(min(timeout_s, cluster.request_timeout_s))
    for topic in answer.topics:
        description = cluster.topic(topic)
        if description is None:
            continue  # deleted since
        for p in range(len(description.partitions)):
            s = call_partition_leader(cluster, topic, p, "DescribeSharePartition",
                                      share_pb2.DescribeSharePartitionRequest(
                                          group_id=group_id, topic=topic, partition=p),
                                      timeout_s)
            states.append(SharePartitionState(
                topic, p, s.start_offset, s.end_offset, s.high_watermark, s.acquired,
                s.available, s.dead_lettering, s.dead_lettered, s.accepted,
                tuple(s.members)))
    c = answer.config
    return ShareGroupDescription(
        group_id, answer.coordinator_id, c.record_lock_duration_ms, c.max_delivery_attempts,
        c.dead_letter_topic, c.max_in_flight_records,
        (c.redelivery_backoff_initial_ms, c.redelivery_backoff_multiplier,
         c.redelivery_backoff_max_ms),
        tuple((m.member_id, m.client_id, tuple(m.topics), m.host) for m in answer.members),
        tuple(states))
