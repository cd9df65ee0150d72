"""``RaftHost``: every Raft group replica of one node, driven by one loop.

Asyncio tasks owned here (see also node/README.md):

- ``_ticker``: every ``tick_s`` ticks every group that is not quiesced and marks it dirty,
  pings idle peers (``PeerTransport.tick``) and runs the node-level liveness check.
- ``_ready_loop``: the only caller of ``ready()``/``advance()``. Each pass takes the Ready of
  every dirty group and runs the RawNode ordering rules for all of them at once:
  1. send every Ready's ``messages`` (leaders replicate while they write: thesis §10.2.1);
  2. persist every group's hard state/entries/snapshot with ONE ``save_many`` (one WAL
     sync) on the host's own sync thread (``_SyncThread``), so the event loop keeps
     serving while the disk syncs;
  3. send ``messages_after_persist``;
  4. hand snapshots and committed entries to each group's state machine;
  5. ``advance``.
  Messages and proposals that arrive during the sync are stepped into the RawNodes at once
  and ride the next pass: that is the group commit.

Messages from peers are stepped as they arrive (``deliver_many``), on the loop thread.

Quiescence (``RaftTiming.quiesce``, raft/_raft.py rules 7-10): an idle group's leader tells
its followers to quiesce, and the group then costs nothing per tick: the ticker skips it
and no heartbeat is sent for it. What a heartbeat told a follower per group (my leader is
alive) comes from node-level liveness instead: every batch from a peer (messages, or the
ping the transport sends each tick when it has nothing else for that peer) counts as a sign
of life of that node. A peer silent for an election timeout is reported down to every
quiesced group (``RawNode.report_peer_down``): followers of that node wake and campaign,
leaders with a follower there wake and run check-quorum again. Any message, proposal or
read wakes a group by itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from typing import Callable, Protocol

from raftka.raft import Config, ConfState, Entry, Message, RawNode, Ready, Role, Snapshot
from raftka.raft.rocksdb import RocksGroupStorage, RocksLogDB

from ._transport import PeerTransport

log = logging.getLogger("raftka.host")


class StateMachine(Protocol):
    """What a Raft group's replica applies. Called on the loop thread, in log order."""

    def restore(self, snapshot: Snapshot) -> None: ...

    def before_ready(self) -> None:
        """Just before the ready loop takes this group's Ready: propose what is queued."""
        ...

    def apply(self, entries: list[Entry]) -> None: ...

    def on_ready(self, rd: Ready) -> None:
        """After the Ready is durable and applied: role changes, persisted entries."""
        ...


class RaftTiming:
    def __init__(self, tick_s: float = 0.05, election_tick: int = 6, heartbeat_tick: int = 2,
                 quiesce: bool = True):
        self.tick_s = tick_s
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.quiesce = quiesce


