"""Summary, availability and plots of a checked history."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from rkjepsen.checker import CLASSES, HISTORY_PROBLEMS, Report
from rkjepsen.history import Op

FAULT_COLOURS = {"partition": "tab:red", "kill": "tab:purple", "pause": "tab:orange",
                 "clock": "tab:cyan", "disk": "tab:brown"}


def fault_windows(ops: list[Op], end_time: float | None = None) -> list[dict]:
    """[{fault, start, stop, detail}] from nemesis start/stop pairs (same ``id``); a fault
    never stopped in the history runs to ``end_time`` (the last event's time)."""
    if end_time is None:
        end_time = max((o.complete_time or o.invoke_time for o in ops), default=0.0)
    open_: dict[Any, dict] = {}
    out = []
    for o in ops:
        if o.process != "nemesis" or not isinstance(o.value, dict):
            continue
        if o.f == "start":
            open_[o.value.get("id")] = {"fault": o.value.get("fault", "?"),
                                        "start": o.invoke_time, "detail": o.value}
        elif o.f == "stop":
            w = open_.pop(o.value.get("id"), None)
            if w is not None:
                w["stop"] = o.invoke_time
                out.append(w)
    for w in open_.values():
        w["stop"] = end_time
        out.append(w)
    return sorted(out, key=lambda w: w["start"])


def _in_windows(t: float, windows: list[dict]) -> bool:
    return any(w["start"] <= t < w["stop"] for w in windows)


def availability(ops: list[Op], windows: list[dict]) -> dict:
    """Share of sends that were acknowledged, for sends invoked during a fault window and
    for the others; plus the fraction of run time under some fault."""
    counts = {"during": [0, 0], "outside": [0, 0]}  # [ok, total]
    for o in ops:
        if o.f != "send":
            continue
        where = "during" if _in_windows(o.invoke_time, windows) else "outside"
        counts[where][1] += 1
        counts[where][0] += o.type == "ok"
    out: dict[str, Any] = {}
    for where, (ok, total) in counts.items():
        out[f"sends_{where}_faults"] = total
        out[f"availability_{where}_faults"] = round(ok / total, 4) if total else None
    span = max((o.complete_time or o.invoke_time for o in ops), default=0.0)
    faulted = sum(w["stop"] - w["start"] for w in _union(windows))
    out["fault_time_fraction"] = round(faulted / span, 4) if span else 0.0
    return out


def _union(windows: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for w in sorted(windows, key=lambda w: w["start"]):
        if merged and w["start"] <= merged[-1]["stop"]:
            merged[-1]["stop"] = max(merged[-1]["stop"], w["stop"])
        else:
            merged.append({"start": w["start"], "stop": w["stop"]})
    return merged


QUEUE_STATS = ("records_delivered", "redeliveries", "accepted", "dead_lettered",
               "dead_letter_reasons", "crashes_holding_records", "delayed_acked_sends",
               "delayed_deliveries", "delayed_earliest_margin_s", "delayed_tolerance_s")
TXN_STATS = ("txns", "txns_committed", "txns_aborted", "txns_never_asked_to_commit",
             "txns_indeterminate", "txns_indeterminate_committed",
             "txns_indeterminate_not_committed", "txns_ctp_committed", "ctp_consumed_records",
             "coordinator_faults", "txns_killed", "txns_killed_committing")


def summarize(ops: list[Op], report: Report) -> dict:
    windows = fault_windows(ops)
    faults: dict[str, int] = defaultdict(int)
    for w in windows:
        faults[w["detail"].get("kind", w["fault"])] += 1
    extra = {k: report.stats[k] for k in (*QUEUE_STATS, *TXN_STATS) if k in report.stats}
    return {
        **extra,
        "workload": report.stats.get("workload", "log"),
        "valid": report.valid,
        "ops": report.stats.get("ops", 0),
        "by_f": report.stats.get("by_f", {}),
        "acked_sends": report.stats.get("acked_sends", 0),
        "polled_records": report.stats.get("polled_records", 0),
        "final_read_keys": report.stats.get("final_read_keys", []),
        "final_read_records": report.stats.get("final_read_records", 0),
        "anomalies": report.counts,
        "history_problems": report.problem_counts,
        "faults_injected": len(windows),
        "faults_by_kind": dict(sorted(faults.items())),
        "consumer_crashes": sum(1 for o in ops if o.f == "crash"),
        "disk_damage_accepted": sum(1 for o in ops if o.f == "disk-accepted"),
        "disk_damage_refused": sum(1 for o in ops if o.f == "disk-refused"),
        "disk_catch_up_s": sorted(o.value.get("seconds") for o in ops
                                  if o.f == "disk-caught-up" and isinstance(o.value, dict)),
        **availability(ops, windows),
    }


def format_summary(summary: dict) -> str:
    lines = [f"ops: {summary['ops']}"]
    for f, d in sorted(summary["by_f"].items()):
        lines.append(f"  {f:<14} ok {d.get('ok', 0):>7}  fail {d.get('fail', 0):>6}  "
                     f"info {d.get('info', 0):>6}")
    lines.append(f"faults injected: {summary['faults_injected']} "
                 + (", ".join(f"{k} {v}" for k, v in summary["faults_by_kind"].items())
                    or "none"))
    if summary.get("disk_damage_accepted") or summary.get("disk_damage_refused"):
        caught_up = summary.get("disk_catch_up_s") or []
        lines.append(f"disk damage: node refused to start {summary['disk_damage_refused']} "
                     f"(log moved aside, node restarted empty), started anyway "
                     f"{summary['disk_damage_accepted']}; caught up {len(caught_up)} times"
                     + (f", slowest {max(caught_up):.1f}s" if caught_up else ""))
    if summary.get("consumer_crashes"):
        lines.append(f"consumer crashes: {summary['consumer_crashes']}")

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    lines.append(f"availability (acked sends): during faults "
                 f"{pct(summary['availability_during_faults'])} of "
                 f"{summary['sends_during_faults']}, outside "
                 f"{pct(summary['availability_outside_faults'])} of "
                 f"{summary['sends_outside_faults']}; under faults "
                 f"{pct(summary['fault_time_fraction'])} of the time")
    queue = summary.get("workload") == "queue"
    if queue:
        lines.append(f"queue: {summary.get('records_delivered', 0)} records delivered "
                     f"({summary.get('redeliveries', 0)} redeliveries), "
                     f"{summary.get('accepted', 0)} accepted, "
                     f"{summary.get('dead_lettered', 0)} dead-lettered "
                     f"{summary.get('dead_letter_reasons', {})}; workers killed while "
                     f"holding records: {summary.get('crashes_holding_records', 0)}")
        if summary.get("delayed_acked_sends"):
            lines.append(f"delayed: {summary['delayed_acked_sends']} acked delayed sends, "
                         f"{summary.get('delayed_deliveries', 0)} deliveries, the earliest "
                         f"{summary.get('delayed_earliest_margin_s')} s after its due time "
                         f"(tolerance {summary.get('delayed_tolerance_s')} s)")
    own_classes = summary.get("workload", "log") != "log"  # queue, txn: their own classes
    if summary.get("workload") == "txn":
        lines.append(f"txn: {summary.get('txns', 0)} transactions: committed "
                     f"{summary.get('txns_committed', 0)} "
                     f"({summary.get('txns_ctp_committed', 0)} consume-transform-produce), "
                     f"aborted {summary.get('txns_aborted', 0)}, never asked to commit "
                     f"{summary.get('txns_never_asked_to_commit', 0)}, indeterminate "
                     f"{summary.get('txns_indeterminate', 0)} (committed "
                     f"{summary.get('txns_indeterminate_committed', 0)}, not "
                     f"{summary.get('txns_indeterminate_not_committed', 0)}); producers "
                     f"killed mid-transaction {summary.get('txns_killed', 0)} (while "
                     f"committing {summary.get('txns_killed_committing', 0)}); faults on "
                     f"the leader of a __transaction_state partition (a coordinator): "
                     f"{summary.get('coordinator_faults', 0)}")
    lines.append("anomalies:")
    for c in summary["anomalies"] if own_classes else CLASSES:
        lines.append(f"  {c:<28} {summary['anomalies'].get(c, 0)}")
    counted = summary.get("history_problems", {})
    problems = {c: n for c, n in counted.items()
                if n and (own_classes or c in HISTORY_PROBLEMS)}
    lines.append("history problems: " + (", ".join(f"{c} {n}" for c, n in problems.items())
                                         or "none"))
    evidence = (f"{summary.get('acked_sends', 0)} acked sends, "
                f"{summary.get('polled_records', 0)} polled records, "
                + (f"{summary.get('accepted', 0)} accepted, "
                   f"{summary.get('dead_lettered', 0)} dead-lettered, " if queue else "")
                + f"{len(summary.get('final_read_keys', []))} keys read to their end "
                f"({summary.get('final_read_records', 0)} records)")
    if any(summary["anomalies"].values()):
        lines.append("INVALID: anomalies found")
    if problems:
        lines.append(f"INVALID: the history does not prove enough ({evidence}): "
                     + ", ".join(problems))
    if summary["valid"]:
        lines.append(f"VALID: no anomaly in {evidence}")
    return "\n".join(lines)


def plot(ops: list[Op], out_dir: Path) -> list[Path]:
    """throughput.png (ops completed per second by outcome) and latency.png (send
    latency over time), fault windows shaded by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = fault_windows(ops)
    client = [o for o in ops if o.process != "nemesis"
              and o.f in ("send", "poll", "commit", "ack")]
    span = max((o.complete_time or o.invoke_time for o in ops), default=1.0)
    buckets = int(span) + 1

    def shade(ax):
        seen = set()
        for w in windows:
            kind = w["fault"]
            ax.axvspan(w["start"], w["stop"], color=FAULT_COLOURS.get(kind, "grey"),
                       alpha=0.15, lw=0, label=None if kind in seen else kind)
            seen.add(kind)

    paths = []
    fig, ax = plt.subplots(figsize=(12, 4.5))
    series: dict[tuple[str, str], list[int]] = {}
    for o in client:
        t = o.complete_time if o.complete_time is not None else o.invoke_time
        series.setdefault((o.f, o.type), [0] * buckets)[min(int(t), buckets - 1)] += 1
    styles = {"ok": "-", "fail": ":", "info": "--"}
    for (f, type_), ys in sorted(series.items()):
        ax.plot(range(buckets), ys, styles.get(type_, "-"), lw=1, label=f"{f} {type_}")
    shade(ax)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ops completed / s")
    ax.set_title("throughput")
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    p = out_dir / "throughput.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(12, 4.5))
    colours = {"ok": "tab:blue", "fail": "tab:red", "info": "tab:orange"}
    for type_ in ("ok", "info", "fail"):
        pts = [(o.invoke_time, 1000 * (o.complete_time - o.invoke_time)) for o in client
               if o.f == "send" and o.type == type_ and o.complete_time is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=2, color=colours[type_], label=f"send {type_}")
    shade(ax)
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("send latency (ms)")
    ax.set_title("latency")
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    fig.tight_layout()
    p = out_dir / "latency.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths
