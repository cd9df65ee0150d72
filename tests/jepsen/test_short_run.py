"""The short jepsen-like run of `make test`: a real 3-node cluster in network namespaces
under partitions, kill -9 and SIGSTOP for about a minute, with producers and crashing
consumers; the checker must find no anomaly. Needs root, iproute2 and nftables (the
Makefile installs them as root); skipped, saying why, where they are missing.

The fault schedule is fixed by a seed (JEPSEN_SEED overrides it); on failure the output
names the seed and the folder with the history, report and node logs: it is kept in
jepsen-like/store/ (git-ignored), so the evidence outlives pytest's temporary folders."""

from __future__ import annotations

import os
import shutil
import time
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "jepsen-like" / "run"
STORE = RUN.parent / "store"
SEED = int(os.environ.get("JEPSEN_SEED", "20261122"))


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "jepsen-like needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"jepsen-like needs `{tool}` (make jepsen-deps installs it as root)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_short_run_partition_kill_pause_finds_no_anomaly(tmp_path: Path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--nemesis", "partition,kill,pause", "--time", "60",
         "--nodes", "3", "--interval", "6", "--seed", str(SEED), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    if proc.returncode != 0:
        kept = STORE / f"make-test-seed{SEED}-{time.strftime('%Y%m%dT%H%M%S')}"
        shutil.copytree(out, kept)
        out = kept
        logs = "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(out.glob("*.log")))
        pytest.fail(f"jepsen-like run failed (exit {proc.returncode}, seed {SEED}, "
                    f"out {out}):\n{report}\n{logs}")
    assert "VALID: no anomaly" in report
    assert (out / "history.jsonl").stat().st_size > 0
    assert (out / "report.json").exists()
    assert (out / "throughput.png").exists() and (out / "latency.png").exists()
    assert "faults injected: 0" not in report, report
