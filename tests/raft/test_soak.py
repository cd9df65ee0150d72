"""The randomized simulator soak (``tests/sim/soak.py``) over a fixed range of seeds.

Every seed picks its own fault mix, runs with the safety checker after every step, then
heals and must make progress. 200 seeds in chunks of 25, spread over two worker processes;
``make soak`` runs thousands more. A failing seed prints the command that replays it with a
full trace: ``.venv/bin/python -m tests.sim.soak --seed N``. Seeds outside that range that
once found a core bug (tests/sim/FINDINGS.md) run as regressions.
"""

from __future__ import annotations

import multiprocessing

import pytest


from tests.sim.soak import _worker, replay_command, run_seed  # noqa: E402

SEEDS = 200
CHUNK = 25
WORKERS = 2
# Seeds that fail on a known core bug, documented in tests/sim/FINDINGS.md, and the
# invariant each must fail on. A listed seed that passes, or fails in another way, fails
# the test: update the list once the core is fixed.
# Seeds that fail on a known, not yet fixed core bug (tests/sim/FINDINGS.md), with the
# invariant they must fail on: the test fails if one passes or fails otherwise. Empty: finding
# 4 (a single-voter leader answered ReadIndex too early) is fixed.
KNOWN_CORE_FAILURES: dict[int, str] = {}


@pytest.fixture(scope="module")
def pool():
    # forkserver, not fork: the xdist worker that runs this file may have run gRPC tests
    # before (gRPC's threads and state do not survive a fork), and a forked soak worker
    # then died in a segfault, which leaves Pool.imap waiting forever
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.sim.soak"])
    with context.Pool(WORKERS) as workers:
        yield workers


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_soak_seeds(pool, first):
    failures = []
    for seed, error, _ in pool.imap(_worker, range(first, first + CHUNK)):
        known = KNOWN_CORE_FAILURES.get(seed)
        if known is None:
            if error is not None:
                failures.append((seed, error))
        elif error is None or f"invariant violated: {known}:" not in error:
            failures.append((seed, f"listed in KNOWN_CORE_FAILURES as failing on '{known}' "
                                   f"(tests/sim/FINDINGS.md), but it "
                                   + ("passed" if error is None else f"failed otherwise:\n{error}")))
    if failures:
        seed, error = failures[0]
        others = "".join(f"\n  {replay_command(s)}" for s, _ in failures[1:])
        pytest.fail(f"{len(failures)} of {CHUNK} seeds failed. First, seed {seed}:\n{error}"
                    + (f"\nAlso failing:{others}" if others else ""), pytrace=False)


@pytest.mark.parametrize("seed", [437, 2693])
def test_seeds_of_fixed_findings(seed):
    """FINDINGS.md 2 (seed 437: a removed server stalled a group without pre-vote and
    check-quorum) and 3 (seed 2693: a delayed QUIESCE quiesced the only voter behind a
    leader that had stepped down). Both stay live."""
    run_seed(seed)
