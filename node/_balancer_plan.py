"""The balancer's plan: which partition moves spread replicas, bytes and leaders evenly.

A pure, deterministic function (``plan_moves``) of what the controller leader knows: the
active nodes with their racks, and every partition with its replica set (a moving
partition: the set it moves to) and its log size. No clock, no I/O, no randomness; every
choice is by an explicit key that ends in node ids or (topic, partition), so the same
inputs give the same plan on every node and in every test. ``_balancer.py`` runs it on the
controller leader and carries the first few moves out through reassignment.

The goals, in priority order (Cruise Control's idea of ordered goals). ``spread`` scores a
placement by the tuple ``(rack_violations, replica_square_sum, bytes_square_sum,
leader_square_sum)`` and **every move of a plan makes that tuple strictly smaller**
(lexicographically), so a plan never makes the spread worse and applying plans over and
over ends (the sizes being fixed):

1. Racks (hard). A partition should span ``min(replication factor, racks)`` racks, racks
   being the distinct ``rack`` values of the active nodes (no node declares one: a single
   rack, nothing to do). A partition short of racks gets a replica moved from a node whose
   rack it already has twice to the least-loaded node of a rack it lacks. No other move may
   leave a partition on fewer racks than it had (or than it needs).
2. Replica counts. While some node holds at least 2 replicas more than another, a replica
   moves from the most loaded to the least loaded node that does not hold the partition
   (of the first ``CANDIDATES_MAX`` partitions that could go, the one whose size best halves
   the bytes gap).
3. Bytes. When the largest and smallest node differ by more than ``bytes_slack_fraction``
   of the mean (and at least ``bytes_min``), a partition smaller than the gap moves from a
   node holding one replica more than the other (so counts stay as even as they are).
4. Leaders (preferred leaders, ``replicas[0]``): while a node leads at least 2 partitions
   more than another replica of one of them, those two swap places in its replica list.
   This moves no data (the partition leader hands over), so these moves come **first** in
   the plan; the others follow in the order above.

Never two replicas of a partition on one node: a replica only moves to a node outside the
partition's set. Partitions that are moving, or that have a replica on a node that is not
active (decommissioning, removed: the drain owns those), are never planned; they count
where they are (moving ones at their target). A plan touches a partition at most once and
has at most ``moves_max`` moves; the caller recomputes it as moves land.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

MOVES_MAX_DEFAULT = 100
# Of the partitions that could make a move, the first CANDIDATES_MAX (in (topic, partition)
# order) are compared: a plan costs O(moves * CANDIDATES_MAX), not O(moves * partitions)
# (10,000 partitions: 100 moves in well under a second instead of half a minute).
CANDIDATES_MAX = 64
# ... and at most EXAMINED_MAX partitions of a node are looked at for one pair of nodes (racks
# can rule most of them out), so a plan stays bounded however the racks are laid out.
EXAMINED_MAX = 2000
BYTES_SLACK_FRACTION_DEFAULT = 0.1
BYTES_MIN_DEFAULT = 64 << 20


class PartitionLoad(NamedTuple):
    topic: str
    partition: int
    replicas: tuple[int, ...]  # [0] the preferred leader; a moving partition: its target
    size_bytes: int  # the log size of one replica (0: unknown)
    moving: bool = False  # a move is under way: never planned


class Move(NamedTuple):
    topic: str
    partition: int
    replicas: tuple[int, ...]  # before
    target: tuple[int, ...]  # after ([0]: the preferred leader)
    kind: str  # "leader", "rack", "replicas" or "bytes" (the goal it serves)
    reason: str  # one line for `raftka cluster balance --dry-run`

    @property
    def moves_data(self) -> bool:
        return set(self.replicas) != set(self.target)


class Spread(NamedTuple):
    rack_violations: int
    replica_square_sum: int
    bytes_square_sum: int
    leader_square_sum: int


class _Placement:
    """The mutable working copy a plan is computed on."""

    def __init__(self, nodes: Mapping[int, str], partitions: Sequence[PartitionLoad]) -> None:
        self.nodes = tuple(sorted(nodes))
        self.racks = dict(nodes)
        self.rack_count = len(set(nodes.values())) if nodes else 0
        self.parts = [p for p in sorted(partitions, key=lambda p: (p.topic, p.partition))]
        self.replicas = [p.replicas for p in self.parts]
        self.count = {n: 0 for n in self.nodes}
        self.bytes = {n: 0 for n in self.nodes}
        self.leaders = {n: 0 for n in self.nodes}
        self.on: dict[int, set[int]] = {n: set() for n in self.nodes}  # node -> part indexes
        self.fixed: set[int] = set()
        for i, p in enumerate(self.parts):
            if p.moving or any(n not in self.count for n in p.replicas):
                self.fixed.add(i)
            self._add(i, p.replicas)

    def _add(self, i: int, replicas: tuple[int, ...]) -> None:
        size = self.parts[i].size_bytes
        for n in replicas:
            if n in self.count:
                self.count[n] += 1
                self.bytes[n] += size
                self.on[n].add(i)
        if replicas and replicas[0] in self.leaders:
            self.leaders[replicas[0]] += 1

    def _remove(self, i: int, replicas: tuple[int, ...]) -> None:
        size = self.parts[i].size_bytes
        for n in replicas:
            if n in self.count:
                self.count[n] -= 1
                self.bytes[n] -= size
                self.on[n].discard(i)
        if replicas and replicas[0] in self.leaders:
            self.leaders[replicas[0]] -= 1

    def set_replicas(self, i: int, replicas: tuple[int, ...]) -> None:
        self._remove(i, self.replicas[i])
        self.replicas[i] = replicas
        self._add(i, replicas)

    def violation(self, replicas: Sequence[int]) -> int:
        want = min(len(replicas), self.rack_count)
        return max(0, want - len({self.racks.get(n, "") for n in replicas}))

    def spread(self) -> Spread:
        return Spread(
            sum(self.violation(r) for i, r in enumerate(self.replicas) if i not in self.fixed),
            sum(c * c for c in self.count.values()),
            sum(b * b for b in self.bytes.values()),
            sum(c * c for c in self.leaders.values()))


def spread(nodes: Mapping[int, str], partitions: Sequence[PartitionLoad]) -> Spread:
    """The score ``plan_moves`` lowers with every move (module docstring)."""
    return _Placement(nodes, partitions).spread()


def _replace(replicas: tuple[int, ...], old: int, new: int) -> tuple[int, ...]:
    return tuple(new if n == old else n for n in replicas)


def _moved(work: _Placement, replicas: tuple[int, ...], old: int, new: int
           ) -> tuple[int, ...]:
    """``replicas`` with ``old`` replaced by ``new``; when ``old`` was the preferred leader,
    the replica leading fewest partitions takes its place (ties: the new node, then the
    lower id), so that data moves do not pile leaderships onto a new node only for leader
    moves to take them away again."""
    out = _replace(replicas, old, new)
    if replicas[0] != old:
        return out
    lead = min(out, key=lambda n: (work.leaders.get(n, 0), n != new, n))
    return (lead, *(n for n in out if n != lead))


def plan_moves(nodes: Mapping[int, str], partitions: Sequence[PartitionLoad], *,
               moves_max: int = MOVES_MAX_DEFAULT,
               bytes_slack_fraction: float = BYTES_SLACK_FRACTION_DEFAULT,
               bytes_min: int = BYTES_MIN_DEFAULT) -> list[Move]:
    """The moves that balance ``partitions`` over ``nodes`` (active node id -> rack, ""
    for none): leader moves first, then rack, replica-count and bytes moves (module
    docstring). At most ``moves_max``; empty when the cluster is balanced."""
    if moves_max <= 0 or not nodes:
        return []
    work = _Placement(nodes, partitions)
    planned: set[int] = set()
    data_moves: list[Move] = []
    leader_moves: list[Move] = []

    def movable(i: int) -> bool:
        return i not in work.fixed and i not in planned

    def record(i: int, target: tuple[int, ...], kind: str, reason: str,
               into: list[Move]) -> None:
        part = work.parts[i]
        into.append(Move(part.topic, part.partition, work.replicas[i], target, kind, reason))
        planned.add(i)
        work.set_replicas(i, target)

    # 1. leaders first: cheap (no data moves) and planned on the placement as it is
    while len(leader_moves) < moves_max:
        best = None
        for source in sorted(work.nodes, key=lambda n: (-work.leaders[n], n)):
            seen = 0
            for i in sorted(work.on[source]):
                replicas = work.replicas[i]
                if replicas[0] != source or not movable(i):
                    continue
                for n in replicas[1:]:
                    if n in work.leaders and work.leaders[source] - work.leaders[n] >= 2:
                        seen += 1
                        key = (work.leaders[n], n, i)
                        if best is None or key < best[0]:
                            best = (key, i, source, n)
                if seen >= CANDIDATES_MAX:
                    break
            if best is not None:
                break
        if best is None:
            break
        _, i, source, dest = best
        replicas = work.replicas[i]
        target = tuple(dest if n == source else source if n == dest else n for n in replicas)
        record(i, target, "leader", f"node {source} leads {work.leaders[source]} partitions, "
               f"node {dest} {work.leaders[dest]}", leader_moves)
    budget = moves_max - len(leader_moves)
    # 2. racks
    if work.rack_count > 1:
        for i in range(len(work.parts)):
            if len(data_moves) >= budget:
                break
            if not movable(i) or work.violation(work.replicas[i]) == 0:
                continue
            replicas = work.replicas[i]
            seen: dict[str, list[int]] = {}
            for n in replicas:
                seen.setdefault(work.racks[n], []).append(n)
            doubled = [n for n in replicas if len(seen[work.racks[n]]) > 1]
            source = max(doubled, key=lambda n: (work.count[n], work.bytes[n], -n))
            spare = [n for n in work.nodes if work.racks[n] not in seen]
            if not spare:
                continue
            dest = min(spare, key=lambda n: (work.count[n], work.bytes[n], n))
            record(i, _moved(work, replicas, source, dest), "rack",
                   f"spans {len(seen)} rack(s), needs "
                   f"{min(len(replicas), work.rack_count)}: node {source} -> node {dest} "
                   f"(rack {work.racks[dest] or '-'})", data_moves)

    def rack_ok(i: int, old: int, new: int) -> bool:
        if work.rack_count <= 1:
            return True
        before = work.replicas[i]
        return work.violation(_replace(before, old, new)) <= work.violation(before)

    def closest_move(source: int, dest: int, gap: int, bytes_must_shrink_gap: bool) -> int | None:
        """Of a bounded sample of ``source``'s movable replicas that may go to ``dest``, the
        one whose size best halves the byte ``gap`` between them (ties: lowest index)."""
        best = None
        seen = 0
        for examined, i in enumerate(sorted(work.on[source])):
            if examined >= EXAMINED_MAX:
                break
            size = work.parts[i].size_bytes
            if (not movable(i) or dest in work.replicas[i]
                    or (bytes_must_shrink_gap and not 0 < size < gap)
                    or not rack_ok(i, source, dest)):
                continue
            key = (abs(gap - 2 * size), i)
            if best is None or key < best:
                best = key
            seen += 1
            if seen >= CANDIDATES_MAX:
                break
        return None if best is None else best[1]

    def move_one(order: list[int], stop, skip, bytes_must_shrink_gap: bool, kind: str,
                 reason) -> bool:
        """One move from the most loaded source of ``order`` (ascending load) to the least
        loaded destination that can take one of its replicas: a source's destinations are
        tried until ``stop(source, dest)``, passing those ``skip`` rules out."""
        for source in reversed(order):
            for dest in order:
                if stop(source, dest):
                    break
                if skip(source, dest):
                    continue
                i = closest_move(source, dest, work.bytes[source] - work.bytes[dest],
                                 bytes_must_shrink_gap)
                if i is not None:
                    record(i, _moved(work, work.replicas[i], source, dest), kind,
                           reason(source, dest), data_moves)
                    return True
        return False

    # 3. replica counts
    while len(data_moves) < budget and move_one(
            sorted(work.nodes, key=lambda n: (work.count[n], work.bytes[n], n)),
            lambda s, d: work.count[s] - work.count[d] < 2, lambda s, d: False, False,
            "replicas",
            lambda s, d: f"node {s} holds {work.count[s]} replicas, node {d} {work.count[d]}"):
        pass

    # 4. bytes
    while len(data_moves) < budget:
        slack = max(bytes_slack_fraction * sum(work.bytes.values()) / len(work.nodes),
                    bytes_min)
        if not move_one(
                sorted(work.nodes, key=lambda n: (work.bytes[n], n)),
                lambda s, d: work.bytes[s] - work.bytes[d] <= slack,
                # a count gap other than 1 would get less even (>= 2 is step 3's business)
                lambda s, d: work.count[s] - work.count[d] != 1, True, "bytes",
                lambda s, d: f"node {s} stores {work.bytes[s]} bytes, node {d} "
                             f"{work.bytes[d]}"):
            break

    return leader_moves + data_moves


__all__ = ["Move", "PartitionLoad", "Spread", "plan_moves", "spread"]
