"""The short queue run of `make test` (issue 14): share-group workers on a real 3-node
cluster in network namespaces under partitions, kill -9 and SIGSTOP for 20 s, with poison
records (rejected to the dead-letter topic), records that always fail (dead-lettered when
their attempts run out), delayed records (none may be polled before its time) and workers
killed while they hold records; the queue checker must
find no anomaly in a history that proves something (minimum counts from report.json).

Needs root, iproute2 and nftables; skipped only when not root, as the log workload's short
run (test_short_run.py) explains. The seed fixes the fault schedule (JEPSEN_SEED overrides
it); on failure the run's folder is kept in jepsen-like/store/."""

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
SEED = int(os.environ.get("JEPSEN_SEED", "20261205"))
KEYS = 4
# A quiet 2-core machine does about 6,000 acked sends, 5,600 accepts and 230 dead letters
# in this run, with about 10 workers killed holding records: far above these.
ACKED_SENDS_MIN = 300
ACCEPTED_MIN = 200
DEAD_LETTERED_MIN = 3
CRASHES_HOLDING_MIN = 2
DELAYED_MIN = 10  # a tenth of the sends are delayed
FAULTS_MIN = 2


@pytest.mark.skipif(os.geteuid() != 0, reason="jepsen-like needs root (network namespaces)")
def test_queue_short_run_partition_kill_pause_finds_no_anomaly(tmp_path: Path):
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"running as root but {', '.join(missing)} missing: `make test` installs "
                    f"them (`make jepsen-deps`)")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--workload", "queue", "--nemesis", "partition,kill,pause",
         "--time", "20", "--nodes", "3", "--interval", "4", "--consumer-crash-interval", "4",
         "--seed", str(SEED), "--out", str(out), "--no-plots"],
        capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        kept = STORE / f"make-test-queue-seed{SEED}-{time.strftime('%Y%m%dT%H%M%S')}"
        if out.exists():
            shutil.copytree(out, kept)
            out = kept
        logs = "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(out.glob("*.log")))
        pytest.fail(f"jepsen-like queue run failed (exit {proc.returncode}, seed {SEED}, "
                    f"out {out}):\n{text}\n{logs}")
    doc = json.loads((out / "report.json").read_text())
    summary = doc["summary"]
    assert summary["workload"] == "queue", summary
    assert doc["valid"] is True and summary["valid"] is True, text
    assert not any(doc["counts"].values()), doc["counts"]
    assert not any(doc["history_problem_counts"].values()), doc["history_problems"]
    assert summary["problems"] == [], summary["problems"]
    assert summary["acked_sends"] >= ACKED_SENDS_MIN, summary
    assert summary["accepted"] >= ACCEPTED_MIN, summary
    reasons = summary["dead_letter_reasons"]
    assert summary["dead_lettered"] >= DEAD_LETTERED_MIN, summary
    assert reasons.get("rejected", 0) >= 1 and reasons.get("attempts exhausted", 0) >= 1, \
        summary
    assert summary["redeliveries"] >= 1, summary
    assert summary["crashes_holding_records"] >= CRASHES_HOLDING_MIN, summary
    assert summary["delayed_acked_sends"] >= DELAYED_MIN, summary
    assert summary["delayed_deliveries"] >= DELAYED_MIN, summary  # (lost ones: lost-record)
    assert summary["final_read_keys"] == list(range(KEYS)), summary
    assert summary["faults_injected"] >= FAULTS_MIN, summary
    assert "VALID: no anomaly in" in text
