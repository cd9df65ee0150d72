"""The comparison suite: every workload on a fresh 3-node Raftka cluster, then on a fresh
3-node NATS JetStream cluster, in one run on this machine; a table with the ratio
Raftka/NATS, written also as JSON and PNG charts (bench/_report.py).

Workloads (issue 7):
  w1  produce throughput, 100 B records, 1 partition/stream, acks=all, pipelined
  w2  the same with 1 KiB records, and with 6 partitions/streams
  w3  publish-to-ack latency p50/p99/p999 at 1,000/s and at 50% of the w1 maximum
  w4  consume throughput from a backlog of 1,000,000 records
  w5  end-to-end latency (produce to consumer delivery) at 1,000/s
  w6  failover: unavailability after kill -9 of a leader (median and max of 10)
  w7  scale: CPU and memory of an idle 3-node cluster holding 1,000 partitions/streams
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from bench._common import Settings
from bench._nats import NatsSystem
from bench._raftka import RaftkaSystem
from bench._report import charts, render_table

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "w6", "w7")


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit + ("+dirty" if dirty else ""), "cpu": cpu,
            "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()}


class Runner:
    def __init__(self, settings: Settings, skip: set[str]) -> None:
        self.settings = settings
        self.skip = skip
        self.errors: list[str] = []

    def step(self, results: dict, key: str, fn: Callable[[], dict]) -> None:
        try:
            results[key] = fn()
        except Exception as e:  # noqa: BLE001 - one failed figure must not lose the rest
            traceback.print_exc()
            results[key] = {"error": repr(e)}
            self.errors.append(f"{key}: {e!r}")

    def raftka(self, work: Path) -> dict:
        s = RaftkaSystem(self.settings, work)
        out: dict = {"describe": s.describe()}
        s.start()
        try:
            if "w1" not in self.skip:
                self.step(out, "w1_produce_100B", lambda: s.produce("bulk", 100, 1))
                self.step(out, "w1_produce_100B_send", lambda: s.produce("send", 100, 1))
            if "w2" not in self.skip:
                self.step(out, "w2_produce_1KiB", lambda: s.produce("bulk", 1024, 1))
                self.step(out, "w2_produce_100B_6p", lambda: s.produce("bulk", 100, 6))
            if "w3" not in self.skip:
                self.step(out, "w3_latency_1000", lambda: s.latency(1000))
                self.step(out, "w3_latency_1000_raw", lambda: s.latency_raw(1000))
                half = _half_max(out)
                self.step(out, "w3_latency_half", lambda: s.latency(half))
            if "w4" not in self.skip:
                n = self.settings.backlog_records
                backlog: list[str] = []
                self.step(out, "w4_consume", lambda: s.consume(_keep(backlog, s.fill(n)), n))
                if backlog:
                    self.step(out, "w4_consume_group", lambda: s.consume_group(backlog[0], n))
                    self.step(out, "w4_consume_raw", lambda: s.consume_raw(backlog[0], n))
            if "w5" not in self.skip:
                self.step(out, "w5_e2e_1000", lambda: s.e2e(1000))
            if "w6" not in self.skip:
                self.step(out, "w6_failover", s.failover)
            if "w7" not in self.skip:
                s.stop()
                s.start()
                self.step(out, "w7_idle", s.scale)
        finally:
            s.stop()
        return out

    def nats(self, work: Path, client: str, system: NatsSystem) -> dict:
        out: dict = {}
        if "w1" not in self.skip:
            self.step(out, "w1_produce_100B", lambda: system.produce(client, 100, 1))
        if "w2" not in self.skip:
            self.step(out, "w2_produce_1KiB", lambda: system.produce(client, 1024, 1))
            self.step(out, "w2_produce_100B_6p", lambda: system.produce(client, 100, 6))
        if "w3" not in self.skip:
            self.step(out, "w3_latency_1000", lambda: system.latency(client, 1000))
            half = _half_max(out)
            self.step(out, "w3_latency_half", lambda: system.latency(client, half))
        if "w4" not in self.skip:
            n = self.settings.backlog_records
            if client == "go":
                self._backlog = system.fill(n)
            stream, subject = self._backlog
            self.step(out, "w4_consume", lambda: system.consume(client, stream, subject, n))
        if "w5" not in self.skip:
            self.step(out, "w5_e2e_1000", lambda: system.e2e(client, 1000))
        return out

    def nats_all(self, work: Path) -> tuple[dict, dict]:
        s = NatsSystem(self.settings, work)
        s.start()
        try:
            go = self.nats(work, "go", s)
            py = self.nats(work, "py", s)
            go["describe"] = s.describe()
            if "w6" not in self.skip:
                self.step(go, "w6_failover", s.failover)
            if "w7" not in self.skip:
                s.stop()
                s.start()
                self.step(go, "w7_idle", s.scale)
        finally:
            s.stop()
        return go, py


def _keep(into: list[str], topic: str) -> str:
    into.append(topic)
    return topic


def _half_max(results: dict) -> float:
    rate = results.get("w1_produce_100B", {}).get("rate") or 2000
    return max(1000.0, round(rate / 2, -2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: a few seconds per workload, small backlog and scale")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                    help="where results.json, results.md and the PNG charts go")
    ap.add_argument("--only", choices=("raftka", "nats"), help="run one system only")
    ap.add_argument("--skip", default="", help="comma-separated workloads to skip, e.g. w6,w7")
    args = ap.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    skip = {w.strip() for w in args.skip.split(",") if w.strip()}
    unknown = skip - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    runner = Runner(settings, skip)
    results: dict = {"machine": machine(), "settings": settings.__dict__,
                     "mode": "quick" if args.quick else "full"}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="raftka-bench-"))
    try:
        if args.only != "nats":
            print("== Raftka", flush=True)
            results["raftka"] = runner.raftka(work)
        if args.only != "raftka":
            print("== NATS JetStream", flush=True)
            results["nats_go"], results["nats_py"] = runner.nats_all(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["runtime_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["errors"] = runner.errors
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render_table(results)
    (args.out / "results.md").write_text(table + "\n")
    pngs = charts(results, args.out)
    print()
    print(table)
    print(f"\nwritten: {args.out / 'results.json'}, {args.out / 'results.md'}, "
          + ", ".join(str(p) for p in pngs))
    if runner.errors:
        print("errors:\n  " + "\n  ".join(runner.errors), file=sys.stderr)
        return 1
    return 0
