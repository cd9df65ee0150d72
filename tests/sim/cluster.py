"""A deterministic simulated cluster of real ``RawNode``s driven by the node's real host
driver (TigerBeetle VOPR / FoundationDB simulation style).

One ``random.Random(seed)`` drives everything: the network's faults, every node's tick
phase and drift, every RawNode's own RNG (derived from it in a fixed order), disk latency.
Time is an integer; nothing reads the wall clock, sleeps or starts a thread, so a seed
replays exactly.

Each node is a ``SimNode`` running one ``raftka.raft.host.HostDriver`` -- the very driver
the broker runs under asyncio (``node/_host.py``) -- for every Raft group it hosts
(``SimOptions.groups``; group 1, ``MAIN_GROUP``, is the one the methods below talk about).
The simulator only plays the driver's surroundings, through its protocols:

- the clock: the simulated time;
- the transport (``SimTransport``): every message goes through the faulty ``Network`` as
  its own event; each tick, an empty batch (a ping) goes to every peer that was sent
  nothing since the previous tick, as ``PeerTransport.tick`` does (with quiescence on: a
  ping only matters to a quiesced group);
- the storage (``disk.SimDisk``): a synced write completes after a random disk latency;
  what is not synced is lost in a crash;
- the state machines (``SimMachine``): a ``ListStateMachine`` per replica, the snapshot and
  compaction policy, ReadIndex results, and the acks=all client: ``produce()`` queues
  payloads at a node, the driver's pass proposes them as one batch (``before_ready``, as a
  partition does), and the client is answered when the node applies the entry with the
  term it was proposed in (committed and applied on that node, like ``PartitionReplica``).

So the node's own code decides the pass, group commit (what arrives while a sync is in
flight rides the next pass), the persist-then-send order, commit-only writes, ticks and
quiescence, and node-level liveness; the simulator decides nothing of that.

Events sit in one heap ordered by ``(time, sequence)``: ticks, message deliveries, pings,
the driver's passes (a wake schedules one at the current time, so whatever else is due at
that time is stepped first and rides the same pass), the completion of a synced write,
transport reports (unreachable peer, snapshot sent or failed). After every call into a
driver (and so into its RawNodes) the ``Checker`` of each group runs (``checker.py``); every
message is checked as it leaves its node, and every client acknowledgement when given.

Membership changes (``propose_conf_change``) are simulated with one group: a node added
then hosts that group only.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import heapq
import random
from dataclasses import dataclass
from typing import Callable, Iterable

from raftka.raft import (
    ConfChange,
    ConfChangeKind,
    ConfChangeRejected,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    MsgType,
    ProposalDropped,
    RawNode,
    Ready,
    ReadState,
    Role,
    Snapshot,
)
from raftka.raft.host import HostDriver, HostGroup, HostOrderError, SaveItem

from .checker import Checker
from .disk import SimDisk
from .errors import CoreError, InvariantViolation, LivenessFailure, SimulationFailure
from .network import Network
from .statemachine import ListStateMachine

EV_TICK = 0
EV_DELIVER = 1
EV_SYNC = 2  # a synced write of the disk completes
EV_LOCAL = 3  # a snapshot report from the node's own transport
EV_UNREACHABLE = 4
EV_PING = 5  # node-level liveness ping (an empty batch)
EV_PASS = 6  # the driver asked for a pass (its owner's ready loop runs)

UP = "up"
DOWN = "down"  # crashed; may restart
STOPPED = "stopped"  # removed from the group and shut down; never restarts

MAIN_GROUP = 1
MAX_PASSES_PER_TIME = 10_000  # passes one node may run at one simulated time


@dataclass
class SimOptions:
    """Knobs of one simulated run. Times are in simulated units."""

    tick_interval: int = 10
    tick_jitter: int = 0  # each node's tick interval is tick_interval +- this (clock drift)
    latency_min: int = 1
    latency_max: int = 5
    loss: float = 0.0
    duplication: float = 0.0
    long_delay: float = 0.0  # probability a message is held back up to long_delay_max
    long_delay_max: int = 0
    disk_latency_min: int = 0
    disk_latency_max: int = 0  # 0: a synced write completes at the time it began
    groups: int = 1  # Raft groups on the initial nodes, all driven by each node's driver
    # RawNode configuration
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_learner_msgs: int = 0
    max_uncommitted_size: int = 64 << 20
    quiesce: bool = False  # idle groups stop their timers (node-level liveness wakes them)
    vote_only_with_configuration: bool = False  # rule 13's guard (the broker turns it on)
    # the application
    snapshot_interval: int = 0  # compact once this many entries were applied (0: never)
    compaction_keep: int = 0  # entries kept behind the snapshot for slow followers
    stop_removed: bool = False  # shut a node down once its removal is applied anywhere
    unique_payloads: bool = False  # every proposed payload is distinct: check exactly-once
    # reporting
    trace_size: int = 30
    verbose: bool = False  # print every trace line as it happens


class SimReplica:
    """One group's replica on one node: what the checker looks at. ``storage`` is on the
    node's disk; ``raw``, ``sm`` and ``machine`` are lost in a crash."""

    __slots__ = ("id", "group_id", "storage", "durable_hard_state", "raw", "sm", "machine",
                 "seen_commit", "seen_role", "seen_term", "commit_points")

    def __init__(self, node_id: int, group_id: int, storage: MemoryStorage,
                 durable_hard_state: Callable[[], HardState]) -> None:
        self.id = node_id
        self.group_id = group_id
        self.storage = storage
        self.durable_hard_state = durable_hard_state  # what survives a crash now
        self.raw: RawNode | None = None
        self.sm = ListStateMachine()
        self.machine: SimMachine | None = None
        # what the checker saw last in this incarnation
        self.seen_commit = 0
        self.seen_role: Role | None = None
        self.seen_term = 0
        self.commit_points: dict[int, int] = {}  # index -> term, as leader (see checker)


