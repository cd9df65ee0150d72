"""The host driver: every Raft group replica of one node, driven by one deterministic loop.

``HostDriver`` makes every decision of a node's Raft host: which groups a pass serves, the
order of sends, writes and applies (below), group commit, commit-only writes, ticking and
quiescence, node-level liveness, and the moves of a graceful shutdown. It does no I/O and
never reads a clock, sleeps, starts a thread or imports asyncio: the clock, the transport,
the log store and the state machines come in through the narrow protocols below, and the
owner calls it. Two owners run the very same driver:

- ``raftka.node._host.RaftHost``, the node's asyncio adapter: a ticker task calls
  ``tick()``, the peer stream handler ``deliver_many()``, the ready-loop task
  ``run_pass()`` whenever ``wake`` was called, and, when a pass started a synced write (on
  the host's sync thread), ``sync_completed()`` once the fsync returned;
- ``tests/sim``, the deterministic simulator: one driver per simulated node over a
  simulated network and a simulated disk whose syncs take simulated time.

Ordering rules (``HostOrderError`` marks the ones checked at run time; a violation raises):

1. One pass at a time. ``run_pass()`` asks the state machine of every dirty group to
   propose what it queued (``before_ready``), then takes the Ready of every dirty group
   that has one. A pass begins only once the write of the previous pass is complete
   [checked], so writes are durable in the order they were issued.
2. Every Ready's ``messages`` go out first, before the write: a leader replicates while it
   writes its own disk (thesis §10.2.1); the core keeps in ``messages`` only what may leave
   before the Ready is durable.
3. ONE write per pass for every group of the pass: ``HostStorage.begin_sync`` if any Ready
   must sync (a term, vote, entry or snapshot changed), else ``HostStorage.write`` (only
   commit indexes moved: no fsync; it becomes durable with the next sync, and losing it in
   a crash only makes a restarted node re-learn its commit index).
4. A synced write is asynchronous: ``begin_sync`` returns at once and the owner calls
   ``sync_completed()`` when it is durable [checked: only while one is outstanding].
   Meanwhile inputs are taken at once: ``deliver_many``, ``tick``, proposals and ``mark``
   step the RawNodes and mark groups dirty, and all of it rides the next pass: that is the
   group commit (one sync for everything that arrived during the previous one).
5. Only once the pass's write is complete [checked], for each Ready in turn: send
   ``messages_after_persist`` (votes, vote grants and append acknowledgements promise that
   what they depend on is durable);
6. then, unless the group was removed meanwhile, restore the Ready's snapshot into its
   state machine and apply its committed entries, in log order [checked with rule 5].
   Except (6a): committed entries that were durable here before the pass began (all
   below the first of the Ready's own ``entries``, no snapshot, no configuration entry)
   are applied as soon as the synced write has started, while it syncs. A leader learns
   of a follower's acknowledgement in a pass that usually also carries new proposals;
   their fsync no longer delays the answers to writes a majority already holds. They
   are committed (on a majority's disks) and durable in this log, so applying them first
   is what the checker's state machine safety allows; passes stay serialized (rule 1),
   so the log order of applies holds;
7. then ``advance`` (only now does a leader count its own write toward commit) and the
   state machine's ``on_ready``. A group with more to do stays dirty for the next pass.
8. Ticks: ``tick()`` ticks every group that is not quiesced (a quiesced group's timers are
   stopped: it is skipped) and asks the transport to ping every peer it sent nothing to
   since the previous tick. It visits only the groups it knows awake: every pass records
   whether each group it served is quiesced (anything that can wake a group marks it
   dirty first: a message, a proposal, a liveness report), and every ``FULL_SCAN_TICKS``
   ticks it looks at every group again, so a wake that bypassed the driver (the owner
   calling the core directly) costs at most that many ticks of delay (2 s at the node's
   50 ms tick; every wake the node makes goes through the driver, so this is a backstop).
   Reading every group's flag every tick cost ~0.27 ms a tick per 2,000 groups (~0.5% of
   a core per node at 20 ticks/s, ~2.7% at 10,000 groups); now it is ~0.03 ms a tick.
   The scan itself, every 10 ticks, was still a visible part of an idle node's CPU at
   10,000 groups, hence 40.
8a. Late ticks (a stall of the owner's own loop): the owner says ``tick(late=True)`` when
   it ran the tick at least a whole tick interval after it was due, and drops the ticks it
   missed meanwhile (it does not call ``tick`` for them). A late tick pings the peers but
   ticks no group and checks no liveness, unless the ``late_skips_max`` ticks before it
   were all skipped: the peers' batches of the stall (heartbeats, acknowledgements, votes)
   may still sit unread, and a follower must not campaign against a leader it simply has
   not read yet, nor a leader step down (check-quorum) for followers it has not read. A
   starved leader's heartbeats slow down with it, so followers on healthy nodes may
   replace it: that is wanted (a starved leader serves badly); what rule 8a prevents is a
   starved node deposing healthy peers or itself. (Ticking leaders on late ticks was
   tried: with check-quorum running at full rate on starved leaders, the 1,000-partition
   creation under load churned again.) So a stall counts
   as no tick at all, and under sustained lag one tick in ``late_skips_max + 1`` counts:
   election timeouts widen (up to that factor, in wall time, plus the lag itself) while
   the loop is late, which also lets an election finish on a starved node before its
   candidates time out again, but never without bound (a dead leader is still replaced).
   On time, nothing changes: failover on a healthy cluster is as fast as before.
9. Node-level liveness (for quiesced groups, which send no heartbeats): every batch from a
   peer, messages or an empty ping, stamps it heard. The transport pings every
   ``ping_ticks`` ticks (the node: its heartbeat interval, 2 ticks, as often as an awake
   group heartbeats; every tick cost each idle node ~1.5% of a core in gRPC writes and
   reads alone), and a late tick always pings. At a tick, a peer silent for an
   election timeout is a suspect; silent again at the next tick (two ticks in a row: after
   a stall of our own loop its batches may still sit unread), it is reported with
   ``RawNode.report_peer_down`` (with the other peers reported down meanwhile: a leader
   wakes only if its live voters are no longer a quorum) to every quiesced group, and again every election timeout
   while it stays silent (a group may have quiesced since). A batch from it clears both.
9b. A false alarm widens that peer's silence threshold: a peer reported down and heard
   from again within ``FALSE_ALARM_TIMEOUTS`` election timeouts of the report was slow, not
   dead (its loop starved; 10 timeouts, 3 s at the node's timing, because our own loop may
   be starved too and read its batches a second or more late: with 4, the storms of a
   10,000-partition drain mostly went uncounted and lasted minutes), and waking every quiesced group it leads made them all
   campaign at once: on a loaded 2-core machine with thousands of partitions, each such
   report woke ~1,000 groups, whose elections starved the nodes further (an election
   storm). So its threshold doubles (at most ``SILENCE_FACTOR_MAX`` election timeouts) and
   halves again after ``SILENCE_DECAY_TIMEOUTS`` election timeouts without a false alarm
   (1,000: 5 minutes at the node's timing; with 100, a 10,000-partition creation on a
   loaded machine brought a false alarm every ~35 s, each just after the threshold had
   narrowed again, each waking 2,000-4,000 groups).
   A peer that never had one keeps the single election timeout: a dead node's quiesced
   groups fail over as fast as before. (Groups with traffic are not quiesced and keep
   their own election timeouts; this only delays waking idle ones.)

Messages from peers are stepped as they arrive (``deliver_many``); a message the core
refuses is reported to ``HostEvents.message_failed`` and dropped: one bad message must not
stop the node.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Protocol, Sequence

from raftka.raft.core import (Entry, EntryKind, HardState, Message, RawNode, Ready,
                              Role, Snapshot)

__all__ = [
    "HostClock", "HostDriver", "HostEvents", "HostGroup", "HostOrderError", "HostStorage",
    "HostTransport", "LoggingHostEvents", "SaveItem", "StateMachine",
]

SaveItem = tuple[int, HardState | None, list[Entry], Snapshot | None]
"""One group's write of a pass: ``(group_id, hard_state, entries, snapshot)``, what
``LogWriter.save`` takes for that group."""


FULL_SCAN_TICKS = 40  # rule 8: every this many ticks, every group's quiescence is read
FALSE_ALARM_TIMEOUTS = 10  # rule 9b: heard again within this many election timeouts
SILENCE_FACTOR_MAX = 8  # rule 9b: a silence threshold of at most this many timeouts
SILENCE_DECAY_TIMEOUTS = 1000  # rule 9b: calm this long halves a widened threshold


class HostOrderError(RuntimeError):
    """An ordering rule of the host driver (module docstring) would be broken."""


# ------------------------------------------------------------------------------ seams
class HostClock(Protocol):
    def now(self) -> float:
        """Monotonic time in the unit of the driver's ``election_timeout``; never goes
        backwards. Read once per delivered batch and once per tick."""
        ...


class HostTransport(Protocol):
    def send(self, group_id: int, message: Message) -> None:
        """Queue ``message`` (of group ``group_id``) for node ``message.to`` and return at
        once. May drop or delay it (Raft retransmits) but must not alter it."""
        ...

    def tick(self) -> None:
        """Called every ``ping_ticks`` ticks (rule 9): send an empty batch (a ping) to every
        peer that was sent nothing since the previous call, so each peer hears from this
        node at least that often."""
        ...


class HostStorage(Protocol):
    """The node's Raft log store, every group in one: each call writes its items (in
    order, a group at most once) as one atomic batch, with exactly ``LogWriter.save``'s
    effect per item. Reads through the groups' ``Storage`` see a write once it is done."""

    def write(self, items: Sequence[SaveItem]) -> None:
        """Write without waiting for durability (only commit indexes moved); done when it
        returns. A crash may lose it until a later ``begin_sync`` completes."""
        ...

    def begin_sync(self, items: Sequence[SaveItem]) -> None:
        """Start a durable write and return at once. When it is durable (and, with every
        write before it, survives a crash), the owner calls ``HostDriver.sync_completed()``
        once. The driver starts no other write before that."""
        ...


