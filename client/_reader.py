"""Readers: committed records of a partition from an offset, following leader changes.

:class:`PartitionReader` long-polls one partition with unary ``Fetch`` (``max_wait_ms``)
against its leader, decodes the returned RecordBatch v2 bytes on the client
(``raftka.v1.recordbatch``) and keeps ``position`` (the next offset it will return). A fetch
returns whole batches, so records below ``position`` are dropped; control batches are
skipped. Failures are retried by the client's one policy (``_retry.py``) within the
``poll`` timeout: on NOT_LEADER it goes to the named leader at once (up to 3 hops in a
row); on other metadata errors (node down, paused, shutting down, election) it forgets the
leader, refreshes metadata and backs off (50-500 ms, reset by a successful fetch); an
UNKNOWN_TOPIC / UNKNOWN_PARTITION is retried only while fresh metadata still lists the
partition.

Start position: ``"earliest"`` (log start offset), ``"latest"`` (high watermark, i.e. only
new records) or an offset. Both names are resolved by asking the partition leader's
metadata (exact there). When the position falls out of the log (retention moved the log
start past it, or an explicit offset beyond the end) ``offset_reset`` decides: jump to
``"earliest"`` / ``"latest"``, or ``"none"``: raise OffsetOutOfRangeError.

Follower fetching (``read_from``): ``"leader"`` (default) reads from the leader;
``"nearest"`` from a replica in the reader's ``rack`` (the leader when it is there or no
replica is), ``"any"`` from a replica picked at random (spreading readers over every
replica). A reader keeps its replica until it fails. A follower serves only committed
records; one behind the reader's position waits for its watermark and then answers
empty. A follower that fails (down, not answering in time), or still lags after a full
long-poll wait, is avoided for ``FOLLOWER_AVOID_S`` (one that answers with an error: no
live leader, replica not started, log starting later, for ``FOLLOWER_RECHECK_S``) and the
next fetch goes to the leader at once (which alone decides that an offset is out of range). Positions
only move forward, whichever replica answered.

:class:`TopicReader` reads every partition of a topic round-robin (the CLI's consume
without ``--partition``); consumer groups with committed offsets come with the full client.
"""

from __future__ import annotations

import random
import time
from collections import deque
from concurrent.futures import Future
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType


from raftka.client._security import ClientSecurity
from raftka.client._cluster import Cluster, ClusterState
from raftka.client._ops import Join, Ops, Refresh, Rpc, Start, backoff, run_sync
from raftka.client._retry import RetryPolicy, Step, named_leader
from raftka.v1.errors import (
    BrokerNotAvailableError,
    CorruptBatchError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RaftkaError,
    RequestTimedOutError,
    UnknownPartitionError,
    UnknownTopicError,
)
from raftka.client._types import ConsumedBatch, ConsumedRecord
from raftka.v1 import broker_pb2
from raftka.v1.recordbatch import CorruptBatchError as _DecodeError
from raftka.v1.recordbatch import decode_columns, decode_tuples, parse_header

__all__ = ["PartitionReader", "TopicReader"]

_OFFSET_NAMES = {"earliest": "earliest", "beginning": "earliest", "smallest": "earliest",
                 "latest": "latest", "end": "latest", "largest": "latest"}
_RESET_POLICIES = ("earliest", "latest", "none")
# What one poll returns at most unless told (whole batches up to here: a small batch is
# topped up from the next ones, a big one is split).
_POLL_RECORDS = 10_000
# Retries (_retry.py): backoff 50-500 ms, 3 redirects in a row, metadata refreshed at most
# every 100 ms. The state lasts across polls (each poll bounds the waits by its timeout).
READ_FROM = ("leader", "nearest", "any")
# A follower that failed or lagged is not read from for this long (its reader goes to
# the leader, or another replica); a follower behind the reader after a long-poll wait of
# at least FOLLOWER_LAG_WAIT_MS counts as lagging.
FOLLOWER_AVOID_S = 10.0
# A follower that answered with an error (no live leader yet, a replica not started yet,
# its log starting later) is asked again sooner: it is up, and asking costs one round trip.
FOLLOWER_RECHECK_S = 2.0
FOLLOWER_LAG_WAIT_MS = 100
FETCH_RETRY = RetryPolicy(backoff_initial_s=0.05, backoff_max_s=0.5, redirects_max=3,
                          refresh_min_age_s=0.1)


