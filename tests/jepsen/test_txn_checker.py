"""The transactional checker (jepsen-like/rkjepsen/txn_checker.py) on hand-written
histories: a clean one, then one crafted bad history per anomaly class (each must be
found, and only where it is), legitimate behaviours that must not be flagged (interleaved
concurrent transactions, indeterminate commits resolved by reads) and the problems of a
history that proves too little."""

from __future__ import annotations

import copy

from rkjepsen import checker, txn_checker
from rkjepsen.history import pair


class H:
    """A history builder: events in order, one time unit apart."""

    def __init__(self, keys=("a/0", "a/1", "b/0")) -> None:
        self.events: list[dict] = []
        self.ev("info", "harness", "config", {"workload": "txn", "keys": list(keys),
                                              "consumers": 1})

    def ev(self, type_, process, f, value=None) -> None:
        n = len(self.events)
        self.events.append({"index": n, "type": type_, "process": process, "f": f,
                            "time": float(n), "value": value})

    def txn(self, proc, name, sends, *, outcome="ok", intent="commit", read=(),
            offsets=(), commit_start=True, complete=True) -> None:
        """``sends``: [(key, offset)]; values are ``<name>.<i>``."""
        vals = [[k, f"{name}.{i}"] for i, (k, _) in enumerate(sends)]
        self.ev("invoke", proc, "txn", {"txn": name, "tid": f"t{proc}", "intent": intent,
                                        "sends": vals, "read": [list(r) for r in read],
                                        "offsets": [list(o) for o in offsets]})
        if commit_start and intent == "commit" and outcome != "fail":
            self.ev("info", f"{proc}-c", "commit-start", {"txn": name})
        if not complete:
            return
        value = {"txn": name}
        if outcome == "ok":
            value["sends"] = [[k, v, off] for (k, v), (_, off) in zip(vals, sends)]
        self.ev(outcome, proc, "txn", value)

    def poll(self, proc, records) -> None:
        self.ev("invoke", proc, "poll")
        self.ev("ok", proc, "poll", {"records": [list(r) for r in records]})

    def final(self, logs: dict, raw: dict | None = None) -> None:
        raw = raw if raw is not None else logs
        for key in sorted(set(logs) | set(raw)):
            if key in logs:
                self.ev("invoke", "final", "final-read", {"key": key})
                self.ev("ok", "final", "final-read", {"key": key, "records": logs[key]})
            if key in raw:
                self.ev("invoke", "final", "final-read-raw", {"key": key})
                self.ev("ok", "final", "final-read-raw", {"key": key, "records": raw[key]})

    def group_offsets(self, offsets) -> None:
        self.ev("invoke", "harness", "group-offsets")
        self.ev("ok", "harness", "group-offsets", {"offsets": [list(o) for o in offsets]})

    def check(self):
        return txn_checker.check(pair(copy.deepcopy(self.events)))


FINAL = {"a/0": [[0, "1-0.0"]], "a/1": [[0, "1-0.1"], [1, "2-0.1"]],
         "b/0": [[1, "2-0.0"]]}
RAW = {"a/0": [[0, "1-0.0"], [1, "1-1.0"]], "a/1": [[0, "1-0.1"], [1, "2-0.1"]],
       "b/0": [[0, "1-1.1"], [1, "2-0.0"]]}


BASE_READ = [("a/0", 0, "1-0.0"), ("a/1", 0, "1-0.1"), ("b/0", 1, "2-0.0"),
             ("a/1", 1, "2-0.1")]


def base(final_logs=None, raw=None, reader=None, group=(("a/0", 1),), extra=None) -> H:
    """A clean history: process 1 commits 1-0 (a/0, a/1) and aborts 1-1 on purpose
    (a/0, b/0); process 2, a consume-transform-produce producer, read 1-0.0 and commits
    2-0 (b/0, a/1) with the consumed offset; reader 9 polls what is committed; the final
    reads; the group's offsets."""
    h = H()
    h.txn(1, "1-0", [("a/0", 0), ("a/1", 0)])
    h.txn(1, "1-1", [("a/0", 1), ("b/0", 0)], intent="abort", outcome="fail")
    h.txn(2, "2-0", [("b/0", 1), ("a/1", 1)], read=[("a/0", 0, "1-0.0")],
          offsets=[("a/0", 1)])
    if extra:
        extra(h)
    h.poll(9, reader if reader is not None else BASE_READ)
    h.final(final_logs if final_logs is not None else FINAL, raw if raw is not None else RAW)
    h.group_offsets(group)
    return h


