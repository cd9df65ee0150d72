"""Server-side partition assignors of consumer groups: pure, deterministic functions.

Every assignor maps (members with their subscriptions, partition counts per topic) to a
target assignment. Deterministic (sorted inputs, no randomness) so that a coordinator that
recomputes after a failover or a replay reaches the same answer.

- ``range`` (Kafka's RangeAssignor): per topic, contiguous ranges of partitions, the first
  members in member order getting one extra when it does not divide evenly.
- ``roundrobin``: every subscribed partition in (topic, partition) order dealt in turn to
  the members subscribed to its topic.
- ``sticky`` (the default, like Kafka's uniform/sticky assignors): keep every partition
  where the previous target had it as long as balance allows; move only the surplus.
  A member leaving moves only its partitions; a member joining takes partitions only from
  the members above the new quota.
"""

from __future__ import annotations

from collections.abc import Mapping

TopicPartition = tuple[str, int]
Assignment = dict[str, set[TopicPartition]]


def _eligible(members: Mapping[str, frozenset[str]], topic: str) -> list[str]:
    return [m for m in members if topic in members[m]]


def assign_range(members: Mapping[str, frozenset[str]], partitions: Mapping[str, int],
                 previous: Mapping[str, set[TopicPartition]] | None = None) -> Assignment:
    out: Assignment = {m: set() for m in members}
    for topic in sorted(partitions):
        eligible = _eligible(members, topic)
        if not eligible:
            continue
        count = partitions[topic]
        per, extra = divmod(count, len(eligible))
        start = 0
        for i, m in enumerate(eligible):
            n = per + (1 if i < extra else 0)
            out[m].update((topic, p) for p in range(start, start + n))
            start += n
    return out


def assign_roundrobin(members: Mapping[str, frozenset[str]], partitions: Mapping[str, int],
                      previous: Mapping[str, set[TopicPartition]] | None = None) -> Assignment:
    out: Assignment = {m: set() for m in members}
    order = list(members)
    turn = 0
    for topic in sorted(partitions):
        for p in range(partitions[topic]):
            for _ in range(len(order)):
                m = order[turn % len(order)]
                turn += 1
                if topic in members[m]:
                    out[m].add((topic, p))
                    break
    return out


def assign_sticky(members: Mapping[str, frozenset[str]], partitions: Mapping[str, int],
                  previous: Mapping[str, set[TopicPartition]] | None = None) -> Assignment:
    """Balanced (counts differ by at most one among members that could take a partition)
    while moving as few partitions as possible from ``previous``."""
    out: Assignment = {m: set() for m in members}
    if not members:
        return out
    wanted = [(t, p) for t in sorted(partitions) if _eligible(members, t)
              for p in range(partitions[t])]
    valid = set(wanted)
    subscribers = {t: len(_eligible(members, t)) for t in partitions}
    # Upper bound per member: its fair share of what it can take (ceil), so a member alone
    # on a topic still gets all of it while shared topics spread evenly.
    share = {m: 0.0 for m in members}
    for t, p in wanted:
        for m in _eligible(members, t):
            share[m] += 1 / subscribers[t]
    quota = {m: -(-round(share[m] * 1_000_000) // 1_000_000) for m in members}

    taken: set[TopicPartition] = set()
    for m in members:  # keep previous placements up to the quota, lowest partitions first
        kept = sorted(tp for tp in (previous or {}).get(m, ())
                      if tp in valid and tp[0] in members[m] and tp not in taken)
        for tp in kept[: quota[m]]:
            out[m].add(tp)
            taken.add(tp)
    for tp in wanted:  # then give each free partition to the least-loaded eligible member
        if tp in taken:
            continue
        eligible = _eligible(members, tp[0])
        m = min(eligible, key=lambda x: (len(out[x]), x))
        out[m].add(tp)
        taken.add(tp)
    _rebalance(out, members)
    return out


def _rebalance(out: Assignment, members: Mapping[str, frozenset[str]]) -> None:
    """Move single partitions from the most to the least loaded eligible member while that
    narrows the gap by two or more (so the loop ends; counts end within one)."""
    for _ in range(sum(len(v) for v in out.values()) + 1):
        moved = False
        for giver in sorted(out, key=lambda m: (-len(out[m]), m)):
            for tp in sorted(out[giver], reverse=True):
                takers = [m for m in members if tp[0] in members[m]
                          and len(out[m]) + 1 < len(out[giver])]
                if takers:
                    taker = min(takers, key=lambda m: (len(out[m]), m))
                    out[giver].discard(tp)
                    out[taker].add(tp)
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return


ASSIGNORS = {"sticky": assign_sticky, "range": assign_range, "roundrobin": assign_roundrobin}
DEFAULT_ASSIGNOR = "sticky"
