"""A node removed from the cluster (final: ids are never reused) leaves the controller group
once demoted (``ReassignmentDriver._replace_controller_voters``) and every node's Raft
transport and liveness watch (``PeerTransport.remove_peer``, ``HostDriver.remove_peer``),
so nobody dials it again. tests/integration/test_join.py checks it on a real cluster."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from raftka.node._reassignment import ReassignmentDriver
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


def _step(conf: ConfState, *, decommissioning=(), removed=(), matches=None) -> list:
    node = _ControllerNode(conf, matches or {})
    ids = sorted(conf.voters | conf.learners)
    gone = set(decommissioning) | set(removed)
    state = SimpleNamespace(node_ids=ids, active_node_ids=[n for n in ids if n not in gone],
                            decommissioning=frozenset(decommissioning),
                            removed_nodes=frozenset(removed))
    group = SimpleNamespace(node=node, group_id=1)
    broker = SimpleNamespace(node_id=1, controller=SimpleNamespace(group=group, state=state),
                             host=SimpleNamespace(mark=lambda gid: None))
    ReassignmentDriver(broker)._replace_controller_voters()  # type: ignore[arg-type]
    return node.proposed


def test_a_removed_learner_leaves_the_controller_group() -> None:
    assert _step(ConfState(frozenset({1, 2, 4}), frozenset({3})), removed=[3]) == [
        ConfChange(ConfChangeKind.REMOVE_NODE, 3)]


def test_a_decommissioning_learner_stays_it_may_be_cancelled() -> None:
    assert _step(ConfState(frozenset({1, 2, 4}), frozenset({3})), decommissioning=[3]) == []


def test_a_removed_voter_is_replaced_and_demoted_before_it_leaves() -> None:
    conf = ConfState(frozenset({1, 2, 3}), frozenset({4}))
    assert _step(conf, removed=[3], matches={4: 10}) == [
        ConfChange(ConfChangeKind.ADD_VOTER, 4)]
    assert _step(ConfState(frozenset({1, 2, 3, 4})), removed=[3]) == [
        ConfChange(ConfChangeKind.ADD_LEARNER, 3)]


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
