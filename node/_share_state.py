"""Share groups: the replicated state of one share-partition (a share group reading one
topic partition), after Kafka's KIP-932. Pure and deterministic: no clock, no I/O.

The state lives in the data partition's own Raft group. The partition leader is the
*share-partition leader*: it proposes share operations as control entries of the
partition log (``b"S" | u8 version | canonical JSON``, never read as records) and every
replica applies them at the same log position with ``SharePartition.apply``. An operation
carries every input its outcome depends on (the leader's wall clock ``now`` in ms, the
group's lock duration, delivery limit and in-flight cap, the log start the leader saw);
the only other input is the partition's high watermark at that log position, the same on
every replica. So every replica computes the same state, and the leader learns the outcome
(which records were acquired, or why an acknowledgement was refused) from its own apply.

State (per group and partition), all in offsets and offset *ranges*:
- ``start``: every offset below it is finished (accepted, dead-lettered, or below the log
  start); never decreases.
- ``end``: the offset after the last record ever acquired; offsets ``>= end`` were never
  delivered. ``start <= end`` always; ``end - start <= cap`` (the in-flight cap) whenever an
  acquisition extends ``end``.
- ``spans``: ``[start, end)`` cut into contiguous ranges (``Span``), each in one state:
  ``AVAILABLE`` (released; redelivered once ``until_ms`` has passed), ``ACQUIRED`` (held by
  ``member`` until ``until_ms``), ``DONE`` (accepted or dead-lettered), ``DEAD`` (to be
  written to the dead-letter topic, with ``reason`` and the member's last ``error``),
  ``PREPARED`` (being written to the dead-letter topic as the batch of sequence
  ``prepared_seq``). ``count`` is the delivery count of every record of the span.
  Adjacent spans with the same fields are merged and a ``DONE`` prefix is dropped (moving
  ``start``) after every operation, so the state grows with the records in flight, never
  with the log: its size is bounded by ``cap`` spans.

Rules (applied in this order by every operation):
1. Lock expiry: an ``ACQUIRED`` span whose ``until_ms <= now`` becomes ``AVAILABLE`` (now
   redeliverable), or ``DEAD`` ("attempts exhausted") if its count reached the delivery
   limit. Only operations that carry the limit (``attempts``) expire locks.
2. Acquire (member ``m``, at most ``max_records``). An acquisition whose ``id`` is among
   the last ``FETCH_IDS_MAX`` that got records is a retry: it gets what the member still
   holds of that acquisition, nothing new. Otherwise: ``AVAILABLE`` spans whose delay has
   passed, in offset order, then fresh offsets from ``end`` up to
   ``min(high watermark, start + cap)``. An acquisition that names ``after_ack`` (a
   ShareFetch carrying acknowledgements, proposed right after them) acquires nothing
   unless that acknowledgement was applied. Each acquired record's count goes up by one and
   it is held by ``m`` until ``now + lock_ms``. A record whose count reached the limit is
   never acquired (rule 1 and 3 make it ``DEAD`` first).
3. Acknowledge (member ``m``, offset ranges): refused whole, changing nothing, unless every
   offset named is ``ACQUIRED`` by ``m`` (so after its lock expired, it is not: rule 1 ran
   first). An acknowledgement whose ``id`` is among the last ``ACK_IDS_MAX`` applied is a
   retry of one already applied: nothing to do, and success again. ``accept`` -> ``DONE``; ``release`` -> ``AVAILABLE`` after ``delay_ms`` (or
   ``DEAD``, "attempts exhausted", at the limit); ``reject`` -> ``DEAD`` ("rejected").
4. Leave (member ``m``): every record ``m`` holds is released at once (its count stays).
5. Dead letters: ``dlq_prepare`` freezes the first ``DEAD`` records (at most ``max``
   offsets) into ``PREPARED``, as the batch with sequence ``dlq_seq``; ``dlq_done`` with
   that sequence and the number of records written makes them ``DONE`` and moves
   ``dlq_seq`` on. Only one batch is prepared at a time, so after a failover the new leader
   rewrites exactly the same records with the same producer id and sequence, and the
   dead-letter partition's idempotence check drops the copy if the first write had landed.
6. Log start: an offset below the log start (retention removed it) is finished.
7. Redelivery backoff (the group's ``backoff`` = initial ms, multiplier, maximum ms, in
   each op that may release records; initial 0 = none): a record released by lock expiry,
   or by a ``release`` without a delay of its own, is redelivered no sooner than
   ``min(maximum, initial * multiplier ** (count - 1))`` after its lock expired or it
   was released. A member's leave releases without backoff.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass

AVAILABLE, ACQUIRED, DONE, DEAD, PREPARED = 0, 1, 2, 3, 4
STATE_NAMES = {AVAILABLE: "available", ACQUIRED: "acquired", DONE: "done", DEAD: "dead",
               PREPARED: "dead-lettering"}
ACCEPT, RELEASE, REJECT = 1, 2, 3
REASON_REJECTED = "rejected"
REASON_EXHAUSTED = "attempts exhausted"
ENTRY_MAGIC = 0x53  # 'S'
ENTRY_VERSION = 1
ERROR_TEXT_MAX = 1000
ACK_IDS_MAX = 1000  # acknowledgement ids remembered per share-partition (retries)
FETCH_IDS_MAX = 1000  # acquisition ids remembered per share-partition (retries)


class ShareOpError(Exception):
    """An operation refused at apply (it changed nothing). ``code`` names the ErrorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Span:
    first: int
    last: int  # inclusive
    state: int
    count: int = 0
    member: str = ""
    until_ms: int = 0  # ACQUIRED: lock deadline; AVAILABLE: not redelivered before
    reason: str = ""
    error: str = ""

    def same(self, other: Span) -> bool:
        if self.state != other.state:
            return False
        if self.state == DONE:
            return True
        return (self.count == other.count and self.member == other.member
                and self.until_ms == other.until_ms and self.reason == other.reason
                and self.error == other.error)

    def encode(self) -> list:
        return [self.first, self.last, self.state, self.count, self.member, self.until_ms,
                self.reason, self.error]


