"""The simulated network: what happens to one message between two replicas.

The network only decides a message's fate -- lost, or delivered after some delay, possibly
more than once. The cluster owns the single event queue, ordered by
``(delivery_time, sequence)``, that carries the surviving copies.

Faults, all drawn from the cluster's one seeded RNG:

- loss: each copy is dropped with probability ``loss``;
- duplication: with probability ``duplication`` a second copy is sent, with its own delay;
- delay and reordering: every copy gets a latency drawn from ``[latency_min, latency_max]``,
  and with probability ``long_delay`` a latency up to ``long_delay_max`` (an old message
  surfacing much later); independent delays reorder messages;
- partitions: symmetric groups, one-way cuts (A->B blocked while B->A works), isolated
  nodes. A cut is checked both when a message is sent and when it would arrive, so a
  partition also kills what was in flight.
"""

from __future__ import annotations

import random
from typing import Iterable


class Network:
    __slots__ = (
        "_rng", "loss", "duplication", "latency_min", "latency_max", "long_delay",
        "long_delay_max", "_group_of", "_cut", "_isolated",
    )

    def __init__(
        self,
        rng: random.Random,
        *,
        loss: float = 0.0,
        duplication: float = 0.0,
        latency_min: int = 1,
        latency_max: int = 5,
        long_delay: float = 0.0,
        long_delay_max: int = 0,
    ) -> None:
        self._rng = rng
        self.loss = loss
        self.duplication = duplication
        self.latency_min = latency_min
        self.latency_max = latency_max
        self.long_delay = long_delay
        self.long_delay_max = long_delay_max
        # node -> group number while a symmetric partition is in force; a node named in no
        # group is alone (cut from everybody).
        self._group_of: dict[int, int] | None = None
        self._cut: set[tuple[int, int]] = set()  # directed (frm, to) links that are down
        self._isolated: set[int] = set()

    # -- faults ------------------------------------------------------------------------
    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        group_of: dict[int, int] = {}
        for number, group in enumerate(groups):
            for node in group:
                if node in group_of:
                    raise ValueError(f"node {node} named in two partition groups")
                group_of[node] = number
        self._group_of = group_of

    def one_way(self, frm: int, to: int) -> None:
        """Block messages from ``frm`` to ``to``; ``to`` can still reach ``frm``."""
        self._cut.add((frm, to))

    def isolate(self, node: int) -> None:
        self._isolated.add(node)

    def heal(self) -> None:
        self._group_of = None
        self._cut.clear()
        self._isolated.clear()

    def is_partitioned(self) -> bool:
        return self._group_of is not None or bool(self._cut) or bool(self._isolated)

    def blocked(self, frm: int, to: int) -> bool:
        if frm in self._isolated or to in self._isolated:
            return True
        if (frm, to) in self._cut:
            return True
        group_of = self._group_of
        if group_of is not None:
            return group_of.get(frm, -frm) != group_of.get(to, -to)
        return False

    # -- fate of one message -------------------------------------------------------------
    def delays(self) -> list[int]:
        """Delivery delays of the copies of one message that survive (empty: all lost)."""
        rng = self._rng
        copies = 2 if self.duplication and rng.random() < self.duplication else 1
        delays: list[int] = []
        for _ in range(copies):
            if self.loss and rng.random() < self.loss:
                continue
            if self.long_delay and rng.random() < self.long_delay:
                delays.append(rng.randint(self.latency_max, max(self.latency_max, self.long_delay_max)))
            else:
                delays.append(rng.randint(self.latency_min, self.latency_max))
        return delays

    def describe(self) -> str:
        parts = []
        if self._group_of is not None:
            groups: dict[int, list[int]] = {}
            for node, number in self._group_of.items():
                groups.setdefault(number, []).append(node)
            parts.append("groups " + " | ".join(str(sorted(g)) for _, g in sorted(groups.items())))
        if self._cut:
            parts.append("cut " + ", ".join(f"{a}->{b}" for a, b in sorted(self._cut)))
        if self._isolated:
            parts.append(f"isolated {sorted(self._isolated)}")
        return "; ".join(parts) or "healed"
