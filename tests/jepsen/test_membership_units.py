"""The membership nemesis' pieces that need no root: which operations it finds valid in a
cluster view (never a drain below the replication factor and the controller's three
voters, one drain at a time, a move only while some active node lacks a replica), the
end-of-run convergence check on hand-made views, and how NetCluster starts joined, first
and retired nodes (the first nodes keep their original --peers through membership
changes)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rkjepsen import netcluster
from rkjepsen.membership import Membership, convergence_problems
from rkjepsen.nemesis import Nemesis, parse_nemeses


def _info(nid: int, state: str = "active", voter: bool = False) -> SimpleNamespace:
    return SimpleNamespace(id=nid, state=state, controller_voter=voter,
                           address=f"10.77.0.{nid}:7001")


def _view(*nodes: SimpleNamespace) -> dict[int, SimpleNamespace]:
    return {n.id: n for n in nodes}


class FakeCluster:
    def __init__(self, ids) -> None:
        self.node_ns = {i: f"n{i}" for i in ids}
        self.addresses = {i: f"10.77.0.{i}:7001" for i in ids}
        self.paused: set[int] = set()
        self.down: set[int] = set()
        self.retired: set[int] = set()

    def running(self, nid: int) -> bool:
        return nid in self.node_ns and nid not in self.down


def _membership(cluster: FakeCluster, busy=frozenset()) -> Membership:
    return Membership(cluster, None, interval_s=1.0, seed=1, topic="jepsen", keys=4,
                      replication_factor=3, max_nodes=5, busy_nodes=lambda: set(busy))


def test_three_nodes_rf3_only_join_or_the_invalid_move():
    m = _membership(FakeCluster([1, 2, 3]))
    view = _view(_info(1, voter=True), _info(2, voter=True), _info(3, voter=True))
    assert sorted(m._valid_kinds(view)) == ["join", "reassign-invalid"]


def test_four_nodes_allow_one_drain_and_moves():
    m = _membership(FakeCluster([1, 2, 3, 4]))
    view = _view(_info(1, voter=True), _info(2, voter=True), _info(3, voter=True), _info(4))
    assert set(m._valid_kinds(view)) == {"join", "decommission", "decommission-voter",
                                         "remove-dead", "reassign", "reassign-cancel",
                                         "reassign-invalid"}
    # a drain already running: no second one (4 active -> 3 would be fine alone)
    view[4] = _info(4, "decommissioning")
    assert not {"decommission", "remove-dead"} & set(m._valid_kinds(view))
    # removed nodes do not count as members; 5 members: no join
    m5 = _membership(FakeCluster([1, 2, 3, 4, 5, 6]))
    view = _view(*(_info(i) for i in range(1, 6)), _info(6, "removed"))
    assert "join" not in m5._valid_kinds(view) and "decommission" in m5._valid_kinds(view)


def test_victims_are_never_held_by_a_fault_paused_or_down():
    c = FakeCluster([1, 2, 3, 4])
    c.paused.add(2)
    c.down.add(3)
    m = _membership(c, busy={4})
    view = _view(_info(1, voter=True), _info(2, voter=True), _info(3, voter=True), _info(4))
    assert m._usable(view) == [1]
    c.paused.add(1)
    assert m._usable(view) == []
    assert not {"decommission", "decommission-voter", "remove-dead"} & set(
        m._valid_kinds(view))


def _desc(name: str, rf: int, *replica_sets) -> SimpleNamespace:
    return SimpleNamespace(name=name, replication_factor=rf, partitions=[
        SimpleNamespace(partition=i, replicas=tuple(r)) for i, r in enumerate(replica_sets)])


def test_convergence_clean_and_each_way_it_fails():
    view = _view(_info(1, voter=True), _info(2, voter=True), _info(4, voter=True), _info(5),
                 _info(3, "removed"))
    descs = [_desc("jepsen", 3, (1, 2, 4), (4, 5, 1))]
    leaders = {1: 2, 2: 2, 4: 2, 5: 2}
    assert convergence_problems(view, [], descs, {1, 2, 4, 5}, leaders) == []

    def problems(**kw):
        args = dict(view=view, moves=[], descs=descs, running={1, 2, 4, 5},
                    leaders=leaders)
        args.update(kw)
        return " | ".join(convergence_problems(**args))

    assert "replicas [1, 3, 4]" in problems(descs=[_desc("jepsen", 3, (1, 3, 4))])
    assert "replicas [1, 1, 4]" in problems(descs=[_desc("jepsen", 3, (1, 1, 4))])
    assert "replicas [1, 4]" in problems(descs=[_desc("jepsen", 3, (1, 4))])
    assert "leader as each node names it" in problems(leaders={**leaders, 5: 1})
    assert "leader as each node names it" in problems(leaders={**leaders, 5: 0})
    assert "not an active node" in problems(leaders={n: 3 for n in leaders})
    assert "active nodes [5] not running" in problems(running={1, 2, 4})
    move = SimpleNamespace(topic="jepsen", partition=0, replicas=(1, 2, 4), target=(1, 2, 5))
    assert "moves still running: jepsen/0" in problems(moves=[move])
    assert "still decommissioning" in problems(view={**view, 5: _info(5, "decommissioning")})
    assert "controller voters [1, 2, 3, 4]" in problems(
        view={**view, 3: _info(3, "removed", voter=True)})
    assert "controller voters [1, 2]" in problems(view={**view, 4: _info(4)})


def test_membership_is_a_nemesis_name_but_not_a_scheduled_fault():
    assert parse_nemeses("partition,membership") == ["partition", "membership"]
    n = Nemesis(FakeCluster([1, 2, 3]), None, ["membership"], 1.0, 1, lambda key: 0, 4)
    assert n.families == []


def test_netcluster_starts_joined_first_and_retired_nodes(monkeypatch, tmp_path: Path):
    commands: list[list[str]] = []
    monkeypatch.setattr(netcluster, "_run", lambda args, *a, **k: commands.append(args) or "")

    class Proc:
        pid = 0

        def poll(self):
            return None

    started: list[list[str]] = []
    monkeypatch.setattr(netcluster.subprocess, "Popen",
                        lambda cmd, **kw: started.append(cmd) or Proc())
    c = netcluster.NetCluster(3, tmp_path, run_id="abc")
    first_peers = "1=10.77.0.1:7001,2=10.77.0.2:7001,3=10.77.0.3:7001"
    c.add_node(4)
    assert c.node_ns[4] == "rkjabc-n4" and c.addresses[4] == "10.77.0.4:7001"
    assert ["ip", "netns", "add", "rkjabc-n4"] in commands
    c.start(4)
    assert started[-1][started[-1].index("--join") + 1] == \
        "10.77.0.1:7001,10.77.0.2:7001,10.77.0.3:7001"
    assert "--peers" not in started[-1]
    c.retire(2)
    assert 2 not in c.node_ns and 2 not in c.addresses and "10.77.0.2" not in c.bootstrap
    c.start(1)  # a first node restarts with the run's original --peers, not the members now
    assert started[-1][started[-1].index("--peers") + 1] == first_peers
    count = len(started)
    c.start(2)  # retired: a fault's undo that still names it starts nothing
    assert len(started) == count
    with pytest.raises(netcluster.HarnessError):
        c.add_node(4)


class Events:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def event(self, *args):
        self.events.append(args)


@pytest.mark.parametrize("error, outcome", [
    ("InvalidRequestError", "refused"), ("NotEnoughReplicasError", "refused"),
    ("RaftkaError", "unknown"), ("KeyError", "error")])
def test_every_outcome_is_a_start_stop_pair_in_the_history(monkeypatch, error, outcome):
    import raftka.client as client

    exc_type = getattr(client, error, None) or KeyError
    m = _membership(FakeCluster([1, 2, 3]))
    m.history = Events()
    view = _view(_info(1, voter=True), _info(2, voter=True), _info(3, voter=True))
    monkeypatch.setattr(m, "_view", lambda: view)

    def failing(view, detail, wait):  # fails before it could record its start
        raise exc_type("no")
    monkeypatch.setattr(m, "_op_join", failing)
    monkeypatch.setattr(m, "_op_reassign_invalid", failing)
    m._one_op()
    (_, _, f1, start), (_, _, f2, stop) = m.history.events
    assert (f1, f2) == ("start", "stop") and start["id"] == stop["id"]
    assert start["fault"] == stop["fault"] == "membership"
    assert stop["outcome"] == outcome
    assert m.summary()["ops"] == 1
    assert bool(m.errors) == (outcome == "error")


class FakeAdmin:
    def __init__(self, moves) -> None:
        self.moves = moves

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def reassign_partition(self, topic, key, target):
        from raftka.client import InvalidRequestError
        raise InvalidRequestError("names a node twice")

    def list_reassignments(self, topic=""):
        return self.moves


@pytest.mark.parametrize("after, moves, flagged", [
    ((1, 2, 3), [], False),
    ((2, 3, 4), [], False),  # a drain moved it meanwhile: not the refused move's doing
    ((1, 1, 3), [], True),
    ((1, 2, 3), [SimpleNamespace(partition=0, target=(1, 1, 3))], True)])
def test_a_refused_invalid_move_must_leave_no_trace(monkeypatch, after, moves, flagged):
    m = _membership(FakeCluster([1, 2, 3]))
    m.history = Events()
    m.keys = 1
    replicas = iter([(1, 2, 3), after])
    monkeypatch.setattr(m, "_replicas", lambda key: next(replicas))
    monkeypatch.setattr(m, "_admin", lambda: FakeAdmin(moves))
    out = m._op_reassign_invalid({}, {"id": 1}, False)
    assert out["outcome"] == "refused" and out["expected"]
    assert bool(m.errors) == flagged


def test_a_move_replaces_a_replica_on_a_draining_node_first(monkeypatch):
    m = _membership(FakeCluster([1, 2, 3, 4, 5]))
    m.keys = 1
    monkeypatch.setattr(m, "_replicas", lambda key: (1, 2, 3))
    view = _view(_info(1), _info(2, "decommissioning"), _info(3), _info(4), _info(5))
    for _ in range(20):
        detail: dict = {}
        key, before, target = m._pick_move(view, detail)
        assert target[0] == 1 and target[2] == 3 and target[1] in (4, 5)
