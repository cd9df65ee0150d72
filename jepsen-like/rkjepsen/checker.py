"""The checker: finds every anomaly class of Jepsen's Kafka / Maelstrom "kafka" tests in a
history (see ``history`` for its shape). Pure: a list of ops in, a report out.

A key is a topic partition; a value is sent once (values are unique), so every
observation of a value can be traced to its one send.

Classes (each anomaly lists the ops involved):

``inconsistent-offsets``
    One offset of a key holds two different values, across every read and every ack.
``duplicate``
    One value at two offsets of a key (reads and acks).
``lost-write``
    A send was acknowledged at offset o, the value was never read, yet some read saw
    an offset above o: the log moved on without it.
``unseen``
    A send was acknowledged, never read, and no read got past its offset. Only reported
    when the history has a final read (the log was read to its end after healing).
``aborted-read``
    A value whose send definitely failed (``fail``) was read.
``unknown-value``
    A value was read that no send ever tried to write.
``nonmonotonic-send``
    One producer process got an ack at an offset not above its previous ack for the same
    key (its sends are sequential, so the log must order them).
``nonmonotonic-poll``
    A consumer that kept the key assigned polled an offset not above the offset it polled
    before (within a poll or across polls).
``poll-skip``
    A consumer that kept the key assigned jumped over an offset that exists in the log
    (some read saw it) between two consecutive polled offsets.
``committed-offset-regression``
    The group's committed offset of a key went backwards: a commit or a read of the
    committed offsets, invoked after a commit of a higher offset had succeeded, stored or
    returned a lower one.

A consumer "keeps its assignment" from a poll that returns the key in its assignment
until a poll that does not, a failed or unknown poll or commit, or a crash; tracking
restarts then.

A history without anomalies proves something only if it exercised what the classes check,
so these are problems of the history, and each makes the verdict invalid too:

``no-acked-sends``
    No send was acknowledged: there is nothing to lose, duplicate or reorder.
``no-polled-records``
    No poll returned a record (unless the run had no consumers: its ``config`` event says
    ``"consumers": 0``): the poll classes saw nothing.
``no-final-read``
    A key with acknowledged sends has no successful final read (none at all, or it
    failed): its acked values drop out of the ``unseen`` check.
``torn-history-line``
    A history file ended in a torn line that nothing explains (see ``history``): an event
    may be missing.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from rkjepsen.history import TORN_LINE, Op

CLASSES = (
    "lost-write",
    "duplicate",
    "inconsistent-offsets",
    "nonmonotonic-send",
    "poll-skip",
    "nonmonotonic-poll",
    "aborted-read",
    "unknown-value",
    "unseen",
    "committed-offset-regression",
)
HISTORY_PROBLEMS = (
    "no-acked-sends",
    "no-polled-records",
    "no-final-read",
    "torn-history-line",
)
MAX_EXAMPLES = 50  # per class, in the report; counts are always complete


@dataclass
class Report:
    anomalies: dict[str, list[dict]] = field(default_factory=lambda: {c: [] for c in CLASSES})
    counts: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CLASSES})
    problems: dict[str, list[dict]] = field(
        default_factory=lambda: {c: [] for c in HISTORY_PROBLEMS})
    problem_counts: dict[str, int] = field(
        default_factory=lambda: {c: 0 for c in HISTORY_PROBLEMS})
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_classes(cls, classes: Iterable[str], problems: Iterable[str]) -> Report:
        """An empty report over another workload's classes (``queue_checker``)."""
        return cls(anomalies={c: [] for c in classes}, counts={c: 0 for c in classes},
                   problems={c: [] for c in problems}, problem_counts={c: 0 for c in problems})

    def add(self, cls: str, **detail: Any) -> None:
        self.counts[cls] += 1
        if len(self.anomalies[cls]) < MAX_EXAMPLES:
            self.anomalies[cls].append(detail)

    def add_problem(self, cls: str, **detail: Any) -> None:
        self.problem_counts[cls] += 1
        if len(self.problems[cls]) < MAX_EXAMPLES:
            self.problems[cls].append(detail)

    @property
    def valid(self) -> bool:
        """No anomaly, and a history that exercised what the anomaly classes check."""
        return not any(self.counts.values()) and not any(self.problem_counts.values())

    def to_json(self) -> dict:
        return {"valid": self.valid, "counts": self.counts,
                "anomalies": {c: a for c, a in self.anomalies.items() if a},
                "history_problem_counts": self.problem_counts,
                "history_problems": {c: a for c, a in self.problems.items() if a},
                "stats": self.stats}


def _records_of(op: Op) -> Iterable[tuple[int, int, Any]]:
    """(key, offset, value) of every record an ok poll or final read returned."""
    v = op.value or {}
    if op.f == "poll":
        for key, recs in (v.get("records") or {}).items():
            for offset, value in recs:
                yield int(key), int(offset), value
    elif op.f == "final-read":
        for offset, value in v.get("records") or []:
            yield int(v["key"]), int(offset), value