def check_read_from(read_from: str, rack: str | None) -> None:
    """Raise ValueError unless ``read_from``/``rack`` are a valid follower-fetching choice."""
    if read_from not in READ_FROM:
        raise ValueError(f"read_from must be one of {READ_FROM}, got {read_from!r}")
    if read_from == "nearest" and not rack:
        raise ValueError('read_from="nearest" needs rack (the rack this client runs in)')


def _start_spec(offset: str | int) -> str | int:
    if isinstance(offset, bool):
        raise TypeError("offset must be 'earliest', 'latest' or an int")
    if isinstance(offset, int):
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        return offset
    name = _OFFSET_NAMES.get(str(offset).strip().lower())
    if name is None:
        raise ValueError(f"offset must be 'earliest', 'latest' or an int, got {offset!r}")
    return name


_ISOLATION_LEVELS = {"read_uncommitted": broker_pb2.READ_UNCOMMITTED,
                     "read_committed": broker_pb2.READ_COMMITTED}


def _isolation(level: str) -> int:
    """``isolation_level`` as Kafka names it (also with a dash, as the CLI takes it)."""
    value = _ISOLATION_LEVELS.get(str(level).strip().lower().replace("-", "_"))
    if value is None:
        raise ValueError("isolation_level must be 'read_uncommitted' (the default) or "
                         f"'read_committed', got {level!r}")
    return value