class _SyncThread:
    """One long-lived thread that runs the ready loop's synced writes.

    Replaces ``asyncio.to_thread`` per pass (a thread-pool submit, a context copy and two
    chained futures each time: ~12% of a leader's samples at 1,000 writes/s). The loop puts
    ``(items, future)`` on a ``SimpleQueue`` (the thread blocks in ``get()`` without polling
    and without the GIL) and awaits the future; the thread completes it with
    ``call_soon_threadsafe``. The write itself is ``save_many`` (unsynced write, then
    ``flush_wal(True)``, which releases the GIL during the fsync: PERF-FACTS), never on the
    loop thread. At most one write is outstanding: the ready loop awaits each."""

    def __init__(self, save: Callable[[list], None], name: str) -> None:
        self._save = save
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            items, future, loop = job
            try:
                self._save(items)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting loop
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_set_result, future)

    def save(self, items: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((items, future, loop))
        return future

    def stop(self) -> None:
        """Ends the thread after the write in progress (if any); does not wait."""
        self._queue.put(None)


def _set_result(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Group:
    __slots__ = ("group_id", "node", "storage", "sm", "closed", "bootstrapped")

    def __init__(self, group_id: int, node: RawNode, storage: RocksGroupStorage,
                 sm: StateMachine) -> None:
        self.group_id = group_id
        self.node = node
        self.storage = storage
        self.sm = sm
        self.closed = False
        self.bootstrapped = False  # created empty by this add_group (a brand-new replica)


class RaftHost:
    def __init__(self, node_id: int, db: RocksLogDB, peers: dict[int, str],
                 timing: RaftTiming, seed: int | None = None) -> None:
        self.node_id = node_id
        self.db = db
        self.timing = timing
        self.groups: dict[int, Group] = {}
        self.transport = PeerTransport(node_id, peers, self._on_unreachable)
        self._rng = random.Random(seed if seed is not None else time.time_ns() ^ node_id)
        self._dirty: set[int] = set()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._sync: _SyncThread | None = None
        # Node-level liveness: peer -> time we last got a batch from it; peer -> time we
        # last reported it down to the quiesced groups (repeated every election timeout
        # while it stays silent: a group may have quiesced since), until heard from again.
        self._heard: dict[int, float] = {}
        self._down_reported: dict[int, float] = {}
        self._suspects: set[int] = set()

    # ------------------------------------------------------------------ groups
    def add_group(self, group_id: int, sm: StateMachine, bootstrap: ConfState | None,
                  applied: int | None = None) -> Group:
        """Start the replica of ``group_id``. ``bootstrap``: the initial configuration if
        nothing is stored yet. ``applied``: index the state machine already reflects
        (default: the snapshot index, so every committed entry after it is re-applied)."""
        if group_id in self.groups:
            raise ValueError(f"group {group_id} is already running on node {self.node_id}")
        storage = self.db.group(group_id)
        fresh = storage.last_index() == 0 and storage.snapshot().meta.conf_state == ConfState()
        if fresh:
            if bootstrap is None:
                raise ValueError(f"group {group_id} has no state and no initial configuration")
            storage.bootstrap(bootstrap)
        snap = storage.snapshot()
        if not snap.is_empty:
            sm.restore(snap)
        t = self.timing
        cfg = Config(
            self.node_id, election_tick=t.election_tick, heartbeat_tick=t.heartbeat_tick,
            applied=applied if applied is not None else snap.meta.index,
            max_size_per_msg=4 << 20, max_inflight_msgs=64, quiesce=t.quiesce,
        )
        node = RawNode(cfg, storage, random.Random(self._rng.getrandbits(64)))
        group = Group(group_id, node, storage, sm)
        group.bootstrapped = fresh
        self.groups[group_id] = group
        self.mark(group_id)
        return group

    def remove_group(self, group_id: int, drop_data: bool) -> None:
        group = self.groups.pop(group_id, None)
        if group is not None:
            group.closed = True
        if drop_data:
            self.db.drop_group(group_id)

    def mark(self, group_id: int) -> None:
        self._dirty.add(group_id)
        self._wakeup.set()

    # ------------------------------------------------------------------ inputs
    def deliver_many(self, items: list[tuple[int, Message]], frm: int = 0) -> None:
        """Step messages from node ``frm`` (0: unknown) into their groups. Any batch, even
        an empty one (a ping), is a sign of life of ``frm``."""
        if frm:
            self._heard[frm] = time.monotonic()
            if frm in self._down_reported:
                del self._down_reported[frm]
                log.info("peer %d is heard from again", frm)
        groups = self.groups
        for group_id, m in items:
            group = groups.get(group_id)
            if group is None:
                continue  # a group we do not host (yet, or any more)
            try:
                group.node.step(m)
            except Exception:  # noqa: BLE001 - one bad message must not stop the node
                log.exception("group %d: dropping message %r", group_id, m)
                continue
            self._dirty.add(group_id)
        self._wakeup.set()

    def _on_unreachable(self, peer: int) -> None:
        for group in self.groups.values():
            group.node.report_unreachable(peer)

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        self.transport.start()
        self._sync = _SyncThread(self.db.save_many, f"raft-sync-{self.node_id}")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._ticker(), name="raft-ticker"),
            loop.create_task(self._ready_loop(), name="raft-ready-loop"),
        ]

    @property
    def ready_loop(self) -> asyncio.Task:
        """Ends only if the loop failed (e.g. storage): the node must then stop."""
        return self._tasks[1]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sync is not None:
            self._sync.stop()
        await self.transport.close()

    async def _ticker(self) -> None:
        interval = self.timing.tick_s
        silence_s = self.timing.election_tick * interval
        start = time.monotonic()
        for peer in self.transport.peer_ids:
            self._heard.setdefault(peer, start)
        next_at = start
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            dirty = self._dirty
            for group in list(self.groups.values()):
                node = group.node
                if node.quiesced:
                    continue  # its timers are stopped: ticking it would do nothing
                node.tick()
                dirty.add(group.group_id)
            self._wakeup.set()
            self.transport.tick()
            self._check_liveness(time.monotonic(), silence_s)

    def _check_liveness(self, now: float, silence_s: float) -> None:
        suspects = self._suspects
        for peer, heard in self._heard.items():
            if now - heard < silence_s:
                suspects.discard(peer)
                continue
            if peer not in suspects:
                # Silent at two ticks in a row before it counts: after a stall of our own
                # loop the peer's batches may still sit unread in the stream handler.
                suspects.add(peer)
                continue
            if now - self._down_reported.get(peer, 0.0) < silence_s:
                continue
            first = peer not in self._down_reported
            self._down_reported[peer] = now
            woken = 0
            for group in self.groups.values():
                node = group.node
                if node.quiesced:
                    node.report_peer_down(peer)
                    if not node.quiesced:
                        woken += 1
                        self._dirty.add(group.group_id)
            if first or woken:
                log.info("peer %d silent for %.0f ms: woke %d quiesced groups", peer,
                         (now - heard) * 1000, woken)
            self._wakeup.set()

    async def _ready_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._process_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Storage failures end up here: a node that cannot persist must not keep
                # acknowledging. Stop the loop; the server notices and exits non-zero.
                log.exception("raft ready loop failed; the node stops processing raft")
                raise

    async def _process_once(self) -> None:
        dirty, self._dirty = self._dirty, set()
        readies: list[tuple[Group, Ready]] = []
        for group_id in dirty:
            group = self.groups.get(group_id)
            if group is None:
                continue
            group.sm.before_ready()
            if group.node.has_ready():
                readies.append((group, group.node.ready()))
        if not readies:
            return
        send = self.transport.send
        items = []
        must_sync = False
        for group, rd in readies:
            for m in rd.messages:
                send(group.group_id, m)
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                items.append((group.group_id, rd.hard_state, rd.entries, rd.snapshot))
                must_sync = must_sync or rd.must_sync
        if items and must_sync:
            await self._sync.save(items)
        elif items:
            # Only commit indexes moved: an unsynced write, no thread hop, no fsync wait.
            self.db.save_many(items, sync=False)
        for group, rd in readies:
            for m in rd.messages_after_persist:
                send(group.group_id, m)
            if not group.closed:
                if rd.snapshot is not None:
                    group.sm.restore(rd.snapshot)
                if rd.committed_entries:
                    group.sm.apply(rd.committed_entries)
            group.node.advance(rd)
            if not group.closed:
                group.sm.on_ready(rd)
            if group.node.has_ready():
                self._dirty.add(group.group_id)
        if self._dirty:
            self._wakeup.set()

    # ------------------------------------------------------------------ shutdown
    async def transfer_leaderships_away(self, timeout_s: float) -> None:
        """Graceful shutdown: move every leadership we hold to an up-to-date peer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            led = [g for g in self.groups.values() if g.node.role == Role.LEADER]
            if not led:
                return
            for group in led:
                voters = sorted(group.node.conf_state.voters - {self.node_id})
                reachable = [v for v in voters if self.transport.is_reachable(v)]
                if not reachable:
                    continue
                group.node.transfer_leader(reachable[0] if len(reachable) == 1 else
                                           self._rng.choice(reachable))
                self.mark(group.group_id)
            await asyncio.sleep(self.timing.tick_s)
            if all(not (g.node.conf_state.voters - {self.node_id}) for g in led):
                return

