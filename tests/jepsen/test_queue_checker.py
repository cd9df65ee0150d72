"""The queue checker (``--workload queue``) catches every anomaly class on hand-written
histories and stays quiet on a clean one: each anomaly test is the clean history plus one
defect, and pins the exact set of classes reported. A history that proves nothing is
invalid too, with no anomaly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rkjepsen import checker, history, queue_checker, report


class Q:
    """Builds a queue history event by event, one time step per event."""

    def __init__(self, attempts: int = 5, nemesis: tuple[str, ...] = ()) -> None:
        self.events: list[dict] = []
        self.t = 0.0
        self._event("info", "harness", "config", {"workload": "queue", "attempts": attempts,
                                                  "consumers": 2, "nemesis": list(nemesis)})

    def _event(self, type_, process, f, value):
        self.t += 1.0
        self.events.append({"index": len(self.events), "type": type_, "process": process,
                            "f": f, "time": self.t, "value": value})

    def op(self, process, f, invoke_value=None, type_="ok", value=None):
        self._event("invoke", process, f, invoke_value)
        self._event(type_, process, f, value if value is not None else invoke_value)
        return self

    def send(self, process, key, value, offset=None, type_="ok", **extra):
        v = {"key": key, "value": value, **extra}
        return self.op(process, "send", v, type_,
                       dict(v, offset=offset) if offset is not None else v)

    def poll(self, process, *records):
        """records: (key, offset, value, delivery_count)"""
        return self.op(process, "poll", None, "ok", {"records": [list(r) for r in records]})

    def ack(self, process, key, accept=(), release=(), reject=(), type_="ok"):
        v = {"key": key, "accept": [list(a) for a in accept],
             "release": [list(a) for a in release], "reject": [list(a) for a in reject]}
        return self.op(process, "ack", v, type_)

    def crash(self, process):
        self._event("info", process, "crash", {"signal": "SIGKILL"})
        return self

    def state(self, starts):
        return self.op("harness", "share-state", None, "ok", {"partitions": {
            str(k): {"start": s, "hw": s, "acquired": 0, "available": 0,
                     "dead_lettering": 0} for k, s in starts.items()}})

    def final(self, key, records):
        return self.op("final", "final-read", None, "ok",
                       {"key": key, "records": [list(r) for r in records]})

    def dlq(self, *entries):
        """entries: (value, source key, source offset, reason, count)"""
        return self.op("final", "final-read-dlq", None, "ok", {"records": [
            [0, i, v, k, o, reason, c] for i, (v, k, o, reason, c) in enumerate(entries)]})

    def check(self) -> checker.Report:
        return checker.check(history.pair(self.events))


def clean(final_dlq: bool = True) -> Q:
    """Key 0: a plain record accepted, a poison one rejected, one released and accepted
    by another worker after a crash; key 1: a record whose worker crashed holding it,
    redelivered and accepted."""
    q = Q()
    q.send(0, 0, "0-0", 0).send(0, 0, "0-1p", 1).send(1, 0, "1-0", 2).send(1, 1, "1-1", 0)
    q.poll(10, (0, 0, "0-0", 1), (0, 1, "0-1p", 1), (0, 2, "1-0", 1))
    q.ack(10, 0, accept=[(0, "0-0")], reject=[(1, "0-1p")], release=[(2, "1-0")])
    q.poll(11, (0, 2, "1-0", 2), (1, 0, "1-1", 1)).crash(11)
    q.poll(12, (1, 0, "1-1", 2))
    q.ack(12, 1, accept=[(0, "1-1")])
    q.poll(10, (0, 2, "1-0", 3)).ack(10, 0, accept=[(2, "1-0")])
    q.state({0: 3, 1: 1})
    q.final(0, [(0, "0-0"), (1, "0-1p"), (2, "1-0")]).final(1, [(0, "1-1")])
    if final_dlq:
        q.dlq(("0-1p", 0, 1, "rejected", 1))
    return q


def only(r: checker.Report) -> dict[str, int]:
    return {c: n for c, n in r.counts.items() if n}


def problems(r: checker.Report) -> dict[str, int]:
    return {c: n for c, n in r.problem_counts.items() if n}


def test_clean_queue_history_is_valid():
    r = clean().check()
    assert only(r) == {} and problems(r) == {}
    assert r.valid
    assert set(r.counts) == set(queue_checker.CLASSES)
    assert r.stats["accepted"] == 3 and r.stats["dead_lettered"] == 1
    assert r.stats["redeliveries"] == 3
    assert r.stats["crashes_holding_records"] == 1
    text = report.format_summary(report.summarize(history.pair(clean().events), r))
    assert "VALID: no anomaly in 4 acked sends" in text and "3 accepted" in text


def test_record_neither_accepted_nor_dead_lettered_is_lost():
    q = clean(final_dlq=False)
    q.dlq()  # the poison record never reached the dead-letter topic
    r = q.check()
    assert only(r) == {"lost-record": 1}
    assert r.anomalies["lost-record"][0]["record"] == [0, 1]
    assert problems(r) == {"no-dead-letters": 1}


def test_acked_send_missing_from_the_final_read_is_lost():
    q = clean()
    q.send(2, 1, "2-0", 1)  # acked at 1/1, the final read of key 1 ends at 0
    r = q.check()
    assert only(r) == {"lost-record": 1}
    assert "missing from the final read" in r.anomalies["lost-record"][0]["why"]


def test_a_record_with_an_unknown_accept_is_not_lost():
    q = Q()
    q.send(0, 0, "0-0", 0).poll(10, (0, 0, "0-0", 1))
    q.ack(10, 0, accept=[(0, "0-0")], type_="info")
    q.poll(11, (0, 0, "0-0", 2)).ack(11, 0, accept=[(0, "0-0")])
    q.state({0: 1}).final(0, [(0, "0-0")]).dlq()
    r = q.check()
    assert only(r) == {} and problems(r) == {}


def test_a_refused_accept_does_not_count():
    q = Q()
    q.send(0, 0, "0-0", 0).poll(10, (0, 0, "0-0", 1))
    q.ack(10, 0, accept=[(0, "0-0")], type_="fail")
    q.state({0: 1}).final(0, [(0, "0-0")]).dlq()
    r = q.check()
    assert only(r) == {"lost-record": 1}
    assert problems(r) == {"no-accepts": 1}


def test_accepted_twice():
    q = clean()
    q.ack(13, 0, accept=[(0, "0-0")])
    r = q.check()
    assert only(r) == {"accepted-twice": 1}


def test_delivered_after_accept():
    q = clean()
    q.poll(13, (0, 0, "0-0", 2))
    r = q.check()
    assert only(r) == {"delivered-after-accept": 1}
    assert r.anomalies["delivered-after-accept"][0]["record"] == [0, 0]


def test_a_delivery_overlapping_the_accept_is_not_after_it():
    q = Q()
    q.send(0, 0, "0-0", 0).poll(10, (0, 0, "0-0", 1))
    # the poll of 11 is invoked before the accept completes (a lock expired meanwhile)
    q._event("invoke", 11, "poll", None)
    q.ack(10, 0, accept=[(0, "0-0")])
    q._event("ok", 11, "poll", {"records": [[0, 0, "0-0", 2]]})
    q.ack(11, 0, accept=[(0, "0-0")], type_="fail")
    q.state({0: 1}).final(0, [(0, "0-0")]).dlq()
    assert only(q.check()) == {}


def test_dead_lettered_record_that_was_accepted():
    q = clean(final_dlq=False)
    q.dlq(("0-1p", 0, 1, "rejected", 1), ("0-0", 0, 0, "rejected", 1))
    r = q.check()
    assert only(r) == {"dead-lettered-accepted": 1}


def test_dead_lettered_twice():
    q = clean(final_dlq=False)
    q.dlq(("0-1p", 0, 1, "rejected", 1), ("0-1p", 0, 1, "rejected", 1))
    r = q.check()
    assert only(r) == {"dead-lettered-twice": 1}


def test_delivery_count_going_backwards():
    q = clean()
    q.poll(13, (1, 0, "1-1", 1))  # after a delivery with count 2 (and its accept)
    r = q.check()
    assert only(r) == {"delivery-count-regression": 1, "delivered-after-accept": 1}


def test_the_same_delivery_count_twice_is_a_regression():
    q = Q()
    q.send(0, 0, "0-0", 0).poll(10, (0, 0, "0-0", 1)).crash(10)
    q.poll(11, (0, 0, "0-0", 1)).ack(11, 0, accept=[(0, "0-0")])
    q.state({0: 1}).final(0, [(0, "0-0")]).dlq()
    assert only(q.check()) == {"delivery-count-regression": 1}


def test_delivered_beyond_the_attempts_limit():
    q = Q(attempts=2)
    q.send(0, 0, "0-0", 0)
    for n in (1, 2, 3):
        q.poll(10, (0, 0, "0-0", n)).ack(10, 0, release=[(0, "0-0")])
    q.state({0: 1}).final(0, [(0, "0-0")]).dlq(("0-0", 0, 0, "attempts exhausted", 3))
    r = q.check()
    assert only(r) == {"delivered-beyond-limit": 1}
    assert problems(r) == {"no-accepts": 1}


def delayed(due: float, nemesis: tuple[str, ...] = (), in_final_read: bool = True) -> Q:
    """A delayed send of 0-0 to key 0 (acked without an offset: -1), due at history time
    ``due``; polled (completed at t=5), accepted, in the final read at offset 0."""
    q = Q(nemesis=nemesis)
    q.send(0, 0, "0-0", -1, deliver_after=due)  # t=2..3
    q.poll(10, (0, 0, "0-0", 1))  # completes at t=5
    assert q.events[-1]["time"] == 5.0
    q.ack(10, 0, accept=[(0, "0-0")])
    q.state({0: 1}).final(0, [(0, "0-0")] if in_final_read else []).dlq()
    return q


def test_delayed_record_seen_early():
    r = delayed(100.0).check()  # polled 95 s before its time
    assert only(r) == {"delayed-early": 1}
    early = r.anomalies["delayed-early"][0]
    assert early["record"] == [0, 0] and early["early_s"] == 95.0
    assert r.stats["delayed_acked_sends"] == 1 and r.stats["delayed_deliveries"] == 1
    assert r.stats["delayed_earliest_margin_s"] == -95.0
    # found at offset 0 by the final read: the offset-less acked send is that record
    assert r.stats["acked_sends"] == 1 and problems(r) == {}


def test_delayed_record_due_before_the_poll_or_within_the_clock_tolerance():
    assert only(delayed(2.0).check()) == {}  # due before the poll
    tolerance = queue_checker.CLOCK_TOLERANCE_S
    assert only(delayed(5.0 + tolerance * 0.8).check()) == {}
    assert only(delayed(5.0 + tolerance * 1.2).check()) == {"delayed-early": 1}


def test_a_skewed_clock_widens_the_tolerance_of_delayed_records():
    # the clock nemesis moves a leader's clock up to CLOCK_SKEW_MAX_S: it may release
    # that much early, which is not an anomaly of the broker
    assert only(delayed(100.0, nemesis=("partition", "clock")).check()) == {}
    late = 5.0 + queue_checker.CLOCK_SKEW_MAX_S + 1
    assert only(delayed(late, nemesis=("clock",)).check()) == {"delayed-early": 1}


def test_acked_delayed_send_missing_from_the_final_read_is_lost():
    r = delayed(2.0, in_final_read=False).check()
    assert only(r) == {"lost-record": 1} and problems(r) == {}
    lost = r.anomalies["lost-record"][0]
    assert lost["record"] == [0, -1] and lost["value"] == "0-0"
    assert "delayed send missing" in lost["why"]


def test_wrong_value_unknown_value_and_aborted_read():
    q = clean()
    q.poll(13, (1, 0, "9-9", 3))  # offset 0 of key 1 holds 1-1; nobody sent 9-9
    r = q.check()
    assert only(r) == {"inconsistent-offsets": 1, "unknown-value": 1,
                       "delivered-after-accept": 1}
    q = Q()
    q.send(0, 0, "0-0", type_="fail").send(1, 0, "1-0", 0)
    q.poll(10, (0, 0, "0-0", 1)).ack(10, 0, accept=[(0, "0-0")])
    q.state({0: 1}).final(0, [(0, "0-0")]).dlq()
    assert only(q.check()) == {"aborted-read": 1, "inconsistent-offsets": 1}


def test_histories_that_prove_nothing():
    q = Q()
    q.state({}).dlq()
    assert problems(q.check()) == {"no-acked-sends": 1, "no-delivered-records": 1,
                                   "no-accepts": 1}
    q = clean(final_dlq=False)  # no read of the dead-letter topic
    assert problems(q.check()) == {"no-final-read": 1}
    events = [e for e in clean().events if e["f"] != "share-state"]
    r = checker.check(history.pair(events))
    assert only(r) == {} and problems(r) == {"undrained": 1}
    q = Q()  # the run ended with a record not finished: it proves nothing, is not lost
    q.send(0, 0, "0-0", 0).send(0, 0, "0-1", 1).poll(10, (0, 0, "0-0", 1))
    q.ack(10, 0, accept=[(0, "0-0")]).state({0: 1}).final(0, [(0, "0-0"), (1, "0-1")]).dlq()
    r = q.check()
    assert only(r) == {} and problems(r) == {"undrained": 1}
    assert not r.valid


def test_check_cli_reads_a_queue_history(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    q = clean()
    q.poll(13, (0, 0, "0-0", 2))
    path.write_text("".join(json.dumps(e) + "\n" for e in q.events))
    run = Path(__file__).resolve().parents[2] / "jepsen-like" / "check"
    proc = subprocess.run([sys.executable, str(run), str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "delivered-after-accept" in proc.stdout and "INVALID" in proc.stdout


def test_acknowledgements_sent_with_a_poll_count_per_partition():
    """A worker that leaves its acknowledgements for its next poll records one ack op of
    process "<worker>-acks" over several partitions."""
    q = Q()
    q.send(0, 0, "0-0", 0).send(0, 1, "0-1", 0)
    q.poll(10, (0, 0, "0-0", 1), (1, 0, "0-1", 1))
    parts = {"partitions": [{"key": 0, "accept": [[0, "0-0"]], "release": [], "reject": []},
                            {"key": 1, "accept": [[0, "0-1"]], "release": [], "reject": []}]}
    q.op("10-acks", "ack", parts, "ok")
    q.state({0: 1, 1: 1}).final(0, [(0, "0-0")]).final(1, [(0, "0-1")]).dlq()
    r = q.check()
    assert only(r) == {} and problems(r) == {} and r.stats["accepted"] == 2
    q.poll(11, (1, 0, "0-1", 2))  # after the poll-borne accept completed
    assert only(q.check()) == {"delivered-after-accept": 1}
