"""A deterministic simulated cluster of real ``RawNode``s (TigerBeetle VOPR / FoundationDB
simulation style).

One ``random.Random(seed)`` drives everything: the network's faults, every node's tick
phase and drift, every RawNode's own RNG (derived from it in a fixed order), disk latency.
Time is an integer; nothing reads the wall clock, sleeps or starts a thread, so a seed
replays exactly.

Each replica is a ``SimNode``: a RawNode, a ``MemoryStorage`` standing for its disk (it
survives crashes), a ``ListStateMachine`` (lost on crash, rebuilt from the snapshot), and an
inbox. It follows the processing loop of ``raft._rawnode`` to the letter:

1. ``ready()``; send ``ready.messages`` (allowed before persisting);
2. ``storage.save(hard_state, entries, snapshot)``, which takes a random disk latency:
   meanwhile the node is *busy* -- like a single-threaded node loop blocked on fsync --
   and whatever arrives (messages, ticks) waits in its inbox. A crash while busy loses the
   Ready, the inbox and all in-memory state;
3. send ``ready.messages_after_persist``;
4. install ``ready.snapshot`` in the state machine, then apply ``committed_entries``;
5. ``advance(ready)``; then, now and then, snapshot the state machine and compact.

Inputs that do not come from the network (a proposal, a read, a transfer, a conf change)
are handed to an idle node; if the node is busy its pending write is completed first (a
disk that happened to be fast), never interleaved inside one Ready.

Events sit in one heap ordered by ``(time, sequence)``: ticks, message deliveries, the end
of a disk write, transport reports (unreachable peer, snapshot sent or failed). After
every call into a RawNode the ``Checker`` runs (see ``checker.py``).

With ``SimOptions.quiesce`` the RawNodes may quiesce (``raft._raft`` rules 7-10) and the
cluster models the node-level liveness that RaftHost runs: every node pings every other
node once per tick through the same faulty network; a node that has heard nothing (no
ping, no Raft message) from a peer for an election timeout of its own ticks reports it
down to its RawNode (``report_peer_down``), once until it hears from it again.
"""

from __future__ import annotations

import collections
import dataclasses
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

from .checker import Checker
from .errors import CoreError, InvariantViolation, LivenessFailure, SimulationFailure
from .network import Network
from .statemachine import ListStateMachine

EV_TICK = 0
EV_DELIVER = 1
EV_PERSIST = 2
EV_LOCAL = 3  # a report from the node's own transport, for the node's inbox
EV_UNREACHABLE = 4
EV_PING = 5  # node-level liveness ping (SimOptions.quiesce)

UP = "up"
DOWN = "down"  # crashed; may restart
STOPPED = "stopped"  # removed from the group and shut down; never restarts

TICK = "tick"  # inbox marker
MAX_READY_ROUNDS = 10_000  # Readys a node may produce for one batch of input


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
    disk_latency_max: int = 0  # 0: a save completes within the event that asked for it
    # RawNode configuration
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_uncommitted_size: int = 64 << 20
    quiesce: bool = False  # idle groups stop their timers; node-level liveness pings run
    # the application
    snapshot_interval: int = 0  # compact once this many entries were applied (0: never)
    compaction_keep: int = 0  # entries kept behind the snapshot for slow followers
    stop_removed: bool = False  # shut a node down once its removal is applied anywhere
    unique_payloads: bool = False  # every proposed payload is distinct: check exactly-once
    # reporting
    trace_size: int = 30
    verbose: bool = False  # print every trace line as it happens


