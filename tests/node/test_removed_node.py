"""A node removed from the cluster (final: ids are never reused) leaves the controller group
once demoted and told of its removal (``ReassignmentDriver._replace_controller_voters``),
then every node's Raft transport and liveness watch (``Broker.forget_departed_nodes``,
``PeerTransport.remove_peer``, ``HostDriver.remove_peer``), so nobody dials it again.
tests/integration/test_join.py checks it on a real cluster."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from raftka.node import _reassignment
from raftka.node._broker import Broker
from raftka.node._reassignment import (
    REMOVED_LEARNER_GRACE_S,
    REMOVED_SILENT_S,
    ReassignmentDriver,
)
from raftka.node._transport import PeerTransport
from raftka.raft import ConfChange, ConfChangeKind, ConfState, Message, MsgType


class _ControllerNode:
    """The controller group's RawNode as the step sees it; records proposals."""

    def __init__(self, conf: ConfState, matches: dict[int, int]) -> None:
        self.conf_state = conf
        self.conf_change_pending = False
        self.commit_index = 10
        self._matches = matches
        self.proposed: list[ConfChange] = []

    def follower_matches(self) -> dict[int, int]:
        return self._matches

    def propose_conf_change(self, change: ConfChange) -> int:
        self.proposed.append(change)
        return 11


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def _driver(conf: ConfState, monkeypatch, *, decommissioning=(), removed=(), matches=None,
            silent: float = 0.0) -> tuple[ReassignmentDriver, _ControllerNode, _Clock]:
    clock = _Clock()
    monkeypatch.setattr(_reassignment, "time", clock)
    node = _ControllerNode(conf, matches or {})
    ids = sorted(conf.voters | conf.learners)
    gone = set(decommissioning) | set(removed)
    state = SimpleNamespace(node_ids=ids, active_node_ids=[n for n in ids if n not in gone],
                            decommissioning=frozenset(decommissioning),
                            removed_nodes=frozenset(removed))
    group = SimpleNamespace(node=node, group_id=1)
    broker = SimpleNamespace(
        node_id=1, controller=SimpleNamespace(group=group, state=state),
        host=SimpleNamespace(mark=lambda gid: None,
                             driver=SimpleNamespace(silent_for=lambda n: silent)))
    return ReassignmentDriver(broker), node, clock  # type: ignore[arg-type]


def _steps(conf: ConfState, monkeypatch, **kwargs) -> list[ConfChange]:
    driver, node, _ = _driver(conf, monkeypatch, **kwargs)
    driver._replace_controller_voters()
    return node.proposed


LEARNER_3 = ConfState(frozenset({1, 2, 4}), frozenset({3}))


def test_a_removed_learner_leaves_the_group_once_it_had_time_to_learn_its_removal(
        monkeypatch) -> None:
    """It holds the log up to its removal (match >= commit index): after the grace period
    (heartbeats tell it that is committed, so it applies it) it is removed."""
    driver, node, clock = _driver(LEARNER_3, monkeypatch, removed=[3], matches={3: 10})
    driver._replace_controller_voters()
    clock.now += REMOVED_LEARNER_GRACE_S - 0.1
    driver._replace_controller_voters()
    assert node.proposed == []
    clock.now += 0.1
    driver._replace_controller_voters()
    assert node.proposed == [ConfChange(ConfChangeKind.REMOVE_NODE, 3)]


def test_a_removed_learner_behind_its_removal_stays_until_it_catches_up_or_goes_silent(
        monkeypatch) -> None:
    driver, node, clock = _driver(LEARNER_3, monkeypatch, removed=[3], matches={3: 9})
    clock.now += 60
    driver._replace_controller_voters()
    assert node.proposed == []
    assert _steps(LEARNER_3, monkeypatch, removed=[3], silent=REMOVED_SILENT_S) == [
        ConfChange(ConfChangeKind.REMOVE_NODE, 3)]  # stopped or dead: nothing to tell it


def test_a_decommissioning_learner_stays_it_may_be_cancelled(monkeypatch) -> None:
    assert _steps(LEARNER_3, monkeypatch, decommissioning=[3], silent=1e9) == []


def test_a_removed_voter_is_replaced_and_demoted_before_it_leaves(monkeypatch) -> None:
    conf = ConfState(frozenset({1, 2, 3}), frozenset({4}))
    assert _steps(conf, monkeypatch, removed=[3], matches={4: 10}) == [
        ConfChange(ConfChangeKind.ADD_VOTER, 4)]
    assert _steps(ConfState(frozenset({1, 2, 3, 4})), monkeypatch, removed=[3]) == [
        ConfChange(ConfChangeKind.ADD_LEARNER, 3)]


def test_a_removed_node_is_forgotten_only_once_it_left_the_controller_group() -> None:
    """Until then a node still running must be able to learn its own removal."""
    removed_peers: list[int] = []
    node = SimpleNamespace(conf_state=LEARNER_3)
    broker = SimpleNamespace(
        node_id=1,
        controller=SimpleNamespace(group=SimpleNamespace(node=node),
                                   state=SimpleNamespace(removed_nodes=frozenset({3}))),
        host=SimpleNamespace(transport=SimpleNamespace(
            remove_peer=lambda n: removed_peers.append(n) or True),
            driver=SimpleNamespace(remove_peer=lambda n: None)),
        peer_channels=SimpleNamespace(addresses={3: "10.0.0.3:7001"}))
    assert Broker.forget_departed_nodes(broker) == frozenset()  # type: ignore[arg-type]
    assert removed_peers == []
    node.conf_state = ConfState(frozenset({1, 2, 4}))
    assert Broker.forget_departed_nodes(broker) == {3}  # type: ignore[arg-type]
    assert removed_peers == [3] and broker.peer_channels.addresses == {}


def test_a_removed_peer_leaves_the_transport() -> None:
    async def run() -> None:
        unreachable: list[int] = []
        # nothing listens on these ports: the senders keep reconnecting until removed
        transport = PeerTransport(1, {2: "127.0.0.1:9", 3: "127.0.0.1:9"},
                                  unreachable.append)
        transport.start()
        try:
            await asyncio.sleep(0.05)
            sender = transport._peers[3].task  # noqa: SLF001 - the sender of the peer
            assert transport.remove_peer(3)
            assert not transport.remove_peer(3)
            await asyncio.sleep(0)
            assert sender.done() and transport.peer_ids == [2]
            transport.send(1, Message(MsgType.HEARTBEAT, 3, 1))  # ignored: not a peer
            assert not transport.is_reachable(3)
        finally:
            await transport.close()

    asyncio.run(run())
