"""The results table (Markdown, also printed) and the PNG charts of one run."""

from __future__ import annotations

from pathlib import Path

HIGHER, LOWER = "higher", "lower"

# (label, workload key, field, better, Raftka key if it differs)
ROWS: list[tuple[str, str, str, str, str | None]] = [
    ("w1 produce 100 B, 1 partition, records/s", "w1_produce_100B", "rate", HIGHER, None),
    ("w1 same, Raftka one send() per record, records/s", "w1_produce_100B", "rate", HIGHER,
     "w1_produce_100B_send"),
    ("w2 produce 1 KiB, 1 partition, records/s", "w2_produce_1KiB", "rate", HIGHER, None),
    ("w2 produce 100 B, 6 partitions, records/s", "w2_produce_100B_6p", "rate", HIGHER, None),
    ("w3 ack latency @1,000/s p50, ms", "w3_latency_1000", "p50_ms", LOWER, None),
    ("w3 ack latency @1,000/s p99, ms", "w3_latency_1000", "p99_ms", LOWER, None),
    ("w3 ack latency @1,000/s p99.9, ms", "w3_latency_1000", "p999_ms", LOWER, None),
    ("w3 same, Raftka asyncio client (raftka.aio) p50, ms", "w3_latency_1000", "p50_ms",
     LOWER, "w3_latency_1000_aio"),
    ("w3 same, Raftka asyncio client (raftka.aio) p99, ms", "w3_latency_1000", "p99_ms",
     LOWER, "w3_latency_1000_aio"),
    ("w3 same, Raftka asyncio client (raftka.aio) p99.9, ms", "w3_latency_1000", "p999_ms",
     LOWER, "w3_latency_1000_aio"),
    ("w3 same, Raftka raw Produce RPC, 1 in flight (server side) p50, ms",
     "w3_latency_1000", "p50_ms", LOWER, "w3_latency_1000_raw"),
    ("w3 same, Raftka raw Produce RPC, 1 in flight (server side) p99, ms",
     "w3_latency_1000", "p99_ms", LOWER, "w3_latency_1000_raw"),
    ("w3 floor: the same gRPC hops with no work (bench.grpc_floor), our Producer's "
     "batching, p50, ms", "w3_latency_1000", "p50_ms", LOWER, "w3_floor_batched"),
    ("w3 floor, batching, p99, ms", "w3_latency_1000", "p99_ms", LOWER, "w3_floor_batched"),
    ("w3 floor, one stream message per record, p50, ms", "w3_latency_1000", "p50_ms", LOWER,
     "w3_floor_stream"),
    ("w3 floor, one stream message per record, p99, ms", "w3_latency_1000", "p99_ms", LOWER,
     "w3_floor_stream"),
    ("w3 rate at 50% of own w1 max, records/s", "w3_latency_half", "rate", HIGHER, None),
    ("w3 ack latency @50% max p50, ms", "w3_latency_half", "p50_ms", LOWER, None),
    ("w3 ack latency @50% max p99, ms", "w3_latency_half", "p99_ms", LOWER, None),
    ("w3 ack latency @50% max p99.9, ms", "w3_latency_half", "p999_ms", LOWER, None),
    ("w4 consume a backlog of {backlog} records, records/s", "w4_consume", "rate", HIGHER,
     None),
    ("w4 same, Raftka Consumer (group member), records/s", "w4_consume", "rate", HIGHER,
     "w4_consume_group"),
    ("w4 same, Raftka PartitionReader.poll_batches (batch API, no object per record), "
     "records/s", "w4_consume", "rate", HIGHER, "w4_consume_batches"),
    ("w4 same, Raftka raw Fetch RPC, no decoding (server side), records/s", "w4_consume",
     "rate", HIGHER, "w4_consume_raw"),
    ("w5 end-to-end @1,000/s p50, ms", "w5_e2e_1000", "p50_ms", LOWER, None),
    ("w5 end-to-end @1,000/s p99, ms", "w5_e2e_1000", "p99_ms", LOWER, None),
    ("w5 end-to-end @1,000/s p99.9, ms", "w5_e2e_1000", "p999_ms", LOWER, None),
    ("w6 failover after kill -9, median s", "w6_failover", "median_s", LOWER, None),
    ("w6 failover after kill -9, max s", "w6_failover", "max_s", LOWER, None),
    ("w7 idle, {scale} partitions: CPU % of a core", "w7_idle", "cpu_percent", LOWER, None),
    ("w7 idle, {scale} partitions: RSS MiB (3 processes)", "w7_idle", "rss_mib", LOWER, None),
]
SERVER_SIDE = {"w6_failover", "w7_idle"}  # client-independent: measured once for NATS