class StateMachine(Protocol):
    """What a Raft group's replica applies. Called on the owner's thread, in log order."""

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the state with ``snapshot`` (durable by now)."""
        ...

    def before_ready(self) -> None:
        """Just before a pass takes this group's Ready: propose what is queued."""
        ...

    def apply(self, entries: list[Entry]) -> None:
        """Committed entries, durable on this node, consecutive, in log order."""
        ...

    def on_ready(self, rd: Ready) -> None:
        """After the Ready is durable, applied and advanced: role changes, read states,
        the entries this node just made durable."""
        ...


class HostEvents(Protocol):
    """What the driver reports besides its effects (logging, a simulator's trace)."""

    def message_failed(self, group_id: int, message: Message, error: Exception) -> None:
        """The core refused ``message``; the driver dropped it and goes on."""
        ...

    def peer_silent(self, peer: int, silent_for: float, woken: int, first: bool) -> None:
        """``peer`` was reported down to the quiesced groups; ``woken`` of them woke.
        ``first``: the first report of this silence."""
        ...

    def peer_heard_again(self, peer: int) -> None:
        """A batch came from a peer that had been reported down."""
        ...


_log = logging.getLogger("raftka.host")


class LoggingHostEvents:
    """``HostEvents`` for a node: to the ``raftka.host`` logger."""

    def message_failed(self, group_id: int, message: Message, error: Exception) -> None:
        _log.error("group %d: dropping message %r", group_id, message,
                   exc_info=(type(error), error, error.__traceback__))

    def peer_silent(self, peer: int, silent_for: float, woken: int, first: bool) -> None:
        if first or woken:
            _log.info("peer %d silent for %.0f ms: woke %d quiesced groups", peer,
                      silent_for * 1000, woken)

    def peer_heard_again(self, peer: int) -> None:
        _log.info("peer %d is heard from again", peer)


