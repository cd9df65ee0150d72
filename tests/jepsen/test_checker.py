"""The checker catches every anomaly class on hand-written histories, and stays quiet on
a clean one (each anomaly test is the clean history plus one defect, and pins the exact set
of classes reported). A history that proves nothing (no acked send, no polled record, an
acked key without a final read, a torn line) is invalid too, with no anomaly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rkjepsen import checker, history


class H:
    """Builds a history event by event: ``h.op(process, f, invoke_value, type, value)``
    appends an invocation and its completion one time step apart."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.t = 0.0

    def _event(self, type_, process, f, value):
        self.t += 1.0
        self.events.append({"index": len(self.events), "type": type_, "process": process,
                            "f": f, "time": self.t, "value": value})

    def op(self, process, f, invoke_value=None, type_="ok", value=None):
        self._event("invoke", process, f, invoke_value)
        self._event(type_, process, f, value if value is not None else invoke_value)
        return self

    def send(self, process, key, value, offset=None, type_="ok"):
        v = {"key": key, "value": value}
        done = dict(v, offset=offset) if offset is not None else v
        return self.op(process, "send", v, type_, done)

    def poll(self, process, records, assignment=None):
        value = {"records": {str(k): [list(r) for r in recs] for k, recs in records.items()},
                 "assignment": sorted(records) if assignment is None else assignment}
        return self.op(process, "poll", None, "ok", value)

    def commit(self, process, offsets, type_="ok"):
        return self.op(process, "commit", {"offsets": offsets}, type_)

    def committed(self, process, offsets):
        return self.op(process, "committed", None, "ok", {"offsets": offsets})

    def final(self, key, records):
        return self.op("final", "final-read", None, "ok",
                       {"key": key, "records": [list(r) for r in records]})

    def check(self) -> checker.Report:
        return checker.check(history.pair(self.events))


def clean() -> H:
    h = H()
    h.send(0, 0, "0-0", 0).send(0, 0, "0-1", 1).send(1, 0, "1-0", 2).send(1, 1, "1-1", 0)
    h.poll(10, {0: [(0, "0-0"), (1, "0-1")], 1: [(0, "1-1")]}).commit(10, {0: 2, 1: 1})
    h.poll(10, {0: [(2, "1-0")], 1: []}).commit(10, {0: 3, 1: 1})
    h.final(0, [(0, "0-0"), (1, "0-1"), (2, "1-0")]).final(1, [(0, "1-1")])
    return h


def only(report: checker.Report) -> dict[str, int]:
    """The anomaly classes reported, with their counts."""
    return {c: n for c, n in report.counts.items() if n}


def problems(report: checker.Report) -> dict[str, int]:
    """The history problems reported, with their counts."""
    return {c: n for c, n in report.problem_counts.items() if n}


def test_clean_history_is_valid():
    r = clean().check()
    assert r.valid, r.to_json()
    assert only(r) == {} and problems(r) == {}
    assert r.stats["acked_sends"] == 4 and r.stats["polled_records"] == 4
    assert r.stats["final_read_keys"] == [0, 1] and r.stats["final_read_records"] == 4


def test_lost_write_acked_value_missing_while_a_later_offset_is_read():
    h = H()
    h.send(0, 0, "a", 0).send(0, 0, "b", 1).send(0, 0, "c", 2)
    h.final(0, [(0, "a"), (2, "c")])
    r = h.check()
    assert only(r) == {"lost-write": 1}
    lost = r.anomalies["lost-write"][0]
    assert lost["value"] == "b" and lost["offset"] == 1 and lost["ops"][0]["f"] == "send"


def test_unseen_acked_value_past_the_end_of_the_final_read():
    h = H()
    h.send(0, 0, "a", 0).send(0, 0, "b", 1)
    h.final(0, [(0, "a")])
    assert only(h.check()) == {"unseen": 1}


