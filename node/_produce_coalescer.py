"""Produce request coalescing: the requests a partition leader proposes in one pass, packed
into as few Raft entries as the rules allow (group commit at the proposal level).

A partition's queued produce requests are proposed together once per pass of the ready
loop (``PartitionReplica.before_ready``), so they already share one replication round and
one WAL sync. Each request used to become an entry of its own; this packs consecutive
requests into one data entry (the entry format of ``_partition.py``: one header, then the
requests' RecordBatch bytes one after the other, offsets assigned contiguously in request
order), so that a client sending many small requests (librdkafka: one request per
``linger.ms`` and up to 5 in flight) costs the log, the followers and every apply as few
entries as one sending large requests. Each request is still answered on its own, with
its own base offset, when its entry commits (acks=all) or is durable here (acks=1).

Rules (``EntryPacker``):

1. Requests are packed in queue order and only consecutive ones share an entry, so offsets
   and log order stay the order in which requests were queued (an idempotent producer's
   pipelined batches included).
2. Decided per request before it is packed, never per entry: a duplicate or out-of-order
   idempotent batch, a fenced producer, a request whose caller gave up, is answered alone
   and never packed, so it cannot fail the requests around it.
3. Alone in an entry: a transactional batch and a transaction marker (``read_committed``,
   the transaction index and ``__consumer_offsets`` decide from an entry's first batch), and
   a scheduled entry (``_delayed.py``: not a data entry).
4. An entry's batches stay within ``max_bytes`` (the topic's ``max.message.bytes``, the
   largest a single request may be; a request is never split), and hold at most
   ``BATCHES_PER_PRODUCER_MAX`` batches of one idempotent producer: the producer table
   recognizes an entry it already applied by the Raft index and sequence of a batch it
   keeps, and keeps the last 5 (``_producer_state.BATCHES_KEPT``).
5. Only where every replica reads such entries: an entry may hold an idempotent batch
   after its first batch only when ``mixed_ok`` (every other replica of the group said
   ``entry_format`` 2 in the hello that opens its Raft stream to the leader: ``NodeHello``,
   ``ENTRY_FORMAT``); nodes from before fed their producer table from an entry's first
   batch only, and ignore the field, so a mixed cluster keeps one request per entry for
   idempotent batches. Non-idempotent batches were always read whole, so they are packed
   regardless.

Nothing here reads records: a request's batches were validated by ``submit``; packing
copies their bytes once (into the entry, as before) and writes each batch's base offset.
"""

from __future__ import annotations

import struct
from typing import Sequence

from raftka.v1.recordbatch import assign_offsets

from ._producer_state import BATCHES_KEPT

BATCHES_PER_PRODUCER_MAX = BATCHES_KEPT
# The log entry format this node reads (``NodeHello.entry_format``, sent to every peer):
# every idempotent batch of an entry, not only its first (rule 5).
ENTRY_FORMAT = 2


class EntryPacker:
    """Packs one pass's requests into data entries (module rules). ``header`` packs the
    entry header (``_partition._HEADER``: magic, version, base, last, append time,
    cumulative bytes) of ``header.size`` bytes; ``next_offset`` and ``cumulative``
    continue the log; ``max_bytes``: rule 4; ``mixed_ok``: rule 5."""

    def __init__(self, header: struct.Struct, magic: int, next_offset: int, cumulative: int,
                 now_ms: int, max_bytes: int, mixed_ok: bool) -> None:
        self._header = header
        self._magic = magic
        self.next_offset = next_offset
        self.cumulative = cumulative
        self.now_ms = now_ms
        self._max_bytes = max_bytes
        self._mixed_ok = mixed_ok
        self.entries: list[bytes] = []
        self._open: bytearray | None = None  # the entry being packed: header room, batches
        self._open_base = 0
        self._open_idempotent = False  # the open entry holds an idempotent batch
        self._open_producers: dict[int, int] = {}  # producer id -> batches in the open entry

    def add(self, payload: bytes, spans: Sequence[tuple[int, int]], producer_id: int = -1,
            alone: bool = False) -> tuple[int, int, int]:
        """Pack one request's batches (``spans`` within ``payload``); returns (entry number
        in this pass, base offset, last offset). ``alone``: rule 3."""
        if alone or not self._fits(len(payload), producer_id):
            self._close()
        buf = self._open
        if buf is None:
            buf = self._open = bytearray(self._header.size)
            self._open_base = self.next_offset
        start = len(buf)
        buf += payload
        base = self.next_offset
        self.next_offset = assign_offsets(buf, base, [(s + start, e + start) for s, e in spans])
        self.cumulative += len(payload)
        if producer_id >= 0:
            self._open_idempotent = True
            self._open_producers[producer_id] = self._open_producers.get(producer_id, 0) + 1
        number = len(self.entries)
        if alone:
            self._close()
        return number, base, self.next_offset - 1

    def add_entry(self, data: bytes) -> int:
        """An entry built elsewhere (a scheduled entry), alone; its number in this pass."""
        self._close()
        self.entries.append(data)
        return len(self.entries) - 1

    def finish(self) -> list[bytes]:
        """Every entry of the pass, in order."""
        self._close()
        return self.entries

    def _fits(self, size: int, producer_id: int) -> bool:
        buf = self._open
        if buf is None:
            return True
        if len(buf) - self._header.size + size > self._max_bytes:
            return False
        if producer_id >= 0 or self._open_idempotent:
            if not self._mixed_ok:
                return False
            if self._open_producers.get(producer_id, 0) >= BATCHES_PER_PRODUCER_MAX:
                return False
        return True

    def _close(self) -> None:
        buf = self._open
        if buf is None:
            return
        self._header.pack_into(buf, 0, self._magic, 1, self._open_base, self.next_offset - 1,
                               self.now_ms, self.cumulative)
        self.entries.append(bytes(buf))
        self._open = None
        self._open_idempotent = False
        self._open_producers = {}