class HostGroup:
    """One group's replica on this node. ``closed``: removed from the driver (a pass in
    flight still advances it, but applies nothing more to its state machine)."""

    __slots__ = ("group_id", "node", "sm", "closed")

    def __init__(self, group_id: int, node: RawNode, sm: StateMachine) -> None:
        self.group_id = group_id
        self.node = node
        self.sm = sm
        self.closed = False


def _durable_before(rd: Ready) -> bool:
    """Rule 6a: the Ready's committed entries were all durable in this log before its
    pass: below its own new ``entries`` (which the pass is writing), no snapshot to
    restore first, only normal entries."""
    committed = rd.committed_entries
    if not committed or rd.snapshot is not None:
        return False
    if rd.entries and committed[-1].index >= rd.entries[0].index:
        return False
    return all(e.kind == EntryKind.NORMAL for e in committed)


# ------------------------------------------------------------------------------ driver
class HostDriver:
    """See the module docstring. Not thread-safe: the owner calls everything from one
    thread (the node's event loop; the simulator's event loop)."""

    def __init__(self, node_id: int, *, transport: HostTransport, storage: HostStorage,
                 clock: HostClock, wake: Callable[[], None], election_timeout: float,
                 rng: random.Random, events: HostEvents | None = None,
                 late_skips_max: int = 3, ping_ticks: int = 1) -> None:
        """``wake``: called whenever a pass is due (a group became dirty); the owner then
        calls ``run_pass()`` soon, or after the outstanding sync completed.
        ``election_timeout``: ``election_tick`` ticks, in the clock's unit (rule 9).
        ``rng``: picks leadership transfer targets. ``late_skips_max``: late ticks
        skipped in a row at most (rule 8a; 0 counts every tick). ``ping_ticks``: the
        transport pings every this many ticks (rule 9; well below the election timeout)."""
        if late_skips_max < 0:
            raise ValueError(f"late_skips_max must be >= 0, got {late_skips_max}")
        if ping_ticks < 1:
            raise ValueError(f"ping_ticks must be >= 1, got {ping_ticks}")
        self.node_id = node_id
        self.groups: dict[int, HostGroup] = {}
        self._transport = transport
        self._send = transport.send
        self._storage = storage
        self._now = clock.now
        self._wake = wake
        self._silence = election_timeout
        self._rng = rng
        self._events: HostEvents = events if events is not None else LoggingHostEvents()
        self._dirty: set[int] = set()
        # Rule 8: groups not known quiesced (the ones a tick visits), and ticks until the
        # next look at every group
        self._awake: set[int] = set()
        self._ticks_to_scan = 0
        self._ping_ticks = ping_ticks  # rule 9: the transport pings every this many ticks
        self._ticks_to_ping = 0
        # The pass whose write is outstanding (rule 4), and whether that write is done.
        self._readies: list[tuple[HostGroup, Ready]] | None = None
        self._written = False
        self._early_applied: set[int] = set()  # groups of that pass applied early (rule 6a)
        # Node-level liveness (rule 9): peer -> when we last got a batch from it; peer ->
        # when we last reported it down (until heard from again); peers silent at the
        # previous tick.
        self._heard: dict[int, float] = {}
        self._down_reported: dict[int, float] = {}
        self._suspects: set[int] = set()
        # Rule 9b: peer -> its silence threshold in election timeouts (absent: 1), and
        # when it last changed
        self._silence_factor: dict[int, float] = {}
        self._factor_changed: dict[int, float] = {}
        self._down_since: dict[int, float] = {}  # peer -> first report of its silence
        self.false_alarms = 0  # peers heard from soon after being reported down (statistics)
        # Rule 8a: late ticks skipped in a row (0 <= it <= late_skips_max); counters for
        # the owner's statistics (never decrease).
        self._late_skips_max = late_skips_max
        self._skipped_in_a_row = 0
        self.late_ticks = 0  # ticks the owner reported late
        self.skipped_ticks = 0  # of which skipped (no group ticked)

    # ------------------------------------------------------------------ groups, peers
    def add_group(self, group: HostGroup) -> None:
        if group.group_id in self.groups:
            raise ValueError(f"group {group.group_id} is already running on node "
                             f"{self.node_id}")
        self.groups[group.group_id] = group
        self._awake.add(group.group_id)
        self.mark(group.group_id)

    def remove_group(self, group_id: int) -> HostGroup | None:
        group = self.groups.pop(group_id, None)
        self._awake.discard(group_id)
        if group is not None:
            group.closed = True
        return group

    def add_peer(self, peer: int) -> None:
        """Watch ``peer``'s liveness from now on (as if just heard from)."""
        self._heard.setdefault(peer, self._now())

    def remove_peer(self, peer: int) -> None:
        """Stop watching ``peer`` (a node removed from the cluster)."""
        self._heard.pop(peer, None)
        self._down_reported.pop(peer, None)
        self._suspects.discard(peer)
        self._silence_factor.pop(peer, None)
        self._factor_changed.pop(peer, None)
        self._down_since.pop(peer, None)

    def silent_for(self, peer: int) -> float:
        """Seconds since anything was last heard from ``peer`` (0 for an unknown peer);
        read-only, for the node's operators' checks (a node removed as dead)."""
        heard = self._heard.get(peer)
        return 0.0 if heard is None else max(0.0, self._now() - heard)

    def heard_recently(self, peer: int) -> bool:
        """Whether a batch (or ping) came from ``peer`` within an election timeout."""
        heard = self._heard.get(peer)
        return heard is not None and self._now() - heard < self._silence

    def mark(self, group_id: int) -> None:
        """Group ``group_id`` has work (a proposal, a read, a transfer): serve it next pass."""
        self._dirty.add(group_id)
        self._wake()

    @property
    def syncing(self) -> bool:
        """A pass's synced write is outstanding (``sync_completed()`` is due)."""
        return self._readies is not None

    @property
    def has_work(self) -> bool:
        return bool(self._dirty)

    # ------------------------------------------------------------------ inputs
    def deliver_many(self, items: list[tuple[int, Message]], frm: int = 0) -> None:
        """Step messages from node ``frm`` (0: unknown) into their groups. Any batch, even
        an empty one (a ping), is a sign of life of ``frm``."""
        if frm:
            now = self._heard[frm] = self._now()
            if frm in self._down_reported:
                del self._down_reported[frm]
                since = self._down_since.pop(frm, now)  # its first report of this silence
                if now - since < FALSE_ALARM_TIMEOUTS * self._silence:  # rule 9b
                    self.false_alarms += 1
                    self._silence_factor[frm] = min(
                        self._silence_factor.get(frm, 1.0) * 2, SILENCE_FACTOR_MAX)
                    self._factor_changed[frm] = now
                self._events.peer_heard_again(frm)
                for group in self.groups.values():  # rule 9 of _raft: learners' leaders
                    node = group.node
                    if node.quiesced:
                        node.report_peer_up(frm)
                        if not node.quiesced:
                            self._dirty.add(group.group_id)
        groups = self.groups
        dirty = self._dirty
        for group_id, m in items:
            group = groups.get(group_id)
            if group is None:
                continue  # a group we do not host (yet, or any more)
            try:
                group.node.step(m)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the node
                self._events.message_failed(group_id, m, exc)
                continue
            dirty.add(group_id)
        self._wake()

    def report_unreachable(self, peer: int) -> None:
        """The transport could not deliver to ``peer``: every group probes it again."""
        for group in self.groups.values():
            group.node.report_unreachable(peer)

    def report_snapshot(self, group_id: int, peer: int, ok: bool) -> None:
        group = self.groups.get(group_id)
        if group is not None:
            group.node.report_snapshot(peer, ok)
            self.mark(group_id)

    def tick(self, late: bool = False) -> None:
        """Rules 8, 8a and 9: once per tick interval. ``late``: the owner's loop ran this
        tick at least a tick interval after it was due (and dropped the ticks it missed)."""
        if late:
            self.late_ticks += 1
            if self._skipped_in_a_row < self._late_skips_max:
                # rule 8a: what the peers sent during our stall is not read yet
                self._skipped_in_a_row += 1
                self.skipped_ticks += 1
                self._suspects.clear()
                self._transport.tick()
                return
        self._skipped_in_a_row = 0
        dirty = self._dirty
        groups = self.groups
        awake = self._awake
        self._ticks_to_scan -= 1
        if self._ticks_to_scan <= 0:
            self._ticks_to_scan = FULL_SCAN_TICKS
            awake.clear()
            awake.update(group_id for group_id, group in groups.items()
                         if not group.node.quiesced)
        for group_id in list(awake):
            group = groups.get(group_id)
            if group is None or group.node.quiesced:
                awake.discard(group_id)  # its timers are stopped: ticking it does nothing
                continue
            group.node.tick()
            dirty.add(group_id)
        self._wake()
        self._ticks_to_ping -= 1
        if self._ticks_to_ping <= 0:
            self._ticks_to_ping = self._ping_ticks
            self._transport.tick()
        self._check_liveness(self._now())

    def _check_liveness(self, now: float) -> None:
        suspects = self._suspects
        down_reported = self._down_reported
        factors = self._silence_factor
        for peer, heard in self._heard.items():
            silence = self._silence
            factor = factors.get(peer)
            if factor is not None:  # rule 9b: widened after a false alarm; calm narrows it
                if now - self._factor_changed[peer] >= SILENCE_DECAY_TIMEOUTS * silence:
                    factor /= 2
                    self._factor_changed[peer] = now
                    if factor <= 1.0:
                        del factors[peer], self._factor_changed[peer]
                        factor = None
                    else:
                        factors[peer] = factor
                if factor is not None:
                    silence *= factor
            if now - heard < silence:
                suspects.discard(peer)
                continue
            if peer not in suspects:
                suspects.add(peer)  # silent at two ticks in a row before it counts
                continue
            reported = down_reported.get(peer)
            if reported is not None and now - reported < silence:
                continue
            first = reported is None
            down_reported[peer] = now
            if first:
                self._down_since[peer] = now
            woken = 0
            for group in self.groups.values():
                node = group.node
                if node.quiesced:
                    node.report_peer_down(peer, down_reported)
                    if not node.quiesced:
                        woken += 1
                        self._dirty.add(group.group_id)
            self._events.peer_silent(peer, now - heard, woken, first)
            self._wake()

    # ------------------------------------------------------------------ the pass
    def run_pass(self) -> bool:
        """Rules 1-3 (and 5-7 when no sync is needed). Returns True if it started a synced
        write: the owner must call ``sync_completed()`` once it is durable."""
        if self._readies is not None:
            raise HostOrderError(f"node {self.node_id}: a pass began while the previous "
                                 "pass's write is outstanding (rule 1)")
        readies = self._take_readies()
        if not readies:
            return False
        send = self._send
        for group, rd in readies:
            for m in rd.messages:
                send(group.group_id, m)
        if not self._write(readies):
            return False
        early = self._early_applied
        for group, rd in readies:  # rule 6a, while the write syncs
            if not group.closed and _durable_before(rd):
                group.sm.apply(rd.committed_entries)
                early.add(group.group_id)
        return True

    def _take_readies(self) -> list[tuple[HostGroup, Ready]]:
        dirty, self._dirty = self._dirty, set()
        groups = self.groups
        readies = []
        awake = self._awake
        for group_id in dirty:
            group = groups.get(group_id)
            if group is None:
                continue
            group.sm.before_ready()
            node = group.node
            if node.quiesced:  # rule 8: what woke or quiesced a group marked it dirty
                awake.discard(group_id)
            else:
                awake.add(group_id)
            if node.has_ready():
                readies.append((group, node.ready()))
        return readies

    def _write(self, readies: list[tuple[HostGroup, Ready]]) -> bool:
        items: list[SaveItem] = []
        must_sync = False
        for group, rd in readies:
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                items.append((group.group_id, rd.hard_state, rd.entries, rd.snapshot))
                must_sync = must_sync or rd.must_sync
        self._readies = readies
        if items and must_sync:
            self._written = False
            self._storage.begin_sync(items)
            return True
        if items:
            self._storage.write(items)
        self._written = True
        self._finish_pass()
        return False

    def sync_completed(self) -> None:
        """Rule 4: the synced write that ``run_pass()`` started is durable."""
        if self._readies is None or self._written:
            raise HostOrderError(f"node {self.node_id}: sync_completed() without a synced "
                                 "write outstanding (rule 4)")
        self._written = True
        self._finish_pass()

    def _finish_pass(self) -> None:
        """Rules 5-7, for the pass whose write is complete."""
        readies = self._readies
        if readies is None or not self._written:
            raise HostOrderError(f"node {self.node_id}: after-persist work before the "
                                 "pass's write is complete (rule 5)")
        self._readies = None
        early, self._early_applied = self._early_applied, set()
        send = self._send
        dirty = self._dirty
        for group, rd in readies:
            for m in rd.messages_after_persist:
                send(group.group_id, m)
            sm = group.sm
            if not group.closed:
                if rd.snapshot is not None:
                    sm.restore(rd.snapshot)
                if rd.committed_entries and group.group_id not in early:
                    sm.apply(rd.committed_entries)
            node = group.node
            node.advance(rd)
            if not group.closed:
                sm.on_ready(rd)
            if node.has_ready():
                dirty.add(group.group_id)
        if dirty:
            self._wake()

    # ------------------------------------------------------------------ shutdown
    def transfer_leaderships(self, is_reachable: Callable[[int], bool]) -> bool:
        """One round of a graceful shutdown: every group led here is asked to hand its
        leadership to a reachable voter (chosen at random among several). Returns False
        once nothing is left to move: no group is led here, or none has another voter."""
        me = self.node_id
        led = [g for g in self.groups.values() if g.node.role == Role.LEADER]
        if all(not (g.node.conf_state.voters - {me}) for g in led):
            return False
        for group in led:
            reachable = [v for v in sorted(group.node.conf_state.voters - {me})
                         if is_reachable(v)]
            if not reachable:
                continue
            group.node.transfer_leader(reachable[0] if len(reachable) == 1 else
                                       self._rng.choice(reachable))
            self.mark(group.group_id)
        return True