def _first(span: Span) -> int:
    return span.first


def encode_op(op: dict) -> bytes:
    return bytes((ENTRY_MAGIC, ENTRY_VERSION)) + json.dumps(
        op, separators=(",", ":"), sort_keys=True).encode()


def decode_op(data: bytes) -> dict | None:
    """The operation in a share control entry, or None if ``data`` is not one."""
    if len(data) < 3 or data[0] != ENTRY_MAGIC or data[1] != ENTRY_VERSION:
        return None
    try:
        op = json.loads(bytes(data[2:]))
    except (ValueError, UnicodeDecodeError):
        return None
    return op if isinstance(op, dict) and isinstance(op.get("g"), str) else None


class SharePartition:
    """One share group's state on one partition (see the module docstring)."""

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self.end = start
        self.spans: list[Span] = []
        self.dlq_producer_id = -1
        self.dlq_partition = -1
        self.dlq_seq = 0  # sequence of the next dead-letter batch
        self.prepared_seq = -1  # sequence of the batch being written, -1: none
        self.dead_lettered = 0  # records written to the dead-letter topic (total)
        self.accepted = 0  # records accepted (total)
        self.ack_ids: list[str] = []  # ids of the last ACK_IDS_MAX applied acknowledgements
        # (id, member, ranges) of the last FETCH_IDS_MAX acquisitions that got records
        self.fetch_ids: list[tuple[str, str, list]] = []
        self._backoff: tuple[int, float, int] = (0, 1.0, 0)  # of the op being applied

    # ------------------------------------------------------------------ apply
    def apply(self, op: dict, high_watermark: int):
        """Apply one operation; returns its outcome or raises ShareOpError (nothing
        changed). Outcomes: acquire -> [(first, last, count)], dlq_prepare -> [(first,
        last)] of the prepared batch, others -> None."""
        kind = op.get("op")
        now = int(op.get("now", 0))
        limit = int(op.get("attempts", 0))
        backoff = op.get("backoff") or (0, 1.0, 0)
        self._backoff = (int(backoff[0]), float(backoff[1]), int(backoff[2]))
        self._skip_below(int(op.get("log_start", 0)))
        if limit > 0:  # ops that do not carry the delivery limit expire nothing
            self._expire(now, limit)
        try:
            if kind == "acquire":
                fetch_id = str(op.get("id", ""))
                if fetch_id:
                    for seen_id, member, ranges in self.fetch_ids:
                        if seen_id == fetch_id and member == op["m"]:
                            return self._still_held(member, ranges)  # a retry
                after = str(op.get("after_ack", ""))
                if after and after not in self.ack_ids:
                    return []  # its acknowledgement (proposed just before) was refused
                got = self._acquire(op["m"], now, int(op["lock_ms"]), int(op["max"]),
                                    int(op["cap"]), high_watermark, max(limit, 1))
                if fetch_id and got:
                    self.fetch_ids.append((fetch_id, op["m"], [[f, la] for f, la, _ in got]))
                    del self.fetch_ids[:-FETCH_IDS_MAX]
                return got
            if kind == "ack":
                ack_id = str(op.get("id", ""))
                if ack_id and ack_id in self.ack_ids:
                    return None  # a retry of an acknowledgement already applied
                self._ack(op["m"], now, max(limit, 1), op["acks"])
                if ack_id:
                    self.ack_ids.append(ack_id)
                    del self.ack_ids[:-ACK_IDS_MAX]
                return None
            if kind == "leave":
                return self._leave(op["m"], now, max(limit, 1))
            if kind == "tick":
                return None
            if kind == "dlq_init":
                if self.dlq_producer_id < 0 or op.get("reset"):
                    # reset: the dead-letter partition forgot the producer id; a fresh id
                    # starts again at sequence 0 (the prepared batch with it)
                    if op.get("reset") and int(op.get("old", -2)) != self.dlq_producer_id:
                        return None  # a reset already done by another (stale) writer
                    self.dlq_producer_id = int(op["pid"])
                    self.dlq_partition = int(op["partition"])
                    if op.get("reset"):
                        self.dlq_seq = 0
                        if self.prepared_seq >= 0:
                            self.prepared_seq = 0
                return None
            if kind == "dlq_prepare":
                return self._dlq_prepare(int(op["max"]))
            if kind == "dlq_done":
                return self._dlq_done(int(op["seq"]), int(op["n"]))
            raise ShareOpError("INVALID_REQUEST", f"unknown share operation {kind!r}")
        finally:
            self._normalize()

    def _skip_below(self, log_start: int) -> None:  # rule 6
        if log_start <= self.start:
            return
        if log_start >= self.end:
            self.spans = []
            self.start = self.end = log_start
            return
        self._cut(log_start)
        self.spans = [s for s in self.spans if s.first >= log_start]
        self.start = log_start

    def _expire(self, now: int, limit: int) -> None:  # rule 1
        for s in self.spans:
            if s.state == ACQUIRED and s.until_ms <= now:
                s.member = ""
                if s.count >= limit:
                    s.state, s.reason, s.until_ms = DEAD, REASON_EXHAUSTED, 0
                else:  # redelivered after the backoff, counted from the lock's expiry
                    s.state, s.until_ms = AVAILABLE, s.until_ms + self._delay(s.count)

    def _delay(self, count: int) -> int:
        """Rule 7: the group's redelivery backoff after ``count`` deliveries (ms)."""
        initial, multiplier, maximum = self._backoff
        if initial <= 0 or count < 1:
            return 0
        return int(min(maximum, initial * multiplier ** min(count - 1, 64)))

    def _acquire(self, member: str, now: int, lock_ms: int, max_records: int, cap: int,
                 high_watermark: int, limit: int) -> list[tuple[int, int, int]]:  # rule 2
        got: list[tuple[int, int, int]] = []
        remaining = max_records
        for s in list(self.spans):
            if remaining <= 0:
                break
            if s.state != AVAILABLE or s.until_ms > now:
                continue
            if s.count >= limit:  # never delivered beyond the limit
                s.state, s.reason, s.until_ms = DEAD, REASON_EXHAUSTED, 0
                continue
            last = min(s.last, s.first + remaining - 1)
            self._cut(last + 1)  # s now ends at ``last``
            s.state, s.count, s.member, s.until_ms = ACQUIRED, s.count + 1, member, now + lock_ms
            got.append((s.first, s.last, s.count))
            remaining -= s.last - s.first + 1
        fresh_end = min(high_watermark, self.start + cap, self.end + max(remaining, 0))
        if remaining > 0 and fresh_end > self.end:
            self.spans.append(Span(self.end, fresh_end - 1, ACQUIRED, 1, member,
                                   now + lock_ms))
            got.append((self.end, fresh_end - 1, 1))
            self.end = fresh_end
        got.sort()
        return got

    def _ack(self, member: str, now: int, limit: int, acks: list) -> None:  # rule 3
        ranges = sorted((int(a[0]), int(a[1]), int(a[2]), int(a[3]), str(a[4])[:ERROR_TEXT_MAX])
                        for a in acks)
        previous = -1
        for first, last, kind, delay_ms, _ in ranges:
            if first > last or first <= previous or kind not in (ACCEPT, RELEASE, REJECT) \
                    or delay_ms < 0:
                raise ShareOpError("INVALID_REQUEST", "acknowledgement ranges must be "
                                   "ordered, non-empty, not overlapping, of a known type and "
                                   "with a delay >= 0")
            previous = last
            self._check_held(member, first, last)
        for first, last, kind, delay_ms, error in ranges:
            self._cut(first)
            self._cut(last + 1)
            for s in self._covering(first, last):
                if kind == ACCEPT:
                    s.state, s.member, s.until_ms = DONE, "", 0
                    self.accepted += s.last - s.first + 1
                elif kind == REJECT:
                    s.state, s.member, s.until_ms = DEAD, "", 0
                    s.reason, s.error = REASON_REJECTED, error
                else:
                    s.member, s.error = "", error or s.error
                    if s.count >= limit:
                        s.state, s.until_ms, s.reason = DEAD, 0, REASON_EXHAUSTED
                    else:
                        s.state = AVAILABLE
                        s.until_ms = now + (delay_ms or self._delay(s.count))

    def _still_held(self, member: str, ranges: list) -> list[tuple[int, int, int]]:
        """The parts of ``ranges`` that ``member`` still holds, with their counts."""
        out = []
        for first, last in ranges:
            if last < self.start or first >= self.end:
                continue
            for s in self._covering(max(first, self.start), min(last, self.end - 1)):
                if s.state == ACQUIRED and s.member == member:
                    out.append((max(s.first, first), min(s.last, last), s.count))
        return out

    def _check_held(self, member: str, first: int, last: int) -> None:
        if first < self.start or last >= self.end:
            raise ShareOpError("INVALID_RECORD_STATE", f"offsets {first}-{last} are not "
                               f"acquired by member {member} (in flight: "
                               f"{self.start}-{self.end - 1})")
        for s in self._covering(first, last):
            if s.state != ACQUIRED or s.member != member:
                what = ("held by another member" if s.state == ACQUIRED
                        else STATE_NAMES[s.state])
                raise ShareOpError(
                    "INVALID_RECORD_STATE",
                    f"offset {max(s.first, first)} is not acquired by member {member} "
                    f"({what}; its acquisition lock may have expired)")

    def _leave(self, member: str, now: int, limit: int) -> None:  # rule 4
        for s in self.spans:
            if s.state == ACQUIRED and s.member == member:
                s.member = ""  # not the record's fault: no backoff
                if s.count >= limit:
                    s.state, s.reason, s.until_ms = DEAD, REASON_EXHAUSTED, 0
                else:
                    s.state, s.until_ms = AVAILABLE, 0

    def _dlq_prepare(self, max_offsets: int) -> list[tuple[int, int]]:  # rule 5
        if self.prepared_seq >= 0:
            return self.prepared()
        taken = 0
        for s in list(self.spans):
            if taken >= max_offsets:
                break
            if s.state != DEAD:
                continue
            last = min(s.last, s.first + max_offsets - taken - 1)
            self._cut(last + 1)
            s.state = PREPARED
            taken += s.last - s.first + 1
        if taken:
            self.prepared_seq = self.dlq_seq
        return self.prepared()

    def _dlq_done(self, seq: int, written: int) -> None:
        if seq != self.prepared_seq or seq < 0:
            return  # a stale or repeated completion: already done
        for s in self.spans:
            if s.state == PREPARED:
                s.state = DONE
        self.dlq_seq = seq + max(written, 0)
        self.dead_lettered += max(written, 0)
        self.prepared_seq = -1

    # ------------------------------------------------------------------ spans
    def _index(self, offset: int) -> int:
        """Index of the span holding ``offset`` (start <= offset < end)."""
        return bisect_right(self.spans, offset, key=_first) - 1

    def _cut(self, offset: int) -> None:
        """Make ``offset`` the first offset of a span (if inside [start, end))."""
        if offset <= self.start or offset >= self.end:
            return
        i = self._index(offset)
        s = self.spans[i]
        if s.first == offset:
            return
        tail = Span(offset, s.last, s.state, s.count, s.member, s.until_ms, s.reason, s.error)
        s.last = offset - 1
        self.spans.insert(i + 1, tail)

    def _covering(self, first: int, last: int) -> list[Span]:
        i = max(self._index(first), 0)
        out = []
        for s in self.spans[i:]:
            if s.first > last:
                break
            if s.last >= first:
                out.append(s)
        return out

    def _normalize(self) -> None:
        merged: list[Span] = []
        for s in self.spans:
            if merged and merged[-1].same(s) and merged[-1].last + 1 == s.first:
                merged[-1].last = s.last
            else:
                merged.append(s)
        while merged and merged[0].state == DONE:
            self.start = merged.pop(0).last + 1
        if not merged:
            self.start = self.end
        self.spans = merged

    # ------------------------------------------------------------------ views
    def dead(self) -> list[tuple[int, int]]:
        """The ranges waiting to be prepared for the dead-letter topic, in order."""
        return [(s.first, s.last) for s in self.spans if s.state == DEAD]

    def prepared(self) -> list[tuple[int, int]]:
        return [(s.first, s.last) for s in self.spans if s.state == PREPARED]

    def acquirable(self, now: int, high_watermark: int, cap: int) -> bool:
        """Whether an acquisition at ``now`` would get anything (rules 1 and 2)."""
        if self.end < min(high_watermark, self.start + cap):
            return True
        return any((s.state == AVAILABLE and s.until_ms <= now)
                   or (s.state == ACQUIRED and s.until_ms <= now) for s in self.spans)

    def needs_tick(self, now: int) -> bool:
        """A lock expired (rule 1 is due) or dead letters wait to be prepared."""
        return any(s.state == ACQUIRED and s.until_ms <= now for s in self.spans)

    def has_dead(self) -> bool:
        return any(s.state in (DEAD, PREPARED) for s in self.spans)

    def held_by(self, member: str) -> list[tuple[int, int]]:
        return [(s.first, s.last) for s in self.spans
                if s.state == ACQUIRED and s.member == member]

    def summary(self) -> dict:
        counts = {name: 0 for name in STATE_NAMES.values()}
        members: set[str] = set()
        for s in self.spans:
            counts[STATE_NAMES[s.state]] += s.last - s.first + 1
            if s.state == ACQUIRED:
                members.add(s.member)
        return {"start": self.start, "end": self.end, "in_flight": self.end - self.start,
                "counts": counts, "members": sorted(members),
                "dead_lettered": self.dead_lettered, "accepted": self.accepted}

    def record_info(self, offset: int) -> Span | None:
        if offset < self.start or offset >= self.end:
            return None
        return self.spans[self._index(offset)]

    # ------------------------------------------------------------------ snapshot
    def encode(self) -> dict:
        return {"start": self.start, "end": self.end, "spans": [s.encode() for s in self.spans],
                "dlq": [self.dlq_producer_id, self.dlq_partition, self.dlq_seq,
                        self.prepared_seq, self.dead_lettered, self.accepted],
                "ack_ids": list(self.ack_ids),
                "fetch_ids": [list(x) for x in self.fetch_ids]}

    @classmethod
    def decode(cls, doc: dict) -> SharePartition:
        sp = cls(int(doc["start"]))
        sp.end = int(doc["end"])
        sp.spans = [Span(*s) for s in doc["spans"]]
        (sp.dlq_producer_id, sp.dlq_partition, sp.dlq_seq, sp.prepared_seq,
         sp.dead_lettered, sp.accepted) = (int(x) for x in doc["dlq"])
        sp.ack_ids = [str(x) for x in doc.get("ack_ids", [])]
        sp.fetch_ids = [(str(i), str(m), [[int(a), int(b)] for a, b in r])
                        for i, m, r in doc.get("fetch_ids", [])]
        return sp


class ShareTable:
    """Every share group's state on one partition replica, and the Raft index of the last
    share entry applied (entries at or below it are skipped: a restart replays the log
    after a snapshot whose table may already include them)."""

    def __init__(self) -> None:
        self.groups: dict[str, SharePartition] = {}
        self.applied_index = 0

    def apply(self, index: int, op: dict, high_watermark: int):
        if index <= self.applied_index:
            return None
        self.applied_index = index
        group = op["g"]
        sp = self.groups.get(group)
        if sp is None:
            sp = self.groups[group] = SharePartition(int(op.get("log_start", 0)))
        return sp.apply(op, high_watermark)

    def encode(self) -> bytes:
        return json.dumps({"index": self.applied_index,
                           "groups": {g: sp.encode() for g, sp in sorted(self.groups.items())}},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ShareTable:
        doc = json.loads(data)
        table = cls()
        table.applied_index = int(doc["index"])
        table.groups = {g: SharePartition.decode(sp) for g, sp in doc["groups"].items()}
        return table
