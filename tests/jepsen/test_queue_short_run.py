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

import os
from pathlib import Path

from tests.jepsen.short_run import assert_no_anomaly, needs_root, run_short

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


@needs_root
def test_queue_short_run_partition_kill_pause_finds_no_anomaly(tmp_path: Path):
    doc, text = run_short(tmp_path / "run", "queue-", SEED, [
        "--workload", "queue", "--nemesis", "partition,kill,pause", "--time", "20",
        "--nodes", "3", "--interval", "4", "--consumer-crash-interval", "4", "--no-plots"])
    summary = assert_no_anomaly(doc, text)
    assert summary["workload"] == "queue", summary
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
