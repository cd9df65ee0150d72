"""The membership nemesis: the cluster's membership changes while the workload runs and the
other nemeses (partition, kill, pause) keep injecting faults (issue 19).

It runs in a thread of its own beside ``Nemesis`` (whose faults go on at the same time).
Each cycle, after about ``interval`` seconds, it reads the cluster's view (``ListNodes``)
and picks one operation that is valid in it (from ``random.Random(seed)``):

===================  ===================================================================
join                 a fresh node (next unused id, its own namespace 10.77.0.<id>) starts
                     with only ``--join`` (the members' addresses); ok once ListNodes
                     shows it active
decommission         drain an active node (``decommission_node``), waiting for it to be
                     removed or not (the drain then goes on under the next operations)
decommission-voter   the same for a controller voter: the controller promotes a caught-up
                     learner in its place
remove-dead          kill -9 a node for good (a voter half of the time), then
                     ``decommission_node(dead=True)`` (retried while the controller still
                     says it is alive); waits or not for its replicas to be re-created
reassign             move one replica of a key of the test topic to a node that lacks one
                     (waits for the move to finish or not)
reassign-cancel      start such a move and cancel it 0 to 1 s later (refused if it
                     finished already)
reassign-invalid     a move to a replica set naming one node twice: must be refused, with
                     no move to it and no replica set naming a node twice afterwards (a
                     drain may still change the replicas meanwhile)
===================  ===================================================================

Kinds are weighted (``WEIGHTS``), a kind not done yet four times as much, so that a short
run sees most of them. Validity (from the current view): a join only while fewer than ``max_nodes`` nodes are
members; a decommission or removal only while no other drain runs and the nodes left
active would still be at least ``max(replication factor, 3)`` (the partitions' replication
factor and the controller's three voters); a move only to an active node the partition
lacks. A refusal (``InvalidRequestError``, ``NotEnoughReplicasError``: the view was stale,
a drain is moving that partition) is an outcome recorded in the history, not a failure.

Every operation is a nemesis ``start``/``stop`` pair with one ``id`` (``fault":
"membership"``, ``kind`` ``membership-<op>``); the stop carries ``outcome``: ``ok``,
``refused`` (with the message), ``pending`` (asked, not waited for), ``timeout`` or
``error``. A node the cluster marks *removed* is stopped and forgotten (``membership-retire``
event; ``NetCluster.retire``): the other nemeses no longer pick it and the clients'
bootstrap list drops it. A node is only ever stopped for good, or chosen as a victim, when
no other fault holds it.

``converged`` is the end-of-run membership sanity check (after the faults healed): within a
bounded wait, no move or drain is left, every partition of the checked topics has its
replication factor of distinct replicas on active nodes, every node names the same
controller leader, the controller has ``min(3, active)`` voters, all active and running.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any, Callable, Iterator

from rkjepsen.history import HistoryWriter
from rkjepsen.netcluster import NODE_PORT, NetCluster

KINDS = ("join", "decommission", "decommission-voter", "remove-dead", "reassign",
         "reassign-cancel", "reassign-invalid")
WEIGHTS = {"join": 3, "decommission": 2, "decommission-voter": 2, "remove-dead": 2,
           "reassign": 3, "reassign-cancel": 1, "reassign-invalid": 1}
JOIN_WAIT_S = 45.0  # a joining node shows as active in ListNodes within this
DRAIN_WAIT_S = 120.0  # a waited-for decommission / removal completes within this
MOVE_WAIT_S = 60.0  # a waited-for move completes within this
DEAD_ACCEPT_WAIT_S = 30.0  # the controller accepts `remove --dead` of a killed node within
CONVERGE_WAIT_S = 120.0  # the end-of-run sanity check waits this long for convergence
CONTROLLER_VOTERS = 3


class Membership:
    def __init__(self, cluster: NetCluster, history: HistoryWriter, *, interval_s: float,
                 seed: int, topic: str, keys: int, replication_factor: int, max_nodes: int,
                 ids: Iterator[int] | None = None,
                 busy_nodes: Callable[[], set[int]] = set,
                 on_members_changed: Callable[[], None] = lambda: None) -> None:
        self.cluster = cluster
        self.history = history
        self.interval_s = interval_s
        self.rng = random.Random(seed ^ 0x4D454D)
        self.topic = topic
        self.keys = keys
        self.rf = replication_factor
        self.max_nodes = max_nodes
        self.min_active = max(replication_factor, CONTROLLER_VOTERS)
        self._ids = ids if ids is not None else itertools.count(1_000_000)
        self.busy_nodes = busy_nodes  # nodes another nemesis' active fault holds
        self.on_members_changed = on_members_changed
        self._next_node = max(cluster.node_ns) + 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts: dict[str, dict[str, int]] = {}  # kind -> outcome -> count
        self.errors: list[str] = []
        self.retired: list[int] = []
        self._started_ids: set[int] = set()

    # ------------------------------------------------------------------ schedule

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop picking operations (one running is cut short at its next wait); a drain
        asked for goes on in the cluster and ``converged`` waits for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(DEAD_ACCEPT_WAIT_S + 30)

    def _run(self) -> None:
        self._stop.wait(self.interval_s * 0.75)
        while not self._stop.is_set():
            try:
                self._retire_removed()
                self._one_op()
            except Exception as exc:  # noqa: BLE001 - reported; the run goes on
                self.errors.append(f"membership nemesis: {exc!r}")
            self._stop.wait(self.interval_s * self.rng.uniform(0.6, 1.4))

    def summary(self) -> dict[str, Any]:
        """Operations by kind and outcome; ``done``: ok or pending (asked, not waited
        for); ``refused``: refusals of valid-looking operations (a stale view, a race
        with a drain); the invalid moves, refused as they must be, are counted apart."""
        valid = {k: v for k, v in self.counts.items() if k != "reassign-invalid"}
        done = sum(n for k in valid.values() for o, n in k.items() if o in ("ok", "pending"))
        refused = sum(k.get("refused", 0) for k in valid.values())
        return {"ops": sum(sum(k.values()) for k in self.counts.values()), "done": done,
                "refused": refused,
                "invalid_refused": self.counts.get("reassign-invalid", {}).get("refused", 0),
                "by_kind": self.counts, "retired_nodes": self.retired}

    # ------------------------------------------------------------------ the view

    def _admin(self):
        from raftka.client import Admin
        return Admin(self.cluster.bootstrap, request_timeout_ms=5000)

    def _view(self) -> dict[int, Any] | None:
        from raftka.client import RaftkaError
        try:
            with self._admin() as admin:
                return {n.id: n for n in admin.list_nodes(timeout=5)}
        except RaftkaError:
            return None

    def _usable(self, view: dict[int, Any]) -> list[int]:
        """Active members this harness runs, not held by a fault and not paused."""
        c = self.cluster
        busy = self.busy_nodes()
        return sorted(n for n, info in view.items() if info.state == "active"
                      and n in c.node_ns and c.running(n) and n not in c.paused
                      and n not in busy)

    def _valid_kinds(self, view: dict[int, Any]) -> list[str]:
        members = [n for n, info in view.items() if info.state != "removed"]
        active = [n for n, info in view.items() if info.state == "active"]
        draining = [n for n, info in view.items() if info.state == "decommissioning"]
        usable = self._usable(view)
        kinds = []
        if len(members) < self.max_nodes and self._next_node < 250:
            kinds.append("join")
        if not draining and len(active) - 1 >= self.min_active and usable:
            kinds += ["decommission", "remove-dead"]
            if any(view[n].controller_voter for n in usable):
                kinds.append("decommission-voter")
        if len(active) > self.rf:
            kinds += ["reassign", "reassign-cancel"]
        kinds.append("reassign-invalid")
        return kinds

    # ------------------------------------------------------------------ operations

    def _one_op(self) -> None:
        view = self._view()
        if view is None:
            return  # no node answered (faults); try again next cycle
        kinds = self._valid_kinds(view)  # kinds not done yet first: a short run sees more
        kind = self.rng.choices(kinds, [WEIGHTS[k] * (1 if k in self.counts else 4)
                                        for k in kinds])[0]
        wait = self.rng.random() < 0.5
        fid = next(self._ids)
        detail: dict[str, Any] = {"fault": "membership", "kind": f"membership-{kind}",
                                  "id": fid}
        outcome: dict[str, Any]
        op = getattr(self, "_op_" + kind.replace("-", "_"))
        try:
            outcome = op(view, detail, wait)
        except Exception as exc:  # noqa: BLE001 - an outcome like any other
            from raftka.client import (InvalidRequestError, NotEnoughReplicasError,
                                       RaftkaError)
            if isinstance(exc, (InvalidRequestError, NotEnoughReplicasError)):
                outcome = {"outcome": "refused", "message": str(exc)[:300]}
            elif isinstance(exc, RaftkaError):
                outcome = {"outcome": "unknown", "message": str(exc)[:300]}
            else:
                outcome = {"outcome": "error", "message": repr(exc)[:300]}
                self.errors.append(f"membership {kind}: {exc!r}")
        if fid not in self._started_ids:  # it failed before it could start: say so too
            self._started(detail)
        self._started_ids.discard(fid)
        by_kind = self.counts.setdefault(kind, {})
        by_kind[outcome["outcome"]] = by_kind.get(outcome["outcome"], 0) + 1
        self.history.event("info", "nemesis", "stop", {
            "fault": "membership", "kind": detail["kind"], "id": fid, **outcome})

    def _started(self, detail: dict) -> None:
        self._started_ids.add(detail["id"])
        self.history.event("info", "nemesis", "start", detail)

    def _wait(self, predicate: Callable[[], bool], timeout: float, step_s: float = 0.5,
              refusals: tuple[type[BaseException], ...] = ()) -> bool | None:
        """True once ``predicate`` holds, False after ``timeout``, None if stopped. A
        failed ``predicate`` is asked again (unavailable, a timeout), but for the
        ``refusals``, which propagate."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            try:
                if predicate():
                    return True
            except refusals:
                raise
            except Exception:  # noqa: BLE001 - a view that failed; ask again
                pass
            if time.monotonic() > deadline:
                return False
            self._stop.wait(step_s)
        return None

    @staticmethod
    def _waited(result: bool | None, what: str) -> dict[str, Any]:
        if result:
            return {"outcome": "ok"}
        if result is None:
            return {"outcome": "pending", "message": f"run ended before {what}"}
        return {"outcome": "timeout", "message": f"{what} not seen in time"}

    def _op_join(self, view, detail, wait) -> dict[str, Any]:
        c = self.cluster
        node = self._next_node
        self._next_node += 1
        detail.update(node=node, join=[a for i, a in sorted(c.addresses.items())])
        self._started(detail)
        c.add_node(node)
        c.start(node)
        self.on_members_changed()

        def active() -> bool:
            v = self._view() or {}
            return node in v and v[node].state == "active"
        return self._waited(self._wait(active, JOIN_WAIT_S), f"node {node} active")

    def _op_decommission(self, view, detail, wait, voter: bool = False) -> dict[str, Any]:
        usable = self._usable(view)
        if voter:
            usable = [n for n in usable if view[n].controller_voter] or usable
        victim = self.rng.choice(usable)
        detail.update(node=victim, wait=wait, voter=view[victim].controller_voter)
        self._started(detail)
        with self._admin() as admin:
            admin.decommission_node(victim)
        if not wait:
            return {"outcome": "pending"}
        return self._await_removed(victim)

    def _op_decommission_voter(self, view, detail, wait) -> dict[str, Any]:
        return self._op_decommission(view, detail, wait, voter=True)

    def _op_remove_dead(self, view, detail, wait) -> dict[str, Any]:
        from raftka.client import InvalidRequestError, NotEnoughReplicasError
        usable = self._usable(view)
        voters = [n for n in usable if view[n].controller_voter]
        victim = self.rng.choice(voters if voters and self.rng.random() < 0.5 else usable)
        detail.update(node=victim, wait=wait, voter=view[victim].controller_voter)
        self._started(detail)
        self.cluster.retire(victim)  # first: no fault picks it, nothing restarts it
        time.sleep(0.5)  # a fault that picked it a moment ago has registered by now
        if victim in self.busy_nodes():
            self.errors.append(f"node {victim} was retired while a fault held it")
        self.cluster.kill(victim)
        self.retired.append(victim)
        self.on_members_changed()
        refusals = 0

        def accepted() -> bool:
            nonlocal refusals
            try:
                with self._admin() as admin:
                    admin.decommission_node(victim, dead=True, timeout=5)
                return True
            except InvalidRequestError as exc:
                if "alive" not in str(exc):
                    raise
                refusals += 1
                return False
        try:
            got = self._wait(accepted, DEAD_ACCEPT_WAIT_S, 1.0,
                             (InvalidRequestError, NotEnoughReplicasError))
        except Exception:  # refused for another reason: the node comes back as it was
            self._unretire(victim)
            self.cluster.start(victim)
            self.retired.remove(victim)
            self.on_members_changed()
            raise
        if not got:
            out = self._waited(got, "remove --dead accepted")
            out["alive_refusals"] = refusals
            return out
        if not wait:
            return {"outcome": "pending", "alive_refusals": refusals}
        return {**self._await_removed(victim), "alive_refusals": refusals}

    def _await_removed(self, victim: int) -> dict[str, Any]:
        last: dict[int, Any] = {}

        def removed() -> bool:
            last.clear()
            last.update(self._view() or {})
            return victim in last and last[victim].state == "removed"
        out = self._waited(self._wait(removed, DRAIN_WAIT_S), f"node {victim} removed")
        if out["outcome"] == "ok":  # who votes in the controller group now
            out["voters"] = sorted(n for n, info in last.items() if info.controller_voter)
            self._retire_removed()
        return out

    def _replicas(self, key: int) -> tuple[int, ...]:
        with self._admin() as admin:
            return tuple(admin.describe_topic(self.topic, timeout=5).partitions[key].replicas)

    def _pick_move(self, view, detail) -> tuple[int, tuple[int, ...], list[int]] | None:
        key = self.rng.randrange(self.keys)
        replicas = self._replicas(key)
        active = sorted(n for n, info in view.items() if info.state == "active")
        spare = [n for n in active if n not in replicas]
        if not spare or not replicas:
            return None
        target = list(replicas)
        # a replica on a draining node goes first (a target naming it would be refused)
        leaving = [i for i, n in enumerate(replicas) if n not in active]
        at = self.rng.choice(leaving) if leaving else self.rng.randrange(len(target))
        target[at] = self.rng.choice(spare)
        detail.update(key=key, replicas=list(replicas), target=target)
        return key, replicas, target

    def _op_reassign(self, view, detail, wait) -> dict[str, Any]:
        move = self._pick_move(view, detail)
        detail["wait"] = wait
        self._started(detail)
        if move is None:
            return {"outcome": "skipped", "message": "no active node lacks a replica"}
        key, _, target = move
        with self._admin() as admin:
            admin.reassign_partition(self.topic, key, target)
        if not wait:
            return {"outcome": "pending"}

        def done() -> bool:
            with self._admin() as admin:
                moving = any(r.partition == key for r in admin.list_reassignments(self.topic))
            return not moving and sorted(self._replicas(key)) == sorted(target)
        return self._waited(self._wait(done, MOVE_WAIT_S), f"move of key {key} done")

    def _op_reassign_cancel(self, view, detail, wait) -> dict[str, Any]:
        move = self._pick_move(view, detail)
        self._started(detail)
        if move is None:
            return {"outcome": "skipped", "message": "no active node lacks a replica"}
        key, _, target = move
        with self._admin() as admin:
            admin.reassign_partition(self.topic, key, target)
        self._stop.wait(self.rng.uniform(0.0, 1.0))
        with self._admin() as admin:
            admin.cancel_reassignment(self.topic, key)  # refused if it finished already
        return {"outcome": "ok"}

    def _op_reassign_invalid(self, view, detail, wait) -> dict[str, Any]:
        from raftka.client import InvalidRequestError
        key = self.rng.randrange(self.keys)
        before = self._replicas(key)
        target = [before[0], before[0], *before[2:]]  # one node twice
        detail.update(key=key, replicas=list(before), target=target)
        self._started(detail)
        try:
            with self._admin() as admin:
                admin.reassign_partition(self.topic, key, target)
        except InvalidRequestError as exc:
            # Nothing of it may show: no move to that set, no replica set naming a node
            # twice. (The replicas may still change meanwhile: a drain moves them.)
            after = self._replicas(key)
            with self._admin() as admin:
                moving = [r for r in admin.list_reassignments(self.topic)
                          if r.partition == key and list(r.target) == target]
            if moving or len(set(after)) != len(after):
                self.errors.append(f"a refused move of key {key} to {target} changed "
                                   f"something: replicas {list(before)} -> {list(after)}, "
                                   f"moves to it {len(moving)}")
            return {"outcome": "refused", "message": str(exc)[:300], "expected": True}
        self.errors.append(f"a move of key {key} to {target} (a node twice) was accepted")
        return {"outcome": "error", "message": "accepted a replica set with a node twice"}

    # ------------------------------------------------------------------ housekeeping

    def _retire_removed(self) -> None:
        """Stop and forget running nodes the cluster marked removed, once no fault holds
        them and they no longer vote in the controller group."""
        view = self._view()
        if not view:
            return
        c = self.cluster
        for n in sorted(c.retired):  # killed for good, but `remove --dead` never went in
            if n in view and view[n].state == "active":
                try:
                    with self._admin() as admin:
                        admin.decommission_node(n, dead=True, timeout=5)
                    self.history.event("info", "nemesis", "membership-remove-dead-retry",
                                       {"node": n})
                except Exception:  # noqa: BLE001 - still "alive", or no controller: later
                    pass
        for n, info in sorted(view.items()):
            if info.state != "removed" or n in c.retired or n not in c.node_ns:
                continue
            if info.controller_voter or n in self.busy_nodes():
                continue  # next time
            c.retire(n)
            time.sleep(0.5)  # a fault that picked it a moment ago has registered by now
            if n in self.busy_nodes():  # give it back to the fault; retire it later
                self._unretire(n)
                continue
            c.resume(n)
            c.kill(n)
            self.retired.append(n)
            self.history.event("info", "nemesis", "membership-retire", {"node": n})
            self.on_members_changed()

    def _unretire(self, n: int) -> None:
        c = self.cluster
        c.retired.discard(n)
        c.node_ns = {**c.node_ns, n: f"{c.prefix}-n{n}"}
        c.addresses = {**c.addresses, n: f"10.77.0.{n}:{NODE_PORT}"}

    # ------------------------------------------------------------------ end of run

    def converged(self, topics: tuple[str, ...]) -> list[str]:
        """The end-of-run membership sanity check (faults healed, nodes running): waits up
        to CONVERGE_WAIT_S for it to hold; returns what did not (empty: converged)."""
        problems: list[str] = ["not checked"]
        deadline = time.monotonic() + CONVERGE_WAIT_S
        while time.monotonic() < deadline:
            try:  # a `remove --dead` the run's end cut short is asked again here
                self._retire_removed()
                problems = self._convergence_problems(topics)
            except Exception as exc:  # noqa: BLE001
                problems = [f"cannot read the cluster's state: {exc!r}"]
            if not problems:
                break
            time.sleep(1.0)
        return problems

    def _convergence_problems(self, topics: tuple[str, ...]) -> list[str]:
        import grpc

        from raftka.client import channel_options
        from raftka.v1 import admin_pb2, admin_pb2_grpc

        c = self.cluster
        with self._admin() as admin:
            view = {n.id: n for n in admin.list_nodes(timeout=5)}
            moves = admin.list_reassignments(timeout=5)
            descs = [admin.describe_topic(t, timeout=5) for t in topics]
        running = {n for n in view if c.running(n)}
        leaders: dict[int, int] = {}
        unanswered: list[str] = []
        for n in sorted(n for n, info in view.items() if info.state == "active"):
            if n not in running or n not in c.addresses:
                continue
            with grpc.insecure_channel(c.addresses[n], options=channel_options()) as ch:
                try:
                    leaders[n] = admin_pb2_grpc.AdminStub(ch).DescribeCluster(
                        admin_pb2.DescribeClusterRequest(), timeout=5).controller_id
                except grpc.RpcError as exc:
                    unanswered.append(f"node {n} DescribeCluster: {exc.code().name}")
        return convergence_problems(view, moves, descs, running, leaders) + unanswered