class SimNode:
    """One replica. ``storage`` is its disk; everything else is lost in a crash."""

    __slots__ = (
        "id", "storage", "raw", "sm", "status", "incarnation", "inbox", "busy",
        "busy_token", "tick_interval", "seen_commit", "seen_role", "seen_term", "was_member",
        "commit_points", "heard", "down_reported",
    )

    def __init__(self, node_id: int, storage: MemoryStorage, tick_interval: int) -> None:
        self.id = node_id
        self.storage = storage
        self.raw: RawNode | None = None
        self.sm = ListStateMachine()
        self.status = DOWN
        self.incarnation = 0
        self.inbox: list = []
        self.busy: Ready | None = None  # the Ready whose save is in progress
        self.busy_token = 0
        self.tick_interval = tick_interval
        # what the checker saw last in this incarnation
        self.seen_commit = 0
        self.seen_role: Role | None = None
        self.seen_term = 0
        self.commit_points: dict[int, int] = {}  # index -> term, as leader (see checker)
        self.was_member = False
        # node-level liveness (SimOptions.quiesce): peer -> time last heard from it
        self.heard: dict[int, int] = {}
        self.down_reported: set[int] = set()

    @property
    def up(self) -> bool:
        return self.status == UP

    def describe(self) -> str:
        if self.status != UP:
            return f"n{self.id}:{self.status} last={self.storage.last_index()}"
        raw = self.raw
        busy = " busy" if self.busy is not None else ""
        conf = raw.conf_state
        members = "v" + ",".join(map(str, sorted(conf.voters)))
        if conf.learners:
            members += " l" + ",".join(map(str, sorted(conf.learners)))
        return (f"n{self.id}:{raw.role.name[:4]} t{raw.term} commit={raw.commit_index} "
                f"applied={self.sm.applied_index} last={self.storage.last_index()} "
                f"[{members}]{busy}")


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
        **overrides,
    ) -> None:
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
        self.network = Network(
            self.rng, loss=options.loss, duplication=options.duplication,
            latency_min=options.latency_min, latency_max=options.latency_max,
            long_delay=options.long_delay, long_delay_max=options.long_delay_max,
        )
        self.checker = Checker(self._violation, unique_payloads=options.unique_payloads)
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
            node = self._create(node_id, MemoryStorage(conf))
            node.was_member = True
        for node_id in sorted(conf.all_nodes()):
            self._start(self.nodes[node_id])

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
            elif kind == EV_TICK:
                self._on_tick(node_id, payload)
            elif kind == EV_PERSIST:
                node = self.nodes[node_id]
                if node.status == UP and node.busy is not None and node.busy_token == payload:
                    ready = node.busy
                    node.busy = None
                    self._persist(node, ready)
                    self._drive(node)
            elif kind == EV_LOCAL:
                incarnation, item = payload
                node = self.nodes[node_id]
                if node.status == UP and node.incarnation == incarnation:
                    node.inbox.append(item)
                    self._drive(node)
            elif kind == EV_PING:
                node = self.nodes.get(node_id)
                if (node is not None and node.status == UP
                        and not self.network.blocked(payload, node_id)):
                    node.heard[payload] = self.now
                    node.down_reported.discard(payload)
            elif kind == EV_UNREACHABLE:
                incarnation, to = payload
                self._pending_unreachable.discard((node_id, to))
                node = self.nodes[node_id]
                if node.status == UP and node.incarnation == incarnation:
                    node.inbox.append(("unreachable", to))
                    self._drive(node)
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
    def leader(self) -> int | None:
        """The live leader with the highest term (a deposed one may not know it yet)."""
        best = None
        best_term = -1
        for node in self.nodes.values():
            if node.status == UP and node.raw.role == Role.LEADER and node.raw.term > best_term:
                best, best_term = node.id, node.raw.term
        return best

    def leaders(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.status == UP and n.raw.role == Role.LEADER]

    def node(self, node_id: int) -> SimNode:
        return self.nodes[node_id]

    def raw(self, node_id: int) -> RawNode:
        return self.nodes[node_id].raw

    def live(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.status == UP]

    def applied(self, node_id: int) -> list[bytes]:
        """Payloads the node's state machine applied (NORMAL entries with data), in order."""
        return self.nodes[node_id].sm.payloads()

    def applied_on(self, payload: bytes) -> list[int]:
        """Live nodes whose state machine applied ``payload``."""
        return [n.id for n in self.nodes.values()
                if n.status == UP and n.sm.index_of(payload) is not None]

    def describe(self) -> str:
        return "\n         ".join(n.describe() for n in self.nodes.values())

    # ==================================================================================
    # what clients and operators do
    # ==================================================================================
    def propose(self, data: bytes, node: int | None = None) -> int | None:
        """Propose ``data`` at ``node`` (default: the leader). Returns the entry's index,
        or None if there is no leader or it refused (NotLeader, ProposalDropped)."""
        target = self._idle_target(node)
        if target is None:
            return None
        try:
            index = self._guarded(target.raw.propose, data, expected=(ProposalDropped,))
        except ProposalDropped as exc:  # NotLeader included
            self._trace("n%d refused proposal %r: %s", target.id, data[:24], exc)
            self.stats["proposals_refused"] += 1
            return None
        self._trace("n%d proposed %r at @%d", target.id, data[:24], index)
        self._after_input(target)
        return index

    def propose_batch(self, datas: list[bytes], node: int | None = None) -> tuple[int, int] | None:
        target = self._idle_target(node)
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
        self._after_input(target)
        return first, last

    def propose_conf_change(self, change: ConfChange, node: int | None = None) -> int | None:
        """Propose a one-server membership change; a node being added is created (with an
        empty disk) first. Returns the entry's index, None if not accepted by a leader;
        raises ConfChangeRejected if the leader refuses the change itself."""
        if change.kind != ConfChangeKind.REMOVE_NODE and change.node_id not in self.nodes:
            self.add_node(change.node_id)
        target = self._idle_target(node)
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
            self._after_input(target)
            raise
        self._trace("n%d proposed %s %d at @%d", target.id, change.kind.name,
                    change.node_id, index)
        self._after_input(target)
        return index

    def transfer_leader(self, to: int, node: int | None = None) -> bool:
        target = self._idle_target(node)
        if target is None:
            return False
        self._trace("n%d asked to transfer leadership to n%d", target.id, to)
        self._guarded(target.raw.transfer_leader, to)
        self._after_input(target)
        return True

    def campaign(self, node_id: int) -> None:
        target = self._idle_target(node_id)
        if target is not None:
            self._trace("n%d campaigns", node_id)
            self._guarded(target.raw.campaign)
            self._after_input(target)

    def read_index(self, node: int | None = None) -> bytes | None:
        """Start a ReadIndex read at ``node`` (default: the leader). Returns its context;
        results land in ``self.reads[context].results`` and are checked on arrival."""
        target = self._idle_target(node)
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
        self._after_input(target)
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
        """Lose everything not yet saved: RawNode, state machine, inbox, a pending write."""
        node = self.nodes[node_id]
        if node.status != UP:
            return
        lost = " (losing an unsaved Ready)" if node.busy is not None else ""
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
        """Start a new replica with an empty disk and no configuration; it waits for the
        leader to send it the log (or a snapshot) once a conf change names it."""
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} exists")
        self._trace("add n%d (empty disk)", node_id)
        self._start(self._create(node_id, MemoryStorage(ConfState())))

    # ==================================================================================
    # the processing loop
    # ==================================================================================
    def _create(self, node_id: int, storage: MemoryStorage) -> SimNode:
        jitter = self.options.tick_jitter
        interval = self.options.tick_interval
        if jitter:
            interval += self.rng.randint(-jitter, jitter)
        node = SimNode(node_id, storage, max(1, interval))
        self.nodes[node_id] = node
        return node

    def _start(self, node: SimNode) -> None:
        o = self.options
        snapshot = node.storage.snapshot()
        config = Config(
            id=node.id, election_tick=o.election_tick, heartbeat_tick=o.heartbeat_tick,
            pre_vote=o.pre_vote, check_quorum=o.check_quorum,
            max_size_per_msg=o.max_size_per_msg, max_inflight_msgs=o.max_inflight_msgs,
            max_uncommitted_size=o.max_uncommitted_size, applied=snapshot.meta.index,
            quiesce=o.quiesce,
        )
        node.incarnation += 1
        node.status = UP
        node.inbox = []
        node.busy = None
        node.seen_commit = 0
        node.seen_role = None
        node.seen_term = 0
        node.commit_points = {}
        node.heard = {}
        node.down_reported = set()
        rng = random.Random(self.rng.getrandbits(64))
        try:
            node.raw = RawNode(config, node.storage, rng)
        except Exception as exc:
            raise CoreError(self.report(f"RawNode() raised {type(exc).__name__}", str(exc))) from exc
        node.sm = ListStateMachine.restore(snapshot)
        self.checker.on_restore(node, snapshot)
        self.checker.observe(node)
        self._schedule(self.now + self.rng.randint(1, node.tick_interval), EV_TICK, node.id,
                       node.incarnation)
        self._drive(node)

    def _shut(self, node: SimNode, status: str) -> None:
        node.status = status
        node.raw = None
        node.sm = ListStateMachine()  # volatile: rebuilt from the snapshot on restart
        node.inbox = []
        node.busy = None
        node.busy_token += 1

    def _idle_target(self, node_id: int | None) -> SimNode | None:
        """The node to hand a local input to, made idle (its pending save completed)."""
        if node_id is None:
            node_id = self.leader()
            if node_id is None:
                return None
        node = self.nodes.get(node_id)
        if node is None or node.status != UP:
            return None
        if node.busy is not None:
            ready = node.busy
            node.busy = None
            node.busy_token += 1
            self._guarded(self._persist, node, ready)
            if node.status != UP:  # the write applied its own removal: it shut down
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
        except Exception as exc:
            raise CoreError(self.report(f"unexpected {type(exc).__name__}", str(exc))) from exc

    def _after_input(self, node: SimNode) -> None:
        self.checker.observe(node)
        self._guarded(self._drive, node)

    def _on_tick(self, node_id: int, incarnation: int) -> None:
        node = self.nodes[node_id]
        if node.status != UP or node.incarnation != incarnation:
            return
        self._schedule(self.now + node.tick_interval, EV_TICK, node_id, incarnation)
        node.inbox.append(TICK)
        if self.options.quiesce:
            self._liveness(node)
        self._drive(node)

    def _liveness(self, node: SimNode) -> None:
        """Node-level liveness (RaftHost's peer pings): ping every other node, and report
        peers silent for an election timeout to the RawNode, once per silence."""
        network = self.network
        now = self.now
        window = self.options.election_tick * node.tick_interval
        for other in self.nodes.values():
            peer = other.id
            if peer == node.id:
                continue
            if other.status == UP and not network.blocked(node.id, peer):
                delays = network.delays()
                if delays:
                    self._schedule(now + delays[0], EV_PING, peer, node.id)
            heard = node.heard.setdefault(peer, now)
            if now - heard >= window and peer not in node.down_reported:
                node.down_reported.add(peer)
                node.inbox.append(("peer_down", peer))

    def _on_deliver(self, node_id: int, payload: tuple[Message, tuple[int, int] | None]) -> None:
        msg, origin = payload
        node = self.nodes.get(node_id)
        if node is None or node.status != UP or self.network.blocked(msg.frm, node_id):
            self._trace("lost %r (%s)", msg, "cut" if node is not None and node.status == UP
                        else "target down")
            self.stats["lost_in_flight"] += 1
            if origin is not None:
                self._report_local(msg.frm, origin, ("snapshot", node_id, False))
            return
        self._trace("deliver %r", msg)
        self.stats["delivered"] += 1
        if msg.type in (MsgType.SNAP, MsgType.TIMEOUT_NOW, MsgType.QUIESCE):
            self.stats[f"delivered_{msg.type.name}"] += 1
        for observer in self.on_deliver:
            observer(msg)
        node.heard[msg.frm] = self.now
        node.down_reported.discard(msg.frm)
        node.inbox.append(msg)
        if origin is not None:
            self._report_local(msg.frm, origin, ("snapshot", node_id, True))
        self._drive(node)

    def _drive(self, node: SimNode) -> None:
        """Feed the node its inbox and process Readys until it is busy or has nothing to do."""
        checker = self.checker
        for _ in range(MAX_READY_ROUNDS):
            if node.status != UP or node.busy is not None:
                return
            raw = node.raw
            if node.inbox:
                items = node.inbox
                node.inbox = []
                for item in items:
                    if item is TICK:
                        raw.tick()
                    elif isinstance(item, Message):
                        raw.step(item)
                    elif item[0] == "unreachable":
                        raw.report_unreachable(item[1])
                    elif item[0] == "peer_down":
                        self._trace("n%d: node-level liveness reports n%d down", node.id,
                                    item[1])
                        raw.report_peer_down(item[1])
                    else:
                        raw.report_snapshot(item[1], item[2])
                    checker.observe(node)
            if not raw.has_ready():
                return
            self._handle_ready(node)
        self._violation("progress", f"n{node.id} produced {MAX_READY_ROUNDS} Readys for one "
                        f"batch of input")

    def _handle_ready(self, node: SimNode) -> None:
        raw = node.raw
        ready = raw.ready()
        self.checker.observe(node)
        self.stats["readys"] += 1
        self._trace_ready(node, ready)
        for read_state in ready.read_states:
            self._on_read_state(node, read_state)
        if ready.messages:
            self.checker.before_send(node, ready.messages, ready.entries, ready.snapshot)
            self._send(node, ready.messages)
        o = self.options
        delay = self.rng.randint(o.disk_latency_min, o.disk_latency_max) if o.disk_latency_max else 0
        if delay > 0 and (ready.entries or ready.hard_state is not None or ready.snapshot):
            node.busy = ready
            node.busy_token += 1
            self._schedule(self.now + delay, EV_PERSIST, node.id, node.busy_token)
        else:
            self._persist(node, ready)

    def _persist(self, node: SimNode, ready: Ready) -> None:
        storage = node.storage
        checker = self.checker
        old = storage.hard_state()
        snapshot = ready.snapshot
        if snapshot is not None and snapshot.is_empty:
            snapshot = None
        storage.save(ready.hard_state, ready.entries, snapshot)
        checker.on_save(node, old, ready.hard_state, ready.entries, snapshot)
        if ready.messages_after_persist:
            self._send(node, ready.messages_after_persist)
        if snapshot is not None:
            if snapshot.meta.index <= node.sm.applied_index:
                self._violation("snapshots move the state machine forward",
                                f"n{node.id} got snapshot @{snapshot.meta.index} after applying "
                                f"@{node.sm.applied_index}")
            node.sm = ListStateMachine.restore(snapshot)
            checker.on_restore(node, snapshot)
            self._trace("n%d installed snapshot @%d", node.id, snapshot.meta.index)
            self.stats["snapshots_installed"] += 1
        sm = node.sm
        for entry in ready.committed_entries:
            checker.on_apply(node, entry)
            sm.apply(entry)
            if entry.kind == EntryKind.CONF:
                self._on_conf_applied(node, entry)
        node.raw.advance(ready)
        checker.observe(node)
        self._maybe_compact(node)
        if self._pending_stops:
            stops, self._pending_stops = self._pending_stops, []
            for node_id in stops:
                self.stop(node_id)

    def _maybe_compact(self, node: SimNode) -> None:
        interval = self.options.snapshot_interval
        if not interval:
            return
        held = node.storage.snapshot().meta.index
        index = node.sm.applied_index - self.options.compaction_keep
        if index - held < interval or index <= held:
            return
        meta = node.raw.snapshot_meta(index)
        if meta.index != index:
            self._violation("snapshot_meta", f"n{node.id} snapshot_meta({index}) -> {meta}")
        snapshot = Snapshot(meta, node.sm.snapshot_data(index))
        node.storage.compact(snapshot)
        self.checker.on_compact(node, snapshot)
        self.stats["compactions"] += 1
        self._trace("n%d compacted to @%d", node.id, index)

    def _on_conf_applied(self, node: SimNode, entry: Entry) -> None:
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

    def _on_read_state(self, node: SimNode, read_state: ReadState) -> None:
        request = self.reads.get(read_state.context)
        floor = request.floor if request is not None else None
        self._trace("n%d ReadState index %d for %r", node.id, read_state.index, read_state.context)
        self.checker.on_read_state(node, read_state.index, read_state.context, floor)
        self.stats["reads_answered"] += 1
        if request is not None:
            request.results.append((node.id, read_state.index, self.now))

    # -- network ----------------------------------------------------------------------
    def _send(self, node: SimNode, messages: list[Message]) -> None:
        network = self.network
        nodes = self.nodes
        now = self.now
        for msg in messages:
            to = msg.to
            target = nodes.get(to)
            self.stats["sent"] += 1
            if target is None or target.status != UP or network.blocked(node.id, to):
                self._trace("drop %r (%s)", msg, "unreachable")
                self.stats["dropped"] += 1
                self._report_unreachable(node, to)
                if msg.type == MsgType.SNAP:
                    self._report_local(node.id, node.incarnation, ("snapshot", to, False))
                continue
            delays = network.delays()
            if not delays:
                self._trace("drop %r (loss)", msg)
                self.stats["dropped"] += 1
                if msg.type == MsgType.SNAP:
                    self._report_local(node.id, node.incarnation, ("snapshot", to, False))
                continue
            origin = (node.incarnation if msg.type == MsgType.SNAP else None)
            for copy_number, delay in enumerate(delays):
                if copy_number:
                    self.stats["duplicated"] += 1
                    copy = dataclasses.replace(msg, entries=list(msg.entries))
                    self._schedule(now + delay, EV_DELIVER, to, (copy, None))
                else:
                    self._schedule(now + delay, EV_DELIVER, to, (msg, origin))

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

    def _trace_ready(self, node: SimNode, ready: Ready) -> None:
        self._trace("%s", _ReadySummary(node.id, ready))

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


