"""The harness's port bands: concurrent test processes on one machine never share one."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness import REPO

_BAND_OF = ("import time; from tests.harness import _band; b = _band(); "
            "print(b.start, flush=True); time.sleep(3)")


def test_two_processes_that_prefer_the_same_band_get_different_ones() -> None:
    """Two xdist workers of the same name and session id (as two sessions that happen to
    prefer one band) run at once: the second takes the next free band, and keeps it while
    it runs."""
    env = {**os.environ, "PYTEST_XDIST_WORKER": "gw0",
           "PYTEST_XDIST_TESTRUNUID": f"band-test-{os.getpid()}"}
    procs = [subprocess.Popen([sys.executable, "-c", _BAND_OF], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        starts = [int(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert starts[0] != starts[1], starts
