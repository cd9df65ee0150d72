"""The queue checker: anomalies of a share-group (work queue) history (``queue`` for its
shape). Pure: a list of ops in, a report out. ``checker.check`` hands a history here when
its ``config`` event says ``"workload": "queue"``.

A *record* is (key, offset) of the topic; values are unique, so a value names its record.
The records of a run are those the final read found plus those whose send was
acknowledged (a delayed send is acknowledged without an offset, -1: its record is where
the final read found its value). An accept whose ``ack`` op is ``ok`` certainly happened; ``info`` may have.

Classes (each anomaly lists the ops involved):

``lost-record``
    A record the share state says is finished (below the final start offset) was neither
    accepted (by an ``ok`` or ``info`` ack) nor dead-lettered; or an acknowledged send is
    missing from the final read of the topic.
``accepted-twice``
    Two ``ok`` acks accepted the same record.
``delivered-after-accept``
    A poll invoked after an ``ok`` accept of a record completed returned that record.
``dead-lettered-accepted``
    A record in the dead-letter topic had an ``ok`` accept.
``dead-lettered-twice``
    A record is in the dead-letter topic more than once.
``delivery-count-regression``
    A poll invoked after another poll of the same record completed returned it with a
    delivery count not above that poll's.
``delivered-beyond-limit``
    A record delivered with a count above the group's ``max_delivery_attempts``.
``delayed-early``
    A record whose send named a due time (``deliver_after``, history seconds) was returned
    by a poll that completed more than ``CLOCK_TOLERANCE_S`` before it. The brokers release
    by their wall clock, the history runs on the monotonic clock; every process of a run
    reads the same host clocks (network namespaces do not separate clocks), so the only
    slack is in reading them: the due time is moved onto the history clock from two reads
    microseconds apart, delivery times are whole milliseconds (``delay`` is truncated to
    the ms by the client), history times are rounded to the µs; 5 ms covers that with
    room. A run with the ``clock`` nemesis skews one node's wall clock by up to
    ``CLOCK_SKEW_MAX_S``: a skewed leader may release that much early (delayed delivery
    follows the leader's clock), so such a run adds that to the tolerance.
``inconsistent-offsets``
    A delivery or a dead letter whose value is not the value the log holds at its offset,
    or a send acknowledged at an offset where the final read found another value.
``unknown-value``
    A value delivered or dead-lettered that no send tried to write.
``aborted-read``
    A value delivered whose send definitely failed.

Problems of the history (each makes the verdict invalid, as in the log checker):
``no-acked-sends``, ``no-delivered-records``, ``no-accepts``, ``no-dead-letters`` (the run
sent poison, yet nothing was dead-lettered), ``no-final-read`` (a key without a
successful final read, or no successful read of the dead-letter topic), ``undrained``
(no final share state, or records at or after its start offset: the run ended before the
workers finished them, so they prove nothing), ``torn-history-line``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rkjepsen.history import TORN_LINE, Op

CLASSES = (
    "lost-record",
    "accepted-twice",
    "delivered-after-accept",
    "dead-lettered-accepted",
    "dead-lettered-twice",
    "delivery-count-regression",
    "delivered-beyond-limit",
    "delayed-early",
    "inconsistent-offsets",
    "unknown-value",
    "aborted-read",
)
HISTORY_PROBLEMS = (
    "no-acked-sends",
    "no-delivered-records",
    "no-accepts",
    "no-dead-letters",
    "no-final-read",
    "undrained",
    "torn-history-line",
)
ATTEMPTS_DEFAULT = 5
CLOCK_TOLERANCE_S = 0.005  # see delayed-early above
CLOCK_SKEW_MAX_S = 300.0  # the clock nemesis's largest skew (nemesis.py)

Record = tuple[int, int]  # (key, offset)


def check(ops: list[Op]):
    from rkjepsen.checker import Report

    report = Report.for_classes(CLASSES, HISTORY_PROBLEMS)
    config = next((o.value for o in ops if o.process == "harness" and o.f == "config"
                   and isinstance(o.value, dict)), {})
    attempts = int(config.get("attempts") or ATTEMPTS_DEFAULT)
    tolerance = CLOCK_TOLERANCE_S + (CLOCK_SKEW_MAX_S if "clock" in
                                     (config.get("nemesis") or ()) else 0.0)

    # sends: value -> op; the log: record -> value (final read and acked sends)
    send_of: dict[str, Op] = {}
    acked: dict[Record, Op] = {}
    acked_delayed: dict[str, Op] = {}  # value -> ok send without an offset
    for o in ops:
        if o.f != "send":
            continue
        v = o.invoke_value or o.value
        send_of[v["value"]] = o
        if o.type == "ok":
            offset = int(o.value["offset"])
            if offset < 0 and v.get("deliver_after") is not None:
                acked_delayed[v["value"]] = o
            else:
                acked[(int(v["key"]), offset)] = o
    log: dict[Record, str] = {}
    final_keys: set[int] = set()
    for o in ops:
        if o.f == "final-read" and o.type == "ok":
            key = int(o.value["key"])
            final_keys.add(key)
            for offset, value in o.value.get("records") or []:
                log[(key, int(offset))] = value
    where = {value: record for record, value in log.items()}
    for value, o in acked_delayed.items():
        key = int((o.invoke_value or o.value)["key"])
        record = where.get(value)
        if record is not None and record[0] == key:
            acked[record] = o
        elif key in final_keys:
            report.add("lost-record", record=[key, -1], value=value,
                       why="acked delayed send missing from the final read of the topic",
                       ops=[o.brief()])
    dlq_reads = [o for o in ops if o.f == "final-read-dlq" and o.type == "ok"]
    state_op = next((o for o in ops if o.f == "share-state" and o.type == "ok"), None)
    final_start: dict[int, int] | None = None
    if state_op is not None:
        final_start = {int(k): int(s["start"])
                       for k, s in (state_op.value.get("partitions") or {}).items()}

    def value_check(record: Record, value: str, op: Op, what: str) -> None:
        if value not in send_of:
            report.add("unknown-value", record=list(record), value=value, what=what,
                       ops=[op.brief()])
        in_log = log.get(record, _acked_value(acked.get(record)))
        if in_log is not None and in_log != value:
            report.add("inconsistent-offsets", record=list(record), values=[in_log, value],
                       what=what, ops=[op.brief()])

    # deliveries
    deliveries: dict[Record, list[tuple[Op, int]]] = defaultdict(list)
    delivered = 0
    delayed_delivered = 0
    earliest: float | None = None  # the least (poll completed - due) of a delayed record
    for o in ops:
        if o.f != "poll" or o.type != "ok":
            continue
        for key, offset, value, count in o.value.get("records") or []:
            record = (int(key), int(offset))
            delivered += 1
            deliveries[record].append((o, int(count)))
            value_check(record, value, o, "delivered")
            send = send_of.get(value)
            if send is not None and send.type == "fail":
                report.add("aborted-read", record=list(record), value=value,
                           ops=[send.brief(), o.brief()])
            if int(count) > attempts:
                report.add("delivered-beyond-limit", record=list(record), count=int(count),
                           attempts=attempts, ops=[o.brief()])
            due = ((send.invoke_value or {}).get("deliver_after")
                   if send is not None else None)
            if due is not None and o.complete_time is not None:
                delayed_delivered += 1
                margin = o.complete_time - due
                earliest = margin if earliest is None else min(earliest, margin)
                if margin < -tolerance:
                    report.add("delayed-early", record=list(record), due=due,
                               polled=o.complete_time, early_s=round(-margin, 6),
                               tolerance_s=tolerance, ops=[send.brief(), o.brief()])

    # acknowledgements
    accepts_ok: dict[Record, list[Op]] = defaultdict(list)
    accepts_maybe: set[Record] = set()
    for o in ops:
        if o.f != "ack" or o.type == "fail":
            continue
        for part in ack_parts(o):
            key = int(part["key"])
            for offset, _ in part.get("accept") or []:
                record = (key, int(offset))
                accepts_maybe.add(record)
                if o.type == "ok":
                    accepts_ok[record].append(o)
    for record, acks in accepts_ok.items():
        if len(acks) > 1:
            report.add("accepted-twice", record=list(record), ops=[a.brief() for a in acks])
        first_done = min(acks, key=lambda a: a.complete_time)
        for poll, _ in deliveries.get(record, []):
            if poll.invoke_time > first_done.complete_time:
                report.add("delivered-after-accept", record=list(record),
                           ops=[first_done.brief(), poll.brief()])

    # delivery counts only go up
    for record, ds in deliveries.items():
        ds = sorted(ds, key=lambda d: d[0].invoke_time)
        for i, (later, count) in enumerate(ds):
            for earlier, before in ds[:i]:
                if earlier.complete_time is not None and \
                        earlier.complete_time < later.invoke_time and count <= before:
                    report.add("delivery-count-regression", record=list(record),
                               counts=[before, count], ops=[earlier.brief(), later.brief()])
                    break

    # dead letters
    dead: dict[Record, list[list]] = defaultdict(list)
    for o in dlq_reads:
        for entry in o.value.get("records") or []:
            _, _, value, key, offset, _, _ = entry
            record = (int(key), int(offset))
            dead[record].append(entry)
            value_check(record, value, o, "dead-lettered")
    for record, entries in dead.items():
        if len(entries) > 1:
            report.add("dead-lettered-twice", record=list(record), entries=entries,
                       ops=[dlq_reads[0].brief()])
        if record in accepts_ok:
            report.add("dead-lettered-accepted", record=list(record), dead_letter=entries[0],
                       ops=[a.brief() for a in accepts_ok[record]][:3])

    # lost records
    undrained: list[Record] = []
    for record in sorted(set(log) | set(acked)):
        key, offset = record
        if record in acked and key in final_keys and record not in log:
            report.add("lost-record", record=list(record), why="acked send missing from "
                       "the final read of the topic", ops=[acked[record].brief()])
            continue
        if record in acked and record in log and log[record] != _acked_value(acked[record]):
            report.add("inconsistent-offsets", record=list(record),
                       values=[_acked_value(acked[record]), log[record]],
                       what="acked at this offset, another value in the final read",
                       ops=[acked[record].brief()])
        if final_start is None or offset >= final_start.get(key, 0):
            undrained.append(record)
            continue
        if record not in accepts_maybe and record not in dead:
            ops_of = [d[0].brief() for d in deliveries.get(record, [])][:4]
            report.add("lost-record", record=list(record), value=log.get(record),
                       why="finished by the share state, but neither accepted nor "
                       "dead-lettered", deliveries=len(deliveries.get(record, [])),
                       ops=ops_of)

    stats = _stats(ops, acked, deliveries, delivered, accepts_ok, dead, final_keys)
    stats["delayed_acked_sends"] = len(acked_delayed)
    stats["delayed_deliveries"] = delayed_delivered
    stats["delayed_earliest_margin_s"] = None if earliest is None else round(earliest, 6)
    stats["delayed_tolerance_s"] = tolerance
    report.stats = stats

    # problems of the history
    if not acked and not acked_delayed:
        report.add_problem("no-acked-sends", sends=stats["by_f"].get("send", {}))
    if not delivered:
        report.add_problem("no-delivered-records", polls=stats["by_f"].get("poll", {}))
    if not accepts_ok:
        report.add_problem("no-accepts", acks=stats["by_f"].get("ack", {}))
    poison_sent = any(o.type == "ok" and (o.invoke_value or {}).get("value", "").endswith("p")
                      for o in send_of.values())
    if poison_sent and dlq_reads and not dead:  # (no read: no-final-read says so)
        report.add_problem("no-dead-letters", poison_acked=sum(
            1 for v, o in send_of.items() if v.endswith("p") and o.type == "ok"))
    for key in sorted({k for k, _ in acked} - final_keys):
        report.add_problem("no-final-read", key=key)
    if not dlq_reads:
        report.add_problem("no-final-read", key="dead-letter topic",
                           ops=[o.brief() for o in ops if o.f == "final-read-dlq"][:2])
    if final_start is None:
        report.add_problem("undrained", why="no final share state")
    elif undrained:
        report.add_problem("undrained", records=len(undrained),
                           first=[list(r) for r in undrained[:10]], final_start=final_start)
    for o in ops:
        if o.f == TORN_LINE and not (o.value or {}).get("explained"):
            report.add_problem("torn-history-line", **o.value)
    return report


def ack_parts(op: Op) -> list[dict]:
    """The per-partition acknowledgements of an ``ack`` op: one partition
    (``{"key", "accept", ...}``) or several sent with a poll (``{"partitions": [...]}``)."""
    v = op.invoke_value or op.value or {}
    return list(v["partitions"]) if "partitions" in v else [v]


def _worker(process: Any) -> Any:
    """The worker of a process id (``"<worker>-acks"`` is its poll-borne acks)."""
    if isinstance(process, str) and process.endswith("-acks"):
        return int(process[:-len("-acks")])
    return process


def _acked_value(op: Op | None) -> str | None:
    return None if op is None else (op.invoke_value or op.value)["value"]


def _stats(ops, acked, deliveries, delivered, accepts_ok, dead, final_keys) -> dict:
    out: dict[str, Any] = {"workload": "queue", "ops": 0, "by_f": {}}
    for o in ops:
        if o.process in ("nemesis", "harness") or o.f == "crash":
            continue
        out["ops"] += 1
        d = out["by_f"].setdefault(o.f, {"ok": 0, "fail": 0, "info": 0})
        d[o.type] = d.get(o.type, 0) + 1
    out["acked_sends"] = len(acked)
    out["polled_records"] = delivered
    out["records_delivered"] = len(deliveries)
    out["redeliveries"] = sum(1 for ds in deliveries.values() for _, c in ds if c > 1)
    out["accepted"] = len(accepts_ok)
    out["dead_lettered"] = sum(len(v) for v in dead.values())
    out["dead_letter_reasons"] = dict(sorted(
        _count(e[5] for entries in dead.values() for e in entries).items()))
    out["final_read_keys"] = sorted(final_keys)
    out["final_read_records"] = sum(len(o.value.get("records") or []) for o in ops
                                    if o.f == "final-read" and o.type == "ok")
    out["crashes_holding_records"] = _crashes_holding(ops)
    return out


def _count(items) -> dict:
    out: dict = defaultdict(int)
    for i in items:
        out[i] += 1
    return out


def _crashes_holding(ops: list[Op]) -> int:
    """Workers killed while holding records (polled, not all acknowledged)."""
    holding: dict[Any, set] = defaultdict(set)
    crashes = 0
    for o in sorted(ops, key=lambda o: o.invoke_time):
        if o.f == "poll" and o.type == "ok":
            holding[o.process] |= {(k, off) for k, off, _, _ in o.value.get("records") or []}
        elif o.f == "ack" and o.type != "info":
            for part in ack_parts(o):
                for name in ("accept", "release", "reject"):
                    holding[_worker(o.process)] -= {(int(part["key"]), int(off))
                                                    for off, _ in part.get(name) or []}
        elif o.f == "crash" and holding.get(o.process):
            crashes += 1
    return crashes
