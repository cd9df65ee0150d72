"""Runs ``jepsen-like/run`` for the short runs of `make test` and hands back its report.

As root, `make test` installs iproute2 and nftables first (`make jepsen-deps`), so a missing
tool fails the run rather than passing it by a skip that would hide a harness that no longer
runs. On failure the run's folder (history, report, node logs) is kept in
jepsen-like/store/ (git-ignored): the evidence outlives pytest's temporary folders, and the
failure names the seed that replays the fault schedule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "jepsen-like" / "run"
STORE = RUN.parent / "store"

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="jepsen-like needs root (network namespaces)")


def run_short(out: Path, name: str, seed: int, args: list[str]) -> tuple[dict, str]:
    """Run the harness with ``args`` (plus seed and output folder) into ``out``; fail the
    test with its output and the tail of every node log unless it exits 0. Returns the
    parsed report.json and the run's printed output."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"running as root but {', '.join(missing)} missing: `make test` installs "
                    f"them (`make jepsen-deps`)")
    proc = subprocess.run([sys.executable, str(RUN), *args, "--seed", str(seed),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        kept = STORE / f"make-test-{name}seed{seed}-{time.strftime('%Y%m%dT%H%M%S')}"
        if out.exists():
            shutil.copytree(out, kept)
            out = kept
        logs = "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(out.glob("*.log")))
        pytest.fail(f"jepsen-like {name}run failed (exit {proc.returncode}, seed {seed}, "
                    f"out {out}):\n{text}\n{logs}")
    return json.loads((out / "report.json").read_text()), text


def assert_no_anomaly(doc: dict, text: str) -> dict:
    """The checker's verdict and every count it reports are clean; returns the summary."""
    summary = doc["summary"]
    assert doc["valid"] is True and summary["valid"] is True, text
    assert not any(doc["counts"].values()), doc["counts"]
    assert not any(doc["history_problem_counts"].values()), doc["history_problems"]
    assert summary["problems"] == [], summary["problems"]
    assert "VALID: no anomaly in" in text
    return summary