def test_unseen_is_not_reported_without_a_final_read_which_is_a_problem_itself():
    h = H()
    h.send(0, 0, "a", 0).send(0, 0, "b", 1)
    h.poll(10, {0: [(0, "a")]})
    r = h.check()
    assert only(r) == {}
    assert problems(r) == {"no-final-read": 1} and not r.valid
    assert r.problems["no-final-read"][0]["key"] == 0


def test_duplicate_one_value_at_two_offsets():
    h = clean()
    h.final(0, [(0, "0-0"), (1, "0-1"), (2, "1-0"), (3, "0-0")])
    r = h.check()
    assert only(r) == {"duplicate": 1}
    assert r.anomalies["duplicate"][0]["offsets"] == [0, 3]


def test_inconsistent_offsets_one_offset_with_two_values():
    h = clean()
    h.send(2, 1, "2-0", 1)
    h.poll(11, {1: [(1, "1-1x")]})  # another value at offset 1 of key 1
    h.send(3, 1, "1-1x", None, type_="info")
    h.final(1, [(0, "1-1"), (1, "2-0")])
    r = h.check()
    assert r.counts["inconsistent-offsets"] == 1
    assert r.anomalies["inconsistent-offsets"][0]["offset"] == 1


def test_nonmonotonic_send_a_later_ack_at_a_lower_offset():
    h = H()
    h.send(0, 0, "a", 5).send(0, 0, "b", 3)
    h.final(0, [(3, "b"), (5, "a")])
    r = h.check()
    assert only(r) == {"nonmonotonic-send": 1}
    assert r.anomalies["nonmonotonic-send"][0]["offsets"] == [5, 3]


def test_sends_of_different_processes_may_interleave():
    h = clean()
    h.send(2, 1, "2-0", 5).send(3, 1, "3-0", 3)
    h.final(1, [(0, "1-1"), (3, "3-0"), (5, "2-0")])
    r = h.check()
    assert r.valid, r.to_json()


def test_poll_skip_over_an_offset_that_exists():
    h = clean()
    h.poll(11, {0: [(0, "0-0")]}).poll(11, {0: [(2, "1-0")]})
    r = h.check()
    assert only(r) == {"poll-skip": 1}
    assert r.anomalies["poll-skip"][0]["skipped"] == 1


def test_poll_skip_within_one_poll():
    h = clean()
    h.poll(11, {0: [(0, "0-0"), (2, "1-0")]})
    assert only(h.check()) == {"poll-skip": 1}


def test_no_poll_skip_across_a_change_of_assignment():
    h = clean()
    h.poll(11, {0: [(0, "0-0")]}).poll(11, {1: []}, assignment=[1])
    h.poll(11, {0: [(2, "1-0")]})
    assert h.check().valid


def test_nonmonotonic_poll_going_back_while_assigned():
    h = clean()
    h.poll(11, {0: [(0, "0-0"), (1, "0-1")]}).poll(11, {0: [(1, "0-1")]})
    r = h.check()
    assert only(r) == {"nonmonotonic-poll": 1}
    assert r.anomalies["nonmonotonic-poll"][0]["offsets"] == [1, 1]


def test_a_crashed_consumer_may_reread_as_a_new_process():
    h = clean()
    h.poll(11, {0: [(0, "0-0"), (1, "0-1")]})
    h.op(11, "crash", None, "info")
    h.poll(12, {0: [(0, "0-0")]})
    assert h.check().valid


def test_aborted_read_a_failed_send_is_read():
    h = clean()
    h.send(2, 1, "2-0", type_="fail")
    h.final(1, [(0, "1-1"), (1, "2-0")])
    r = h.check()
    assert only(r) == {"aborted-read": 1}
    assert [o["f"] for o in r.anomalies["aborted-read"][0]["ops"]] == ["send", "final-read"]


