"""The comparison suite: every workload on a fresh 3-node Raftka cluster, then on a fresh
3-node NATS JetStream cluster, in one run on this machine; a table with the ratio
Raftka/NATS, written also as JSON and PNG charts (bench/_report.py).

Workloads (issue 7):
  w1  produce throughput, 100 B records, 1 partition/stream, acks=all, pipelined
  w2  the same with 1 KiB records, and with 6 partitions/streams
  w3  publish-to-ack latency p50/p99/p999 at 1,000/s and at 50% of the w1 maximum; with
      Raftka, also the floor of its path: the same gRPC hops with no work (grpc_floor.py)
  w4  consume throughput from a backlog of 1,000,000 records
  w5  end-to-end latency (produce to consumer delivery) at 1,000/s
  w6  failover: unavailability after kill -9 of a leader (median and max of 10)
  w7  scale: CPU and memory of an idle 3-node cluster holding 1,000 partitions/streams

And the cost of security (issue 16): w1 (bulk) and w3 (@1,000/s) again on a fresh secured
Raftka cluster (system ``raftka-secure``: TLS with client certificates, mutual TLS between
nodes, authentication, ACLs checked on every call), against the plain run's figures.
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
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from bench import grpc_floor
from bench._common import Settings, WorkloadTimeout, proc_cpu_seconds
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
    # the suite's own output (bench/results*) does not make the code dirty
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)bench/results*"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit + ("+dirty" if dirty else ""), "cpu": cpu,
            "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()}


SYSTEMS = ("raftka", "raftka-secure", "nats-go", "nats-py")
ALIASES = {"nats": ("nats-go", "nats-py"), "go": ("nats-go",), "py": ("nats-py",)}


class Runner:
    """Runs every workload step under a time bound (``Settings.limit_s``) on a worker
    thread. A step that raises or runs past its bound is recorded as failed with the reason
    (``{"error": ..., "failed": true}``), the processes it left (a load generator, a wedged
    or dead cluster) are killed and the cluster restarted, and the suite goes on."""

    GRACE_S = 20.0  # steps stop themselves at the bound; this is the backstop after it

    def __init__(self, settings: Settings, workloads: set[str],
                 clients: tuple[str, ...] = ("go", "py")) -> None:
        self.settings = settings
        self.workloads = workloads
        self.clients = clients
        self.errors: list[str] = []
        self.broken: dict[int, str] = {}  # id(system) -> why its cluster is down

    def step(self, results: dict, key: str, fn: Callable[[], dict], kind: str,
             system: RaftkaSystem | NatsSystem, side: str) -> bool:
        """Run ``fn`` (one workload step) bounded by ``limit_s(kind)``; its dict goes to
        ``results[key]``. True when it succeeded."""
        limit = self.settings.limit_s(kind)
        if id(system) in self.broken:
            return self._failed(results, key, side, f"not run: {self.broken[id(system)]}",
                                limit)
        box: dict = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                box["error"] = e
                box["trace"] = traceback.format_exc()

        settled_s = (self._settle(system)
                     if kind in ("produce", "latency", "consume", "e2e") else None)
        system.deadline = time.monotonic() + limit
        worker = threading.Thread(target=target, name=f"bench {side} {key}", daemon=True)
        t0 = time.perf_counter()
        worker.start()
        try:
            worker.join(limit + self.GRACE_S)
        finally:
            system.deadline = None
        if worker.is_alive():
            reason = f"timed out after {time.perf_counter() - t0:.0f} s (bound {limit:.0f} s)"
            self._restart(system, side, reason)
            worker.join(30)  # its clients now fail fast against the restarted cluster
            return self._failed(results, key, side, reason, limit, timed_out=True)
        if "error" in box:
            e = box["error"]
            if isinstance(e, KeyboardInterrupt):
                raise e
            print(box["trace"], file=sys.stderr, end="")
            timed_out = isinstance(e, WorkloadTimeout)
            reason = (f"timed out: {e}" if timed_out else f"{type(e).__name__}: {e}")
            if timed_out or not _healthy(system):
                self._restart(system, side, reason)
            return self._failed(results, key, side, reason, limit, timed_out=timed_out)
        results[key] = box["value"]
        if settled_s is not None:
            results[key]["settled_s"] = settled_s
        return True

    SETTLE_CPU_PCT = 25.0  # servers' CPU summed, % of one core, over one second
    SETTLE_MAX_S = 30.0

    def _settle(self, system: RaftkaSystem | NatsSystem) -> float:
        """Before a measured step: wait (up to SETTLE_MAX_S) until the servers are quiet, so
        the step measures itself and not the tail of the previous step's background work
        (Raftka: RocksDB compactions after w1/w2's bursts or w4's fill). Both systems get
        the same treatment; the wait is recorded as ``settled_s``."""
        cluster = getattr(system, "cluster", None)
        procs = list(getattr(cluster, "procs", {}).values())
        t0 = time.monotonic()
        while procs and time.monotonic() - t0 < self.SETTLE_MAX_S:
            try:
                before = sum(proc_cpu_seconds(p.pid) for p in procs)
                time.sleep(1.0)
                used = sum(proc_cpu_seconds(p.pid) for p in procs) - before
            except OSError:  # a server is gone: the step will report it
                break
            if used * 100 < self.SETTLE_CPU_PCT:
                break
        return round(time.monotonic() - t0, 1)

    def _failed(self, results: dict, key: str, side: str, reason: str, limit: float,
                timed_out: bool = False) -> bool:
        reason = " ".join(reason.split())[:300]
        results[key] = {"error": reason, "failed": True, "timed_out": timed_out,
                        "limit_s": limit}
        self.errors.append(f"{side} {key}: {reason}")
        print(f"!! {side} {key} failed: {reason}", file=sys.stderr, flush=True)
        return False

    def _restart(self, system: RaftkaSystem | NatsSystem, side: str, why: str) -> None:
        """Kill whatever the failed step left running and start a fresh cluster."""
        print(f"!! {side}: restarting the cluster ({why})", file=sys.stderr, flush=True)
        try:
            system.stop()
            system.start()
        except Exception as e:  # noqa: BLE001 - the remaining steps are reported as not run
            traceback.print_exc()
            self.broken[id(system)] = f"the {side} cluster could not be restarted: {e!r}"

    def has(self, workload: str) -> bool:
        return workload in self.workloads

    def raftka(self, work: Path) -> dict:
        s = RaftkaSystem(self.settings, work)
        out: dict = {"describe": s.describe()}
        side = "raftka"
        s.start()
        try:
            def step(key: str, fn: Callable[[], dict], kind: str) -> bool:
                return self.step(out, key, fn, kind, s, side)
            self._raftka_workloads(s, out, side, step)
        finally:
            s.stop()
        return out

    def raftka_secure(self, work: Path) -> dict:
        """w1's bulk produce and w3 at 1,000/s on a secured cluster (module docstring)."""
        s = RaftkaSystem(self.settings, work, secured=True)
        out: dict = {}
        side = "raftka-secure"
        s.start()
        try:
            if self.has("w1"):
                self.step(out, "w1_produce_100B", lambda: s.produce("bulk", 100, 1),
                          "produce", s, side)
            if self.has("w3"):
                self.step(out, "w3_latency_1000", lambda: s.latency(1000), "latency", s, side)
        finally:
            s.stop()
        return out

    def _raftka_workloads(self, s: RaftkaSystem, out: dict, side: str,
                          step: Callable[[str, Callable[[], dict], str], bool]) -> None:
        if self.has("w1"):
            step("w1_produce_100B", lambda: s.produce("bulk", 100, 1), "produce")
            step("w1_produce_100B_send", lambda: s.produce("send", 100, 1), "produce")
        if self.has("w2"):
            step("w2_produce_1KiB", lambda: s.produce("bulk", 1024, 1), "produce")
            step("w2_produce_100B_6p", lambda: s.produce("bulk", 100, 6), "produce")
        if self.has("w3"):
            step("w3_latency_1000", lambda: s.latency(1000), "latency")
            step("w3_latency_1000_aio", lambda: s.latency_aio(1000), "latency")
            step("w3_latency_1000_raw", lambda: s.latency_raw(1000), "latency")
            for client in ("batched", "stream"):  # the gRPC skeleton's floor (grpc_floor.py)
                step(f"w3_floor_{client}",
                     lambda client=client: grpc_floor.run(client, 1000, self.settings.latency_s),
                     "latency")
            half = _half_max(out)
            step("w3_latency_half", lambda: s.latency(half, bulk=True), "latency")
        if self.has("w4"):
            n = self.settings.backlog_records
            backlog: list[str] = []

            def fill() -> dict:
                t0 = time.perf_counter()
                backlog.append(s.fill(n))
                secs = time.perf_counter() - t0
                return {"records": n, "seconds": round(secs, 3), "rate": round(n / secs)}
            if step("w4_fill", fill, "fill"):
                topic = backlog[0]
                step("w4_consume", lambda: s.consume(topic, n), "consume")
                step("w4_consume_group", lambda: s.consume_group(topic, n), "consume")
                step("w4_consume_batches", lambda: s.consume_batches(topic, n), "consume")
                step("w4_consume_raw", lambda: s.consume_raw(topic, n), "consume")
            else:
                for key in ("w4_consume", "w4_consume_group", "w4_consume_batches",
                            "w4_consume_raw"):
                    self._failed(out, key, side, "not run: the backlog fill failed",
                                 self.settings.limit_s("consume"))
        if self.has("w5"):
            step("w5_e2e_1000", lambda: s.e2e(1000), "e2e")
        if self.has("w6"):
            step("w6_failover", s.failover, "failover")
        if self.has("w7"):
            def scale() -> dict:
                s.stop()  # a fresh cluster
                s.start()
                return s.scale()
            step("w7_idle", scale, "scale")

    def nats(self, client: str, system: NatsSystem) -> dict:
        out: dict = {}
        side = f"nats-{client}"

        def step(key: str, fn: Callable[[], dict], kind: str) -> bool:
            return self.step(out, key, fn, kind, system, side)
        if self.has("w1"):
            step("w1_produce_100B", lambda: system.produce(client, 100, 1), "produce")
        if self.has("w2"):
            step("w2_produce_1KiB", lambda: system.produce(client, 1024, 1), "produce")
            step("w2_produce_100B_6p", lambda: system.produce(client, 100, 6), "produce")
        if self.has("w3"):
            step("w3_latency_1000", lambda: system.latency(client, 1000), "latency")
            half = _half_max(out)
            step("w3_latency_half", lambda: system.latency(client, half), "latency")
        if self.has("w4"):
            n = self.settings.backlog_records
            if system.backlog is None:  # filled once (by the Go client), consumed by both
                step("w4_fill", lambda: system.fill(n), "fill")
            if system.backlog is not None:
                step("w4_consume", lambda: system.consume(client, n), "consume")
            else:
                self._failed(out, "w4_consume", side, "not run: the backlog fill failed",
                             self.settings.limit_s("consume"))
        if self.has("w5"):
            step("w5_e2e_1000", lambda: system.e2e(client, 1000), "e2e")
        return out

    def nats_all(self, work: Path) -> tuple[dict, dict]:
        s = NatsSystem(self.settings, work)
        s.start()
        go: dict = {}
        py: dict = {}
        try:
            go["describe"] = s.describe()
            if "go" in self.clients:
                go.update(self.nats("go", s))
            if "py" in self.clients:
                py.update(self.nats("py", s))
            if self.has("w6"):
                self.step(go, "w6_failover", s.failover, "failover", s, "nats")
            if self.has("w7"):
                def scale() -> dict:
                    s.stop()  # a fresh cluster
                    s.start()
                    return s.scale()
                self.step(go, "w7_idle", scale, "scale", s, "nats")
        finally:
            s.stop()
        return go, py


