"""How a refreshed metadata answer is merged into the client's view (``_cluster._merge``):
the leader a partition keeps, and the node's answer that the merge relies on."""

from __future__ import annotations

from types import SimpleNamespace

from raftka.client._cluster import ClusterMetadata, ClusterState, _merge
from raftka.client._types import PartitionDescription, TopicDescription
from raftka.node._broker import Broker
from raftka.node._controller_state import PartitionMeta, TopicMeta
from raftka.node._services import _Service

BROKERS = {1: "h1:1", 2: "h2:1", 3: "h3:1", 4: "h4:1"}


def _view(leader: int, term: int, replicas: tuple[int, ...] = (1, 2, 3),
          topic_id: str = "", at: float = 1.0) -> ClusterMetadata:
    partition = PartitionDescription(0, leader, replicas, 0, 0, term)
    return ClusterMetadata(dict(BROKERS), 1, {
        "t": TopicDescription("t", (partition,), len(replicas), {}, topic_id)}, at)


def _leader(md: ClusterMetadata) -> tuple[int, int]:
    p = md.topics["t"].partition(0)
    return p.leader_id, p.leader_term


def test_a_leader_that_left_the_partition_is_not_kept_over_a_hint() -> None:
    """Node 4 led the partition, which then moved to 1, 2, 3 (node 4 decommissioned); a
    node hosting no replica answers with a hint (the preferred replica, term 0). The
    client goes there, not back to node 4 (it did, for good, in a 4-node cluster)."""
    client = ClusterState("h1:1")
    client._install(_view(4, 5, replicas=(4, 1, 2)))
    assert client.leader_address("t", 0) == "h4:1"
    client._install(_view(1, 0, replicas=(1, 2, 3), at=2.0))
    assert client.leader_address("t", 0) == "h1:1"


def test_a_known_leader_outweighs_one_hint_not_every_hint() -> None:
    """A leader a replica named beats a hint once; kept, it becomes a hint itself, so a
    leader that failed or lost its leadership since does not outlive every refresh of a
    client whose metadata comes from a node that hosts no replica."""
    known = _view(2, 5)
    once = _merge(known, _view(1, 0, at=2.0))
    assert _leader(once) == (2, 0)
    assert _leader(_merge(once, _view(1, 0, at=3.0))) == (1, 0)
    # a hint naming the known leader is no evidence against its term ...
    agreed = _merge(known, _view(2, 0, at=2.0))
    assert _leader(agreed) == (2, 5)
    # ... which still keeps a lagging replica from moving the client back
    assert _leader(_merge(agreed, _view(3, 4, at=3.0))) == (2, 5)
    assert _leader(_merge(agreed, _view(3, 6, at=3.0))) == (3, 6)


def test_terms_of_a_re_created_topic_start_again() -> None:
    """A topic deleted and created again under the same name between two refreshes has
    new Raft groups: their terms say nothing against the old topic's."""
    old = _view(2, 7, topic_id="first")
    assert _leader(_merge(old, _view(3, 1, topic_id="second", at=2.0))) == (3, 1)
    assert _leader(_merge(old, _view(3, 1, topic_id="first", at=2.0))) == (2, 7)
    assert _leader(_merge(old, _view(3, 1, at=2.0))) == (2, 7)  # a node before topic ids


def test_a_node_answers_term_0_and_its_topic_id_for_a_partition_it_does_not_host() -> None:
    """What the merge relies on: a leader with term 0 is a hint (no Raft leader has term
    0), and the topic id tells incarnations apart."""
    topic = TopicMeta("t", "id-1", (PartitionMeta(0, 100, (3, 1, 2)),), 3, {}, False)
    silent: set[int] = set()
    broker = SimpleNamespace(partitions={}, host=SimpleNamespace(driver=SimpleNamespace(
        heard_recently=lambda n: n not in silent)))
    broker.leader_of = lambda t, m: Broker.leader_of(broker, t, m)  # type: ignore[arg-type]
    info = _Service(broker).topic_info(topic)  # type: ignore[arg-type]
    assert info.topic_id == "id-1"
    p = info.partitions[0]
    assert (p.leader_id, p.leader_term, list(p.replicas)) == (3, 0, [3, 1, 2])
    silent.add(3)  # the preferred replica's node went silent: the next replica is the hint
    assert _Service(broker).topic_info(topic).partitions[0].leader_id == 1  # type: ignore
    silent.update({1, 2})  # nothing heard from any: the preferred one still
    assert _Service(broker).topic_info(topic).partitions[0].leader_id == 3  # type: ignore