def test_an_unknown_send_may_be_read_or_not():
    h = clean()
    h.send(2, 1, "2-0", type_="info").send(2, 1, "2-1", type_="info")
    h.final(1, [(0, "1-1"), (1, "2-0")])
    assert h.check().valid


def test_unknown_value_read_that_nobody_sent():
    h = clean()
    h.final(1, [(0, "1-1"), (1, "zz")])
    assert only(h.check()) == {"unknown-value": 1}


def test_committed_offset_regression_by_a_later_commit():
    h = clean()
    h.commit(11, {0: 1})
    r = h.check()
    assert only(r) == {"committed-offset-regression": 1}
    assert r.anomalies["committed-offset-regression"][0]["offsets"] == [3, 1]


def test_committed_offset_regression_seen_by_a_read():
    h = clean()
    h.committed(12, {0: 2, 1: 1})
    assert only(h.check()) == {"committed-offset-regression": 1}


def test_concurrent_commits_are_not_a_regression():
    h = clean()
    # invoked before the commit of 3 completed: either order is allowed
    h.events.insert(-8, {"index": -1, "type": "invoke", "process": 13, "f": "commit",
                         "time": 0.5, "value": {"offsets": {"0": 2}}})
    h.events.append({"index": 0, "type": "ok", "process": 13, "f": "commit",
                     "time": h.t + 1, "value": {"offsets": {"0": 2}}})
    for i, e in enumerate(sorted(h.events, key=lambda e: e["time"])):
        e["index"] = i
    assert h.check().valid


def test_crashed_op_without_completion_is_info():
    h = clean()
    h._event("invoke", 5, "send", {"key": 0, "value": "5-0"})
    ops = history.pair(h.events)
    assert ops[-1].type == "info" and ops[-1].complete_time is None
    assert checker.check(ops).valid