class _ReadySummary:
    """One Ready in the trace, formatted only if the trace is printed."""

    __slots__ = ("node_id", "ready")

    def __init__(self, node_id: int, ready: Ready) -> None:
        self.node_id = node_id
        self.ready = ready

    def __str__(self) -> str:
        ready = self.ready
        parts = []
        if ready.hard_state is not None:
            hs = ready.hard_state
            parts.append(f"hs(t{hs.term} v{hs.vote} c{hs.commit})")
        if ready.entries:
            parts.append(f"entries @{ready.entries[0].index}..{ready.entries[-1].index}"
                         f" t{ready.entries[-1].term}")
        if ready.snapshot is not None and not ready.snapshot.is_empty:
            parts.append(f"snapshot @{ready.snapshot.meta.index}")
        if ready.committed_entries:
            parts.append(f"apply @{ready.committed_entries[0].index}.."
                         f"{ready.committed_entries[-1].index}")
        if ready.read_states:
            parts.append(f"{len(ready.read_states)} read states")
        if ready.messages:
            parts.append(f"send {ready.messages}")
        if ready.messages_after_persist:
            parts.append(f"after persist {ready.messages_after_persist}")
        return f"n{self.node_id} ready {ready.role.name} t{ready.term}: {' '.join(parts)}"
