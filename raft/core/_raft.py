"""The Raft protocol for one group, as a pure state machine.

Nothing here reads a clock, sleeps, does I/O or spawns anything: time is ``tick()``,
randomness is the injected ``random.Random``, and every effect is queued for ``RawNode``
to hand out in a ``Ready``.

Behaviour swaps per role: ``_step_role``/``_tick_role`` point at the leader's, candidate's
or follower's functions (as in etcd-io/raft), set only by the ``_become_*`` methods.

Rules this module keeps (numbers are referred to in comments):

1. Term, vote and entries that a message depends on are durable before it is sent: vote
   requests, every response, and anything produced while the hard state changed are queued
   as *after-persist* messages; only a leader's APP/HEARTBEAT/SNAP/TIMEOUT_NOW (whose term
   was durable before the leader could be elected) go out before persisting (thesis §10.2.1).
2. A leader counts its own log toward commit only up to its *durable* index, which
   ``RawNode.advance`` reports; followers' matches come from APP_RESPs sent after persist.
3. Only entries of the leader's current term are committed by counting replicas
   (Raft §5.4.2, figure 8); earlier ones commit with them.
4. Configuration changes are one server at a time and take effect when *appended* (thesis
   §4.1); truncating the log rolls the configuration back. A leader appends a change only
   after it has committed an entry of its own term and while no other change is
   uncommitted (the fix to the single-server change bug, thesis §4.1 / raft-dev 2015).
5. Pre-vote (thesis §9.6) and check-quorum: a node that heard from a leader within the
   election timeout ignores (pre)vote requests, unless they come from a leadership
   transfer; a leader that did not hear from a quorum for an election timeout steps down.
   This lease (thesis §4.2.3) is kept only with check-quorum, as in etcd-io/raft: without
   it a leader that cannot hear from a quorum never steps down, and followers that still
   hear it would ignore every candidate for as long as that lasts (an asymmetric
   partition would stall the group). So without check-quorum a removed server that never
   learnt its removal disrupts the group (each of its VOTEs raises the term of whoever it
   reaches and deposes the leader) but, by rule 11, cannot stall it.
6. A committed entry is never truncated (checked: violating it raises).

Quiescence (``Config.quiesce``; CockroachDB's quiesced ranges, TiKV's hibernate regions):
an idle group stops its timers, so a node with many idle groups neither ticks nor
heartbeats them. It changes only *when timers run*; terms, votes, the log and the commit
rule are untouched, so safety does not depend on it.

7. A leader quiesces, at a heartbeat tick, only if: every replica in its progress (learners
   included) has ``match`` equal to the leader's last index (no snapshot in flight) and was heard
   from in this check-quorum round, the whole log is committed and durable on the leader,
   and no transfer or read is pending. It then sends QUIESCE (its last index and term, and
   its commit) instead of a heartbeat, and its ticks do nothing.
8. A follower quiesces on a QUIESCE from its leader whose last entry is its own last
   entry (it then commits to the leader's commit); otherwise it answers HEARTBEAT_RESP,
   which wakes the leader. A QUIESCE naming an entry below our last one was overtaken by
   later appends: the leader has moved on since, and may have stepped down without a new
   term (committing its own removal, thesis §4.2.2), so nobody would ever wake us (soak
   seed 2693). A quiesced follower's ticks do nothing.
9. Anything wakes a quiesced replica: any message but QUIESCE, a proposal, a read, a
   transfer, a campaign, and ``report_peer_down(node)`` (the application's node-level
   liveness saw no sign of life from ``node`` for an election timeout) from a follower of
   that node, or from a leader whose voters, less that node and the others reported down,
   are no longer a quorum (with a quorum still live it has nothing to do: it neither steps
   down nor needs the dead follower; waking every group led here with that node as a
   follower, on a loaded node's false alarm, woke thousands of groups at once and their
   traffic starved the nodes into further false alarms). A woken leader restarts its
   check-quorum round (it must hear from a quorum within an election timeout); a follower
   woken by its leader's node going down treats the lease as expired and campaigns within
   its randomized timeout. And ``report_peer_up(node)`` (heard from again after a report)
   wakes a leader that has ``node`` as a learner: a learner never campaigns, so a restarted
   one learns who leads only from the leader's heartbeats (a restarted node that is a
   learner of the controller group stayed without the cluster metadata on an idle cluster).
10. A vote request from the node we know as leader is never ignored by the lease of rule
   5: that leader has stepped down or restarted (otherwise a quiesced follower, whose
   timer is frozen, would reject a restarted leader until woken by other means).

A replica whose store was lost and recreated empty (the operator's recovery from a damaged
disk, node/README.md) is outside Raft's model: it forgot entries it acknowledged, its term
and its vote. Within a term the leader's ``match`` for a follower only counts what the
follower acknowledged after persisting it, so a follower whose log ends below it can only
have lost its store.

12. A follower that receives a HEARTBEAT whose commit (``min(match, commit)`` on the leader)
   is beyond its last index, or a QUIESCE naming an index beyond its last, does not commit:
   it answers a HEARTBEAT_RESP with ``reject`` and its last index as ``reject_hint``. The
   leader, on such an answer below its ``match`` for that follower, lowers ``match`` to the
   hint and probes from there (``Progress.follower_lost_log``), so the follower is caught
   up by appends or a snapshot instead of waiting forever for entries it will never ask
   for. The commit index never moves back.
   Likewise an APP rejection for an index at or above ``match`` whose hint is below it:
   the follower lost a suffix of what it acknowledged (a write-ahead log cut short),
   above the commit a heartbeat carries, so no heartbeat tells; the leader took such a
   rejection for a stale one and probed at ``match`` forever. Lowering ``match`` is
   always safe (a reordered old rejection only costs a resend).

11. A message from an older term that expects an answer gets one carrying our term, in
   every configuration (Raft paper figure 2: replies carry currentTerm so the sender
   updates itself): APP/HEARTBEAT/SNAP/QUIESCE get an APP_RESP (the stale leader steps
   down), PRE_VOTE and VOTE a rejection (the candidate catches up). etcd-io/raft drops
   stale VOTEs and answers stale leaders only with check-quorum or pre-vote, counting on
   the node at the higher term to campaign and spread it; a node that cannot campaign (a
   learner in its own latest configuration) never does, and a removed server raising its
   term then stalls the group for good (soak seed 437). Answering never changes our
   term, vote or log.

13. A replica votes as if it still held every entry it ever acknowledged under its id on
   this node. A node that deletes a replica's data (the replica was moved off it) keeps a
   ``Tombstone``: term, vote and the most up-to-date log position the replica held; a
   replica of that group re-created there later starts from that term and vote, and takes
   that position as its *vote floor* (``Storage.vote_floor()``). It grants a (pre-)vote
   only to a candidate whose log is at least as up to date as both its own log and the
   floor, and does not campaign while its own log is below the floor (its vote for itself
   would be such a grant). So the re-created replica votes exactly as the deleted one
   would have, and Raft's election argument (§5.4.1) holds for it. Without this a stale
   server whose log still has an old configuration naming the deleted replica can win an
   election with the empty replica's vote and overwrite committed entries
   (jepsen-like/FINDINGS.md, seed 2020).
   With ``Config.vote_only_with_configuration`` a replica with no configuration at all
   (created for a move, it never heard from a leader: no configuration entry, no snapshot)
   refuses every (pre-)vote: it holds nothing, and no configuration that counts its vote
   has reached it. A cheap guard for replicas re-created without a tombstone (deleted by
   an older version). Only where servers are added as learners first (etcd's
   learner-first rule; the broker does: node/_reassignment.py): a voter added directly to
   an empty replica could not help elect anyone until it has received the log, and never
   if the leader that added it is gone (soak seeds 89, 124, 221 with the guard always on).

14. A follower remembers the highest commit index its leaders sent it (``leader_commit``:
   an APP's, HEARTBEAT's or QUIESCE's commit, a SNAP's index), never lowered. It decides
   nothing here; it lets the host tell "applied all that is committed" from "applied all
   it has" when its log is behind the leader's commit (rule 12's recreated replica, whose
   own commit index stays at its empty log's until it is sent the entries).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

from ._errors import CompactedError, ConfChangeRejected, NotLeader, ProposalDropped
from ._log import RaftLog
from ._messages import CAMPAIGN_TRANSFER, Message, MsgType
from ._progress import Progress, ProgressState
from ._quorum import VoteResult, committed_index, has_quorum, vote_result
from ._storage import Storage
from ._types import (
    NO_NODE,
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    LogPosition,
    ReadState,
    Role,
)


@dataclass
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    # A learner catching up (a replica being moved in) gets a smaller window: with the full
    # one a leader sends it max_inflight_msgs x max_size_per_msg at once and the work crowds
    # out the voters' traffic that acknowledges writes. 0: the same as max_inflight_msgs.
    max_inflight_learner_msgs: int = 0
    max_uncommitted_size: int = 64 << 20
    max_committed_size_per_ready: int = 64 << 20
    applied: int = 0
    # Idle groups stop ticking and heartbeating (rules 7-9). The application must then
    # call report_peer_down() when a peer node stops answering.
    quiesce: bool = False
    # Rule 13: a replica holding no configuration refuses every (pre-)vote. Only for an
    # application that adds every server as a learner first.
    vote_only_with_configuration: bool = False

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("node id must be > 0")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be > 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be > 0")
        if self.max_inflight_learner_msgs < 0:
            raise ValueError("max_inflight_learner_msgs must be >= 0")

    def inflight_window(self, is_learner: bool) -> int:
        if is_learner and self.max_inflight_learner_msgs:
            return min(self.max_inflight_learner_msgs, self.max_inflight_msgs)
        return self.max_inflight_msgs


class _ReadRequest:
    __slots__ = ("index", "context", "requester", "acks")

    def __init__(self, index: int, context: bytes, requester: int) -> None:
        self.index = index
        self.context = context
        self.requester = requester
        self.acks: set[int] = set()


_IMMEDIATE_TYPES = frozenset(
    {MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.TIMEOUT_NOW, MsgType.PRE_VOTE,
     MsgType.READ_INDEX, MsgType.TRANSFER_LEADER, MsgType.READ_INDEX_RESP, MsgType.QUIESCE}
)
_LEADER_CONTACT = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.QUIESCE})
_CARRIES_COMMIT = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.QUIESCE})  # rule 14
# A snapshot in flight that produced no answer for this many heartbeats is resent.
_SNAPSHOT_RETRY_HEARTBEATS = 20


class Raft:
    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        config.validate()
        self.id = config.id
        self.cfg = config
        self.rng = rng
        self.label = f"raft node {self.id}: "
        hard_state, snap_conf = storage.initial_state()
        snap_meta = storage.snapshot().meta
        self.log = RaftLog(storage, config.applied, self.label)
        last = self.log.last_index()
        if hard_state.commit > last:
            raise RuntimeError(
                f"{self.label}stored commit index {hard_state.commit} is beyond the stored "
                f"log ({last}): storage lost synced entries"
            )
        self.log.committed = max(hard_state.commit, snap_meta.index)
        if config.applied > self.log.committed:
            raise ValueError(
                f"{self.label}applied index {config.applied} is beyond commit index "
                f"{self.log.committed}"
            )
        # Configuration history, oldest first: (index from which it holds, configuration).
        # The last element is the configuration in force (rule 4).
        self.conf_history: list[tuple[int, ConfState]] = [(snap_meta.index, snap_conf)]
        for e in storage.config_entries():
            self.conf_history.append((e.index, ConfState.decode(e.data)))
        self.conf: ConfState = self.conf_history[-1][1]

        self.term = hard_state.term
        self.vote = hard_state.vote
        self.vote_floor: LogPosition = storage.vote_floor()  # rule 13
        self.leader_commit = 0  # rule 14
        self.lead = NO_NODE
        self.role = Role.FOLLOWER
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        # quiesced: timers stopped (rules 7-9); only with cfg.quiesce. Cleared by _wake()
        # and by every role change.
        self.quiesced = False
        self.lead_transferee = NO_NODE
        self.pending_reads: deque[_ReadRequest] = deque()
        self.pending_reads_by_ctx: dict[bytes, _ReadRequest] = {}
        self.reads_awaiting_commit: list[tuple[bytes, int]] = []
        # (last index of a proposal batch, cumulative bytes proposed) for the uncommitted bound.
        self.uncommitted: deque[tuple[int, int]] = deque()
        self.uncommitted_size = 0
        # Event counters for the node's metrics (raftka.node._metrics); only ever
        # incremented, never read by the algorithm: elections this replica started
        # (candidate, not pre-candidate), elections it won, leadership transfers it began
        # as leader, and proposals it refused (ProposalDropped: a transfer in progress or
        # the uncommitted-bytes bound; NotLeader is not counted).
        self.elections_started = 0
        self.elections_won = 0
        self.transfers_started = 0
        self.proposals_dropped = 0
        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self._become_follower(self.term, NO_NODE)

    # ---------------------------------------------------------------- introspection
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        """May this node campaign? Voters may. So may a node whose vote was taken away by
        a configuration entry not yet known committed: otherwise a leader that removed
        itself from a 2-voter group and then lost its leadership leaves a survivor that
        needs its vote and a node that will never campaign. Votes are still counted in the
        latest configuration, where its own vote does not count; once elected it commits
        the change without counting itself and steps down (thesis §4.2.2).
        Never while our log is below our vote floor (rule 13)."""
        if self.vote_floor.index and self._below_vote_floor():
            return False
        if self.id in self.conf.voters:
            return True
        history = self.conf_history
        return (
            len(history) >= 2
            and history[-1][0] > self.log.committed
            and self.id in history[-2][1].voters
        )

    def status(self) -> dict:
        return {
            "id": self.id, "term": self.term, "vote": self.vote, "role": self.role.name,
            "leader": self.lead, "commit": self.log.committed, "applied": self.log.applied,
            "last_index": self.log.last_index(), "voters": sorted(self.conf.voters),
            "learners": sorted(self.conf.learners), "quiesced": self.quiesced,
            "progress": {k: repr(v) for k, v in self.progress.items()},
        }

    # ---------------------------------------------------------------- sending
    def _send(self, m: Message) -> None:
        m.frm = self.id
        if m.type not in (MsgType.PRE_VOTE, MsgType.VOTE, MsgType.PRE_VOTE_RESP) and not (
            m.type in (MsgType.READ_INDEX, MsgType.TRANSFER_LEADER)
        ):
            m.term = self.term
        if m.type in _IMMEDIATE_TYPES:
            self.msgs.append(m)
        else:
            self.msgs_after_persist.append(m)  # rule 1

    # ---------------------------------------------------------------- role changes
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.lead = NO_NODE
        self.quiesced = False
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.cfg.election_tick + self.rng.randrange(
            self.cfg.election_tick
        )
        self.lead_transferee = NO_NODE
        self.votes = {}
        self.progress = {}
        self.pending_reads.clear()
        self.pending_reads_by_ctx.clear()
        self.reads_awaiting_commit.clear()
        self.uncommitted.clear()
        self.uncommitted_size = 0

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._step_role = self._step_follower
        self._tick_role = self._tick_election

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes neither term nor vote: a node that loses the pre-vote leaves
        # no trace (thesis §9.6).
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        self.votes = {}
        self.lead = NO_NODE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.elections_started += 1
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.elections_won += 1
        self.lead = self.id
        self.role = Role.LEADER
        self._step_role = self._step_leader
        self._tick_role = self._tick_heartbeat
        last = self.log.last_index()
        for node in self.conf.all_nodes():
            self.progress[node] = self._new_progress(node, last + 1)
        me = self.progress.get(self.id)
        if me is not None:
            me.become_replicate()
            me.maybe_update(self.log.persisted_index())
            me.recent_active = True
        # An empty entry of the new term lets earlier entries commit (§5.4.2, §8).
        self._append_entries([Entry(self.term, last + 1, EntryKind.NORMAL, b"")])

    def _new_progress(self, node: int, next_index: int) -> Progress:
        is_learner = node not in self.conf.voters
        return Progress(next_index, self.cfg.inflight_window(is_learner), is_learner)

    # ---------------------------------------------------------------- elections
    def log_position(self) -> LogPosition:
        log = self.log
        return LogPosition(log.last_term(), log.last_index())

    def _below_vote_floor(self) -> bool:
        """Rule 13: our own log is behind what this replica id once held here."""
        return self.log_position() < self.vote_floor

    def hup(self, transfer: bool = False) -> None:
        self._wake()
        if self.role == Role.LEADER or not self.promotable():
            return
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre_vote=True, transfer=False)
        else:
            self._campaign(pre_vote=False, transfer=transfer)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_type, term = MsgType.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MsgType.VOTE, self.term
        self.votes[self.id] = True
        result = vote_result(self.conf.voters, self.votes)
        if result == VoteResult.WON:
            if pre_vote:
                self._campaign(pre_vote=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for voter in sorted(self.conf.voters):
            if voter == self.id:
                continue
            m = Message(vote_type, voter, self.id, term=term, index=last_index,
                        log_term=last_term, context=ctx)
            if pre_vote:
                self.msgs.append(m)  # pre-vote changed nothing that must be durable
            else:
                self.msgs_after_persist.append(m)  # rule 1: our term and vote first

    # ---------------------------------------------------------------- ticks
    def tick(self) -> None:
        if self.quiesced:
            return  # rules 7 and 8: no heartbeats, no election timer
        self._tick_role()

    # ---------------------------------------------------------------- quiescence
    def _wake(self) -> None:
        """Rule 9: restart the timers of a quiesced replica."""
        if not self.quiesced:
            return
        self.quiesced = False
        if self.role == Role.LEADER:
            # A fresh check-quorum round: a quorum must answer within an election timeout
            # of waking, whatever it did before the group went quiet.
            self.election_elapsed = 0
            self.heartbeat_elapsed = 0
            for node, pr in self.progress.items():
                pr.recent_active = node == self.id

    def report_peer_down(self, node: int, down: Collection[int] = ()) -> None:
        """The application's node-level liveness heard nothing from ``node`` for an
        election timeout (rule 9); ``down``: the other nodes it reports down meanwhile.
        Only quiesced replicas care: others have timers."""
        if not self.quiesced:
            return
        if self.role == Role.LEADER:
            voters = self.conf.voters
            if node in voters and node != self.id:
                # no copy of ``down``: the driver passes it to thousands of groups
                if not has_quorum(voters, voters.difference(down, (node,))):
                    self._wake()  # check-quorum runs again and steps down if needed
        elif node == self.lead:
            self._wake()
            # The lease is over: the leader's node has been silent for a timeout already.
            self.election_elapsed = max(self.election_elapsed, self.cfg.election_tick)

    def report_peer_up(self, node: int) -> None:
        """Rule 9: ``node``, reported down before, is heard from again. A quiesced leader
        that has it as a learner wakes, so its heartbeats tell it who leads: a learner never
        campaigns, and a restarted one would otherwise wait for the group's next write (a
        restarted node stayed without the cluster metadata on an idle cluster). A restarted
        voter needs no help: its pre-vote wakes the leader."""
        if self.quiesced and self.role == Role.LEADER and node in self.conf.learners:
            self._wake()

    def _can_quiesce(self) -> bool:
        """Rule 7."""
        if self.lead_transferee != NO_NODE or self.pending_reads or self.reads_awaiting_commit:
            return False
        log = self.log
        last = log.last_index()
        if log.committed != last:
            return False
        me = self.id
        for node, pr in self.progress.items():
            if pr.match != last:
                return False  # for us: our own write is not durable yet
            # PROBE with a known full match is fine (a heartbeat answer never moves a
            # follower out of PROBE once nothing is left to send it).
            if node != me and (pr.state == ProgressState.SNAPSHOT or not pr.recent_active):
                return False
        return True

    def _quiesce(self) -> None:
        log = self.log
        last = log.last_index()
        last_term = log.term(last)
        for node in self.progress:
            if node != self.id:
                self._send(Message(MsgType.QUIESCE, node, self.id, index=last,
                                   log_term=last_term, commit=log.committed))
        self.quiesced = True

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self.term, NO_NODE)
                    return
            if self.lead_transferee != NO_NODE:
                self.lead_transferee = NO_NODE  # transfer timed out; accept proposals again
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            if self.cfg.quiesce and self._can_quiesce():
                self._quiesce()  # rule 7: instead of this heartbeat
                return
            self._bcast_heartbeat(b"")
            for node, pr in self.progress.items():
                if pr.state == ProgressState.SNAPSHOT and node != self.id:
                    pr.pending_snapshot_ticks += 1
                    if pr.pending_snapshot_ticks > _SNAPSHOT_RETRY_HEARTBEATS:
                        pr.become_probe()  # no answer: assume the snapshot was lost

    def _quorum_active(self) -> bool:
        active = [n for n, pr in self.progress.items() if pr.recent_active or n == self.id]
        for n, pr in self.progress.items():
            pr.recent_active = n == self.id
        return has_quorum(self.conf.voters, active)

    # ---------------------------------------------------------------- step
    def step(self, m: Message) -> None:
        if self.quiesced and m.type != MsgType.QUIESCE:
            self._wake()  # rule 9
        if m.type in (MsgType.READ_INDEX, MsgType.TRANSFER_LEADER):
            pass  # forwarded requests carry no term
        elif m.term > self.term:
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead != NO_NODE
                    and self.lead != m.frm  # rule 10
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and not force:
                    return  # rule 5: we have a live leader; do not let this node disrupt it
            if m.type == MsgType.PRE_VOTE:
                pass  # never change term on a pre-vote
            elif m.type == MsgType.PRE_VOTE_RESP and not m.reject:
                pass  # the answer to our own pre-vote at term+1
            elif m.type in _LEADER_CONTACT:
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NO_NODE)
        elif m.term < self.term:
            # Rule 11: a stale sender that waits for an answer learns our term from it.
            if m.type in _LEADER_CONTACT:
                # A stale leader (maybe partitioned away) steps down, instead of us
                # disrupting it with a new election later, or, if we cannot campaign,
                # instead of never hearing from us again.
                self._send(Message(MsgType.APP_RESP, m.frm, self.id))
            elif m.type == MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, m.frm, self.id, term=self.term,
                                   reject=True))
            elif m.type == MsgType.VOTE:
                self._send(Message(MsgType.VOTE_RESP, m.frm, self.id, reject=True))
            return

        if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NO_NODE and self.lead == NO_NODE)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        resp_type = MsgType.PRE_VOTE_RESP if m.type == MsgType.PRE_VOTE else MsgType.VOTE_RESP
        if can_vote and self._candidate_log_ok(m):
            # A granted pre-vote answers in the term asked about, so the pre-candidate
            # counts it; a real vote is recorded and must be durable before the answer.
            self._send(Message(resp_type, m.frm, self.id, term=m.term))
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, m.frm, self.id, term=self.term, reject=True))

    def _candidate_log_ok(self, m: Message) -> bool:
        """§5.4.1 and rule 13: the candidate's log is at least as up to date as ours and
        as our vote floor (and we have a configuration, if that is asked for)."""
        if self.cfg.vote_only_with_configuration and not self.conf.voters:
            return False
        return (self.log.is_up_to_date(m.index, m.log_term)
                and LogPosition(m.log_term, m.index) >= self.vote_floor)

    # ---------------------------------------------------------------- follower
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in _CARRIES_COMMIT and m.commit > self.leader_commit:
            self.leader_commit = m.commit  # rule 14
        if t == MsgType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MsgType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MsgType.QUIESCE:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_quiesce(m)
        elif t == MsgType.TIMEOUT_NOW:
            # Leadership transfer (thesis §3.10): campaign at once, skipping pre-vote.
            if self.promotable():
                self.hup(transfer=True)
        elif t == MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        # READ_INDEX / TRANSFER_LEADER forwarded to a non-leader are dropped: the
        # requester times out and retries against the leader it learns of next.

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, index=log.committed))
            return
        before = log.last_index()
        result = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if result is not None:
            last_new, first_appended = result
            if first_appended:
                self._after_log_changed(first_appended, before)
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, index=last_new))
            return
        # Reject with a hint (§5.3 optimization): the largest index at or below the
        # probe whose term is <= the probe's term; the leader can skip everything above.
        hint_index = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        hint_term = log.term_or_zero(hint_index)
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, index=m.index, reject=True,
                           reject_hint=hint_index, log_term=hint_term))

    def _handle_heartbeat(self, m: Message) -> None:
        log = self.log
        if m.commit > log.last_index():  # rule 12: our store was lost since we acknowledged
            self._send(Message(MsgType.HEARTBEAT_RESP, m.frm, self.id, context=m.context,
                               reject=True, reject_hint=log.last_index()))
            return
        log.commit_to(m.commit)
        self._send(Message(MsgType.HEARTBEAT_RESP, m.frm, self.id, context=m.context))

    def _handle_quiesce(self, m: Message) -> None:
        """Rule 8. The leader knows our log matches its own up to its last index (its
        match for us), so the commit it sends is safe to take, like a heartbeat's."""
        log = self.log
        if (self.cfg.quiesce and m.index == log.last_index()
                and log.match_term(m.index, m.log_term)):
            log.commit_to(m.commit)
            self.quiesced = True
            return
        # Not where the leader thinks, or an old QUIESCE overtaken by later appends (or
        # quiescence is off here): stay awake, and wake the leader if it is quiet.
        lost = m.index > log.last_index()  # rule 12: the leader's match is beyond our log
        self._send(Message(MsgType.HEARTBEAT_RESP, m.frm, self.id, reject=lost,
                           reject_hint=log.last_index() if lost else 0))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        meta = snap.meta
        self.leader_commit = max(self.leader_commit, meta.index)  # rule 14
        log = self.log
        if meta.index <= log.committed:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, index=log.committed))
            return
        if log.match_term(meta.index, meta.term):
            # We already hold the covered entries: just learn they are committed.
            log.commit_to(meta.index)
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, index=log.last_index()))
            return
        log.restore(snap)
        self.conf_history = [(meta.index, meta.conf_state)]
        self._set_conf(meta.conf_state)
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, index=log.last_index()))

    # ---------------------------------------------------------------- candidate
    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in _LEADER_CONTACT:
            self._become_follower(m.term, m.frm)  # a leader of our term exists
            self._step_follower(m)
            return
        expected = MsgType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if t == expected:
            if m.frm not in self.votes:
                self.votes[m.frm] = not m.reject
            result = vote_result(self.conf.voters, self.votes)
            if result == VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(pre_vote=False, transfer=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif result == VoteResult.LOST:
                self._become_follower(self.term, NO_NODE)
        elif t == MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    # ---------------------------------------------------------------- leader
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MsgType.READ_INDEX:
            self._handle_read_index(m.context, m.frm)
            return
        if t == MsgType.TRANSFER_LEADER:
            self.transfer_leader(m.index)
            return
        pr = self.progress.get(m.frm)
        if pr is None:
            return  # not in our configuration (e.g. just removed)
        if t == MsgType.APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif t == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if m.reject and m.reject_hint < pr.match:
                pr.follower_lost_log(m.reject_hint)  # rule 12
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._ack_read(m.context, m.frm)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        log = self.log
        if m.reject and m.index >= pr.match > m.reject_hint:
            # rule 12: a probe at or above its match rejected with a hint below it
            pr.follower_lost_log(m.reject_hint)
            self._send_append(m.frm)
            return
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of ours whose term is above the follower's term at hint.
                hint = log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_to(m.index)
        if self._maybe_commit():
            self._bcast_commit()
        elif old_paused:
            self._send_append(m.frm)
        if self.role != Role.LEADER:
            return  # the commit removed us from the configuration
        self._fill_window(m.frm)
        if m.frm == self.lead_transferee and pr.match == log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, m.frm, self.id))

    def _maybe_commit(self) -> bool:
        """Rules 2 and 3. Returns True if the commit index advanced."""
        match = {n: pr.match for n, pr in self.progress.items()}
        index = committed_index(self.conf.voters, match)
        if not self.log.maybe_commit(index, self.term):
            return False
        self._on_commit_advanced()
        return True

    def _on_commit_advanced(self) -> None:
        committed = self.log.committed
        while self.uncommitted and self.uncommitted[0][0] <= committed:
            self.uncommitted_size -= self.uncommitted.popleft()[1]
        if self.reads_awaiting_commit and self.log.term_or_zero(committed) == self.term:
            waiting, self.reads_awaiting_commit = self.reads_awaiting_commit, []
            for ctx, requester in waiting:
                self._handle_read_index(ctx, requester)
        # A leader outside the configuration it replicated steps down once that
        # configuration is committed (thesis §4.2.2).
        if self.id not in self.conf.voters and self.conf_history[-1][0] <= committed:
            self._become_follower(self.term, NO_NODE)

    # -- replication
    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next - 1
        try:
            prev_term = log.term(prev_index)
            entries = log.entries(pr.next, None, self.cfg.max_size_per_msg)
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(Message(MsgType.APP, to, self.id, index=prev_index, log_term=prev_term,
                           entries=entries, commit=log.committed))
        pr.sent_entries(prev_index + len(entries), len(entries))
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        snap = self.log.snapshot()
        if snap.is_empty:
            raise RuntimeError(f"{self.label}log is compacted but there is no snapshot")
        pr.become_snapshot(snap.meta.index)
        self._send(Message(MsgType.SNAP, to, self.id, snapshot=snap))
        return True

    def _fill_window(self, to: int) -> None:
        pr = self.progress.get(to)
        while pr is not None and pr.state == ProgressState.REPLICATE and self._send_append(
            to, send_if_empty=False
        ):
            pass

    def _bcast_append(self, send_if_empty: bool = True) -> None:
        for node in self.progress:
            if node != self.id:
                self._send_append(node, send_if_empty)
                self._fill_window(node)

    def _bcast_commit(self) -> None:
        """The commit index moved. Followers learn it from the next APP that carries
        entries or from the next heartbeat; an empty APP just for it would double the
        messages per write at low load (each is a gRPC stream message, ~0.15 ms of CPU)."""
        self._bcast_append(send_if_empty=False)

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        committed = self.log.committed
        for node, pr in self.progress.items():
            if node == self.id:
                continue
            # Never tell a follower to commit beyond what it is known to hold.
            self._send(Message(MsgType.HEARTBEAT, node, self.id,
                               commit=min(pr.match, committed), context=ctx))

    # -- proposals
    def propose(self, datas: Sequence[bytes]) -> tuple[int, int]:
        self._wake()
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NO_NODE:
            self.proposals_dropped += 1
            raise ProposalDropped(
                f"leadership is being transferred to node {self.lead_transferee}; retry there"
            )
        size = 0
        for d in datas:
            size += len(d)
        if self.uncommitted_size and self.uncommitted_size + size > self.cfg.max_uncommitted_size:
            self.proposals_dropped += 1
            raise ProposalDropped(
                f"{self.uncommitted_size} bytes are proposed but not yet committed (limit "
                f"{self.cfg.max_uncommitted_size}); retry after the followers catch up"
            )
        first = self.log.last_index() + 1
        term = self.term
        entries = [Entry(term, first + i, EntryKind.NORMAL, d) for i, d in enumerate(datas)]
        self._append_entries(entries)
        self._track_uncommitted(entries[-1].index, size)
        self._bcast_append()
        return first, entries[-1].index

    def _track_uncommitted(self, last_index: int, size: int) -> None:
        self.uncommitted_size += size
        self.uncommitted.append((last_index, size))

    def propose_conf_change(self, cc: ConfChange) -> int:
        self._wake()
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NO_NODE:
            self.proposals_dropped += 1
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        log = self.log
        if log.term_or_zero(log.committed) != self.term:
            raise ConfChangeRejected(
                "the leader has not committed an entry of its term yet; retry shortly"
            )
        if self.conf_history[-1][0] > log.committed:
            raise ConfChangeRejected(
                f"configuration change at index {self.conf_history[-1][0]} is not committed "
                "yet; one change at a time"
            )
        new = apply_conf_change(self.conf, cc)
        index = log.last_index() + 1
        entry = Entry(self.term, index, EntryKind.CONF, new.encode())
        self._append_entries([entry])
        self._bcast_append()
        return index

    def _append_entries(self, entries: list[Entry]) -> None:
        """Leader-side append; takes effect on configuration at once (rule 4)."""
        before = self.log.last_index()
        self.log.append(entries)
        self._after_log_changed(entries[0].index, before)
        # A single-voter leader commits by its own durable write, in RawNode.advance.

    def _after_log_changed(self, first_new: int, last_before: int) -> None:
        """Keep the configuration history in step with the log (rule 4)."""
        history = self.conf_history
        changed = False
        if first_new <= last_before:
            while len(history) > 1 and history[-1][0] >= first_new:
                history.pop()
                changed = True
        # New entries always sit in the unstable tail; EntryKind.NORMAL is 0.
        log = self.log
        new_entries = log.unstable_entries[first_new - log.unstable_offset :]
        if any(e.kind for e in new_entries):
            for e in new_entries:
                if e.kind == EntryKind.CONF:
                    history.append((e.index, ConfState.decode(e.data)))
                    changed = True
        if changed:
            self._set_conf(history[-1][1])

    def _set_conf(self, conf: ConfState) -> None:
        old = self.conf
        self.conf = conf
        if old == conf:
            return
        if self.role != Role.LEADER:
            return
        last = self.log.last_index()
        for node in list(self.progress):
            if node not in conf.all_nodes():
                del self.progress[node]
        for node in conf.all_nodes():
            pr = self.progress.get(node)
            if pr is None:
                self.progress[node] = self._new_progress(node, last + 1)
                if node == self.id:
                    self.progress[node].maybe_update(self.log.persisted_index())
            else:
                pr.is_learner = node not in conf.voters
                pr.inflights.capacity = self.cfg.inflight_window(pr.is_learner)
        if self.lead_transferee != NO_NODE and self.lead_transferee not in conf.voters:
            self.lead_transferee = NO_NODE
        # Removing a slow voter can let the commit index move on.
        if self._maybe_commit():
            self._bcast_commit()

    # -- durable progress of the leader's own log (rule 2)
    def on_persisted(self) -> None:
        if self.role != Role.LEADER:
            return
        me = self.progress.get(self.id)
        if me is None:
            return
        if me.maybe_update(self.log.persisted_index()) and self._maybe_commit():
            self._bcast_commit()

    # -- leadership transfer (thesis §3.10)
    def transfer_leader(self, target: int) -> None:
        self._wake()
        if self.role != Role.LEADER:
            if self.lead != NO_NODE:
                self._send(Message(MsgType.TRANSFER_LEADER, self.lead, self.id, index=target))
            return
        if target == self.id or target not in self.conf.voters:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.transfers_started += 1
        self.election_elapsed = 0  # the transfer is abandoned after one election timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, target, self.id))
        else:
            self._send_append(target)

    # -- ReadIndex (thesis §6.4)
    def read_index(self, context: bytes) -> None:
        self._wake()
        if self.role != Role.LEADER:
            if self.lead == NO_NODE:
                raise NotLeader(NO_NODE, "no leader known; retry the read later")
            self._send(Message(MsgType.READ_INDEX, self.lead, self.id, context=context))
            return
        self._handle_read_index(context, self.id)

    def _handle_read_index(self, context: bytes, requester: int) -> None:
        log = self.log
        if log.term_or_zero(log.committed) != self.term:
            # Until an entry of our term commits we may not know the latest commit index;
            # a single voter neither (after a restart its stored commit may lag what it had
            # committed and acknowledged: soak seeds 19, 81, 104, 231, 283, FINDINGS 4).
            self.reads_awaiting_commit.append((context, requester))
            return
        if self.conf.voters == {self.id}:
            self._release_read(log.committed, context, requester)
            return
        if context in self.pending_reads_by_ctx:
            return  # duplicate request (retried or duplicated by the network)
        req = _ReadRequest(log.committed, context, requester)
        req.acks.add(self.id)
        self.pending_reads.append(req)
        self.pending_reads_by_ctx[context] = req
        self._bcast_heartbeat(context)

    def _ack_read(self, context: bytes, frm: int) -> None:
        req = self.pending_reads_by_ctx.get(context)
        if req is None:
            return
        req.acks.add(frm)
        if not has_quorum(self.conf.voters, req.acks):
            return
        # A quorum confirmed our leadership at this point; every earlier request too.
        while self.pending_reads:
            r = self.pending_reads.popleft()
            del self.pending_reads_by_ctx[r.context]
            self._release_read(r.index, r.context, r.requester)
            if r is req:
                break

    def _release_read(self, index: int, context: bytes, requester: int) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(Message(MsgType.READ_INDEX_RESP, requester, self.id, index=index,
                               context=context))

    # -- reports from the application
    def report_unreachable(self, node: int) -> None:
        pr = self.progress.get(node)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: int, ok: bool) -> None:
        pr = self.progress.get(node)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for a heartbeat response before probing again


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after one single-server change; raises if it is a no-op or unsafe."""
    voters, learners = set(conf.voters), set(conf.learners)
    node = cc.node_id
    if node <= 0:
        raise ConfChangeRejected(f"invalid node id {node}")
    if cc.kind == ConfChangeKind.ADD_VOTER:
        if node in voters:
            raise ConfChangeRejected(f"node {node} is already a voter")
        voters.add(node)
        learners.discard(node)
    elif cc.kind == ConfChangeKind.ADD_LEARNER:
        if node in learners:
            raise ConfChangeRejected(f"node {node} is already a learner")
        voters.discard(node)
        learners.add(node)
    elif cc.kind == ConfChangeKind.REMOVE_NODE:
        if node not in voters and node not in learners:
            raise ConfChangeRejected(f"node {node} is not in the configuration")
        voters.discard(node)
        learners.discard(node)
    else:
        raise ConfChangeRejected(f"unknown change kind {cc.kind!r}")
    if not voters:
        raise ConfChangeRejected("a configuration needs at least one voter")
    return ConfState(frozenset(voters), frozenset(learners))