def test_check_command_on_a_saved_history(tmp_path: Path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(json.dumps(e) + "\n" for e in clean().events))
    lost = H().send(0, 0, "a", 0).send(0, 0, "b", 1).send(0, 0, "c", 2)
    lost.final(0, [(0, "a"), (2, "c")])
    bad.write_text("".join(json.dumps(e) + "\n" for e in lost.events) + '{"torn')
    check = Path(__file__).resolve().parents[2] / "jepsen-like" / "check"
    ok = subprocess.run([sys.executable, str(check), str(good)], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    res = subprocess.run([sys.executable, str(check), str(bad), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert json.loads(res.stdout)["counts"]["lost-write"] == 1


# ---------------------------------------------------------------- planted anomalies, exact sets


def test_nonmonotonic_poll_within_one_poll():
    h = clean()
    h.poll(11, {0: [(1, "0-1"), (0, "0-0")]})  # one poll, offsets going back
    r = h.check()
    assert only(r) == {"nonmonotonic-poll": 1} and problems(r) == {}
    assert r.anomalies["nonmonotonic-poll"][0]["offsets"] == [1, 0]
    assert len(r.anomalies["nonmonotonic-poll"][0]["ops"]) == 1  # the same poll


def test_inconsistent_offsets_between_an_ack_and_a_read():
    """Key 2: "2-0" acked at offset 0, a poll read "3-0" there. Key 2 has no final read,
    so the ack and the read are the only evidence (and the missing final read is a
    problem of the history)."""
    h = clean()
    h.send(2, 2, "2-0", 0).send(3, 2, "3-0", type_="info")
    h.poll(11, {2: [(0, "3-0")]})
    r = h.check()
    assert only(r) == {"inconsistent-offsets": 1}
    assert problems(r) == {"no-final-read": 1}
    found = r.anomalies["inconsistent-offsets"][0]
    assert (found["key"], found["offset"]) == (2, 0)
    assert {v: [o["f"] for o in ops] for v, ops in found["values"].items()} == {
        "2-0": ["send"], "3-0": ["poll"]}


def test_inconsistent_offsets_between_two_acks():
    h = clean()
    h.send(2, 2, "2-0", 0).send(3, 2, "3-0", 0)  # two values acked at one offset
    r = h.check()
    assert only(r) == {"inconsistent-offsets": 1}
    assert problems(r) == {"no-final-read": 1}
    found = r.anomalies["inconsistent-offsets"][0]
    assert {v: [o["f"] for o in ops] for v, ops in found["values"].items()} == {
        "2-0": ["send"], "3-0": ["send"]}


# A consumer's position tracking restarts after a poll that did not succeed, or a commit
# that did not succeed (the group may have moved the partition and given it back from the
# committed offset). These pin what a reset suppresses: only the comparison with the polls
# before it, of that process; everything after it is checked again.


def test_a_failed_poll_resets_tracking_going_back_after_it_is_allowed():
    h = clean()
    h.poll(11, {0: [(0, "0-0"), (1, "0-1")]})
    h.op(11, "poll", None, "info", {"error": "timed out"})
    h.poll(11, {0: [(0, "0-0")]})
    r = h.check()
    assert only(r) == {} and r.valid


def test_a_failed_poll_resets_tracking_jumping_ahead_after_it_is_allowed():
    h = clean()
    h.poll(11, {0: [(0, "0-0")]})
    h.op(11, "poll", None, "info", {"error": "timed out"})  # may have returned offset 1
    h.poll(11, {0: [(2, "1-0")]})
    assert only(h.check()) == {}


def test_after_a_failed_poll_a_skip_within_the_next_poll_is_found():
    h = clean()
    h.poll(11, {0: [(0, "0-0")]})
    h.op(11, "poll", None, "info", {"error": "timed out"})
    h.poll(11, {0: [(0, "0-0"), (2, "1-0")]})
    r = h.check()
    assert only(r) == {"poll-skip": 1}
    assert r.anomalies["poll-skip"][0]["offsets"] == [0, 2]


def test_after_a_failed_poll_a_skip_across_the_next_polls_is_found():
    h = clean()
    h.poll(11, {0: [(0, "0-0")]})
    h.op(11, "poll", None, "info", {"error": "timed out"})
    h.poll(11, {0: [(0, "0-0")]}).poll(11, {0: [(2, "1-0")]})
    r = h.check()
    assert only(r) == {"poll-skip": 1}
    assert r.anomalies["poll-skip"][0]["skipped"] == 1


def test_a_failed_poll_of_another_consumer_does_not_reset_this_one():
    h = clean()
    h.poll(11, {0: [(0, "0-0")]})
    h.op(12, "poll", None, "info", {"error": "timed out"})
    h.commit(12, {1: 1}, type_="fail")
    h.poll(11, {0: [(2, "1-0")]})
    r = h.check()
    assert only(r) == {"poll-skip": 1}
    assert r.anomalies["poll-skip"][0]["process"] == 11


def test_a_successful_commit_does_not_reset_tracking():
    h = clean()
    h.poll(11, {0: [(0, "0-0")]}).commit(11, {0: 3})  # 3: the group's committed offset
    h.poll(11, {0: [(2, "1-0")]})
    r = h.check()
    assert only(r) == {"poll-skip": 1}
    assert r.anomalies["poll-skip"][0]["offsets"] == [0, 2]


@pytest.mark.parametrize("outcome", ["fail", "info"])
def test_an_unsuccessful_commit_resets_tracking(outcome):
    h = clean()
    h.poll(11, {0: [(0, "0-0"), (1, "0-1")]}).commit(11, {0: 4}, type_=outcome)
    h.poll(11, {0: [(0, "0-0")]})  # the partition came back from an older committed offset
    r = h.check()
    assert only(r) == {} and r.valid


@pytest.mark.parametrize("outcome", ["fail", "info"])
def test_after_an_unsuccessful_commit_a_skip_is_found(outcome):
    h = clean()
    h.poll(11, {0: [(0, "0-0"), (1, "0-1")]}).commit(11, {0: 4}, type_=outcome)
    h.poll(11, {0: [(0, "0-0")]}).poll(11, {0: [(2, "1-0")]})
    r = h.check()
    assert only(r) == {"poll-skip": 1}
    assert r.anomalies["poll-skip"][0]["offsets"] == [0, 2]


# ---------------------------------------------------------------- histories that prove nothing


def test_an_empty_history_is_invalid():
    r = checker.check([])
    assert only(r) == {}
    assert problems(r) == {"no-acked-sends": 1, "no-polled-records": 1} and not r.valid


def test_a_history_without_acked_sends_is_invalid():
    h = H()
    h.send(0, 0, "0-0", type_="info").send(1, 0, "1-0", type_="fail")
    h.poll(10, {0: [(0, "0-0")]}).final(0, [(0, "0-0")])
    r = h.check()
    assert only(r) == {} and problems(r) == {"no-acked-sends": 1}


def test_a_history_without_polled_records_is_invalid():
    h = H()
    h.send(0, 0, "0-0", 0).poll(10, {0: []}).final(0, [(0, "0-0")])
    r = h.check()
    assert only(r) == {} and problems(r) == {"no-polled-records": 1}


def test_no_polls_are_expected_of_a_run_without_consumers():
    h = H()
    h.op("harness", "config", None, "info", {"consumers": 0, "keys": 1})
    h.send(0, 0, "0-0", 0).final(0, [(0, "0-0")])
    r = h.check()
    assert r.valid, r.to_json()
    assert r.stats["ops"] == 2  # the config event is not an op of the workload


def test_a_key_whose_final_read_failed_is_invalid():
    h = clean()
    h.send(0, 2, "0-2", 0)
    h.op("final", "final-read", {"key": 2}, "info", {"key": 2, "error": "TimeoutError"})
    r = h.check()
    assert only(r) == {}
    assert problems(r) == {"no-final-read": 1}
    (missing,) = r.problems["no-final-read"]
    assert missing["key"] == 2 and missing["acked"] == 1
    assert [o["type"] for o in missing["ops"]] == ["info"]


def test_a_torn_last_line_is_a_problem_of_the_history(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in clean().events) + '{"index": 9, "ty')
    r = checker.check(history.load(path))
    assert only(r) == {} and problems(r) == {"torn-history-line": 1}
    assert r.problems["torn-history-line"][0]["line"] == len(clean().events) + 1


def _write(path: Path, h: H) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in h.events))
    return path


def _check_cli(*args: str) -> subprocess.CompletedProcess:
    check = Path(__file__).resolve().parents[2] / "jepsen-like" / "check"
    return subprocess.run([sys.executable, str(check), *args], capture_output=True, text=True)


def test_check_command_says_invalid_for_a_history_without_acked_sends(tmp_path: Path):
    h = H()
    h.send(0, 0, "0-0", type_="info").poll(10, {0: [(0, "0-0")]}).final(0, [(0, "0-0")])
    res = _check_cli(str(_write(tmp_path / "h.jsonl", h)))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "VALID" not in res.stdout.replace("INVALID", "")
    assert "INVALID: the history does not prove enough" in res.stdout
    assert "no-acked-sends" in res.stdout


def test_check_command_says_invalid_for_a_key_without_a_final_read(tmp_path: Path):
    h = clean()
    h.send(0, 2, "0-2", 0)  # key 2: acked, never read at the end
    res = _check_cli(str(_write(tmp_path / "h.jsonl", h)), "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["valid"] is False and not any(doc["counts"].values())
    assert doc["history_problem_counts"]["no-final-read"] == 1
    assert doc["history_problems"]["no-final-read"][0]["key"] == 2


def test_check_command_says_invalid_for_an_empty_history(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = _check_cli(str(empty))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "VALID" not in res.stdout.replace("INVALID", "")