def _get(results: dict, system: str, key: str, field: str) -> float | None:
    side = results.get(system, {})
    value = side.get(key, {}) if isinstance(side, dict) else {}
    if not isinstance(value, dict):
        return None
    v = value.get(field)
    return v if isinstance(v, (int, float)) else None


SYSTEM_NAMES = {"raftka": "Raftka", "raftka_secure": "Raftka secured",
                "nats_go": "NATS (Go client)", "nats_py": "NATS (nats-py)"}
# (label, workload key, field, better): the secured run against the plain one (issue 16)
SECURED_ROWS: list[tuple[str, str, str, str]] = [
    ("w1 produce 100 B, 1 partition, records/s", "w1_produce_100B", "rate", HIGHER),
    ("w3 ack latency @1,000/s p50, ms", "w3_latency_1000", "p50_ms", LOWER),
    ("w3 ack latency @1,000/s p99, ms", "w3_latency_1000", "p99_ms", LOWER),
    ("w3 ack latency @1,000/s p99.9, ms", "w3_latency_1000", "p999_ms", LOWER),
]
SECURED_THROUGHPUT_MIN = 0.85  # issue 16: at most 15% lower throughput with security on


def failure(results: dict, system: str, key: str) -> str | None:
    """Why a figure is missing: the step failed or timed out (bench/run.py records
    ``{"error": ..., "failed": true}``), or the whole system's run did."""
    side = results.get(system)
    if isinstance(side, dict) and side.get("failed") and "error" in side:
        return str(side["error"])
    value = side.get(key) if isinstance(side, dict) else None
    if isinstance(value, dict) and "error" in value:
        return str(value["error"])
    return None


class Footnotes:
    """Numbered reasons of failed cells, printed under the table."""

    def __init__(self) -> None:
        self.notes: dict[tuple[str, str], int] = {}
        self.lines: list[str] = []

    def cell(self, results: dict, system: str, key: str, text: str) -> str:
        why = failure(results, system, key)
        if why is None:
            return text
        ref = self.notes.get((system, key))
        if ref is None:
            ref = self.notes[(system, key)] = len(self.notes) + 1
            self.lines.append(f"[^{ref}]: {SYSTEM_NAMES.get(system, system)} {key} failed: "
                              f"{why}")
        return f"failed[^{ref}]"


def _fmt(v: float | None, field: str) -> str:
    if v is None:
        return "–"
    if field in ("rate",):
        return f"{v:,.0f}"
    if field in ("cpu_percent", "rss_mib"):
        return f"{v:,.1f}"
    if field.endswith("_s"):
        return f"{v:.2f}"
    return f"{v:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}x"


def _load(avg: list[float] | None) -> str:
    return "?" if not avg else "/".join(f"{x:.1f}" for x in avg)


