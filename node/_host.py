"""``RaftHost``: the asyncio adapter around the node's ``HostDriver`` (``raftka.raft.host``).

Every decision (what a pass serves, the order of sends, writes and applies, group commit,
commit-only writes, ticking and quiescence, node-level liveness, leadership moves at
shutdown) is the driver's, in ``raft/host.py``, whose module docstring has the numbered
ordering rules. This module only runs it on the node's event loop (uvloop) and connects its
seams: the clock is ``time.monotonic``, the transport the gRPC ``PeerTransport``, the log
store the node's ``RocksLogDB`` (synced writes on the sync thread), the state machines the
partition, offsets and controller replicas. The simulator (``tests/sim``) runs the same
driver over a simulated network and disk.

Asyncio tasks owned here (see also node/README.md):

- ``_ticker``: calls ``driver.tick()`` every ``tick_s`` (ticks every group that is not
  quiesced, pings idle peers through ``PeerTransport.tick``, checks node-level liveness).
  It measures its own lag: a tick that runs a whole interval late or more (the loop
  stalled) drops the ticks missed meanwhile and is reported late (``tick(late=True)``,
  driver rule 8a: not counted against peers whose batches are still unread), so election
  timeouts widen while the loop lags (``driver.late_ticks`` / ``skipped_ticks`` count them;
  the ticker logs a warning at most every 10 s while it runs late).
- ``_ready_loop``: the only caller of ``driver.run_pass()``, whenever the driver called
  ``wake`` (the ``_wakeup`` event). A pass that must sync hands its ONE ``save_many`` (one
  WAL sync for every group of the pass) to the host's own sync thread (``_SyncThread``) and
  awaits it, so the event loop keeps serving while the disk syncs; then it calls
  ``driver.sync_completed()``, which sends the after-persist messages, applies and advances.
  Messages and proposals that arrive during the sync are stepped into the RawNodes at once
  and ride the next pass: that is the group commit.

Messages from peers are stepped as they arrive: the ``RaftPeer`` stream handler calls
``driver.deliver_many`` (bound as ``RaftHost.deliver_many``) on the loop thread.

Quiescence (``RaftTiming.quiesce``, raft/core/_raft.py rules 7-10): an idle group's leader
tells its followers to quiesce, and the group then costs nothing per tick: the ticker skips
it and no heartbeat is sent for it. What a heartbeat told a follower per group (my leader
is alive) comes from node-level liveness instead (driver rule 9): every batch from a peer
(messages, or the ping the transport sends each tick when it has nothing else for that
peer) counts as a sign of life of that node. A peer silent for an election timeout at two
ticks in a row is reported down to every quiesced group (``RawNode.report_peer_down``),
again every election timeout while it stays silent: followers of that node wake and
campaign, leaders with a follower there wake and run check-quorum again. Any message,
proposal or read wakes a group by itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from typing import Callable, Protocol

from raftka.raft import Config, ConfState, HardState, RawNode, StorageCorruption
from raftka.raft.host import HostClock, HostDriver, HostGroup, StateMachine
from raftka.raft.rocksdb import RocksGroupStorage, RocksLogDB

from ._transport import PeerTransport

__all__ = ["Group", "HostObserver", "RaftHost", "RaftTiming", "StateMachine"]

log = logging.getLogger("raftka.host")
_LAG_REPORT_S = 10.0  # the ticker logs its late ticks at most this often


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
    ``flush_wal(True)``, which releases the GIL during the fsync: bench/README.md), never on
    the loop thread. At most one write is outstanding: the ready loop awaits each."""

    def __init__(self, save: Callable[[list], None], name: str,
                 observe: Callable[[float], None] | None = None) -> None:
        self._save = save
        self._observe = observe  # seconds of each synced write (metrics; thread-safe)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            items, future, loop = job
            started = time.perf_counter()
            try:
                self._save(items)
                if self._observe is not None:
                    self._observe(time.perf_counter() - started)
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


class Group(HostGroup):
    """A group on this node: the driver's ``HostGroup`` plus its RocksDB store."""

    __slots__ = ("storage", "bootstrapped")

    def __init__(self, group_id: int, node: RawNode, storage: RocksGroupStorage,
                 sm: StateMachine) -> None:
        super().__init__(group_id, node, sm)
        self.storage = storage
        self.bootstrapped = False  # created empty by this add_group (a brand-new replica)


class _MonotonicClock:
    """``HostClock`` in seconds."""

    now = staticmethod(time.monotonic)