class PartitionReaderCore:
    """A partition reader's state and its fetch operation (``_ops.py``): everything but
    the I/O, shared by :class:`PartitionReader` and the asyncio ``raftka.aio``
    reader, which run :meth:`_fetch_once_ops` with blocking and ``grpc.aio`` I/O."""

    def __init__(
        self,
        bootstrap: str | Iterable[str] | ClusterState,
        topic: str,
        partition: int,
        offset: str | int = "earliest",
        *,
        offset_reset: str | None = None,
        max_wait_ms: int = 500,
        max_bytes: int = 1024 * 1024,
        request_timeout_ms: int = 2000,
        security: ClientSecurity | None = None,
        read_ahead: bool = True,
        read_from: str = "leader",
        rack: str | None = None,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        self._isolation = _isolation(isolation_level)
        check_read_from(read_from, rack)
        self._read_from = read_from
        self._rack = rack or ""
        self._replica: int | None = None  # the follower-fetching replica in use (node id)
        self._avoid: dict[int, float] = {}  # replica -> avoided until (monotonic s)
        self.topic = topic
        self._read_ahead_on = read_ahead  # off where a thread of the caller's reads ahead
        self.partition = partition
        self._start = _start_spec(offset)
        if offset_reset is None:
            offset_reset = self._start if isinstance(self._start, str) else "none"
        if offset_reset not in _RESET_POLICIES:
            raise ValueError(f"offset_reset must be one of {_RESET_POLICIES}, got {offset_reset!r}")
        self._offset_reset = offset_reset
        self._max_wait_ms = max_wait_ms
        self._max_bytes = max_bytes
        self._owns_cluster = not isinstance(bootstrap, ClusterState)
        self._cluster: ClusterState = (
            self._new_cluster(bootstrap, request_timeout_ms, security)
            if not isinstance(bootstrap, ClusterState) else bootstrap)
        self._rpc_margin_s = request_timeout_ms / 1000
        self._position: int | None = self._start if isinstance(self._start, int) else None
        self._high_watermark: int | None = None
        self._log_start_offset: int | None = None
        self._buffer: deque[list[ConsumedRecord]] = deque()  # decoded batches, in order
        # Fetched batches not decoded yet: (bytes, start, first offset wanted). Decoding one
        # batch per need keeps few records alive at once (a 4 MiB fetch can hold 500k), so
        # the garbage collector's passes stay short.
        self._undecoded: deque[tuple[bytes, int, int, bool]] = deque()  # + "skip below first"
        # One Fetch started ahead while the caller handles the last one (a backlog only):
        # (address, offset, future). The server's and the network's time overlap ours.
        self._read_ahead: tuple[str, int, Future] | None = None
        self._retry = FETCH_RETRY.start()  # no deadline of its own: each poll's bounds it
        self._closed = False

    def _new_cluster(self, bootstrap: str | Iterable[str], request_timeout_ms: int,
                     security: ClientSecurity | None = None) -> ClusterState:
        return Cluster(bootstrap, request_timeout_ms=request_timeout_ms, security=security)

    # ------------------------------------------------------------------ state

    @property
    def position(self) -> int | None:
        """The offset of the next record ``poll`` returns (None until resolved)."""
        if self._buffer:
            return self._buffer[0][0].offset
        if self._undecoded:
            return self._undecoded[0][2]
        return self._position

    @property
    def high_watermark(self) -> int | None:
        """Offset after the last committed record, as of the last fetch (None before)."""
        return self._high_watermark

    @property
    def log_start_offset(self) -> int | None:
        return self._log_start_offset

    @property
    def at_end(self) -> bool:
        """True when everything committed as of the last fetch has been returned."""
        pos = self.position
        return (pos is not None and self._high_watermark is not None
                and pos >= self._high_watermark)

    def seek(self, offset: str | int) -> None:
        """Continue from ``offset`` ('earliest', 'latest' or an int) at the next poll."""
        spec = _start_spec(offset)
        self._buffer.clear()
        self._undecoded.clear()
        self._cancel_read_ahead()
        self._start = spec
        self._position = spec if isinstance(spec, int) else None

    # ------------------------------------------------------------------ reading

    @property
    def fetched_batches(self) -> int:
        """Batches fetched and not yet handed out (decoded or not): a read-ahead depth."""
        return len(self._undecoded) + len(self._buffer)

    def take(self, max_records: int | None = None) -> list[ConsumedRecord]:
        """Records already fetched (decoding as needed; never waits for the network), at
        most ``max_records`` (default 10,000)."""
        limit = _POLL_RECORDS if max_records is None else max_records
        out: list[ConsumedRecord] = []
        while len(out) < limit and (self._buffer or self._undecoded):
            if not self._buffer:
                try:
                    self._decode_next()
                except CorruptBatchError:
                    if out:
                        break  # the next call raises it, after these records are handed out
                    raise
                continue
            if out:
                out += self._buffer.popleft()
            else:
                out = self._buffer.popleft()
        if len(out) > limit:
            self._buffer.appendleft(out[limit:])
            del out[limit:]
        return out

    def take_batches(self, max_records: int | None = None,
                     first_whole: bool = True) -> list[ConsumedBatch]:
        """Like :meth:`take`, as whole batches (:class:`ConsumedBatch`, one list per
        column): the first batch whole whatever its size (unless ``first_whole`` is False:
        a consumer topping up a poll from another partition), then more while the total
        stays within ``max_records`` (default 10,000). No object per record is built."""
        limit = _POLL_RECORDS if max_records is None else max_records
        out: list[ConsumedBatch] = []
        count = 0
        topic, partition = self.topic, self.partition
        while self._buffer or self._undecoded:
            may_exceed = first_whole and not out
            if self._buffer:  # records decoded for take(): hand them out first, in order
                if not may_exceed and count + len(self._buffer[0]) > limit:
                    break
                batch = ConsumedBatch.of_records(topic, partition, self._buffer.popleft())
            else:
                buf, pos, first, _partly_read = self._undecoded[0]
                if (not may_exceed
                        and count + parse_header(buf, pos).next_offset - first > limit):
                    break
                try:
                    columns = decode_columns(buf, pos, first)
                except _DecodeError as e:
                    if out:
                        break  # the next call raises it, after these are handed out
                    self._cancel_read_ahead()
                    raise CorruptBatchError(f"fetch of {topic}/{partition}@{first} returned "
                                            f"a corrupt batch: {e}") from e
                self._undecoded.popleft()
                if not columns[0]:
                    continue
                batch = ConsumedBatch(topic, partition, *columns)
            out.append(batch)
            count += len(batch)
            if count >= limit:
                break
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise RaftkaError("the reader is closed")

    def _poll_batches_ops(self, timeout: float,
                          max_records: int | None) -> Ops[list[ConsumedBatch]]:
        """``poll_batches``: as ``_poll_ops``, handing out batches."""
        if (yield from self._await_records_ops(timeout)):
            return self.take_batches(max_records)
        return []

    def _poll_ops(self, timeout: float, max_records: int | None) -> Ops[list[ConsumedRecord]]:
        """``poll``: fetch until some records are there or ``timeout`` passed."""
        if (yield from self._await_records_ops(timeout)):
            return self.take(max_records)
        return []

    def _await_records_ops(self, timeout: float) -> Ops[bool]:
        """Fetch (at least once) until records are buffered; False once ``timeout`` passed
        with none."""
        self._check_open()
        deadline = time.monotonic() + max(timeout, 0.0)
        first = True
        while not (self._buffer or self._undecoded):
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not first:
                return False
            first = False
            yield from self._fetch_once_ops(max(remaining, 0.0), deadline)
        return True

    def _fetch_once_ops(self, remaining: float, deadline: float) -> Ops[None]:
        """One attempt: resolve the start, fetch, decode. Retriable errors are absorbed
        (after a backoff that respects ``deadline``); the others raise."""
        address = self._cluster.leader_address(self.topic, self.partition)
        follower: int | None = None  # the replica read instead of the leader
        try:
            if address is None:
                yield self._refresh(remaining)
                address = self._cluster.leader_address(self.topic, self.partition)
                if address is None:
                    self._check_partition_exists()
                    yield backoff(self._retry, until=deadline)
                    return
            if self._position is None:
                yield from self._resolve_start_ops(address, remaining)
            assert self._position is not None
            if self._read_from != "leader":
                follower, address = self._replica_address(address)
            what = f"Fetch {self.topic}/{self.partition}@{self._position}"
            ahead, self._read_ahead = self._read_ahead, None
            if ahead is not None and ahead[:2] == (address, self._position):
                wait_ms = self._max_wait_ms  # what a read-ahead asks for
                response = yield Join(ahead[2])
            else:
                if ahead is not None:
                    ahead[2].cancel()
                wait_ms = int(min(self._max_wait_ms, remaining * 1000))
                response = yield Rpc(
                    address, "broker", "Fetch", self._fetch_request(self._position, wait_ms),
                    wait_ms / 1000 + self._rpc_margin_s, what)
        except RaftkaError as e:
            if follower is not None:
                # down, cut off from its leader, or its log starts later: the leader
                # decides, at once (no backoff; each replica is avoided in turn)
                down = isinstance(e, (BrokerNotAvailableError, RequestTimedOutError))
                self._avoid_replica(follower, FOLLOWER_AVOID_S if down else FOLLOWER_RECHECK_S)
                return
            if isinstance(e, OffsetOutOfRangeError):
                yield from self._reset_position_ops(address, remaining)
                return
            retry = self._retry
            step = retry.on_error(e, failed=address or "",
                                  leader=named_leader(e, self._cluster.broker_address))
            if step is Step.RAISE:
                raise
            if isinstance(e, NotLeaderError):
                self._cluster.note_not_leader(self.topic, self.partition, e)
                if step is Step.FOLLOW:
                    return  # the next attempt goes to the leader it named
            elif step is Step.REFRESH:
                self._cluster.forget_leader(self.topic, self.partition)
            if isinstance(e, (UnknownTopicError, UnknownPartitionError)):
                # a lagging node, or really gone: fresh metadata decides
                yield self._refresh(remaining, force=True)
                self._check_partition_exists()
            elif step is Step.REFRESH:
                yield self._refresh(remaining)
            yield backoff(retry, until=deadline)
            return
        self._retry.succeeded()
        if follower is not None and response.high_watermark < self._position \
                and not response.record_batches and not response.records \
                and wait_ms >= FOLLOWER_LAG_WAIT_MS:
            self._avoid_replica(follower)  # still behind us after waiting: lagging
        after = response.next_offset
        if self._read_ahead_on and self._position < after < response.high_watermark:
            self._read_ahead = (address, after, (yield Start(Rpc(
                address, "broker", "Fetch", self._fetch_request(after, self._max_wait_ms),
                self._max_wait_ms / 1000 + self._rpc_margin_s,
                f"Fetch {self.topic}/{self.partition}@{after}"))))
        self._take(response)
        if self._read_ahead is not None and self._read_ahead[1] != self._position:
            self._cancel_read_ahead()  # the broker's next_offset was not where we stopped

    def _fetch_request(self, offset: int, wait_ms: int) -> broker_pb2.FetchRequest:
        return broker_pb2.FetchRequest(topic=self.topic, partition=self.partition,
                                       offset=offset, max_bytes=self._max_bytes,
                                       max_wait_ms=wait_ms,
                                       allow_follower=self._read_from != "leader",
                                       isolation_level=self._isolation)

    def _replica_address(self, leader_address: str) -> tuple[int | None, str]:
        """(the follower to read, its address), or (None, the leader's address)."""
        md = self._cluster.metadata
        t = md.topics.get(self.topic)
        p = t.partition(self.partition) if t is not None else None
        if p is None:
            return None, leader_address
        now = time.monotonic()
        candidates = [r for r in p.replicas
                      if r in md.brokers and self._avoid.get(r, 0.0) <= now]
        if self._read_from == "nearest":
            candidates = [r for r in candidates if md.racks.get(r) == self._rack]
            if p.leader_id in candidates:
                candidates = [p.leader_id]  # the leader is near: no reason to go elsewhere
        if self._replica not in candidates:
            self._replica = random.choice(candidates) if candidates else None
        address = md.brokers.get(self._replica) if self._replica is not None else None
        if address is None or address == leader_address:
            return None, leader_address
        return self._replica, address

    def _avoid_replica(self, replica: int, seconds: float = FOLLOWER_AVOID_S) -> None:
        self._avoid[replica] = time.monotonic() + seconds
        if self._replica == replica:
            self._replica = None
        self._cancel_read_ahead()

    def _cancel_read_ahead(self) -> None:
        ahead, self._read_ahead = self._read_ahead, None
        if ahead is not None:
            ahead[2].cancel()

    def _take(self, response: broker_pb2.FetchResponse) -> None:
        position = self._position
        assert position is not None
        # max(): a new leader may briefly report a lower watermark than its predecessor
        # did; records below the higher one are committed and will be served.
        self._high_watermark = max(self._high_watermark or 0, response.high_watermark)
        self._log_start_offset = response.log_start_offset
        buf = response.record_batches
        next_position = position
        if buf:
            pos = 0
            try:
                while pos < len(buf):
                    header = parse_header(buf, pos)  # validates length and CRC
                    if header.next_offset > next_position and not header.is_control:
                        self._undecoded.append((buf, pos, max(next_position,
                                                              header.base_offset),
                                                header.base_offset < next_position))
                    next_position = max(next_position, header.next_offset)
                    pos += header.size
                if (self._isolation and next_position < response.next_offset
                        <= response.high_watermark):
                    # read_committed: the broker left out aborted batches and markers
                    # after the last one it returned
                    next_position = response.next_offset
            except _DecodeError as e:
                if next_position == position:  # nothing usable: refuse to skip data
                    raise CorruptBatchError(
                        f"fetch of {self.topic}/{self.partition}@{position} returned a "
                        f"corrupt batch: {e}") from e
                # keep what is sound; the next fetch starts right after it
        elif response.records:  # a broker that answered with decoded records
            out: list[ConsumedRecord] = []
            for r in response.records:
                if r.offset >= next_position:
                    out.append(ConsumedRecord(
                        self.topic, self.partition, r.offset,
                        r.key if r.HasField("key") else None,
                        r.value if r.HasField("value") else None,
                        tuple((h.key, h.value if h.HasField("value") else None)
                              for h in r.headers),
                        r.timestamp_ms))
                    next_position = r.offset + 1
            if out:
                self._buffer.append(out)
        elif position < response.next_offset <= response.high_watermark:
            next_position = response.next_offset  # a gap the broker told us to skip
        self._position = next_position

    def _decode_next(self) -> None:
        """Decode the oldest fetched batch into the buffer. A batch whose records do not
        decode (its CRC was sound: a buggy producer) is never skipped: every poll raises
        CorruptBatchError from it until ``seek`` moves past it."""
        buf, pos, first, _partly_read = self._undecoded[0]
        topic, partition = self.topic, self.partition
        try:
            # records below ``first`` (a fetch returns whole batches) are left out; the
            # compiled decoder builds the ConsumedRecords straight from the bytes
            out = decode_tuples(buf, pos, ConsumedRecord, topic, partition, first)
        except _DecodeError as e:  # stays first in line: the next poll raises again
            self._cancel_read_ahead()
            raise CorruptBatchError(
                f"fetch of {topic}/{partition}@{first} returned a corrupt batch: {e}") from e
        self._undecoded.popleft()
        if out:
            self._buffer.append(out)

    # ------------------------------------------------------------------ helpers

    def _refresh(self, remaining: float, force: bool = False) -> Refresh:
        # nobody answering is not an error here: the caller backs off and tries again
        return Refresh(min(max(remaining, 0.2), 5.0),
                       0.0 if force else self._retry.policy.refresh_min_age_s)

    def _check_partition_exists(self) -> None:
        md = self._cluster.metadata
        if not md.fetched_at:
            return
        t = md.topics.get(self.topic)
        if t is None:
            raise UnknownTopicError(f"topic {self.topic!r} does not exist")
        if t.partition(self.partition) is None:
            raise UnknownPartitionError(
                f"topic {self.topic!r} has partitions 0..{t.partition_count - 1}, "
                f"not {self.partition}")

    def _leader_offsets_ops(self, address: str, remaining: float) -> Ops[tuple[int, int]]:
        """(log_start_offset, high_watermark) from the leader's own metadata."""
        response = yield Rpc(
            address, "broker", "Metadata", broker_pb2.MetadataRequest(topics=[self.topic]),
            min(max(remaining, 0.2), self._rpc_margin_s), f"Metadata {self.topic}")
        for t in response.topics:
            if t.name == self.topic:
                for p in t.partitions:
                    if p.partition == self.partition:
                        return p.log_start_offset, p.high_watermark
        raise UnknownPartitionError(f"{self.topic}/{self.partition} is not in the metadata "
                                    f"of its leader at {address}")

    def _resolve_start_ops(self, address: str, remaining: float) -> Ops[None]:
        log_start, high_watermark = yield from self._leader_offsets_ops(address, remaining)
        self._log_start_offset = log_start
        self._high_watermark = high_watermark
        self._position = log_start if self._start == "earliest" else high_watermark

    def _reset_position_ops(self, address: str | None, remaining: float) -> Ops[None]:
        position = self._position
        if self._offset_reset == "none" or address is None:
            if address is not None:
                try:  # for the message only
                    self._log_start_offset, self._high_watermark = (
                        yield from self._leader_offsets_ops(address, remaining))
                except RaftkaError:
                    pass
            raise OffsetOutOfRangeError(
                f"offset {position} is out of range for {self.topic}/{self.partition} "
                f"(log start {self._log_start_offset}, high watermark {self._high_watermark})")
        log_start, high_watermark = yield from self._leader_offsets_ops(address, remaining)
        self._log_start_offset = log_start
        self._high_watermark = high_watermark
        self._position = log_start if self._offset_reset == "earliest" else high_watermark


class PartitionReader(PartitionReaderCore):
    """Reads one partition from ``offset`` on. Not thread-safe (one reader, one thread).

    ``poll(timeout)`` returns the next records (possibly none) within ``timeout`` seconds
    (plus at most one RPC deadline when a broker stops answering mid-call); iterating
    yields records forever.
    """

    _cluster: Cluster

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[ConsumedRecord]:
        """The next records at ``position`` (advancing it; at most ``max_records``, by
        default 10,000), waiting up to ``timeout`` seconds for some to be committed.
        Retriable failures are retried inside the timeout; the others raise
        (UnknownTopicError, OffsetOutOfRangeError with offset_reset='none', ...)."""
        return run_sync(self._cluster, self._poll_ops(timeout, max_records))

    def poll_batches(self, timeout: float = 1.0,
                     max_records: int | None = None) -> list[ConsumedBatch]:
        """:meth:`poll` by whole batches: a list of :class:`ConsumedBatch` (offsets, keys,
        values, timestamps and headers as one list each), the first batch whole, then more
        while they total at most ``max_records`` (default 10,000). For code that handles
        values in bulk: it skips building an object per record (about 2x faster over a
        backlog of small records). Mixes with ``poll``: both advance the same position."""
        return run_sync(self._cluster, self._poll_batches_ops(timeout, max_records))

    def fetch(self, timeout: float = 1.0) -> None:
        """One fetch (with its retries) into the reader, without decoding: the records come
        out of :meth:`take`. For a thread that reads ahead while another decodes — the only
        two methods that may run in different threads at once (``take`` in one thread)."""
        self._check_open()
        self._fetch_once(max(timeout, 0.0), time.monotonic() + max(timeout, 0.0))

    def __iter__(self) -> Iterator[ConsumedRecord]:
        while True:
            yield from self.poll(1.0)

    def _fetch_once(self, remaining: float, deadline: float) -> None:
        run_sync(self._cluster, self._fetch_once_ops(remaining, deadline))

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._closed = True
        self._cancel_read_ahead()
        if self._owns_cluster:
            self._cluster.close()

    def __enter__(self) -> PartitionReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class TopicReader:
    """Reads several partitions of one topic (all by default), round-robin, sharing one
    connection pool. ``poll`` first asks every partition without waiting, then long-polls
    them in turn with short waits until ``timeout``."""

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        topic: str,
        partitions: Sequence[int] | None = None,
        offset: str | int = "earliest",
        *,
        offset_reset: str | None = None,
        metadata_timeout: float = 10.0,
        request_timeout_ms: int = 2000,
        security: ClientSecurity | None = None,
        max_bytes: int = 1024 * 1024,
        read_from: str = "leader",
        rack: str | None = None,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        _isolation(isolation_level)  # a bad value fails before any connection
        self.topic = topic
        self._cluster = Cluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                security=security)
        try:
            # fail fast (UnknownTopicError, NoBrokersAvailable) rather than poll forever
            description = self._cluster.wait_for_topic(topic, metadata_timeout)
            if partitions is None:
                partitions = [p.partition for p in description.partitions]
            for p in partitions:
                if description.partition(p) is None:
                    raise UnknownPartitionError(
                        f"topic {topic!r} has partitions 0..{description.partition_count - 1}, "
                        f"not {p}")
            self._readers = [
                PartitionReader(self._cluster, topic, p, offset, offset_reset=offset_reset,
                                request_timeout_ms=request_timeout_ms, max_bytes=max_bytes,
                                read_from=read_from, rack=rack,
                                isolation_level=isolation_level)
                for p in partitions
            ]
        except BaseException:
            self._cluster.close()
            raise
        self._next = 0

    @property
    def readers(self) -> list[PartitionReader]:
        return list(self._readers)

    @property
    def at_end(self) -> bool:
        return all(r.at_end for r in self._readers)

    def positions(self) -> dict[int, int | None]:
        return {r.partition: r.position for r in self._readers}

    def poll(self, timeout: float = 1.0) -> list[ConsumedRecord]:
        deadline = time.monotonic() + max(timeout, 0.0)
        n = len(self._readers)
        if not n:
            return []
        wait_s = 0.0  # the first round does not wait
        while True:
            for _ in range(n):
                reader = self._readers[self._next]
                self._next = (self._next + 1) % n
                records = reader.poll(min(wait_s, max(deadline - time.monotonic(), 0.0)))
                if records:
                    return records
            if time.monotonic() >= deadline:
                return []
            wait_s = min(0.1, 1.0 / n) if n > 1 else 1.0

    def __iter__(self) -> Iterator[ConsumedRecord]:
        while True:
            yield from self.poll(1.0)

    def close(self) -> None:
        for r in self._readers:
            r.close()
        self._cluster.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
