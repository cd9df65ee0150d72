"""Replica placement for new partitions: which nodes hold them, which one leads.

A pure function of its arguments (the controller's determinism rules,
``_controller_state.py``): every node computes the same placement from the same log.
The rules are in ``assign_replicas``'s docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def assign_replicas(
    node_ids: Sequence[int],
    partition_count: int,
    replication_factor: int,
    replica_counts: Mapping[int, int],
    leader_counts: Mapping[int, int],
) -> list[tuple[int, ...]]:
    """Replica lists for ``partition_count`` new partitions; ``[0]`` is the preferred leader.

    Greedy least-loaded placement (like Redpanda's allocator) that counts what every node
    already holds across all topics and updates the counts partition by partition. For each
    partition, with R = ``replication_factor``:

    1. Eligible nodes. Sort nodes by replica count; let ``c`` be the count of the R-th one.
       Nodes below ``c`` are *required* (fewer than R of them); nodes at exactly ``c`` form
       the *pool*; nodes above ``c`` are not used. Any R-set made of all required nodes plus
       pool nodes is a set of R least-loaded nodes, so replica counts never drift apart:
       if they differ by at most 1 before, they differ by at most 1 after.
    2. Preferred leader: the eligible node (required or pool) with the fewest preferred
       leaderships; ties go to fewer replicas, then the lower node id.
    3. Followers: the remaining required nodes, then pool nodes with the *most* preferred
       leaderships first (ties: lower id). Nodes short of leaderships are thereby kept out
       of partitions they would not lead, so they stay eligible to lead the next ones.
       (Filling with the least-leading nodes instead lets a node fall 2+ leaderships behind,
       e.g. 4 nodes, RF 2, 4 partitions.)

    Starting from a balanced cluster and only creating topics, this keeps both the replica
    counts and the preferred-leader counts of all nodes within 1 of each other after every
    partition (checked exhaustively in the tests for small clusters). After deletes the
    counts may differ by more; new partitions go to the least-loaded nodes first, so later
    creates move the cluster back toward balance. Every choice is by an explicit key ending
    in the node id, so the result depends only on the arguments, never on dict order.
    Cost: O(partition_count * n log n) for n nodes. The counts passed in are not modified.
    """
    if not 1 <= replication_factor <= len(node_ids):
        raise ValueError(f"replication factor {replication_factor} with {len(node_ids)} nodes")
    nodes = sorted(node_ids)
    replicas_held = {n: replica_counts.get(n, 0) for n in nodes}
    leaderships = {n: leader_counts.get(n, 0) for n in nodes}
    result: list[tuple[int, ...]] = []
    for _ in range(partition_count):
        by_load = sorted(nodes, key=lambda n: (replicas_held[n], n))
        threshold = replicas_held[by_load[replication_factor - 1]]
        required = [n for n in by_load if replicas_held[n] < threshold]
        pool = [n for n in by_load if replicas_held[n] == threshold]
        leader = min(required + pool, key=lambda n: (leaderships[n], replicas_held[n], n))
        followers = [n for n in required if n != leader]
        spare = sorted((n for n in pool if n != leader), key=lambda n: (-leaderships[n], n))
        followers += spare[: replication_factor - 1 - len(followers)]
        replicas = (leader, *followers)
        leaderships[leader] += 1
        for node in replicas:
            replicas_held[node] += 1
        result.append(replicas)
    return result




def least_loaded(candidates: Sequence[int], count: int, loads: Mapping[int, int]) -> list[int]:
    """The ``count`` candidates holding the fewest replicas (ties: lower id); fewer if there
    are not that many. Deterministic: the key ends in the node id."""
    return sorted(candidates, key=lambda n: (loads.get(n, 0), n))[:count]


def resized_replicas(replicas: Sequence[int], replication_factor: int,
                     active: Sequence[int], loads: Mapping[int, int]) -> tuple[int, ...]:
    """``replicas`` grown or shrunk to ``replication_factor`` nodes: growing appends the
    least-loaded active nodes not already replicas; shrinking drops inactive nodes first,
    then from the end (the preferred leader, ``[0]``, stays while it is active)."""
    current = list(replicas)
    if replication_factor >= len(current):
        spare = [n for n in active if n not in current]
        return tuple(current + least_loaded(spare, replication_factor - len(current), loads))
    active_set = set(active)
    keep = [n for n in current if n in active_set] + [n for n in current if n not in active_set]
    return tuple(keep[:replication_factor])


__all__ = ["assign_replicas", "least_loaded", "resized_replicas"]