def render_table(results: dict) -> str:
    m = results.get("machine", {})
    lines = [
        f"Run {m.get('date_utc', '?')}, commit {m.get('commit', '?')}, {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB, "
        f"mode {results.get('mode', '?')}, {results.get('runtime_s', '?')} s, load average "
        f"{_load(m.get('loadavg_at_start'))} at the start, {_load(m.get('loadavg_at_end'))} "
        "at the end",
        "",
        "| figure | Raftka | NATS (Go client) | NATS (nats-py) | Raftka/NATS Go | "
        "Raftka/nats-py | better |",
        "|---|--:|--:|--:|--:|--:|:-:|",
    ]
    settings = results.get("settings", {})
    counts = {"backlog": f"{settings.get('backlog_records', 0):,}",
              "scale": f"{settings.get('scale_partitions', 0):,}"}
    notes = Footnotes()
    for label, key, field, better, rkey in ROWS:
        label = label.format(**counts)
        r = _get(results, "raftka", rkey or key, field)
        g = _get(results, "nats_go", key, field)
        p = None if key in SERVER_SIDE else _get(results, "nats_py", key, field)
        rc = notes.cell(results, "raftka", rkey or key, _fmt(r, field))
        gc = notes.cell(results, "nats_go", key, _fmt(g, field))
        pc = _fmt(p, field) if key in SERVER_SIDE else notes.cell(results, "nats_py", key,
                                                                   _fmt(p, field))
        if key in SERVER_SIDE:
            label += " (server-side)"
        if all(c == "–" for c in (rc, gc, pc)):
            continue  # a workload not run in this (partial) run
        lines.append(f"| {label} | {rc} | {gc} | {pc} | {_ratio(r, g)} | {_ratio(r, p)} | "
                     f"{better} |")
    lines += _secured_table(results, notes)
    if notes.lines:
        lines += ["", *notes.lines]
    fills = [f"{SYSTEM_NAMES[k].split(' (')[0]} {v['rate']:,}/s ({v['records']:,} records in "
             f"{v['seconds']:.1f} s)" for k in ("raftka", "nats_go", "nats_py")
             if isinstance(v := results.get(k, {}).get("w4_fill"), dict) and "rate" in v]
    if fills:
        lines += ["", "w4 backlog fill (not part of the comparison): " + "; ".join(fills)]
    w7 = results.get("raftka", {}).get("w7_idle", {})
    if isinstance(w7, dict) and w7.get("leaderless_at_start"):
        lines += ["", f"Note: w7 Raftka had {w7['leaderless_at_start']} partitions still "
                  "without a leader when the idle sample was taken (not idle: elections ran)."]
    lines += ["", "Targets (issue 7):"]
    lines += [f"- {t}" for t in targets(results)]
    for system in ("raftka", "nats_go"):
        d = results.get(system, {}).get("describe")
        if d:
            name = "Raftka" if system == "raftka" else "NATS"
            lines.append(f"- {name}: " + "; ".join(f"{k}: {v}" for k, v in d.items()))
    return "\n".join(lines)


def _secured_table(results: dict, notes: Footnotes) -> list[str]:
    """The secured run (TLS, mutual TLS between nodes, authentication, ACLs) beside the
    plain one; nothing when it was not run."""
    if "raftka_secure" not in results:
        return []
    lines = ["", "Security cost (the same workloads on a secured cluster: TLS with client "
             "certificates, mutual TLS between nodes, authentication, ACLs):", "",
             "| figure | Raftka | Raftka secured | secured/plain | better |",
             "|---|--:|--:|--:|:-:|"]
    for label, key, field, better in SECURED_ROWS:
        plain = _get(results, "raftka", key, field)
        secured = _get(results, "raftka_secure", key, field)
        pc = notes.cell(results, "raftka", key, _fmt(plain, field))
        sc = notes.cell(results, "raftka_secure", key, _fmt(secured, field))
        if pc == sc == "–":
            continue
        lines.append(f"| {label} | {pc} | {sc} | {_ratio(secured, plain)} | {better} |")
    return lines