def check(ops: list[Op]) -> Report:
    config = next((o.value for o in ops if o.process == "harness" and o.f == "config"
                   and isinstance(o.value, dict)), {})
    if config.get("workload") == "queue":  # share groups: rkjepsen/queue_checker.py
        from rkjepsen import queue_checker

        return queue_checker.check(ops)
    if config.get("workload") == "txn":  # transactions: rkjepsen/txn_checker.py
        from rkjepsen import txn_checker

        return txn_checker.check(ops)
    report = Report()
    sends = [o for o in ops if o.f == "send"]
    reads = [o for o in ops if o.type == "ok" and o.f in ("poll", "final-read")]
    final_keys = {int(o.value["key"]) for o in reads if o.f == "final-read"}

    # value -> its send op (values are unique by construction)
    send_of: dict[Any, Op] = {}
    for o in sends:
        val = (o.invoke_value or o.value)["value"]
        send_of[val] = o

    # every observation: key -> offset -> value -> ops; key -> value -> offsets
    by_offset: dict[int, dict[int, dict[Any, list[Op]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    read_offsets_of: dict[int, dict[Any, set[int]]] = defaultdict(lambda: defaultdict(set))
    read_ops_of: dict[Any, list[Op]] = defaultdict(list)
    max_read_offset: dict[int, int] = {}
    for o in reads:
        for key, offset, value in _records_of(o):
            ops_here = by_offset[key][offset][value]
            if not ops_here or ops_here[-1] is not o:
                ops_here.append(o)
            read_offsets_of[key][value].add(offset)
            if not read_ops_of[value] or read_ops_of[value][-1] is not o:
                read_ops_of[value].append(o)
            if offset > max_read_offset.get(key, -1):
                max_read_offset[key] = offset
    acked: dict[int, dict[Any, tuple[int, Op]]] = defaultdict(dict)
    for o in sends:
        if o.type == "ok" and o.value.get("offset", -1) >= 0:
            key, value, offset = int(o.value["key"]), o.value["value"], int(o.value["offset"])
            acked[key][value] = (offset, o)
            by_offset[key][offset][value].append(o)

    # inconsistent-offsets and duplicate
    for key in sorted(by_offset):
        for offset in sorted(by_offset[key]):
            values = by_offset[key][offset]
            if len(values) > 1:
                report.add("inconsistent-offsets", key=key, offset=offset,
                           values={str(v): [op.brief() for op in vops[:4]]
                                   for v, vops in values.items()})
        offsets_of: dict[Any, set[int]] = defaultdict(set)
        for offset, values in by_offset[key].items():
            for v in values:
                offsets_of[v].add(offset)
        for v, offs in offsets_of.items():
            if len(offs) > 1:
                involved = read_ops_of.get(v, [])[:4]
                if v in send_of:
                    involved = [send_of[v]] + involved
                report.add("duplicate", key=key, value=v, offsets=sorted(offs),
                           ops=[op.brief() for op in involved])

    # lost-write and unseen
    for key, values in acked.items():
        for v, (offset, op) in values.items():
            if v in read_offsets_of.get(key, {}):
                continue
            if max_read_offset.get(key, -1) > offset:
                report.add("lost-write", key=key, value=v, offset=offset,
                           max_read_offset=max_read_offset[key], ops=[op.brief()])
            elif key in final_keys:
                report.add("unseen", key=key, value=v, offset=offset,
                           max_read_offset=max_read_offset.get(key, -1), ops=[op.brief()])

    # aborted-read and unknown-value
    for v, rops in read_ops_of.items():
        s = send_of.get(v)
        if s is None:
            report.add("unknown-value", value=v, ops=[op.brief() for op in rops[:4]])
        elif s.type == "fail":
            report.add("aborted-read", value=v,
                       ops=[s.brief()] + [op.brief() for op in rops[:4]])

    # nonmonotonic-send: per process and key, acks in the process's order
    last_ack: dict[tuple[Any, int], Op] = {}
    for o in sorted((o for o in sends if o.type == "ok" and o.value.get("offset", -1) >= 0),
                    key=lambda o: o.index):
        k = (o.process, int(o.value["key"]))
        prev = last_ack.get(k)
        if prev is not None and o.value["offset"] <= prev.value["offset"]:
            report.add("nonmonotonic-send", key=k[1], process=o.process,
                       offsets=[prev.value["offset"], o.value["offset"]],
                       ops=[prev.brief(), o.brief()])
        last_ack[k] = o

    _check_polls(ops, by_offset, report)
    _check_commits(ops, report)

    report.stats = _stats(ops, acked, final_keys)
    _check_history(ops, acked, final_keys, report)
    return report


def _check_history(ops: list[Op], acked: dict, final_keys: set[int], report: Report) -> None:
    """The problems of a history that would make "no anomaly" say nothing."""
    if not report.stats["acked_sends"]:
        report.add_problem("no-acked-sends", sends=report.stats["by_f"].get("send", {}))
    config = next((o.value for o in ops if o.process == "harness" and o.f == "config"
                   and isinstance(o.value, dict)), {})
    if not report.stats["polled_records"] and config.get("consumers") != 0:
        report.add_problem("no-polled-records", polls=report.stats["by_f"].get("poll", {}))
    for key in sorted(k for k, values in acked.items() if values and k not in final_keys):
        tried = [o.brief() for o in ops if o.f == "final-read"
                 and int((o.invoke_value or o.value or {}).get("key", -1)) == key]
        report.add_problem("no-final-read", key=key, acked=len(acked[key]), ops=tried[:4])
    for o in ops:
        if o.f == TORN_LINE and not (o.value or {}).get("explained"):
            report.add_problem("torn-history-line", **o.value)


def _check_polls(ops: list[Op], by_offset: dict, report: Report) -> None:
    log_offsets = {key: sorted(offs) for key, offs in by_offset.items()}

    def exists_between(key: int, a: int, b: int) -> int | None:
        offs = log_offsets.get(key, [])
        i = bisect.bisect_right(offs, a)
        if i < len(offs) and offs[i] < b:
            return offs[i]
        return None

    by_process: dict[Any, list[Op]] = defaultdict(list)
    for o in ops:
        if o.f in ("poll", "commit", "crash") and o.process != "nemesis":
            by_process[o.process].append(o)
    for process, pops in by_process.items():
        last: dict[int, tuple[int, Op]] = {}  # key -> (last polled offset, its poll)
        for o in pops:
            if o.f == "commit" and o.type == "ok":
                continue
            if o.type != "ok" or o.f != "poll":
                # a failed/unknown poll may have moved positions unseen; after a commit
                # that did not succeed, a partition taken away and given back inside one
                # poll restarts from an older committed offset
                last.clear()
                continue
            for key, recs in sorted((o.value.get("records") or {}).items()):
                key = int(key)
                for offset, _ in recs:
                    offset = int(offset)
                    prev = last.get(key)
                    if prev is not None:
                        p_off, p_op = prev
                        involved = [p_op.brief()] + ([] if p_op is o else [o.brief()])
                        if offset <= p_off:
                            report.add("nonmonotonic-poll", key=key, process=process,
                                       offsets=[p_off, offset], ops=involved)
                        else:
                            skipped = exists_between(key, p_off, offset)
                            if skipped is not None:
                                report.add("poll-skip", key=key, process=process,
                                           offsets=[p_off, offset], skipped=skipped,
                                           ops=involved)
                    last[key] = (offset, o)
            assignment = o.value.get("assignment")
            if assignment is not None:
                kept = {int(k) for k in assignment}
                for key in [k for k in last if k not in kept]:
                    del last[key]


def _check_commits(ops: list[Op], report: Report) -> None:
    commits: dict[int, list[tuple[float, int, Op]]] = defaultdict(list)
    observations: dict[int, list[tuple[float, int, Op]]] = defaultdict(list)
    for o in ops:
        if o.type != "ok" or o.f not in ("commit", "committed"):
            continue
        offsets = (o.value or {}).get("offsets") or {}
        for key, offset in offsets.items():
            if offset is None or int(offset) < 0:
                continue
            key, offset = int(key), int(offset)
            if o.f == "commit":
                commits[key].append((o.complete_time, offset, o))
            observations[key].append((o.invoke_time, offset, o))
    for key, obs in observations.items():
        done = sorted(commits.get(key, []), key=lambda t: t[0])
        obs.sort(key=lambda t: t[0])
        i, best = 0, None
        for invoked, offset, o in obs:
            while i < len(done) and done[i][0] < invoked:
                if best is None or done[i][1] > best[1]:
                    best = done[i]
                i += 1
            if best is not None and offset < best[1]:
                report.add("committed-offset-regression", key=key,
                           offsets=[best[1], offset], ops=[best[2].brief(), o.brief()])


def _stats(ops: list[Op], acked: dict, final_keys: set[int]) -> dict:
    out: dict[str, Any] = {"ops": 0, "by_f": {}}
    for o in ops:
        if o.process in ("nemesis", "harness") or o.f == "crash":
            continue
        out["ops"] += 1
        d = out["by_f"].setdefault(o.f, {"ok": 0, "fail": 0, "info": 0})
        d[o.type] = d.get(o.type, 0) + 1
    out["acked_sends"] = sum(len(v) for v in acked.values())
    out["polled_records"] = sum(1 for o in ops if o.type == "ok" and o.f == "poll"
                                for _ in _records_of(o))
    out["final_read_keys"] = sorted(final_keys)
    out["final_read_records"] = sum(1 for o in ops if o.type == "ok" and o.f == "final-read"
                                    for _ in _records_of(o))
    return out
