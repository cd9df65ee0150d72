"""Safety invariants of Raft, checked after every input a simulated replica processes.

The cluster calls the hooks below at each point of its processing loop (one ``Checker`` per
Raft group; the "node" each hook gets is one replica: ``cluster.SimReplica``); a broken
invariant calls ``fail(invariant, detail)``, which raises with the seed, the replay command
and the recent trace. What is checked (Raft paper §5, figure 3, and thesis §3.6 / §10.2.1):

1. Election safety: at most one leader per term, over the whole run (a leader counts once
   its vote for itself in that term is durable: see ``observe``).
2. Log matching: two durable logs holding an entry with the same index and term hold the
   same entries up to it. Each replica's durable log is mirrored as a hash chain
   (``h(i) = hash(h(i-1), term, kind, data)``), and every ``(index, term)`` ever written
   anywhere maps to one chain hash, so the check is O(1) per written entry. Terms in a log
   never decrease. The mirror follows what is *durable*: a write enters it when its sync
   completes (an unsynced write is lost in a crash), and must then match the disk.
3. Leader completeness: an entry applied anywhere, committed in term C, is in the log of
   every leader of a term T > C. Checked once per leader, when the first entry of its term
   is durable (its whole log as of the election is then on its disk).
4. State machine safety: no two replicas apply different entries at one index (the chain
   hash of the applied prefix must agree); replicas apply each index once, in order, and
   only entries that are committed and durable in their own log.
5. Commit: a replica's commit index never decreases within one incarnation; only a leader
   moves the cluster's commit index forward, and only to an entry of its own term (§5.4.2,
   figure 8: checked when that leader applies the entry); the durable commit never
   decreases and never passes the durable log.
6. Persistence before sending (§5.1, "Persistent state ... updated on stable storage before
   responding to RPCs"), for EVERY message as it leaves its node, whether the host sent it
   from ``ready.messages`` or ``ready.messages_after_persist``, against what the node's
   disk holds durably (synced) at that moment: a granted vote and a vote request name the
   durable term and vote (or the durable term is past theirs); an append acknowledgement
   of the durable term covers only durably written entries (or a durable snapshot); no
   message but a pre-vote (or its answer) carries a term that is not durable. One durable
   vote per term.
7. Snapshots: a snapshot names an entry some log held, and its data is exactly the applied
   prefix up to its index.
8. Linearizable reads: a ReadState's index is at least the commit index known anywhere when
   the read was requested.
9. Acknowledged writes (acks=all, ``Cluster.produce``): a client is answered only for an
   entry committed in the cluster and on the answering node; an answered entry is never
   lost: no replica applies another entry at its index, no durable log drops it, every
   later leader holds it when elected, and at the end of a run every live replica has
   applied it at its index (``check_acks_final``).
"""

from __future__ import annotations

import bisect
from typing import Callable, NoReturn, Sequence

from raftka.raft import Entry, HardState, Message, MsgType, Role, Snapshot

from .statemachine import decode_entries

LEADER = Role.LEADER
Fail = Callable[[str, str], NoReturn]

class LogChain:
    """Hash chain mirroring one replica's durable log: ``hashes[k]`` and ``terms[k]`` belong
    to index ``base + k``; index ``base`` is the snapshot position (or 0)."""

    __slots__ = ("base", "hashes", "terms")

    def __init__(self) -> None:
        self.base = 0
        self.hashes = [0]
        self.terms = [0]

    @property
    def last(self) -> int:
        return self.base + len(self.hashes) - 1

    def at(self, index: int) -> int:
        return self.hashes[index - self.base]

    def term_at(self, index: int) -> int:
        return self.terms[index - self.base]

    def holds(self, index: int) -> bool:
        return self.base <= index <= self.last


def entry_hash(previous: int, entry: Entry) -> int:
    return hash((previous, entry.term, entry.kind, entry.data))


