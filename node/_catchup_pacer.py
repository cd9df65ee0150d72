"""Pacing the catch-up traffic of partition moves (issue 19): delay, never drop.

APP and SNAP messages to a *learner* of a partition's group (a replica being added by a
move, ``_reassignment.py``; the controller group's learners are not paced) go through one token bucket per sending node, filled at
``rate()`` bytes/s (the controller's ``reassign_throttle_bytes_per_s``, or
``DEFAULT_BYTES_PER_S`` when none is set). A message the bucket cannot pay for now waits in
its destination's FIFO queue (``hold``) and is handed to the transport when the bucket has
filled (``pump``, run by ``schedule``: the event loop's ``call_later``). Voters' messages
and every other message type (heartbeats, votes, answers) never wait: they carry the writes
being acknowledged.

Why the queue stays small (backpressure): Raft sends a learner at most
``max_inflight_learner_msgs`` appends (``_host.py``) before it hears back, and it hears back
only once they were released. The one way the core sends past that window is a heartbeat
answer, which frees an inflight slot when the window is full (raft/core/_raft.py: it
assumes the answers to appends were lost). A paced append is not lost, only waiting, so
``admit`` holds back a learner's heartbeat answers of a group while that group has
messages waiting here for it; losing a message is always safe in Raft, and once the queue
has drained the answers flow again (so an append lost on the wire after release is still
repaired as before). Besides, each queue is bounded (``QUEUE_MESSAGES_MAX``): past it a
message is dropped and counted (``overflowed``), which Raft repairs by retransmission; with
the window above it does not happen (the tests check ``overflowed`` stays 0).

A waiting message whose destination is no longer a learner of its group (promoted, removed,
the group gone from this node) goes at once without paying: it is no longer catch-up
traffic, and a stale message is harmless to Raft.

Counters (metrics ``raftka_catchup_*``, tests): ``delayed`` messages and ``delayed_bytes`` that waited,
``overflowed`` dropped at the bound, ``admit_held`` heartbeat answers held back.

Pure of I/O: the clock, the scheduler and the transport's immediate send are injected
(tests/node/test_catchup_pacer.py drives it with a fake clock).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from raftka.raft import Message, MsgType

# What moves use when the operator set no throttle (README "What a move costs"). The limit
# is CPU (the leader reading, encoding, sending the appends; the learner writing them), not
# the disk (~950 MiB/s, bench/README.md) nor a gRPC stream (280-370 MiB/s). Measured on the
# 2-core machine with 3 producers at half of w1's rate: at 16 MiB/s their p99 during a
# 1 GiB move stayed within 2.5x of before it; at 32 MiB/s it reached 1.6 s, at 64 MiB/s
# (256 MiB) the p50 tripled. Moves matter less than writes, so the lower one.
DEFAULT_BYTES_PER_S = 16 << 20
QUEUE_MESSAGES_MAX = 256  # per destination node; far above Raft's learner window
MIN_WAIT_S = 0.002  # a pump sooner than this would find the bucket no fuller

_PACED = (MsgType.APP, MsgType.SNAP)


def message_bytes(m: Message) -> int:
    return (len(m.snapshot.data) if m.snapshot is not None else 0) + sum(
        len(e.data) for e in m.entries)


class CatchUpPacer:
    def __init__(self, send_now: Callable[[int, Message], None],
                 is_learner: Callable[[int, int], bool],
                 rate: Callable[[], float],
                 clock: Callable[[], float],
                 schedule: Callable[[float, Callable[[], None]], object]) -> None:
        """``send_now(group_id, m)``: the transport's queue, no pacing; ``is_learner(group_id,
        node)``: whether node is a learner of the group this node leads; ``rate()``: bytes/s
        now (> 0); ``schedule(delay_s, fn)``: call fn later (``loop.call_later``)."""
        self._send_now = send_now
        self._is_learner = is_learner
        self._rate = rate
        self._clock = clock
        self._schedule = schedule
        self._queues: dict[int, deque[tuple[int, Message, int]]] = {}  # node -> FIFO
        self._waiting: dict[tuple[int, int], int] = {}  # (group, node) -> messages queued
        self._tokens = 0.0
        self._tokens_at = clock()
        self._rate_seen: float | None = None  # the pace of the last refill
        self._pump_scheduled = False
        self.delayed = 0
        self.delayed_bytes = 0
        self.overflowed = 0
        self.admit_held = 0

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _refill(self, rate: float, size: int) -> None:
        now = self._clock()
        # The bucket holds a second's worth, or the largest message waiting if that is
        # bigger (else a message larger than the rate could never go).
        heads = max((q[0][2] for q in self._queues.values()), default=0)
        if self._rate_seen is None:
            self._rate_seen = rate
        elif rate != self._rate_seen:
            # The pace changed: fill up to now at the old pace, then keep at most a second
            # of the new one (what the default pace saved does not go at a lower throttle).
            old = self._rate_seen
            self._tokens = min(self._tokens + (now - self._tokens_at) * old,
                               float(max(old, heads)), rate)
            self._tokens_at = now
            self._rate_seen = rate
        self._tokens = min(self._tokens + (now - self._tokens_at) * rate,
                           float(max(rate, size, heads)))
        self._tokens_at = now

    def hold(self, group_id: int, m: Message) -> bool:
        """Whether the pacer took ``m`` (it goes later, or was dropped at the bound); False:
        the caller sends it now."""
        if m.type not in _PACED or not self._is_learner(group_id, m.to):
            return False
        size = message_bytes(m)
        if not self._queues:  # nothing waits anywhere (else it would be overtaken)
            self._refill(self._rate(), size)
            if self._tokens >= size:
                self._tokens -= size
                return False
        queue = self._queues.get(m.to)
        if queue is None:
            queue = self._queues[m.to] = deque()
        elif len(queue) >= QUEUE_MESSAGES_MAX:
            self.overflowed += 1
            return True
        queue.append((group_id, m, size))
        key = (group_id, m.to)
        self._waiting[key] = self._waiting.get(key, 0) + 1
        self.delayed += 1
        self.delayed_bytes += size
        self._arm_for_heads(self._rate())
        return True

    def admit(self, group_id: int, m: Message, frm: int) -> bool:
        """Whether an incoming message may be stepped (module docstring: a learner's
        heartbeat answer waits while its group's appends wait here)."""
        if m.type == MsgType.HEARTBEAT_RESP and (group_id, frm) in self._waiting:
            self.admit_held += 1
            return False
        return True

    @property
    def holding(self) -> bool:
        """Whether anything waits (``admit`` has nothing to do otherwise)."""
        return bool(self._waiting)

    def _arm(self, delay: float) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._schedule(max(delay, MIN_WAIT_S), self.pump)

    def _release(self, node: int, queue: deque) -> None:
        group_id, m, _ = queue.popleft()
        key = (group_id, node)
        left = self._waiting[key] - 1
        if left:
            self._waiting[key] = left
        else:
            del self._waiting[key]
        if not queue:
            del self._queues[node]
        self._send_now(group_id, m)

    def pump(self) -> None:
        """Hand the transport what the bucket pays for, one message per destination in
        turn; wake again when the next one can go."""
        self._pump_scheduled = False
        rate = self._rate()
        progress = True
        while progress and self._queues:
            progress = False
            for node in list(self._queues):
                queue = self._queues[node]
                group_id, m, size = queue[0]
                if not self._is_learner(group_id, node):
                    self._release(node, queue)  # no longer catch-up traffic: free
                    progress = True
                    continue
                self._refill(rate, size)
                if self._tokens >= size:
                    self._tokens -= size
                    self._release(node, queue)
                    progress = True
        if self._queues:
            self._arm_for_heads(rate)

    def _arm_for_heads(self, rate: float) -> None:
        """Pump when the bucket pays for the smallest message at the head of a queue."""
        if self._pump_scheduled:
            return
        self._refill(rate, 0)
        need = min(q[0][2] for q in self._queues.values())
        self._arm((need - self._tokens) / rate)