def _healthy(system: RaftkaSystem | NatsSystem) -> bool:
    """Every server process of the system's cluster still runs."""
    cluster = system.cluster
    return cluster is not None and bool(cluster.procs) and all(
        p.poll() is None for p in cluster.procs.values())


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
    ap.add_argument("--only", default="",
                    help="comma-separated systems (raftka, nats, nats-go, nats-py) and/or "
                         "workloads (w1..w7) to run, e.g. 'nats,w4' or 'w3,w5'; a kind "
                         "not named runs in full")
    ap.add_argument("--skip", default="", help="comma-separated workloads to skip, e.g. w6,w7")
    ap.add_argument("--backlog", type=int,
                    help="records in w4's backlog (default 1,000,000; --quick 100,000)")
    ap.add_argument("--limit-scale", type=float, default=1.0,
                    help="multiply every workload's time bound (see README) by this")
    args = ap.parse_args(argv)
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    skip = {w.strip() for w in args.skip.split(",") if w.strip()}
    known = set(WORKLOADS) | set(SYSTEMS) | set(ALIASES)
    if unknown := (only - known) | (skip - set(WORKLOADS)):
        ap.error(f"unknown {sorted(unknown)}; workloads {WORKLOADS}, systems "
                 f"{SYSTEMS + tuple(ALIASES)}")
    systems = {x for w in only if w not in WORKLOADS for x in ALIASES.get(w, (w,))}
    systems = systems or set(SYSTEMS)
    workloads = ({w for w in only if w in WORKLOADS} or set(WORKLOADS)) - skip
    overrides: dict = {"limit_scale": args.limit_scale}
    if args.backlog:
        overrides["backlog_records"] = args.backlog
    settings = Settings.quick(**overrides) if args.quick else Settings(**overrides)
    clients = tuple(c for c in ("go", "py") if f"nats-{c}" in systems)
    runner = Runner(settings, workloads, clients)
    results: dict = {"machine": machine(), "settings": settings.__dict__,
                     "mode": "quick" if args.quick else "full",
                     "workloads": sorted(workloads), "systems": sorted(systems),
                     "time_bounds_s": {k: settings.limit_s(k) for k in (
                         "produce", "latency", "fill", "consume", "e2e", "failover",
                         "scale")}}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="raftka-bench-"))
    try:
        if "raftka" in systems:
            print("== Raftka", flush=True)
            results["raftka"] = _side(runner, "raftka", lambda: runner.raftka(work))
        if "raftka-secure" in systems and workloads & {"w1", "w3"}:
            print("== Raftka, secured (TLS, mTLS peers, authentication, ACLs)", flush=True)
            results["raftka_secure"] = _side(runner, "raftka-secure",
                                             lambda: runner.raftka_secure(work))
        if clients:
            print("== NATS JetStream", flush=True)
            both = _side(runner, "nats", lambda: runner.nats_all(work))
            if isinstance(both, tuple):
                results["nats_go"], results["nats_py"] = both
            else:
                results["nats_go"] = both
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


def _side(runner: Runner, name: str, fn: Callable[[], object]) -> object:
    """One system's run; if its cluster cannot even start, that is recorded and the
    suite goes on."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        runner.errors.append(f"{name}: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}", "failed": True}