def found(rep) -> dict:
    return {c: n for c, n in rep.counts.items() if n}


def test_clean_history_is_valid_with_its_counts():
    rep = base().check()
    assert found(rep) == {}
    assert not any(rep.problem_counts.values()), rep.problems
    assert rep.valid
    s = rep.stats
    assert (s["txns_committed"], s["txns_aborted"], s["txns_ctp_committed"]) == (2, 1, 1)
    assert s["polled_records"] == 4 and s["final_read_records"] == 4


def test_checker_check_hands_a_txn_history_to_the_txn_checker():
    rep = checker.check(pair(copy.deepcopy(base().events)))
    assert set(rep.counts) == set(txn_checker.CLASSES)


def test_aborted_read():
    rep = base(reader=[("a/0", 0, "1-0.0"), ("a/0", 1, "1-1.0")]).check()
    assert found(rep) == {"aborted-read": 1}
    assert rep.anomalies["aborted-read"][0]["value"] == "1-1.0"


def test_read_of_a_transaction_that_failed_before_committing_is_an_aborted_read():
    def extra(h):
        h.txn(3, "3-0", [("a/0", 2)], outcome="fail")  # a send failed; aborted
    raw = {**RAW, "a/0": RAW["a/0"] + [[2, "3-0.0"]]}
    rep = base(raw=raw, extra=extra, reader=BASE_READ + [("a/0", 2, "3-0.0")]).check()
    assert found(rep) == {"aborted-read": 1}


def test_uncommitted_read_of_a_transaction_that_never_asked_to_commit():
    def extra(h):  # killed mid-transaction: invoked, no commit-start, no completion
        h.txn(3, "3-0", [("a/0", 2)], commit_start=False, complete=False)
    raw = {**RAW, "a/0": RAW["a/0"] + [[2, "3-0.0"]]}
    rep = base(raw=raw, extra=extra,
               reader=[("a/0", 0, "1-0.0"), ("a/0", 2, "3-0.0")]).check()
    assert found(rep) == {"uncommitted-read": 1}
    assert rep.stats["txns_never_asked_to_commit"] == 1
    assert (rep.stats["txns_killed"], rep.stats["txns_killed_committing"]) == (1, 0)


def test_uncommitted_read_before_the_commit_was_asked_for():
    h = H()
    h.ev("invoke", 1, "txn", {"txn": "1-0", "intent": "commit",
                              "sends": [["a/0", "1-0.0"]], "read": [], "offsets": []})
    h.poll(9, [("a/0", 0, "1-0.0")])  # completes before commit-start
    h.ev("info", "1-c", "commit-start", {"txn": "1-0"})
    h.ev("ok", 1, "txn", {"txn": "1-0", "sends": [["a/0", "1-0.0", 0]]})
    h.final({"a/0": [[0, "1-0.0"]]})
    rep = h.check()
    assert found(rep) == {"uncommitted-read": 1}
    assert "before" in rep.anomalies["uncommitted-read"][0]["why"]


def test_lost_write_committed_transaction_missing_from_the_final_read():
    final_logs = {"a/0": [], "a/1": [[1, "2-0.1"]], "b/0": [[1, "2-0.0"]]}
    rep = base(final_logs=final_logs, reader=[("b/0", 1, "2-0.0")]).check()
    assert found(rep) == {"lost-write": 1}
    assert rep.anomalies["lost-write"][0]["txn"] == "1-0"


def test_lost_write_a_reader_read_past_it_without_seeing_any_of_it():
    rep = base(reader=[("a/1", 1, "2-0.1"), ("b/0", 1, "2-0.0")]).check()
    assert found(rep) == {"lost-write": 1}
    assert rep.anomalies["lost-write"][0]["reader"] == 9


def test_duplicate_value_at_two_offsets():
    raw = {**RAW, "a/0": RAW["a/0"] + [[2, "1-0.0"]]}
    rep = base(raw=raw).check()
    assert found(rep) == {"duplicate": 1}


