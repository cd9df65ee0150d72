"""Driver rule 8a under the simulator's faults: every node reports a third of its ticks
late (as a starved event loop would), so followers and candidates skip them (leaders
still tick). The soak's checkers must still pass: safety is untouched (rule 8a only moves
timers) and the clusters still elect leaders and commit (liveness), with the timeouts
widened (without the bound of ``late_skips_max``, every seed fails liveness: checked
while writing this). Deterministic: the late ticks come from a per-node ``Random`` of their own, so
each seed's faults are exactly the soak's.

    .venv/bin/python -m pytest -q tests/sim/test_late_ticks.py
"""

from __future__ import annotations

import random

import pytest

from raftka.raft.host import HostDriver
from tests.sim.soak import Soak

RUN_TIME = 3_000
LATE_SHARE = 0.35


class LateTicksDriver(HostDriver):
    """A HostDriver whose owner reports ``LATE_SHARE`` of its ticks late."""

    def __init__(self, node_id: int, **kwargs) -> None:
        super().__init__(node_id, **kwargs)
        self._late_rng = random.Random(f"late-{node_id}")

    def tick(self, late: bool = False) -> None:
        super().tick(late or self._late_rng.random() < LATE_SHARE)


@pytest.mark.parametrize("seed", range(10))
def test_soak_with_late_ticks_keeps_safety_and_liveness(seed):
    cluster = Soak(seed, run_time=RUN_TIME, driver_factory=LateTicksDriver).run()
    drivers = [n.driver for n in cluster.nodes.values() if n.driver is not None]
    assert any(d.skipped_ticks for d in drivers)  # rule 8a was exercised
