"""The balancer's planner (``node/_balancer_plan.py``): properties over many seeded random
clusters (every move lowers the spread, never two replicas of a partition on one node,
racks respected, the same inputs give the same plan) and the scenarios it exists for (a
node joins, one node fills with bytes, leaders pile up on one node)."""

from __future__ import annotations

import random

import pytest

from raftka.node._balancer_plan import Move, PartitionLoad, plan_moves, spread


def _apply(parts: list[PartitionLoad], move: Move) -> list[PartitionLoad]:
    out = []
    hit = 0
    for p in parts:
        if (p.topic, p.partition) == (move.topic, move.partition):
            assert p.replicas == move.replicas, "a move starts from the partition's set"
            p = p._replace(replicas=move.target)
            hit += 1
        out.append(p)
    assert hit == 1
    return out


def _random_cluster(rng: random.Random) -> tuple[dict[int, str], list[PartitionLoad]]:
    n = rng.randint(1, 7)
    rack_count = rng.choice([0, 0, 2, 3])
    nodes = {i: (f"r{rng.randrange(rack_count)}" if rack_count else "")
             for i in range(1, n + 1)}
    extra = [n + 1] if rng.random() < 0.3 else []  # a decommissioning node holds some
    parts = []
    for t in range(rng.randint(1, 3)):
        rf = rng.randint(1, min(3, n))
        for p in range(rng.randint(1, 12)):
            pool = list(nodes) + extra
            # skewed: low ids more likely, so there is something to balance
            weights = [1.0 / (k + 1) ** 2 for k in range(len(pool))]
            chosen: list[int] = []
            while len(chosen) < rf:
                pick = rng.choices(pool, weights)[0]
                if pick not in chosen:
                    chosen.append(pick)
            parts.append(PartitionLoad(f"t{t}", p, tuple(chosen),
                                       rng.choice([0, 10, 1000, 50_000]),
                                       moving=rng.random() < 0.1))
    return nodes, parts


@pytest.mark.parametrize("seed", range(200))
def test_every_move_lowers_the_spread_and_keeps_replicas_distinct_and_racks(seed: int) -> None:
    rng = random.Random(seed)
    nodes, parts = _random_cluster(rng)
    moves = plan_moves(nodes, parts, moves_max=rng.choice([1, 5, 100]), bytes_min=0)
    assert moves == plan_moves(nodes, list(reversed(parts)),
                               moves_max=len(moves) or 1, bytes_min=0)[:len(moves)] or not moves
    before = spread(nodes, parts)
    touched = set()
    current = parts
    for move in moves:
        key = (move.topic, move.partition)
        assert key not in touched, "one move per partition in a plan"
        touched.add(key)
        part = next(p for p in current if (p.topic, p.partition) == key)
        assert not part.moving, "a moving partition is never planned"
        assert all(n in nodes for n in part.replicas), "the drain owns inactive nodes' ones"
        assert len(set(move.target)) == len(move.target) == len(move.replicas)
        assert all(n in nodes for n in move.target)
        assert move.moves_data == (move.kind != "leader")
        current = _apply(current, move)
        after = spread(nodes, current)
        assert after < before, (move, before, after)
        before = after
    # leader moves (cheap) come first
    kinds = [m.kind for m in moves]
    assert kinds == sorted(kinds, key=lambda k: k != "leader")


@pytest.mark.parametrize("seed", range(60))
def test_replanning_until_nothing_is_left_balances_counts(seed: int) -> None:
    rng = random.Random(1000 + seed)
    nodes, parts = _random_cluster(rng)
    parts = [p._replace(moving=False) for p in parts if all(n in nodes for n in p.replicas)]
    for _ in range(1000):
        moves = plan_moves(nodes, parts, moves_max=3, bytes_min=0)
        if not moves:
            break
        for move in moves:
            parts = _apply(parts, move)
    else:
        pytest.fail("plans never ran out")
    assert plan_moves(nodes, parts, bytes_min=0) == []
    if len({r for r in nodes.values()}) <= 1:  # without rack constraints counts even out
        counts = {n: 0 for n in nodes}
        for p in parts:
            for n in p.replicas:
                counts[n] += 1
        assert max(counts.values()) - min(counts.values()) <= 1