def test_inconsistent_offsets_two_values_at_one_offset():
    def extra(h):
        h.txn(3, "3-0", [("b/0", 2)], intent="abort", outcome="fail")
    raw = {**RAW, "b/0": RAW["b/0"] + [[2, "3-0.0"]]}
    final_logs = {**FINAL, "b/0": FINAL["b/0"]}
    # a reader that says a/1@0 holds 1-0.0 (the log: 1-0.1) -- also a duplicate of 1-0.0
    rep = base(raw=raw, final_logs=final_logs, extra=extra,
               reader=[("a/0", 0, "1-0.0"), ("a/1", 0, "1-0.0")]).check()
    assert rep.counts["inconsistent-offsets"] == 1
    assert rep.anomalies["inconsistent-offsets"][0]["key"] == "a/1"


def test_non_atomic_final_read_holds_part_of_a_committed_transaction():
    final_logs = {**FINAL, "a/1": [[1, "2-0.1"]]}
    raw = {**RAW, "a/1": [[1, "2-0.1"]]}
    rep = base(final_logs=final_logs, raw=raw,
               reader=[("a/0", 0, "1-0.0"), ("b/0", 1, "2-0.0")]).check()
    assert found(rep) == {"non-atomic": 1}
    assert rep.anomalies["non-atomic"][0]["missing"] == ["a/1"]


def test_non_atomic_reader_saw_part_and_read_past_the_rest():
    rep = base(reader=[("a/0", 0, "1-0.0"), ("a/1", 1, "2-0.1"), ("b/0", 1, "2-0.0")]).check()
    assert found(rep) == {"non-atomic": 1}
    a = rep.anomalies["non-atomic"][0]
    assert a["txn"] == "1-0" and a["reader"] == 9


def test_reader_that_has_not_reached_the_rest_yet_is_not_non_atomic():
    # saw 1-0.0 on a/0, has not read a/1 at all: the marker may not be there yet
    rep = base(reader=[("a/0", 0, "1-0.0")]).check()
    assert found(rep) == {}


def test_aborted_offsets_visible_to_the_group():
    def extra(h):
        h.txn(2, "2-1", [("a/1", 2)], intent="abort", outcome="fail",
              read=[("a/0", 1, "1-1.0")], offsets=[("a/0", 2)])
        h.ev("invoke", 2, "committed")
        h.ev("ok", 2, "committed", {"offsets": [["a/0", 2]]})
    raw = {**RAW, "a/1": RAW["a/1"] + [[2, "2-1.0"]]}
    rep = base(raw=raw, extra=extra).check()
    # (the ctp transaction also read an aborted value: an aborted read)
    assert rep.counts["aborted-offsets"] == 1
    assert "only aborted" in rep.anomalies["aborted-offsets"][0]["why"]


def test_offsets_regression_final_group_offset_below_a_committed_one():
    rep = base(group=(("a/0", 0),)).check()
    assert rep.counts["offsets-regression"] == 1
    assert rep.counts["aborted-offsets"] == 1  # nobody sent offset 0 either


def test_unknown_value():
    rep = base(reader=BASE_READ + [("b/0", 5, "7-7.0")]).check()
    assert found(rep) == {"unknown-value": 1}


def test_g1c_a_transaction_read_what_another_wrote_after_its_own_write():
    # 2-0 consumed 1-0.0, yet 2-0's value precedes 1-0's on a/1: circular information flow
    h = H()
    h.txn(1, "1-0", [("a/0", 0), ("a/1", 1)])
    h.txn(2, "2-0", [("b/0", 0), ("a/1", 0)], read=[("a/0", 0, "1-0.0")],
          offsets=[("a/0", 1)])
    h.txn(1, "1-1", [("b/0", 1)], intent="abort", outcome="fail")
    h.final({"a/0": [[0, "1-0.0"]], "a/1": [[0, "2-0.1"], [1, "1-0.1"]],
             "b/0": [[0, "2-0.0"]]})
    rep = h.check()
    assert found(rep) == {"G1c": 1}
    cycle = rep.anomalies["G1c"][0]["cycle"]
    assert {tuple(e) for e in cycle} == {("1-0", "wr", "2-0"), ("2-0", "ww", "1-0")}


def test_g0_write_order_contradicts_one_producers_commit_order():
    # process 1 committed 1-0, then began 1-1; yet 1-1's value precedes 1-0's on a/0
    h = H()
    h.txn(1, "1-0", [("a/0", 1), ("a/1", 0)])
    h.txn(1, "1-1", [("a/0", 0), ("b/0", 0)])
    h.txn(1, "1-2", [("b/0", 1)], intent="abort", outcome="fail")
    h.poll(9, [("a/0", 0, "1-1.0")])
    h.final({"a/0": [[0, "1-1.0"], [1, "1-0.0"]], "a/1": [[0, "1-0.1"]],
             "b/0": [[0, "1-1.1"]]})
    rep = h.check()
    assert found(rep) == {"G0": 1}
    kinds = {e[1] for e in rep.anomalies["G0"][0]["cycle"]}
    assert kinds == {"ww", "po"}