class SimNode:
    """One node: its disk survives crashes; its driver, RawNodes and state machines not."""

    __slots__ = ("id", "status", "incarnation", "tick_interval", "disk", "driver",
                 "transport", "replicas", "was_member", "pass_due", "passes_at")

    def __init__(self, node_id: int, tick_interval: int, disk: SimDisk | None = None) -> None:
        self.id = node_id
        self.status = DOWN
        self.incarnation = 0
        self.tick_interval = tick_interval
        self.disk = disk
        self.driver: HostDriver | None = None
        self.transport: SimTransport | None = None
        self.replicas: dict[int, SimReplica] = {}
        self.was_member = False
        self.pass_due = False
        self.passes_at = (0, 0)  # (time, passes run at that time)

    @property
    def up(self) -> bool:
        return self.status == UP

    @property
    def raw(self) -> RawNode | None:
        """The main group's RawNode (None while down)."""
        return self.replicas[MAIN_GROUP].raw

    @property
    def storage(self) -> MemoryStorage:
        """The main group's log on this node's disk."""
        return self.replicas[MAIN_GROUP].storage

    @property
    def sm(self) -> ListStateMachine:
        return self.replicas[MAIN_GROUP].sm

    @property
    def busy(self) -> bool:
        """A synced write is in flight (a crash now loses it)."""
        return self.disk.syncing

    def describe(self) -> str:
        if self.status != UP:
            return f"n{self.id}:{self.status} last={self.storage.last_index()}"
        parts = []
        for gid, replica in self.replicas.items():
            raw = replica.raw
            conf = raw.conf_state
            members = "v" + ",".join(map(str, sorted(conf.voters)))
            if conf.learners:
                members += " l" + ",".join(map(str, sorted(conf.learners)))
            group = f"g{gid} " if len(self.replicas) > 1 else ""
            quiesced = " q" if raw.quiesced else ""
            parts.append(f"{group}{raw.role.name[:4]} t{raw.term} commit={raw.commit_index} "
                         f"applied={replica.sm.applied_index} last={replica.storage.last_index()}"
                         f" [{members}]{quiesced}")
        busy = " syncing" if self.busy else ""
        return f"n{self.id}:" + " | ".join(parts) + busy


class SimMachine:
    """The driver's ``StateMachine`` for one replica: applies into its ``ListStateMachine``
    and answers the acks=all client."""

    __slots__ = ("cluster", "node", "replica", "queue", "waiters")

    def __init__(self, cluster: Cluster, node: SimNode, replica: SimReplica) -> None:
        self.cluster = cluster
        self.node = node
        self.replica = replica
        self.queue: list[bytes] = []  # produced, not proposed yet
        self.waiters: collections.deque[tuple[int, int, bytes]] = collections.deque()
        # (index, term proposed in, payload), in index order

    def restore(self, snapshot: Snapshot) -> None:
        self.cluster._restore(self, snapshot)

    def before_ready(self) -> None:
        if self.queue:
            self.cluster._propose_queued(self)

    def apply(self, entries: list[Entry]) -> None:
        self.cluster._apply(self, entries)

    def on_ready(self, rd: Ready) -> None:
        self.cluster._on_ready(self, rd)


class SimTransport:
    """The driver's ``HostTransport`` for one node."""

    __slots__ = ("cluster", "node", "sent_since_tick")

    def __init__(self, cluster: Cluster, node: SimNode) -> None:
        self.cluster = cluster
        self.node = node
        self.sent_since_tick: set[int] = set()

    def send(self, group_id: int, message: Message) -> None:
        self.sent_since_tick.add(message.to)
        self.cluster._send(self.node, group_id, message)

    def tick(self) -> None:
        # Without quiescence no group is ever quiesced, so node-level liveness reports
        # reach nobody and the pings change nothing: not simulated (they cost a third of
        # a run's events).
        if self.cluster.options.quiesce:
            self.cluster._ping_idle_peers(self.node, self.sent_since_tick)
        self.sent_since_tick = set()


class SimClock:
    """The drivers' ``HostClock``: the simulated time."""

    __slots__ = ("cluster",)

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def now(self) -> int:
        return self.cluster.now