def targets(results: dict) -> list[str]:
    def check(ok: bool | None, text: str) -> str:
        mark = "?" if ok is None else ("MET" if ok else "MISSED")
        return f"{mark}: {text}"

    out = []
    r1, g1 = (_get(results, s, "w1_produce_100B", "rate") for s in ("raftka", "nats_go"))
    out.append(check(None if None in (r1, g1) else r1 >= 2 * g1,
                     f"w1 >= 2x NATS Go ({_ratio(r1, g1)})"))
    r3, g3 = (_get(results, s, "w3_latency_1000", "p99_ms") for s in ("raftka", "nats_go"))
    out.append(check(None if None in (r3, g3) else r3 <= g3,
                     f"w3 p99 @1,000/s <= NATS Go ({_fmt(r3, 'ms')} vs {_fmt(g3, 'ms')} ms)"))
    r4, g4 = (_get(results, s, "w4_consume", "rate") for s in ("raftka", "nats_go"))
    out.append(check(None if None in (r4, g4) else r4 >= 3 * g4,
                     f"w4 consume >= 3x NATS Go ({_ratio(r4, g4)})"))
    r6 = _get(results, "raftka", "w6_failover", "median_s")
    out.append(check(None if r6 is None else r6 < 0.5,
                     f"w6 failover median < 0.5 s ({_fmt(r6, 'median_s')} s)"))
    if "raftka_secure" in results:
        plain, secured = (_get(results, s, "w1_produce_100B", "rate")
                          for s in ("raftka", "raftka_secure"))
        out.append(check(None if None in (plain, secured)
                         else secured >= SECURED_THROUGHPUT_MIN * plain,
                         f"w1 secured >= {SECURED_THROUGHPUT_MIN:.0%} of plain "
                         f"({_ratio(secured, plain)}; issue 16)"))
    return out


def charts(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [("raftka", "Raftka", "#d62728"), ("nats_go", "NATS (Go)", "#1f77b4"),
               ("nats_py", "NATS (nats-py)", "#9ecae1")]
    paths = []

    def grouped(ax, groups: list[tuple[str, str, str]], ylabel: str, title: str,
                server_side: bool = False) -> None:
        shown = ([("raftka", "Raftka", "#d62728"), ("nats_go", "NATS", "#1f77b4")]
                 if server_side else systems)  # server-side figures: one NATS column
        width = 0.8 / len(shown)
        for i, (sysk, name, color) in enumerate(shown):
            vals = [_get(results, sysk, key, field) or 0 for _label, key, field in groups]
            xs = [j + (i - (len(shown) - 1) / 2) * width for j in range(len(groups))]
            bars = ax.bar(xs, vals, width, label=name, color=color)
            for b, v in zip(bars, vals):
                if v:
                    ax.annotate(f"{v:,.0f}" if v >= 100 else f"{v:.2g}",
                                (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)

    fig, ax = plt.subplots(figsize=(10, 5))
    grouped(ax, [("produce 100 B", "w1_produce_100B", "rate"),
                 ("produce 1 KiB", "w2_produce_1KiB", "rate"),
                 ("produce 100 B\n6 partitions", "w2_produce_100B_6p", "rate"),
                 ("consume backlog", "w4_consume", "rate")],
            "records/s", "Throughput, acks=all / R3 fsync always (higher is better)")
    fig.tight_layout()
    paths.append(out_dir / "throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    for ax, (key, title) in zip(axes, [("w3_latency_1000", "ack latency @1,000/s"),
                                       ("w3_latency_half", "ack latency @50% of max"),
                                       ("w5_e2e_1000", "end-to-end @1,000/s")]):
        grouped(ax, [("p50", key, "p50_ms"), ("p99", key, "p99_ms"),
                     ("p99.9", key, "p999_ms")], "ms", title + " (lower is better)")
    fig.tight_layout()
    paths.append(out_dir / "latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    grouped(axes[0], [("median", "w6_failover", "median_s"), ("max", "w6_failover", "max_s")],
            "seconds", "failover after kill -9 of a leader", server_side=True)
    scale = f"idle, {results.get('settings', {}).get('scale_partitions', 0):,} partitions/streams"
    grouped(axes[1], [("CPU", "w7_idle", "cpu_percent")], "% of one core", scale,
            server_side=True)
    grouped(axes[2], [("RSS", "w7_idle", "rss_mib")], "MiB (3 processes)", scale,
            server_side=True)
    fig.tight_layout()
    paths.append(out_dir / "failover_idle.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