def test_interleaved_concurrent_transactions_are_no_cycle():
    # Kafka lets concurrent transactions interleave: 1-0 before 2-0 on a/0, after it on a/1
    h = H()
    h.ev("invoke", 1, "txn", {"txn": "1-0", "intent": "commit",
                              "sends": [["a/0", "1-0.0"], ["a/1", "1-0.1"]]})
    h.ev("invoke", 2, "txn", {"txn": "2-0", "intent": "commit",
                              "sends": [["a/0", "2-0.0"], ["a/1", "2-0.1"]]})
    h.ev("info", "1-c", "commit-start", {"txn": "1-0"})
    h.ev("info", "2-c", "commit-start", {"txn": "2-0"})
    h.ev("ok", 1, "txn", {"txn": "1-0", "sends": [["a/0", "1-0.0", 0], ["a/1", "1-0.1", 1]]})
    h.ev("ok", 2, "txn", {"txn": "2-0", "sends": [["a/0", "2-0.0", 1], ["a/1", "2-0.1", 0]]})
    h.txn(1, "1-1", [("b/0", 0)], intent="abort", outcome="fail")
    h.poll(9, [("a/0", 0, "1-0.0"), ("a/0", 1, "2-0.0")])
    h.final({"a/0": [[0, "1-0.0"], [1, "2-0.0"]], "a/1": [[0, "2-0.1"], [1, "1-0.1"]],
             "b/0": []}, raw={"b/0": [[0, "1-1.0"]]})
    rep = h.check()
    assert found(rep) == {}
    assert rep.valid, rep.problems


def test_indeterminate_commits_are_resolved_by_reads():
    def extra(h):
        h.txn(3, "3-0", [("a/0", 2), ("b/0", 2)], outcome="info")  # seen: committed
        h.txn(4, "4-0", [("a/1", 2)], outcome="info")  # never seen: not committed
    final_logs = {"a/0": [[0, "1-0.0"], [2, "3-0.0"]], "a/1": FINAL["a/1"],
                  "b/0": [[1, "2-0.0"], [2, "3-0.1"]]}
    raw = {"a/0": RAW["a/0"] + [[2, "3-0.0"]], "a/1": RAW["a/1"] + [[2, "4-0.0"]],
           "b/0": RAW["b/0"] + [[2, "3-0.1"]]}
    rep = base(final_logs=final_logs, raw=raw, extra=extra).check()
    assert found(rep) == {}
    s = rep.stats
    assert (s["txns_indeterminate"], s["txns_indeterminate_committed"],
            s["txns_indeterminate_not_committed"]) == (2, 1, 1)


def test_indeterminate_commit_seen_in_part_is_non_atomic():
    def extra(h):
        h.txn(3, "3-0", [("a/0", 2), ("b/0", 2)], outcome="info")
    final_logs = {**FINAL, "a/0": [[0, "1-0.0"], [2, "3-0.0"]]}
    raw = {**RAW, "a/0": RAW["a/0"] + [[2, "3-0.0"]], "b/0": RAW["b/0"] + [[2, "3-0.1"]]}
    rep = base(final_logs=final_logs, raw=raw, extra=extra).check()
    assert found(rep) == {"non-atomic": 1}


def test_history_problems_no_aborted_txns_and_a_key_not_read():
    h = H()
    h.txn(1, "1-0", [("a/0", 0), ("a/1", 0)])
    h.poll(9, [("a/0", 0, "1-0.0")])
    h.final({"a/0": [[0, "1-0.0"]], "a/1": [[0, "1-0.1"]]})  # b/0 not read
    rep = h.check()
    assert found(rep) == {}
    problems = {c for c, n in rep.problem_counts.items() if n}
    assert problems == {"no-aborted-txns", "no-final-read"}
    assert not rep.valid


def test_empty_history_proves_nothing():
    rep = H().check()
    problems = {c for c, n in rep.problem_counts.items() if n}
    assert {"no-committed-txns", "no-aborted-txns", "no-reads", "no-final-read"} <= problems
