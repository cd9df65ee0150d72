"""The short transactional run of `make test` (issue 15): transactional producers (one of
them consume-transform-produce) and a read_committed reader on a real 3-node cluster in
network namespaces under partitions, kill -9 and SIGSTOP (transaction coordinators
included) for 8 s, with clients killed mid-transaction; the txn checker must find no
anomaly in a history that proves something (minimum counts from report.json).

Needs root, iproute2 and nftables; skipped only when not root, as the log workload's short
run (test_short_run.py) explains. The seed fixes the fault schedule (JEPSEN_SEED overrides
it); on failure the run's folder is kept in jepsen-like/store/."""

from __future__ import annotations

import os
from pathlib import Path

from tests.jepsen.short_run import assert_no_anomaly, needs_root, run_short

SEED = int(os.environ.get("JEPSEN_SEED", "20261206"))
KEYS = 4  # partitions of topic jepsen; jepsen-b adds 2
# A loaded 2-core machine did about 50 committed transactions (20 consume-transform-
# produce), 7 aborted ones and 140 polled records in this run: above these.
COMMITTED_MIN = 10
ABORTED_MIN = 1
POLLED_MIN = 10
FAULTS_MIN = 1


@needs_root
def test_txn_short_run_partition_kill_pause_finds_no_anomaly(tmp_path: Path):
    doc, text = run_short(tmp_path / "run", "txn-", SEED, [
        "--workload", "txn", "--nemesis", "partition,kill,pause", "--time", "8",
        "--nodes", "3", "--interval", "2", "--consumers", "1",
        "--consumer-crash-interval", "3", "--keys", str(KEYS), "--no-plots"])
    summary = assert_no_anomaly(doc, text)
    assert summary["workload"] == "txn", summary
    assert summary["txns_committed"] >= COMMITTED_MIN, summary
    assert summary["txns_aborted"] >= ABORTED_MIN, summary
    assert summary["txns_ctp_committed"] >= 1, summary
    assert summary["polled_records"] >= POLLED_MIN, summary
    assert len(summary["final_read_keys"]) == KEYS + 2, summary
    assert summary["final_read_records"] >= summary["acked_sends"] > 0, summary
    assert summary["faults_injected"] >= FAULTS_MIN, summary
    assert summary["consumer_crashes"] >= 1, summary