def convergence_problems(view: dict[int, Any], moves: list[Any], descs: list[Any],
                         running: set[int], leaders: dict[int, int]) -> list[str]:
    """What keeps the cluster from having converged, from ``view`` (ListNodes: id ->
    ClusterNode), ``moves`` (ListReassignments), ``descs`` (TopicDescriptions), the nodes
    ``running`` and the controller leader each active node names (``leaders``)."""
    out: list[str] = []
    active = {n for n, info in view.items() if info.state == "active"}
    draining = sorted(n for n, info in view.items() if info.state == "decommissioning")
    if draining:
        out.append(f"nodes {draining} still decommissioning")
    if moves:
        out.append("moves still running: " + ", ".join(
            f"{m.topic}/{m.partition} {list(m.replicas)}->{list(m.target)}" for m in moves[:5]))
    down = sorted(active - running)
    if down:
        out.append(f"active nodes {down} not running")
    for d in descs:
        for p in d.partitions:
            reps = list(p.replicas)
            if (len(reps) != d.replication_factor or len(set(reps)) != len(reps)
                    or not set(reps) <= active):
                out.append(f"{d.name}/{p.partition} replicas {reps} (replication factor "
                           f"{d.replication_factor}, active nodes {sorted(active)})")
    voters = sorted(n for n, info in view.items() if info.controller_voter)
    want = min(CONTROLLER_VOTERS, len(active))
    if len(voters) != want or not set(voters) <= active:
        out.append(f"controller voters {voters}, want {want} of the active nodes "
                   f"{sorted(active)}")
    named = set(leaders.values())
    if len(named) != 1 or 0 in named:
        out.append(f"controller leader as each node names it: {leaders}")
    elif named.pop() not in active:
        out.append(f"controller leader {leaders} is not an active node")
    return out
