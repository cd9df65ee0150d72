"""What a leader knows about each follower's log, and how fast it may send to it.

States (etcd's names):

- PROBE: the leader does not know where the follower's log matches. It sends one APP at a
  time and waits for the answer (or a heartbeat response) before the next.
- REPLICATE: match is known; APPs are pipelined optimistically (``next`` advances as they
  are sent) up to ``max_inflight`` unacknowledged messages.
- SNAPSHOT: the follower needs entries the leader has compacted; one snapshot is in flight
  and nothing else is sent until it is acknowledged or reported failed.

Invariants: ``match < next``; ``match`` never decreases within one leadership term, except
through ``follower_lost_log`` (``_raft`` rule 12: the follower's store was lost and recreated,
which is outside Raft's failure model and which the follower tells us explicitly).
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of the APP messages sent and not yet acknowledged, oldest first."""

    __slots__ = ("capacity", "_last_indexes")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("max_inflight_msgs must be >= 1")
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        if len(self._last_indexes) >= self.capacity:
            raise RuntimeError("inflight window overflow: caller must check full() first")
        self._last_indexes.append(last_index)

    def free_to(self, index: int) -> None:
        """Acknowledge every message whose last index is <= ``index``."""
        q = self._last_indexes
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def count(self) -> int:
        return len(self._last_indexes)

    def reset(self) -> None:
        self._last_indexes.clear()


class Progress:
    __slots__ = (
        "match", "next", "state", "pending_snapshot", "recent_active",
        "probe_sent", "inflights", "is_learner", "pending_snapshot_ticks",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        # recent_active: heard from since the last check-quorum round.
        self.recent_active = False
        # probe_sent: in PROBE, an APP is outstanding; cleared by any response/heartbeat.
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        # Heartbeats sent while in SNAPSHOT with no answer; the leader retries after a bound.
        self.pending_snapshot_ticks = 0

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.pending_snapshot_ticks = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def follower_lost_log(self, last_index: int) -> None:
        """The follower no longer holds what it acknowledged: its log now ends at
        ``last_index`` < ``match``. Probe again from there (a snapshot if we compacted)."""
        if last_index >= self.match:
            raise RuntimeError(f"follower_lost_log({last_index}) with match {self.match}")
        self._reset_state(ProgressState.PROBE)
        self.match = last_index
        self.next = last_index + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """A successful APP_RESP up to ``index``. Returns True if match advanced."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def sent_entries(self, last_index: int, count: int) -> None:
        """An APP carrying ``count`` entries ending at ``last_index`` was sent."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejected APP for index ``rejected``. Returns False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:  # stale: we already know more
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:  # stale in PROBE: not the probe we sent last
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next} "
            f"inflight={self.inflights.count()} snap={self.pending_snapshot})"
        )