class _RocksHostStorage:
    """``HostStorage`` over the node's RocksLogDB: unsynced writes inline on the loop
    thread, synced ones on the sync thread; ``synced`` is the future of the last one."""

    def __init__(self, db: RocksLogDB) -> None:
        self._db = db
        self.thread: _SyncThread | None = None
        self.synced: asyncio.Future | None = None

    def write(self, items: list) -> None:
        self._db.save_many(items, sync=False)

    def begin_sync(self, items: list) -> None:
        self.synced = self.thread.save(items)


class HostObserver(Protocol):
    """What the host reports to the node's metrics (``_metrics.NodeMetrics``)."""

    def pass_seconds(self, seconds: float) -> None:
        """One ready-loop pass took ``seconds`` (its synced write included); loop thread."""
        ...

    def sync_seconds(self, seconds: float) -> None:
        """One synced write (one WAL sync) took ``seconds``; called on the sync thread."""
        ...


class RaftHost:
    """The asyncio adapter around the node's ``HostDriver`` (see the module docstring)."""

    def __init__(self, node_id: int, db: RocksLogDB, peers: dict[int, str],
                 timing: RaftTiming, seed: int | None = None,
                 clock: HostClock | None = None, observer: HostObserver | None = None,
                 open_channel: Callable | None = None) -> None:
        """``clock``: seconds, ``time.monotonic`` unless a test drives time itself.
        ``observer``: told the duration of every pass and sync (metrics)."""
        self.node_id = node_id
        self.observer = observer
        # RawNode.event_counts() of the groups removed so far, summed: the node's counters
        # of elections and transfers must not go down when a topic is deleted.
        self.retired_event_counts = [0, 0, 0, 0]
        self.db = db
        self.timing = timing
        self.transport = PeerTransport(node_id, peers, self._on_unreachable, open_channel)
        self._rng = random.Random(seed if seed is not None else time.time_ns() ^ node_id)
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._storage = _RocksHostStorage(db)
        self.driver = HostDriver(
            node_id, transport=self.transport, storage=self._storage,
            clock=clock if clock is not None else _MonotonicClock(),
            wake=self._wakeup.set, election_timeout=timing.election_tick * timing.tick_s,
            rng=random.Random(self._rng.getrandbits(64)),
            # rule 9: as often as a heartbeat, and at least three times an election timeout
            ping_ticks=max(1, min(timing.heartbeat_tick, timing.election_tick // 3)))
        self.groups: dict[int, Group] = self.driver.groups  # type: ignore[assignment]
        # The driver's inputs, bound once: the peer stream handler and the replicas call
        # them per batch / per request.
        self.deliver_many = self.driver.deliver_many
        self.mark = self.driver.mark

    # ------------------------------------------------------------------ groups
    def add_group(self, group_id: int, sm: StateMachine, bootstrap: ConfState | None,
                  applied: int | None = None) -> Group:
        """Start the replica of ``group_id``. ``bootstrap``: the initial configuration if
        nothing is stored yet; an empty ``ConfState()`` starts a replica that belongs to no
        configuration until the group's leader adds it (a partition move): it never
        campaigns and learns the configuration from the log or a snapshot. ``applied``: index the state machine already reflects
        (default: the snapshot index, so every committed entry after it is re-applied).

        A group whose replica was moved off this node earlier left a tombstone (its term,
        vote and vote floor: ``remove_group(..., tombstone=True)``); the replica re-created
        here starts from it (rule 13 of ``raft/core/_raft.py``) and is never bootstrapped:
        it learns its configuration from the group's leader."""
        if group_id in self.groups:
            raise ValueError(f"group {group_id} is already running on node {self.node_id}")
        storage = self.db.group(group_id)
        empty = storage.last_index() == 0 and storage.snapshot().meta.conf_state == ConfState()
        fresh = empty and storage.hard_state() == HardState()  # nothing ever held here
        if empty:
            if bootstrap is None:
                raise ValueError(f"group {group_id} has no state and no initial configuration")
            if not fresh:
                log.info("group %d: starting from the state its replica left on node %d "
                         "(term %d, vote floor %s); it waits for the leader to add it",
                         group_id, self.node_id, storage.hard_state().term,
                         tuple(storage.vote_floor()))
            elif bootstrap != ConfState():  # empty: a new replica that the leader will add
                storage.bootstrap(bootstrap)
        snap = storage.snapshot()
        if not snap.is_empty:
            sm.restore(snap)
        t = self.timing
        cfg = Config(
            self.node_id, election_tick=t.election_tick, heartbeat_tick=t.heartbeat_tick,
            applied=applied if applied is not None else snap.meta.index,
            max_size_per_msg=4 << 20, max_inflight_msgs=64, max_inflight_learner_msgs=4,
            quiesce=t.quiesce,
            vote_only_with_configuration=True,  # every server is added as a learner first
        )
        node = RawNode(cfg, storage, random.Random(self._rng.getrandbits(64)))
        group = Group(group_id, node, storage, sm)
        group.bootstrapped = fresh
        self.driver.add_group(group)
        return group

    def remove_group(self, group_id: int, drop_data: bool, tombstone: bool = False) -> None:
        """Stop the replica of ``group_id``; ``drop_data``: delete what it stored. With
        ``tombstone`` (the replica moved off this node; the group lives on elsewhere) its
        term, vote and vote floor stay behind for a replica re-created here later (rule 13
        of ``raft/core/_raft.py``); without, nothing is left (the topic was deleted)."""
        group = self.driver.remove_group(group_id)
        if group is not None:
            for i, n in enumerate(group.node.event_counts()):
                self.retired_event_counts[i] += n
        if not drop_data:
            return
        if tombstone:
            if group is None:
                return  # not running here: whatever it left (a tombstone) stays
            self.db.drop_group(group_id, group.node.tombstone())
        else:
            self.db.drop_group(group_id)

    def _on_unreachable(self, peer: int) -> None:
        self.driver.report_unreachable(peer)

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        self.transport.start()
        self._storage.thread = _SyncThread(
            self.db.save_many, f"raft-sync-{self.node_id}",
            self.observer.sync_seconds if self.observer is not None else None)
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
        if self._storage.thread is not None:
            self._storage.thread.stop()
        await self.transport.close()

    async def _ticker(self) -> None:
        interval = self.timing.tick_s
        driver = self.driver
        for peer in self.transport.peer_ids:
            driver.add_peer(peer)
        next_at = time.monotonic()
        report_at = next_at + _LAG_REPORT_S
        ticks = late_ticks = 0
        lag_max_s = 0.0
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            # The loop's own lag: how late this tick runs. A whole interval or more means
            # the loop stalled (a starved CPU, a long callback): the ticks missed meanwhile
            # are dropped instead of fired back to back, and the driver skips this one
            # (rule 8a) so the stall is not counted against the peers whose batches wait
            # unread in our sockets. Election timeouts thus widen while the loop lags.
            now = time.monotonic()
            lag_s = now - next_at
            late = lag_s >= interval
            if late:
                next_at = now
                late_ticks += 1
            ticks += 1
            lag_max_s = max(lag_max_s, lag_s)
            driver.tick(late)
            if now >= report_at:  # a stalling loop says so, at most once per period
                if late_ticks:
                    log.warning("raft ticker: %d of %d ticks ran a tick interval late or "
                                "more in the last %.0f s (max lag %.0f ms): the event loop "
                                "is starved; election timeouts widen meanwhile", late_ticks,
                                ticks, _LAG_REPORT_S, lag_max_s * 1000)
                report_at = now + _LAG_REPORT_S
                ticks = late_ticks = 0
                lag_max_s = 0.0

    async def _ready_loop(self) -> None:
        wakeup = self._wakeup
        while True:
            await wakeup.wait()
            wakeup.clear()
            try:
                await self._pass()
            except (asyncio.CancelledError, StorageCorruption):
                raise  # damage found while running: the server says so in one line
            except Exception:
                # Storage failures end up here: a node that cannot persist must not keep
                # acknowledging. Stop the loop; the server notices and exits non-zero.
                log.exception("raft ready loop failed; the node stops processing raft")
                raise

    async def _pass(self) -> None:
        """One pass of the driver; awaits its synced write (on the sync thread) if any."""
        started = time.perf_counter()
        if self.driver.run_pass():
            await self._storage.synced
            self.driver.sync_completed()
        if self.observer is not None:
            self.observer.pass_seconds(time.perf_counter() - started)

    # ------------------------------------------------------------------ shutdown
    async def transfer_leaderships_away(self, timeout_s: float) -> None:
        """Graceful shutdown: move every leadership we hold to an up-to-date peer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.driver.transfer_leaderships(self.transport.is_reachable):
                return
            await asyncio.sleep(self.timing.tick_s)
