"""``RawNode``: the application's handle on one Raft group (after etcd-io/raft's rawnode).

The application drives it with ``tick()``, ``step(msg)`` and proposals, and services it
with ``ready()`` / ``advance()``. For every ``Ready``, in this order:

1. Send ``ready.messages``. They may leave before or while the Ready is persisted (a
   leader writes its disk in parallel with replicating: Raft thesis §10.2.1).
2. Persist ``ready.snapshot``, ``ready.entries`` and ``ready.hard_state`` atomically and
   durably (``LogWriter.save``). A crash before this completes loses the whole Ready.
3. Send ``ready.messages_after_persist``: votes, vote answers and append answers, which
   promise that what they acknowledge is durable.
4. Install ``ready.snapshot`` into the state machine (if any), then apply
   ``ready.committed_entries`` in order (they may include entries of this same Ready:
   they are durable by now).
5. Call ``advance(ready)``. Only then is the leader's own log counted toward commit, so
   commit is always a quorum of *durable* logs.

``ready()`` may not be called again before ``advance()`` of the previous one (checked).
Every method runs on the caller's thread; none blocks, sleeps or does I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Collection, Sequence

from ._messages import Message
from ._raft import Config, Raft
from ._storage import Storage
from ._types import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    Tombstone,
)

__all__ = ["Config", "RawNode", "Ready"]


@dataclass
class Ready:
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    role: Role = Role.FOLLOWER
    leader_id: int = 0
    term: int = 0

    @property
    def must_sync(self) -> bool:
        """False when nothing durable changed (only commit moved): the write may be lazy."""
        return bool(self.entries) or self.snapshot is not None or (
            self.hard_state is not None and self._term_or_vote_changed
        )

    _term_or_vote_changed: bool = False


class RawNode:
    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        self._raft = Raft(config, storage, rng)
        self._prev_hard_state = self._raft.hard_state()
        self._outstanding: Ready | None = None

    # ------------------------------------------------------------------ inputs
    def tick(self) -> None:
        self._raft.tick()

    def campaign(self) -> None:
        self._raft.hup()

    def step(self, msg: Message) -> None:
        if msg.to != self._raft.id:
            raise ValueError(f"message for node {msg.to} delivered to node {self._raft.id}")
        self._raft.step(msg)

    def propose(self, data: bytes) -> int:
        return self._raft.propose((data,))[1]

    def propose_batch(self, datas: Sequence[bytes]) -> tuple[int, int]:
        if not datas:
            raise ValueError("propose_batch needs at least one entry")
        return self._raft.propose(datas)

    def propose_conf_change(self, cc: ConfChange) -> int:
        return self._raft.propose_conf_change(cc)

    def transfer_leader(self, target: int) -> None:
        self._raft.transfer_leader(target)

    def read_index(self, context: bytes) -> None:
        self._raft.read_index(context)

    def report_unreachable(self, node_id: int) -> None:
        self._raft.report_unreachable(node_id)

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self._raft.report_snapshot(node_id, ok)

    def report_peer_down(self, node_id: int, down: Collection[int] = ()) -> None:
        """Node-level liveness (with ``Config.quiesce``): nothing was heard from node
        ``node_id`` for an election timeout (nor from the nodes in ``down``). Wakes this
        group if it is quiesced and that node is its leader (it will campaign), or it leads
        and its voters less those nodes are no longer a quorum (it will step down)."""
        self._raft.report_peer_down(node_id, down)

    def report_peer_up(self, node_id: int) -> None:
        """The host heard from ``node_id`` again after reporting it down (rule 9 of
        ``_raft``: a quiesced leader with it as a learner wakes)."""
        self._raft.report_peer_up(node_id)

    # ------------------------------------------------------------------ state
    @property
    def id(self) -> int:
        return self._raft.id

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def quiesced(self) -> bool:
        """Timers stopped (``Config.quiesce``): ``tick()`` does nothing until woken."""
        return self._raft.quiesced

    @property
    def leader_id(self) -> int:
        return self._raft.lead

    @property
    def commit_index(self) -> int:
        return self._raft.log.committed

    @property
    def leader_commit(self) -> int:
        """The highest commit index a leader sent this replica (rule 14 of ``_raft``): above
        ``commit_index`` while the replica lacks committed entries (its store was lost)."""
        return self._raft.leader_commit

    @property
    def applied_index(self) -> int:
        return self._raft.log.applied

    @property
    def last_index(self) -> int:
        return self._raft.log.last_index()

    @property
    def conf_state(self) -> ConfState:
        return self._raft.conf

    @property
    def conf_change_pending(self) -> bool:
        """A configuration change is in the log but not known committed yet (a new one
        would be refused: rule 4 of ``_raft``)."""
        raft = self._raft
        return raft.conf_history[-1][0] > raft.log.committed

    def log_entries(self, lo: int, hi: int | None = None, max_size: int | None = None) -> list[Entry]:
        """Entries of this replica's log in ``[lo, hi)``, durable or not (the leader's
        newest proposals included). Raises ``CompactedError`` below the first index."""
        return self._raft.log.entries(lo, hi, max_size)

    @property
    def first_index(self) -> int:
        return self._raft.log.first_index()

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index`` (at the snapshot index: the snapshot's term).
        Raises ``CompactedError`` below it."""
        return self._raft.log.term(index)

    def status(self) -> dict:
        return self._raft.status()

    def event_counts(self) -> tuple[int, int, int, int]:
        """(elections started, elections won, leadership transfers started, proposals
        dropped) by this replica since it was created; for metrics, read-only."""
        r = self._raft
        return r.elections_started, r.elections_won, r.transfers_started, r.proposals_dropped

    def tombstone(self) -> Tombstone:
        """What this replica leaves on its node when the node deletes its data (rule 13 of
        ``_raft``): its term and vote (in memory: never behind what is durable), and the
        most up-to-date log position it held, its own vote floor included."""
        r = self._raft
        return Tombstone(r.term, r.vote, max(r.log_position(), r.vote_floor))

    def follower_matches(self) -> dict[int, int]:
        """On the leader: the match index it knows of every other replica (voters and
        learners); empty on any other role. For metrics (replication lag), read-only."""
        r = self._raft
        if r.role != Role.LEADER:
            return {}
        me = r.id
        return {n: pr.match for n, pr in r.progress.items() if n != me}
    def min_match_index(self) -> int:
        """Leader only: the smallest index known to be in every replica's log (voters and
        learners, this node included); 0 on any other role."""
        raft = self._raft
        if raft.role != Role.LEADER or not raft.progress:
            return 0
        return min(p.match for p in raft.progress.values())

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """Term and configuration as of ``index`` (<= applied), for building a snapshot."""
        raft = self._raft
        if index > raft.log.applied:
            raise ValueError(f"cannot snapshot at {index}: only {raft.log.applied} is applied")
        conf = raft.conf_history[0][1]
        for at, c in raft.conf_history:
            if at <= index:
                conf = c
        return SnapshotMeta(index, raft.log.term(index), conf)

    # ------------------------------------------------------------------ ready
    def has_ready(self) -> bool:
        raft = self._raft
        log = raft.log
        if (
            raft.msgs
            or raft.msgs_after_persist
            or raft.read_states
            or log.unstable_entries
            or log.unstable_snapshot is not None
            or log.committed > log.applying
        ):
            return True
        # raft.hard_state() != prev, without building a HardState: the host asks this of
        # every group on every tick, so it is the hot path of an idle node.
        prev = self._prev_hard_state
        return raft.term != prev.term or raft.vote != prev.vote or log.committed != prev.commit

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance() of the previous Ready")
        raft = self._raft
        log = raft.log
        rd = Ready(role=raft.role, leader_id=raft.lead, term=raft.term)
        hs = raft.hard_state()
        if hs != self._prev_hard_state:
            rd.hard_state = hs
            prev = self._prev_hard_state
            rd._term_or_vote_changed = hs.term != prev.term or hs.vote != prev.vote
        rd.entries = list(log.unstable_entries)
        rd.snapshot = log.unstable_snapshot
        if log.committed > log.applying:
            rd.committed_entries = log.next_committed_entries(raft.cfg.max_committed_size_per_ready)
            if rd.committed_entries:
                log.applying_to(rd.committed_entries[-1].index)
        if rd.snapshot is not None:
            log.applying_to(rd.snapshot.meta.index)
        rd.messages, raft.msgs = raft.msgs, []
        rd.messages_after_persist, raft.msgs_after_persist = raft.msgs_after_persist, []
        if rd._term_or_vote_changed and rd.messages:
            # Rule 1 of raft._raft: nothing leaves before a changed term/vote is durable.
            rd.messages_after_persist = rd.messages + rd.messages_after_persist
            rd.messages = []
        rd.read_states, raft.read_states = raft.read_states, []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        if rd is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready returned by ready()")
        self._outstanding = None
        raft = self._raft
        log = raft.log
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.meta.index)
            log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        raft.on_persisted()