class Checker:
    def __init__(self, fail: Fail, *, unique_payloads: bool = False) -> None:
        self._fail = fail
        self.unique_payloads = unique_payloads
        self.leader_of_term: dict[int, int] = {}
        # Highest index the cluster has committed: only ever moved by a leader.
        self.max_committed = 0
        # term -> highest commit index a leader of that term reached.
        self.commit_marks: dict[int, int] = {}
        # (index, term) -> chain hash, for every entry any replica ever made durable.
        self.chain_of: dict[tuple[int, int], int] = {}
        self.chains: dict[int, LogChain] = {}
        # index -> chain hash of the applied prefix; contiguous over [1, max_applied].
        self.applied_hash: dict[int, int] = {}
        self.max_applied = 0
        self.applied_log: list[tuple[int, bytes]] = []  # NORMAL payloads, index order
        self._applied_log_index: list[int] = []
        self.payload_index: dict[bytes, int] = {}
        self._checked_leaders: set[tuple[int, int]] = set()
        self.checks = 0
        # Invariant 9: index -> (term, payload) of every acknowledged write.
        self.acked: dict[int, tuple[int, bytes]] = {}
        self.max_acked = 0

    def fail(self, invariant: str, detail: str) -> NoReturn:
        self._fail(invariant, detail)

    def chain(self, node_id: int) -> LogChain:
        chain = self.chains.get(node_id)
        if chain is None:
            chain = self.chains[node_id] = LogChain()
        return chain

    # -- after every call into a RawNode ---------------------------------------------------
    def observe(self, node) -> None:  # node: cluster.SimNode
        self.checks += 1
        raw = node.raw
        role = raw.role
        term = raw.term
        commit = raw.commit_index
        # A leader counts for election safety once its own vote in its term is durable.
        # Only a single voter gets there without asking anyone (persist-before-send makes
        # every other candidate durable first); a crash before that write erases it without
        # a trace: it sent, committed and acknowledged nothing, and may vote again in that
        # term after the restart (soak seed 11428 of the simulator before the host driver).
        durable = node.durable_hard_state()
        if role == LEADER and durable.term == term and durable.vote == node.id:
            holder = self.leader_of_term.setdefault(term, node.id)
            if holder != node.id:
                self.fail("election safety",
                          f"n{holder} and n{node.id} were both leader in term {term}")
            if self.max_acked and (node.seen_role != LEADER or node.seen_term != term):
                self._check_leader_holds_acks(node)
        seen = node.seen_commit
        if commit != seen:
            if commit < seen:
                self.fail("commit index never decreases",
                          f"n{node.id} commit went from {seen} to {commit}")
            # A leader that commits its own removal may step down in the same call.
            was_leader = node.seen_role == LEADER and node.seen_term == term
            if role == LEADER or was_leader:
                node.commit_points[commit] = term  # checked when the leader applies it
                if commit > self.commit_marks.get(term, 0):
                    self.commit_marks[term] = commit
                if commit > self.max_committed:
                    self.max_committed = commit
            elif commit > self.max_committed:
                self.fail("only a leader advances the commit index",
                          f"n{node.id} ({role.name}, term {term}) has commit {commit} but no "
                          f"leader ever committed beyond {self.max_committed}")
            node.seen_commit = commit
        node.seen_role = role
        node.seen_term = term

    # -- every message, as it leaves its node ------------------------------------------------
    def on_send(self, node, m: Message, durable: HardState) -> None:
        """Invariant 6. ``durable``: the hard state on the node's disk now (synced writes
        only); the durable log is this checker's mirror (``chain``)."""
        t = m.type
        # A durable term beyond the message's also keeps its promise: the node can never
        # vote (or campaign) in that term again, even after a crash.
        if t == MsgType.VOTE_RESP and not m.reject:
            if durable.term < m.term or (durable.term == m.term and durable.vote != m.to):
                self.fail("vote is durable before it is granted",
                          f"n{node.id} granted {m!r} but its disk holds {durable}")
        elif t == MsgType.VOTE:
            if durable.term < m.term or (durable.term == m.term and durable.vote != node.id):
                self.fail("candidacy is durable before votes are requested",
                          f"n{node.id} sent {m!r} but its disk holds {durable}")
        elif t == MsgType.APP_RESP and not m.reject and m.term == durable.term:
            # (An acknowledgement of an older term than the durable one may name entries
            # that a leader of a newer term replaced before they were written: the core
            # queued it before the truncation. Only that older leader can count it, and it
            # cannot lose a commit: see FINDINGS.md, finding 5.)
            chain = self.chain(node.id)
            if m.index > chain.last:
                raw = node.raw
                if raw is not None and raw.first_index - 1 >= m.index > chain.base:
                    self.fail("snapshot is durable before it is acknowledged",
                              f"n{node.id} sent {m!r} but its durable log ends at "
                              f"{chain.last} and its snapshot @{raw.first_index - 1} is not "
                              f"durable")
                self.fail("entries are durable before they are acknowledged",
                          f"n{node.id} sent {m!r} but its durable log ends at {chain.last}")
        if m.term > durable.term and t != MsgType.PRE_VOTE and t != MsgType.PRE_VOTE_RESP:
            self.fail("term is durable before messages carry it",
                      f"n{node.id} sent {m!r} but its disk holds {durable}")

    # -- step 2: a Ready was made durable ----------------------------------------------
    def on_save(self, node, old: HardState, hard_state: HardState | None,
                entries: Sequence[Entry], snapshot: Snapshot | None, *,
                mirror: bool = True) -> None:
        """A write became durable. ``old``: the durable hard state before it. ``mirror``:
        compare the mirror with the disk now (False while more writes of the same sync are
        still to be reported; then ``check_mirror`` after the last)."""
        nid = node.id
        chain = self.chain(nid)
        if snapshot is not None and not snapshot.is_empty:
            self._install_snapshot_chain(nid, chain, snapshot)
        if entries:
            self._append_chain(nid, chain, entries)
        if mirror:
            self.check_mirror(node)
        if hard_state is not None:
            if hard_state.term < old.term:
                self.fail("durable term never decreases", f"n{nid}: {old} -> {hard_state}")
            if hard_state.term == old.term and old.vote and hard_state.vote != old.vote:
                self.fail("one vote per term", f"n{nid}: {old} -> {hard_state}")
            if hard_state.commit < old.commit:
                self.fail("durable commit never decreases", f"n{nid}: {old} -> {hard_state}")
            if hard_state.commit > self.max_committed:
                self.fail("durable commit is committed",
                          f"n{nid} saved {hard_state}, cluster commit {self.max_committed}")
            if hard_state.commit > chain.last:
                self.fail("durable commit never passes the durable log",
                          f"n{nid} saved {hard_state}, durable log ends at {chain.last}")
        raw = node.raw
        if entries and raw.role == LEADER and entries[-1].term == raw.term:
            key = (nid, raw.term)
            if key not in self._checked_leaders:
                self._checked_leaders.add(key)
                self._check_leader_completeness(nid, raw.term, chain)

    def check_mirror(self, node) -> None:
        """The mirror of the durable log matches the disk (once everything written is
        durable)."""
        chain = self.chain(node.id)
        storage = node.storage
        if chain.last != storage.last_index() or chain.base != storage.first_index() - 1:
            self.fail("simulator log mirror", f"n{node.id} mirror [{chain.base}, {chain.last}]"
                      f" vs storage [{storage.first_index() - 1}, {storage.last_index()}]")

    def _install_snapshot_chain(self, nid: int, chain: LogChain, snapshot: Snapshot) -> None:
        index, term = snapshot.meta.index, snapshot.meta.term
        expected = self.chain_of.get((index, term))
        if expected is None:
            self.fail("snapshots name a real entry",
                      f"n{nid} installed snapshot @{index} t{term}, an entry no log ever held")
        if chain.holds(index) and chain.term_at(index) == term:
            if chain.at(index) != expected:
                self.fail("log matching", f"n{nid} holds @{index} t{term} with another prefix")
            cut = index - chain.base
            del chain.hashes[:cut]
            del chain.terms[:cut]
        else:
            chain.hashes = [expected]
            chain.terms = [term]
        chain.base = index

    def _append_chain(self, nid: int, chain: LogChain, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        if first <= chain.base:
            entries = [e for e in entries if e.index > chain.base]
            if not entries:
                return
            first = entries[0].index
        if first > chain.last + 1:
            self.fail("log matching", f"n{nid} appended at {first} after {chain.last}: a gap")
        if first <= chain.last and first <= self.max_acked:
            self._check_truncation_keeps_acks(nid, chain, entries)
        keep = first - chain.base
        hashes, terms = chain.hashes, chain.terms
        del hashes[keep:]
        del terms[keep:]
        chain_of = self.chain_of
        previous = hashes[-1]
        previous_term = terms[-1]
        expected_index = first
        for e in entries:
            if e.index != expected_index:
                self.fail("log matching", f"n{nid} appended non-contiguous entries {entries!r}")
            expected_index += 1
            if e.term < previous_term:
                self.fail("log terms never decrease",
                          f"n{nid} appended @{e.index} t{e.term} after term {previous_term}")
            h = hash((previous, e.term, e.kind, e.data))
            known = chain_of.setdefault((e.index, e.term), h)
            if known != h:
                self.fail("log matching",
                          f"n{nid} wrote @{e.index} t{e.term} with a different history than "
                          f"another log holding @{e.index} t{e.term}")
            hashes.append(h)
            terms.append(e.term)
            previous, previous_term = h, e.term

    def _check_leader_completeness(self, nid: int, term: int, chain: LogChain) -> None:
        committed = 0
        for commit_term, index in self.commit_marks.items():
            if commit_term < term and index > committed:
                committed = index
        index = min(committed, self.max_applied)
        if index <= 0:
            return
        if index <= chain.base:
            index = chain.base  # the leader's snapshot covers it: compare there
            expected = self.applied_hash.get(index)
            if expected is not None and chain.at(index) != expected:
                self.fail("leader completeness",
                          f"leader n{nid} of term {term} holds a snapshot @{index} that differs "
                          f"from what was applied")
            return
        if index > chain.last:
            self.fail("leader completeness",
                      f"leader n{nid} of term {term} lacks entry @{index}, applied elsewhere "
                      f"and committed before term {term}; its log ends at {chain.last}")
        if chain.at(index) != self.applied_hash[index]:
            self.fail("leader completeness",
                      f"leader n{nid} of term {term} has a log that differs from the applied "
                      f"prefix up to @{index} (its term there: {chain.term_at(index)})")

    def on_compact(self, node, snapshot: Snapshot) -> None:
        chain = self.chain(node.id)
        index = snapshot.meta.index
        if not chain.holds(index) or chain.term_at(index) != snapshot.meta.term:
            self.fail("snapshots name a real entry",
                      f"n{node.id} compacted to @{index} t{snapshot.meta.term}, not in its log")
        cut = index - chain.base
        del chain.hashes[:cut]
        del chain.terms[:cut]
        chain.base = index

    # -- step 4: the state machine ----------------------------------------------------
    def on_restore(self, node, snapshot: Snapshot) -> None:
        """The state machine of ``node`` was replaced by ``snapshot`` (from a Ready, or on
        restart)."""
        index = snapshot.meta.index
        if index == 0:
            return
        chain = self.chain(node.id)
        if not chain.holds(index):
            self.fail("snapshot restored is durable",
                      f"n{node.id} restored @{index} but its log covers [{chain.base}, "
                      f"{chain.last}]")
        self._record_applied(node.id, index, chain.at(index), None)
        expected = self.applied_log[: bisect.bisect_right(self._applied_log_index, index)]
        actual = decode_entries(snapshot.data)
        if actual != expected:
            self.fail("snapshot data is the applied prefix",
                      f"n{node.id} restored snapshot @{index} holding {len(actual)} payloads, "
                      f"{len(expected)} were applied up to it")

    def on_apply(self, node, entry: Entry) -> None:
        nid = node.id
        index = entry.index
        sm = node.sm
        if index != sm.applied_index + 1:
            self.fail("apply each index once, in order",
                      f"n{nid} applies @{index} after @{sm.applied_index}")
        if index > node.raw.commit_index:
            self.fail("apply only committed entries",
                      f"n{nid} applies @{index} with commit {node.raw.commit_index}")
        chain = self.chain(nid)
        if not chain.holds(index) or index == chain.base:
            self.fail("apply only durable entries",
                      f"n{nid} applies @{index}, its durable log is [{chain.base + 1}, "
                      f"{chain.last}]")
        if node.commit_points:
            leader_term = node.commit_points.pop(index, None)
            if leader_term is not None and entry.term != leader_term:
                self.fail("a leader commits by counting only entries of its term (§5.4.2)",
                          f"n{nid} as leader of term {leader_term} moved its commit index to "
                          f"@{index}, an entry of term {entry.term}")
        h = hash((chain.at(index - 1), entry.term, entry.kind, entry.data))
        if h != chain.at(index):
            self.fail("apply what the log holds",
                      f"n{nid} applies @{index} t{entry.term}, its log holds another entry")
        acked = self.acked.get(index)
        if acked is not None and (acked[0] != entry.term or acked[1] != entry.data):
            self.fail("acknowledged writes are never lost",
                      f"n{nid} applies @{index} t{entry.term} {entry.data[:24]!r}, but "
                      f"{acked[1][:24]!r} was acknowledged there in term {acked[0]}")
        self._record_applied(nid, index, h, entry)

    def _record_applied(self, nid: int, index: int, h: int, entry: Entry | None) -> None:
        known = self.applied_hash.get(index)
        if known is None:
            if entry is None:
                self.fail("snapshot data is the applied prefix",
                          f"n{nid} restored @{index}, nobody applied beyond {self.max_applied}")
            if index != self.max_applied + 1:
                self.fail("apply each index once, in order",
                          f"n{nid} applied @{index}, but nobody applied @{self.max_applied + 1}")
            self.applied_hash[index] = h
            self.max_applied = index
            if entry is not None and entry.kind == 0 and entry.data:
                self.applied_log.append((index, entry.data))
                self._applied_log_index.append(index)
                if self.unique_payloads:
                    other = self.payload_index.setdefault(entry.data, index)
                    if other != index:
                        self.fail("each proposal is applied once",
                                  f"payload {entry.data!r} applied at @{other} and @{index}")
        elif known != h:
            self.fail("state machine safety",
                      f"n{nid} applied @{index} differently from another replica "
                      f"({entry!r})")

    # -- ReadIndex -----------------------------------------------------------------------
    def on_read_state(self, node, index: int, context: bytes, floor: int | None) -> None:
        """``floor``: the cluster's commit index when the read was requested."""
        if floor is not None and index < floor:
            self.fail("linearizable read",
                      f"n{node.id} got ReadState index {index} for {context!r}, but {floor} "
                      f"was already committed when the read was requested")
        if index > self.max_committed:
            self.fail("linearizable read",
                      f"n{node.id} got ReadState index {index} beyond the commit index "
                      f"{self.max_committed}")

    # -- acknowledged writes (invariant 9) --------------------------------------------------
    def on_ack(self, node, index: int, term: int, payload: bytes, data: bytes) -> None:
        """``node`` answers the client of ``payload``, proposed at ``index`` in ``term``,
        because it applies an entry of that term there now, holding ``data`` (a node
        compares only the term, as ``PartitionReplica`` does)."""
        raw = node.raw
        if index > raw.commit_index or index > self.max_committed:
            self.fail("acknowledged writes are committed",
                      f"n{node.id} acknowledged @{index} t{term} {payload[:24]!r} with its "
                      f"commit at {raw.commit_index} (cluster commit {self.max_committed})")
        if data != payload:
            self.fail("acknowledged writes are never lost",
                      f"n{node.id} acknowledged {payload[:24]!r} at @{index} t{term}, where "
                      f"its log holds {data[:24]!r}: the write was lost")
        known = self.acked.get(index)
        if known is not None and known != (term, payload):
            self.fail("acknowledged writes are never lost",
                      f"n{node.id} acknowledged @{index} t{term} {payload[:24]!r}, but "
                      f"{known[1][:24]!r} was acknowledged there in term {known[0]}")
        self.acked[index] = (term, payload)
        if index > self.max_acked:
            self.max_acked = index

    def _check_leader_holds_acks(self, node) -> None:
        """A new leader's log (durable or not yet) holds the newest acknowledged entry
        (and, by log matching, every one before it)."""
        raw = node.raw
        index = self.max_acked
        term = self.acked[index][0]
        if index < raw.first_index - 1:
            return  # behind its snapshot: compared with the applied prefix elsewhere
        if index > raw.last_index or raw.term_at(index) != term:
            self.fail("acknowledged writes are never lost",
                      f"n{node.id} became leader of term {raw.term} without the entry "
                      f"@{index} t{term} acknowledged to a client (its log ends at "
                      f"{raw.last_index})")

    def _check_truncation_keeps_acks(self, nid: int, chain: LogChain,
                                     entries: Sequence[Entry]) -> None:
        """``entries`` replace the durable log from their first index on: an acknowledged
        entry there must come back (same index and term) or be beyond what is replaced."""
        acked = self.acked
        first = entries[0].index
        for index in range(max(first, chain.base + 1), min(chain.last, self.max_acked) + 1):
            known = acked.get(index)
            if known is None or chain.term_at(index) != known[0]:
                continue
            offset = index - first
            if offset >= len(entries) or entries[offset].term != known[0]:
                self.fail("acknowledged writes are never lost",
                          f"n{nid} dropped its durable entry @{index} t{known[0]}, "
                          f"acknowledged to a client, writing from @{first}")

    def check_acks_final(self, replicas) -> int:
        """End of a run: every live replica has applied every acknowledged payload at its
        index. Returns how many acknowledgements there are."""
        acked = self.acked
        for node in replicas:
            applied = dict(node.sm.entries)
            for index, (term, payload) in acked.items():
                if index > node.sm.applied_index:
                    self.fail("acknowledged writes are never lost",
                              f"n{node.id} ends with applied index {node.sm.applied_index}, "
                              f"below the acknowledged @{index}")
                if applied.get(index) != payload:
                    self.fail("acknowledged writes are never lost",
                              f"n{node.id} ends with {applied.get(index)!r} at @{index}, "
                              f"where {payload[:24]!r} was acknowledged")
        return len(acked)