def test_a_node_that_joins_gets_replicas_and_then_leaders() -> None:
    nodes = {1: "", 2: "", 3: "", 4: ""}
    parts = [PartitionLoad("t", p, tuple((p + k) % 3 + 1 for k in range(3)), 100)
             for p in range(6)]
    moves = plan_moves(nodes, parts)
    assert moves and all(m.kind == "replicas" for m in moves)
    assert all(4 in m.target and 4 not in m.replicas for m in moves)
    for m in moves:
        parts = _apply(parts, m)
    counts = {n: sum(n in p.replicas for p in parts) for n in nodes}
    assert counts == {1: 5, 2: 4, 3: 5, 4: 4} or max(counts.values()) - min(counts.values()) <= 1
    while moves:
        moves = plan_moves(nodes, parts)
        for m in moves:
            parts = _apply(parts, m)
    leaders = {n: sum(p.replicas[0] == n for p in parts) for n in nodes}
    assert max(leaders.values()) - min(leaders.values()) <= 1 and leaders[4] >= 1


def test_leaders_piled_on_one_node_are_spread_by_reordering_only() -> None:
    nodes = {1: "", 2: "", 3: ""}
    parts = [PartitionLoad("t", p, (1, 2, 3), 0) for p in range(6)]
    moves = plan_moves(nodes, parts)
    assert [m.kind for m in moves] == ["leader"] * 4
    for m in moves:
        assert sorted(m.target) == [1, 2, 3]
        parts = _apply(parts, m)
    assert sorted(p.replicas[0] for p in parts) == [1, 1, 2, 2, 3, 3]


def test_a_node_full_of_bytes_sheds_a_partition_and_small_gaps_are_left_alone() -> None:
    nodes = {1: "", 2: "", 3: ""}
    # counts 2,2,1 -> node 1 holds one replica more than node 3 and 10x the bytes
    parts = [PartitionLoad("big", 0, (1, 2), 1_000_000_000),
             PartitionLoad("small", 0, (2, 1), 1_000),
             PartitionLoad("small", 1, (3,), 1_000)]
    moves = plan_moves(nodes, parts, bytes_min=1 << 20)
    data = [m for m in moves if m.moves_data]
    assert data and data[0].kind == "bytes" and 3 in data[0].target
    assert plan_moves(nodes, parts, bytes_min=1 << 40) == [m for m in moves
                                                           if not m.moves_data]


def test_racks_are_respected_and_a_partition_on_one_rack_is_spread() -> None:
    nodes = {1: "a", 2: "a", 3: "b", 4: "b"}
    parts = [PartitionLoad("t", 0, (1, 2), 0)]
    moves = plan_moves(nodes, parts)
    assert len(moves) == 1 and moves[0].kind == "rack"
    assert {nodes[n] for n in moves[0].target} == {"a", "b"}
    # node 1 is rack a's only node: its replicas stay (node 3 would leave a partition on
    # rack b alone) while node 2's are shared with node 3, its rack's other node
    nodes = {1: "a", 2: "b", 3: "b"}
    parts = [PartitionLoad("t", p, (1, 2), 0) for p in range(4)]
    moves = plan_moves(nodes, parts)
    assert [m.kind for m in moves if m.moves_data] == ["replicas", "replicas"]
    for m in moves:
        assert 1 in m.target and {nodes[n] for n in m.target} == {"a", "b"}


def test_moving_partitions_and_inactive_nodes_are_left_to_their_owners() -> None:
    nodes = {1: "", 2: "", 3: ""}
    parts = [PartitionLoad("t", p, (1, 2), 0, moving=True) for p in range(5)]
    parts += [PartitionLoad("u", p, (1, 9), 0) for p in range(5)]  # node 9 is draining
    assert plan_moves(nodes, parts) == []