class SimHostEvents:
    """The driver's ``HostEvents``: into the trace; a message the core refuses fails the
    run (the node would log it and go on, but in the simulator it is a core bug)."""

    __slots__ = ("cluster", "node_id")

    def __init__(self, cluster: Cluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id

    def message_failed(self, group_id: int, message: Message, error: Exception) -> None:
        raise CoreError(self.cluster.report(
            f"step raised {type(error).__name__}",
            f"n{self.node_id} group {group_id}: {message!r}: {error}")) from error

    def peer_silent(self, peer: int, silent_for: float, woken: int, first: bool) -> None:
        self.cluster._trace("n%d: node-level liveness reports n%d down (silent %d, woke %d)",
                            self.node_id, peer, silent_for, woken)
        self.cluster.stats["peer_down_reports"] += 1

    def peer_heard_again(self, peer: int) -> None:
        self.cluster._trace("n%d: hears n%d again", self.node_id, peer)


@dataclass
class ReadRequest:
    node: int
    floor: int  # the cluster's commit index when the read was requested
    requested_at: int
    results: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    # (node, read index, time)


class Cluster:
    def __init__(
        self,
        nodes: int | ConfState = 3,
        seed: int = 0,
        *,
        options: SimOptions | None = None,
        replay: str | None = None,
        driver_factory: Callable[..., HostDriver] = HostDriver,
        **overrides,
    ) -> None:
        """``driver_factory``: builds each node's host driver (a test injecting a bug into
        the driver passes a subclass)."""
        options = options or SimOptions()
        if overrides:
            options = dataclasses.replace(options, **overrides)
        self.options = options
        self.seed = seed
        self.replay = replay or f"re-run the test that built Cluster(seed={seed})"
        self.rng = random.Random(seed)
        self.now = 0
        self.events = 0
        self._queue: list[tuple[int, int, int, int, object]] = []
        self._sequence = 0
        self._driver_factory = driver_factory
        self._clock = SimClock(self)
        self.network = Network(
            self.rng, loss=options.loss, duplication=options.duplication,
            latency_min=options.latency_min, latency_max=options.latency_max,
            long_delay=options.long_delay, long_delay_max=options.long_delay_max,
        )
        self.group_ids = list(range(MAIN_GROUP, MAIN_GROUP + max(1, options.groups)))
        self.checkers = {gid: Checker(self._failer(gid), unique_payloads=options.unique_payloads)
                         for gid in self.group_ids}
        self.checker = self.checkers[MAIN_GROUP]
        self.nodes: dict[int, SimNode] = {}
        self.trace: collections.deque = collections.deque(maxlen=max(1, options.trace_size))
        self.stats: collections.Counter = collections.Counter()
        self.reads: dict[bytes, ReadRequest] = {}
        self._read_sequence = 0
        self._pending_unreachable: set[tuple[int, int]] = set()
        self._pending_stops: list[int] = []
        self._conf_applied_index = 0  # newest CONF entry applied anywhere
        # Observers of every delivered message (tests count, e.g., APP rejections).
        self.on_deliver: list[Callable[[Message], None]] = []
        if isinstance(nodes, int):
            conf = ConfState(voters=frozenset(range(1, nodes + 1)))
        else:
            conf = nodes
        for node_id in sorted(conf.all_nodes()):
            node = self._create(node_id, conf, self.group_ids)
            node.was_member = True
        for node_id in sorted(conf.all_nodes()):
            self._start(self.nodes[node_id])

    def _failer(self, group_id: int) -> Callable[[str, str], None]:
        if len(self.group_ids) == 1:
            return self._violation
        return lambda invariant, detail: self._violation(invariant, f"group {group_id}: {detail}")

    # ==================================================================================
    # running
    # ==================================================================================
    def step(self) -> bool:
        """Process one event. False if nothing is left to happen."""
        if not self._queue:
            return False
        time, _, kind, node_id, payload = heapq.heappop(self._queue)
        self.now = time
        self.events += 1
        try:
            if kind == EV_DELIVER:
                self._on_deliver(node_id, payload)
            elif kind == EV_PASS:
                self._on_pass(node_id, payload)
            elif kind == EV_TICK:
                self._on_tick(node_id, payload)
            elif kind == EV_SYNC:
                self._on_sync(node_id, payload)
            elif kind == EV_PING:
                node = self.nodes.get(node_id)
                if (node is not None and node.status == UP
                        and not self.network.blocked(payload, node_id)):
                    node.driver.deliver_many([], payload)  # steps no RawNode
            elif kind == EV_LOCAL:
                incarnation, (group_id, to, ok) = payload
                node = self.nodes[node_id]
                if node.status == UP and node.incarnation == incarnation:
                    self._call(node, node.driver.report_snapshot, group_id, to, ok)
            elif kind == EV_UNREACHABLE:
                incarnation, to = payload
                self._pending_unreachable.discard((node_id, to))
                node = self.nodes[node_id]
                if node.status == UP and node.incarnation == incarnation:
                    self._call(node, node.driver.report_unreachable, to)
            if self._pending_stops:
                stops, self._pending_stops = self._pending_stops, []
                for stopped in stops:
                    self.stop(stopped)
        except SimulationFailure:
            raise
        except Exception as exc:
            raise CoreError(self.report(f"unexpected {type(exc).__name__}", str(exc))) from exc
        return True

    def run_for(self, duration: int) -> None:
        end = self.now + duration
        queue = self._queue
        while queue and queue[0][0] <= end:
            self.step()
        self.now = end

    def run_until(self, predicate: Callable[[], bool], max_time: int) -> bool:
        """Run until ``predicate()`` holds (checked after every event) or ``max_time``
        simulated units pass. Returns whether it holds."""
        end = self.now + max_time
        queue = self._queue
        while not predicate():
            if not queue or queue[0][0] > end:
                self.now = end
                return predicate()
            self.step()
        return True

    def wait_for(self, predicate: Callable[[], bool], max_time: int, what: str) -> None:
        if not self.run_until(predicate, max_time):
            raise LivenessFailure(self.report("liveness", f"{what}: not within {max_time} units"))

    @property
    def election_timeout(self) -> int:
        """Longest randomized election timeout, in simulated units."""
        return 2 * self.options.election_tick * self.options.tick_interval

    def wait_for_leader(self, max_time: int | None = None) -> int:
        max_time = max_time or 10 * self.election_timeout
        self.wait_for(lambda: self.leader() is not None, max_time, "a leader")
        return self.leader()

    # ==================================================================================
    # looking at the cluster
    # ==================================================================================
    def leader(self, group: int = MAIN_GROUP) -> int | None:
        """The live leader with the highest term (a deposed one may not know it yet)."""
        best = None
        best_term = -1
        for node in self.nodes.values():
            if node.status != UP:
                continue
            replica = node.replicas.get(group)
            if replica is None:
                continue
            raw = replica.raw
            if raw.role == Role.LEADER and raw.term > best_term:
                best, best_term = node.id, raw.term
        return best

    def leaders(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.status == UP and n.raw.role == Role.LEADER]

    def node(self, node_id: int) -> SimNode:
        return self.nodes[node_id]

    def raw(self, node_id: int, group: int = MAIN_GROUP) -> RawNode:
        return self.nodes[node_id].replicas[group].raw

    def replica(self, node_id: int, group: int = MAIN_GROUP) -> SimReplica:
        return self.nodes[node_id].replicas[group]

    def live(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.status == UP]

    def applied(self, node_id: int) -> list[bytes]:
        """Payloads the node's state machine applied (NORMAL entries with data), in order."""
        return self.nodes[node_id].sm.payloads()

    def applied_on(self, payload: bytes, group: int = MAIN_GROUP) -> list[int]:
        """Live nodes whose state machine applied ``payload``."""
        return [n.id for n in self.nodes.values()
                if n.status == UP and group in n.replicas
                and n.replicas[group].sm.index_of(payload) is not None]

    def describe(self) -> str:
        return "\n         ".join(n.describe() for n in self.nodes.values())

    # ==================================================================================
    # what clients and operators do
    # ==================================================================================
    def propose(self, data: bytes, node: int | None = None, group: int = MAIN_GROUP) -> int | None:
        """Propose ``data`` at ``node`` (default: the leader) at once, as the controller
        does. Returns the entry's index, or None if there is no leader or it refused
        (NotLeader, ProposalDropped)."""
        target = self._target(node, group)
        if target is None:
            return None
        raw = target.replicas[group].raw
        try:
            index = self._guarded(raw.propose, data, expected=(ProposalDropped,))
        except ProposalDropped as exc:  # NotLeader included
            self._trace("n%d refused proposal %r: %s", target.id, data[:24], exc)
            self.stats["proposals_refused"] += 1
            return None
        self._trace("n%d proposed %r at @%d", target.id, data[:24], index)
        self._after_input(target, group)
        return index

    def propose_batch(self, datas: list[bytes], node: int | None = None) -> tuple[int, int] | None:
        target = self._target(node, MAIN_GROUP)
        if target is None:
            return None
        try:
            first, last = self._guarded(target.raw.propose_batch, datas,
                                        expected=(ProposalDropped,))
        except ProposalDropped as exc:
            self._trace("n%d refused a batch of %d: %s", target.id, len(datas), exc)
            self.stats["proposals_refused"] += 1
            return None
        self._trace("n%d proposed a batch at @%d..%d", target.id, first, last)
        self._after_input(target, MAIN_GROUP)
        return first, last

    def produce(self, payloads: list[bytes], node: int | None = None,
                group: int = MAIN_GROUP) -> bool:
        """An acks=all client: queue ``payloads`` at ``node`` (default: the leader), as a
        produce request waits in a partition's queue. The node's next pass proposes the
        queue as one batch (refused unless it leads then); a payload is acknowledged when
        the node applies its entry with the term it was proposed in (the checker records
        and watches every acknowledgement). Returns whether a node took the request."""
        target = self._target(node, group)
        if target is None:
            return False
        target.replicas[group].machine.queue.extend(payloads)
        self._trace("n%d g%d queued %d produced payloads", target.id, group, len(payloads))
        target.driver.mark(group)
        return True

    def propose_conf_change(self, change: ConfChange, node: int | None = None) -> int | None:
        """Propose a one-server membership change; a node being added is created (with an
        empty disk) first. Returns the entry's index, None if not accepted by a leader;
        raises ConfChangeRejected if the leader refuses the change itself."""
        if len(self.group_ids) > 1:
            raise ValueError("membership changes are simulated with one group (groups=1)")
        if change.kind != ConfChangeKind.REMOVE_NODE and change.node_id not in self.nodes:
            self.add_node(change.node_id)
        target = self._target(node, MAIN_GROUP)
        if target is None:
            return None
        try:
            index = self._guarded(target.raw.propose_conf_change, change,
                                  expected=(ProposalDropped, ConfChangeRejected))
        except ProposalDropped as exc:
            self._trace("n%d refused %s: %s", target.id, change, exc)
            return None
        except ConfChangeRejected as exc:
            self._trace("n%d rejected %s: %s", target.id, change, exc)
            self._after_input(target, MAIN_GROUP)
            raise
        self._trace("n%d proposed %s %d at @%d", target.id, change.kind.name,
                    change.node_id, index)
        self._after_input(target, MAIN_GROUP)
        return index

    def transfer_leader(self, to: int, node: int | None = None, group: int = MAIN_GROUP) -> bool:
        target = self._target(node, group)
        if target is None:
            return False
        self._trace("n%d asked to transfer leadership to n%d", target.id, to)
        self._guarded(target.replicas[group].raw.transfer_leader, to)
        self._after_input(target, group)
        return True

    def campaign(self, node_id: int, group: int = MAIN_GROUP) -> None:
        target = self._target(node_id, group)
        if target is not None:
            self._trace("n%d campaigns", node_id)
            self._guarded(target.replicas[group].raw.campaign)
            self._after_input(target, group)

    def read_index(self, node: int | None = None) -> bytes | None:
        """Start a ReadIndex read at ``node`` (default: the leader). Returns its context;
        results land in ``self.reads[context].results`` and are checked on arrival."""
        target = self._target(node, MAIN_GROUP)
        if target is None:
            return None
        self._read_sequence += 1
        context = b"read-%d" % self._read_sequence
        floor = self.checker.max_committed
        try:
            self._guarded(target.raw.read_index, context, expected=(ProposalDropped,))
        except ProposalDropped as exc:  # NotLeader: no leader known
            self._trace("n%d refused read %r: %s", target.id, context, exc)
            return None
        self.reads[context] = ReadRequest(target.id, floor, self.now)
        self._trace("n%d read_index %r (floor %d)", target.id, context, floor)
        self._after_input(target, MAIN_GROUP)
        return context

    def replicate(self, data: bytes | Callable[[int], bytes], *, expected: int | None = None,
                  max_time: int | None = None) -> int:
        """Like 6.824's ``one()``: propose ``data`` to whoever leads, retrying, until
        ``expected`` live nodes (default: every live member) have applied it. Returns the
        index it was applied at. ``data`` may be a function of the attempt number, for runs
        that check every payload is applied once."""
        max_time = max_time or 20 * self.election_timeout
        end = self.now + max_time
        retry = self.election_timeout
        attempt = 0
        while self.now < end:
            self._run_until_leader(end)
            attempt += 1
            payload = data(attempt) if callable(data) else data
            if self.propose(payload) is not None:
                def done() -> bool:
                    want = expected if expected is not None else len(self._live_members())
                    return len(self.applied_on(payload)) >= want
                if self.run_until(done, min(retry, max(0, end - self.now))):
                    on = self.applied_on(payload)
                    return self.nodes[on[0]].sm.index_of(payload)
            else:
                self.run_for(self.options.tick_interval)
        raise LivenessFailure(self.report(
            "liveness", f"no proposal applied on {expected or 'all live members'} nodes "
            f"within {max_time} units ({attempt} attempts)"))

    def _run_until_leader(self, end: int) -> None:
        self.run_until(lambda: self.leader() is not None, max(0, end - self.now))

    def _live_members(self) -> list[int]:
        leader = self.leader()
        if leader is None:
            return self.live()
        members = self.nodes[leader].raw.conf_state.all_nodes()
        return [n for n in self.live() if n in members]

    def check_acks(self) -> int:
        """End of a run: every acknowledged payload is applied at its index on every live
        replica of its group. Returns how many acknowledgements were checked."""
        checked = 0
        for gid, checker in self.checkers.items():
            replicas = [n.replicas[gid] for n in self.nodes.values()
                        if n.status == UP and gid in n.replicas]
            checked += checker.check_acks_final(replicas)
        return checked

    # -- faults ------------------------------------------------------------------------
    def partition(self, *groups: Iterable[int]) -> None:
        """Only nodes in the same group can talk; a node named in no group is alone.
        ``partition([1, 2], [3])`` or ``partition([[1, 2], [3]])``."""
        if len(groups) == 1 and all(not isinstance(g, int) for g in groups[0]):
            groups = tuple(groups[0])
        groups = [sorted(g) for g in groups]
        self.network.partition(groups)
        self._trace("partition %s", groups)

    def one_way(self, frm: int, to: int) -> None:
        """Messages from ``frm`` to ``to`` are lost; ``to`` still reaches ``frm``."""
        self.network.one_way(frm, to)
        self._trace("one-way cut n%d -> n%d", frm, to)

    def isolate(self, node_id: int) -> None:
        self.network.isolate(node_id)
        self._trace("isolate n%d", node_id)

    def heal(self) -> None:
        self.network.heal()
        self._trace("heal network")

    def set_loss(self, probability: float) -> None:
        self.network.loss = probability
        self._trace("loss %.3f", probability)

    def set_duplication(self, probability: float) -> None:
        self.network.duplication = probability
        self._trace("duplication %.3f", probability)

    def set_latency(self, low: int, high: int) -> None:
        self.network.latency_min, self.network.latency_max = low, high
        self._trace("latency [%d, %d]", low, high)

    def set_long_delay(self, probability: float, longest: int) -> None:
        self.network.long_delay, self.network.long_delay_max = probability, longest
        self._trace("long delays p=%.3f up to %d", probability, longest)

    def crash(self, node_id: int) -> None:
        """Lose everything not yet synced: driver, RawNodes, state machines, a synced
        write in flight, unsynced writes."""
        node = self.nodes[node_id]
        if node.status != UP:
            return
        lost = " (losing a synced write in flight)" if node.busy else ""
        self._trace("crash n%d%s", node_id, lost)
        self.stats["crashes"] += 1
        if lost:
            self.stats["crashes_mid_write"] += 1
        self._shut(node, DOWN)

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.status != DOWN:
            return
        self._trace("restart n%d", node_id)
        self._start(node)

    def stop(self, node_id: int) -> None:
        """Shut a (removed) node down for good."""
        node = self.nodes[node_id]
        if node.status == STOPPED:
            return
        self._trace("stop n%d", node_id)
        self._shut(node, STOPPED)

    def add_node(self, node_id: int) -> None:
        """Start a new replica of the main group with an empty disk and no configuration;
        it waits for the leader to send it the log (or a snapshot) once a conf change
        names it."""
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} exists")
        self._trace("add n%d (empty disk)", node_id)
        node = self._create(node_id, ConfState(), [MAIN_GROUP])
        for other in self.nodes.values():
            if other.status == UP and other is not node:
                other.driver.add_peer(node_id)
        self._start(node)

    def recreate_replica(self, node_id: int, *, tombstone: bool = True) -> None:
        """The node deletes its replica of the main group (it was moved off the node: the
        broker's ``_stop_partition``) and starts a new, empty one under the same id outside
        any configuration (a move back onto the node: ``_start_partition``). With
        ``tombstone`` the new replica starts from what the old one left, as the broker
        does (rule 13 of ``raft/core/_raft.py``); without, from nothing."""
        node = self.nodes[node_id]
        if node.status != UP:
            raise ValueError(f"n{node_id} is not up: only a running replica is deleted")
        left = node.raw.tombstone() if tombstone else None
        self._trace("n%d deletes its replica and re-creates it empty (tombstone %s)",
                    node_id, left)
        self._shut(node, DOWN)
        storage = MemoryStorage(ConfState(), left)
        node.disk.add_group(MAIN_GROUP, storage)
        node.replicas[MAIN_GROUP].storage = storage
        self.checker.chains.pop(node_id, None)  # its durable log is gone with the replica
        self._start(node)

    # ==================================================================================
    # the nodes: starting, stopping, calling their drivers
    # ==================================================================================
    def _create(self, node_id: int, conf: ConfState, groups: list[int]) -> SimNode:
        jitter = self.options.tick_jitter
        interval = self.options.tick_interval
        if jitter:
            interval += self.rng.randint(-jitter, jitter)
        node = SimNode(node_id, max(1, interval))
        node.disk = SimDisk(lambda token, items, node=node: self._schedule_sync(node, token, items),
                            lambda items, node=node: self._trace("%s", _Writes(node.id, items, False)))
        for gid in groups:
            storage = MemoryStorage(conf)
            node.disk.add_group(gid, storage)
            node.replicas[gid] = SimReplica(
                node_id, gid, storage, functools.partial(node.disk.durable_hard_state, gid))
        self.nodes[node_id] = node
        return node

    def _start(self, node: SimNode) -> None:
        o = self.options
        node.incarnation += 1
        node.status = UP
        node.pass_due = False
        node.transport = SimTransport(self, node)
        driver = self._driver_factory(
            node.id, transport=node.transport, storage=node.disk, clock=self._clock,
            wake=lambda node=node, incarnation=node.incarnation: self._wake(node, incarnation),
            election_timeout=o.election_tick * node.tick_interval,
            rng=random.Random(node.id), events=SimHostEvents(self, node.id),
            ping_ticks=max(1, min(o.heartbeat_tick, o.election_tick // 3)))
        node.driver = driver
        for peer in self.nodes:
            if peer != node.id:
                driver.add_peer(peer)
        for gid, replica in node.replicas.items():
            snapshot = replica.storage.snapshot()
            config = Config(
                id=node.id, election_tick=o.election_tick, heartbeat_tick=o.heartbeat_tick,
                pre_vote=o.pre_vote, check_quorum=o.check_quorum,
                max_size_per_msg=o.max_size_per_msg, max_inflight_msgs=o.max_inflight_msgs,
                max_inflight_learner_msgs=o.max_inflight_learner_msgs,
                max_uncommitted_size=o.max_uncommitted_size, applied=snapshot.meta.index,
                quiesce=o.quiesce, vote_only_with_configuration=o.vote_only_with_configuration,
            )
            rng = random.Random(self.rng.getrandbits(64))
            try:
                replica.raw = RawNode(config, replica.storage, rng)
            except Exception as exc:
                raise CoreError(self.report(f"RawNode() raised {type(exc).__name__}",
                                            str(exc))) from exc
            replica.sm = ListStateMachine.restore(snapshot)
            replica.machine = SimMachine(self, node, replica)
            replica.seen_commit = 0
            replica.seen_role = None
            replica.seen_term = 0
            replica.commit_points = {}
            checker = self.checkers[gid]
            checker.on_restore(replica, snapshot)
            checker.observe(replica)
            driver.add_group(HostGroup(gid, replica.raw, replica.machine))
        self._schedule(self.now + self.rng.randint(1, node.tick_interval), EV_TICK, node.id,
                       node.incarnation)

    def _shut(self, node: SimNode, status: str) -> None:
        node.status = status
        node.driver = None
        node.transport = None
        node.pass_due = False
        node.disk.crash()
        for replica in node.replicas.values():
            replica.raw = None
            replica.sm = ListStateMachine()  # volatile: rebuilt from the snapshot on restart
            replica.machine = None

    def _target(self, node_id: int | None, group: int) -> SimNode | None:
        """The live node to hand a local input to (default: the group's leader)."""
        if node_id is None:
            node_id = self.leader(group)
            if node_id is None:
                return None
        node = self.nodes.get(node_id)
        if node is None or node.status != UP or group not in node.replicas:
            return None
        return node

    def _guarded(self, function: Callable, *args, expected: tuple = ()):
        """Call into the core; an exception it should not raise becomes a CoreError that
        carries the seed and the trace."""
        try:
            return function(*args)
        except SimulationFailure:
            raise
        except expected:
            raise
        except HostOrderError as exc:
            raise InvariantViolation(self.report("invariant violated: host driver ordering",
                                                 str(exc))) from exc
        except Exception as exc:
            raise CoreError(self.report(f"unexpected {type(exc).__name__}", str(exc))) from exc

    def _observe(self, node: SimNode) -> None:
        if node.status != UP:
            return
        checkers = self.checkers
        for gid, replica in node.replicas.items():
            checkers[gid].observe(replica)

    def _call(self, node: SimNode, function: Callable, *args) -> None:
        """Call the node's driver, then let every group's checker look at it."""
        try:
            function(*args)
        except SimulationFailure:
            raise
        except Exception:
            self._guarded(_reraise)
        self._observe(node)

    def _after_input(self, node: SimNode, group: int) -> None:
        self._observe(node)
        node.driver.mark(group)

    def _wake(self, node: SimNode, incarnation: int) -> None:
        """The driver's ``wake``: its owner runs a pass soon (after what is due now). A pass
        with no dirty group, or one while a sync is in flight, would do nothing (the driver
        wakes again when the sync completed if work is left): not scheduled."""
        if node.pass_due or node.incarnation != incarnation or node.status != UP:
            return
        driver = node.driver
        if driver.syncing or not driver.has_work:
            return
        node.pass_due = True
        self._schedule(self.now, EV_PASS, node.id, incarnation)

    def _on_pass(self, node_id: int, incarnation: int) -> None:
        node = self.nodes[node_id]
        if node.status != UP or node.incarnation != incarnation:
            return
        node.pass_due = False
        if node.driver.syncing:
            return  # the driver wakes us again once the sync completed, if work is left
        at, passes = node.passes_at
        passes = passes + 1 if at == self.now else 1
        node.passes_at = (self.now, passes)
        if passes > MAX_PASSES_PER_TIME:
            self._violation("progress", f"n{node.id} ran {MAX_PASSES_PER_TIME} passes at one "
                            f"simulated time")
        self._call(node, node.driver.run_pass)

    def _schedule_sync(self, node: SimNode, token: int, items: list[SaveItem]) -> None:
        self._trace("%s", _Writes(node.id, items, True))
        o = self.options
        delay = self.rng.randint(o.disk_latency_min, o.disk_latency_max) if o.disk_latency_max else 0
        self._schedule(self.now + delay, EV_SYNC, node.id, token)

    def _on_sync(self, node_id: int, token: int) -> None:
        node = self.nodes[node_id]
        if node.status != UP or node.disk.token != token or not node.disk.syncing:
            return
        checkers = self.checkers
        for gid, old, (_, hard_state, entries, snapshot) in node.disk.complete():
            if snapshot is not None and snapshot.is_empty:
                snapshot = None
            checkers[gid].on_save(node.replicas[gid], old, hard_state, entries, snapshot,
                                  mirror=False)
        for gid, replica in node.replicas.items():
            checkers[gid].check_mirror(replica)
        self._trace("n%d sync done", node.id)
        self._call(node, node.driver.sync_completed)

    def _on_tick(self, node_id: int, incarnation: int) -> None:
        node = self.nodes[node_id]
        if node.status != UP or node.incarnation != incarnation:
            return
        self._schedule(self.now + node.tick_interval, EV_TICK, node_id, incarnation)
        self._call(node, node.driver.tick)

    def _on_deliver(self, node_id: int,
                    payload: tuple[int, Message, tuple[int, int] | None]) -> None:
        group_id, msg, origin = payload
        node = self.nodes.get(node_id)
        if node is None or node.status != UP or self.network.blocked(msg.frm, node_id):
            self._trace("lost %r (%s)", msg, "cut" if node is not None and node.status == UP
                        else "target down")
            self.stats["lost_in_flight"] += 1
            if origin is not None:
                self._report_local(msg.frm, origin, (group_id, node_id, False))
            return
        self._trace("deliver g%d %r", group_id, msg)
        self.stats["delivered"] += 1
        if msg.type in (MsgType.SNAP, MsgType.TIMEOUT_NOW, MsgType.QUIESCE):
            self.stats[f"delivered_{msg.type.name}"] += 1
        for observer in self.on_deliver:
            observer(msg)
        try:
            node.driver.deliver_many([(group_id, msg)], msg.frm)
        except SimulationFailure:
            raise
        except Exception:
            self._guarded(_reraise)
        replica = node.replicas.get(group_id)
        if replica is not None:
            self.checkers[group_id].observe(replica)  # the only replica a message steps
        if origin is not None:
            self._report_local(msg.frm, origin, (group_id, node_id, True))

    # ==================================================================================
    # the state machines (SimMachine calls these)
    # ==================================================================================
    def _propose_queued(self, machine: SimMachine) -> None:
        """``before_ready``: propose the produced queue as one batch, as a partition does."""
        queue, machine.queue = machine.queue, []
        replica = machine.replica
        raw = replica.raw
        if raw.role != Role.LEADER:
            self._trace("n%d g%d: %d produced payloads refused: not leader", replica.id,
                        replica.group_id, len(queue))
            self.stats["produce_refused"] += len(queue)
            return
        try:
            first, last = raw.propose_batch(queue)
        except ProposalDropped as exc:
            self._trace("n%d g%d: %d produced payloads refused: %s", replica.id,
                        replica.group_id, len(queue), exc)
            self.stats["produce_refused"] += len(queue)
            return
        term = raw.term
        waiters = machine.waiters
        for offset, payload in enumerate(queue):
            waiters.append((first + offset, term, payload))
        self._trace("n%d g%d proposed %d produced payloads at @%d..%d", replica.id,
                    replica.group_id, len(queue), first, last)

    def _restore(self, machine: SimMachine, snapshot: Snapshot) -> None:
        replica = machine.replica
        index = snapshot.meta.index
        if index <= replica.sm.applied_index:
            self._violation("snapshots move the state machine forward",
                            f"n{replica.id} got snapshot @{index} after applying "
                            f"@{replica.sm.applied_index}")
        replica.sm = ListStateMachine.restore(snapshot)
        self.checkers[replica.group_id].on_restore(replica, snapshot)
        waiters = machine.waiters
        while waiters and waiters[0][0] <= index:
            waiters.popleft()  # never answered: the client times out and retries
        self._trace("n%d g%d installed snapshot @%d", replica.id, replica.group_id, index)
        self.stats["snapshots_installed"] += 1

    def _apply(self, machine: SimMachine, entries: list[Entry]) -> None:
        replica = machine.replica
        checker = self.checkers[replica.group_id]
        first, last = entries[0].index, entries[-1].index
        # The client's answer is checked first: an answer given before the entry is
        # committed is the violation, whatever the log checks would find next.
        waiters = machine.waiters
        while waiters and waiters[0][0] <= last:
            index, term, payload = waiters.popleft()
            if index < first:
                continue  # skipped by a snapshot: never answered
            entry = entries[index - first]
            if entry.term == term:
                checker.on_ack(replica, index, term, payload, entry.data)
                self.stats["acks"] += 1
            else:
                self.stats["produce_lost_in_leader_change"] += 1  # answered retriable
        sm = replica.sm
        for entry in entries:
            checker.on_apply(replica, entry)
            sm.apply(entry)
            if entry.kind == EntryKind.CONF and replica.group_id == MAIN_GROUP:
                self._on_conf_applied(entry)
        self._trace("n%d g%d applied @%d..%d", replica.id, replica.group_id, first, last)

    def _on_ready(self, machine: SimMachine, rd: Ready) -> None:
        replica = machine.replica
        for read_state in rd.read_states:
            self._on_read_state(replica, read_state)
        self._maybe_compact(replica)

    def _maybe_compact(self, replica: SimReplica) -> None:
        interval = self.options.snapshot_interval
        if not interval:
            return
        held = replica.storage.snapshot().meta.index
        index = replica.sm.applied_index - self.options.compaction_keep
        if index - held < interval or index <= held:
            return
        raw = replica.raw
        if index < raw.first_index - 1:
            return  # a snapshot from the leader, newer than our applied state, is pending
        meta = raw.snapshot_meta(index)
        if meta.index != index:
            self._violation("snapshot_meta", f"n{replica.id} snapshot_meta({index}) -> {meta}")
        snapshot = Snapshot(meta, replica.sm.snapshot_data(index))
        replica.storage.compact(snapshot)
        self.checkers[replica.group_id].on_compact(replica, snapshot)
        self.stats["compactions"] += 1
        self._trace("n%d g%d compacted to @%d", replica.id, replica.group_id, index)

    def _on_conf_applied(self, entry: Entry) -> None:
        # Only the newest committed configuration counts: a restarted node re-applies old ones.
        if entry.index <= self._conf_applied_index:
            return
        self._conf_applied_index = entry.index
        self.stats["conf_changes_committed"] += 1
        conf = ConfState.decode(entry.data)
        members = conf.all_nodes()
        for other in self.nodes.values():
            if other.id in members:
                other.was_member = True
            elif (self.options.stop_removed and other.was_member and other.status != STOPPED
                  and other.id not in self._pending_stops):
                self._pending_stops.append(other.id)

    def _on_read_state(self, replica: SimReplica, read_state: ReadState) -> None:
        request = self.reads.get(read_state.context)
        floor = request.floor if request is not None else None
        self._trace("n%d ReadState index %d for %r", replica.id, read_state.index,
                    read_state.context)
        self.checkers[replica.group_id].on_read_state(replica, read_state.index,
                                                      read_state.context, floor)
        self.stats["reads_answered"] += 1
        if request is not None:
            request.results.append((replica.id, read_state.index, self.now))

    # ==================================================================================
    # the network (SimTransport calls these)
    # ==================================================================================
    def _send(self, node: SimNode, group_id: int, msg: Message) -> None:
        # Invariant 6 of the checker, for every message as it leaves (ready.messages and
        # ready.messages_after_persist alike): against what the disk holds durably now.
        self.checkers[group_id].on_send(node.replicas[group_id], msg,
                                        node.disk.durable_hard_state(group_id))
        network = self.network
        to = msg.to
        target = self.nodes.get(to)
        self.stats["sent"] += 1
        if target is None or target.status != UP or network.blocked(node.id, to):
            self._trace("drop %r (%s)", msg, "unreachable")
            self.stats["dropped"] += 1
            self._report_unreachable(node, to)
            if msg.type == MsgType.SNAP:
                self._report_local(node.id, node.incarnation, (group_id, to, False))
            return
        delays = network.delays()
        if not delays:
            self._trace("drop %r (loss)", msg)
            self.stats["dropped"] += 1
            if msg.type == MsgType.SNAP:
                self._report_local(node.id, node.incarnation, (group_id, to, False))
            return
        self._trace("send g%d %r", group_id, msg)
        origin = (node.incarnation if msg.type == MsgType.SNAP else None)
        now = self.now
        for copy_number, delay in enumerate(delays):
            if copy_number:
                self.stats["duplicated"] += 1
                copy = dataclasses.replace(msg, entries=list(msg.entries))
                self._schedule(now + delay, EV_DELIVER, to, (group_id, copy, None))
            else:
                self._schedule(now + delay, EV_DELIVER, to, (group_id, msg, origin))

    def _ping_idle_peers(self, node: SimNode, sent_since_tick: set[int]) -> None:
        """``SimTransport.tick``: an empty batch to every live, reachable peer that was sent
        nothing since the previous tick."""
        network = self.network
        now = self.now
        for other in self.nodes.values():
            peer = other.id
            if peer == node.id or peer in sent_since_tick:
                continue
            if other.status == UP and not network.blocked(node.id, peer):
                delays = network.delays()
                if delays:
                    self._schedule(now + delays[0], EV_PING, peer, node.id)

    def _report_local(self, node_id: int, incarnation: int, item: tuple) -> None:
        self._schedule(self.now, EV_LOCAL, node_id, (incarnation, item))

    def _report_unreachable(self, node: SimNode, to: int) -> None:
        key = (node.id, to)
        if key in self._pending_unreachable:
            return
        self._pending_unreachable.add(key)
        self._schedule(self.now + node.tick_interval, EV_UNREACHABLE, node.id,
                       (node.incarnation, to))

    def _schedule(self, time: int, kind: int, node_id: int, payload: object) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (time, self._sequence, kind, node_id, payload))

    # ==================================================================================
    # tracing and failing
    # ==================================================================================
    def _trace(self, fmt: str, *args) -> None:
        self.trace.append((self.now, fmt, args))
        if self.options.verbose:
            print(f"{self.now:>7} {fmt % args}")

    def format_trace(self) -> str:
        lines = []
        for time, fmt, args in self.trace:
            try:
                text = fmt % args
            except Exception:  # a trace line must never hide the real failure
                text = f"{fmt} {args!r}"
            lines.append(f"    {time:>7} {text}")
        return "\n".join(lines)

    def report(self, headline: str, detail: str) -> str:
        return (
            f"{headline}: {detail}\n"
            f"  seed: {self.seed}\n"
            f"  replay: {self.replay}\n"
            f"  time: {self.now} (event {self.events})\n"
            f"  nodes: {self.describe()}\n"
            f"  network: {self.network.describe()}\n"
            f"  last {len(self.trace)} events:\n{self.format_trace()}"
        )

    def _violation(self, invariant: str, detail: str):
        raise InvariantViolation(self.report(f"invariant violated: {invariant}", detail))


def _reraise() -> None:
    """Re-raise the exception being handled (inside ``Cluster._guarded``, which turns it
    into the simulator's failure with the seed and the trace)."""
    raise  # noqa: PLE0704


class _Writes:
    """One write of a pass in the trace, formatted only if the trace is printed."""

    __slots__ = ("node_id", "items", "synced")

    def __init__(self, node_id: int, items: list[SaveItem], synced: bool) -> None:
        self.node_id = node_id
        self.items = items
        self.synced = synced

    def __str__(self) -> str:
        parts = []
        for group_id, hs, entries, snapshot in self.items:
            part = [f"g{group_id}"]
            if hs is not None:
                part.append(f"hs(t{hs.term} v{hs.vote} c{hs.commit})")
            if entries:
                part.append(f"entries @{entries[0].index}..{entries[-1].index} "
                            f"t{entries[-1].term}")
            if snapshot is not None and not snapshot.is_empty:
                part.append(f"snapshot @{snapshot.meta.index}")
            parts.append(" ".join(part))
        kind = "sync begins" if self.synced else "unsynced write"
        return f"n{self.node_id} {kind}: " + "; ".join(parts)
