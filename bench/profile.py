"""``python -m bench.profile [--workload produce|latency|consume] [--seconds N]``: where
Raftka's time goes under one workload, sampled with py-spy (no code changes, real
processes): the partition leader, one follower and the client process are recorded at
once, and for each the functions with the most samples (self and inclusive) are printed
and written with the raw collapsed stacks (flame-graph input) under ``--out``.

Needs py-spy (the ``bench`` extra) and ptrace rights (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._common import Settings
from bench._raftka import RaftkaSystem

REPO = Path(__file__).resolve().parents[1]


def py_spy() -> str:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else "py-spy"


def record(pid: int, seconds: float, out: Path, native: bool = False) -> subprocess.Popen:
    cmd = [py_spy(), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
           "-f", "raw", "-o", str(out), "--nonblocking", "--threads"]
    if native:
        cmd.append("--native")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize(raw: Path, top: int = 18) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        funcs = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                 for f in frames[1:]]
        if funcs:
            self_counts[funcs[-1]] += count
        for f in set(funcs):
            incl_counts[f] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; by thread: " + ", ".join(
        f"{t} {c / total:.0%}" for t, c in threads.most_common(6))]
    lines.append("  self time:")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in self_counts.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in incl_counts.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=("produce", "latency", "consume"), default="produce")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "profiles")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings(produce_s=args.seconds + 2, latency_s=args.seconds + 2,
                        backlog_records=1_000_000, consume_cap_s=args.seconds + 2)
    work = Path(tempfile.mkdtemp(prefix="raftka-profile-"))
    system = RaftkaSystem(settings, work)
    system.start()
    try:
        cluster = system.cluster
        assert cluster is not None
        # the next topic's leader is found once it exists; record after a short warm-up
        topic_holder: dict[str, str] = {}
        if args.workload == "consume":
            topic_holder["topic"] = system.fill(settings.backlog_records)

        def run() -> None:
            if args.workload == "produce":
                system.produce("bulk", 100, 1)
            elif args.workload == "latency":
                system.latency(1000)
            else:  # the backlog drains in about a second now: read it again until the end
                until = time.monotonic() + args.seconds + 2
                while time.monotonic() < until:
                    system.consume(topic_holder["topic"], settings.backlog_records)
        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(1.5)
        topic = topic_holder.get("topic") or f"bench-{system._topics}"  # noqa: SLF001
        leader = cluster.partition_leader(topic, 0)
        follower = next(n for n in cluster.procs if n != leader)
        targets = {"leader": cluster.procs[leader].pid,
                   "follower": cluster.procs[follower].pid, "client": os.getpid()}
        procs = {name: record(pid, args.seconds, args.out / f"{args.workload}-{name}.txt")
                 for name, pid in targets.items()}
        for name, p in procs.items():
            _, err = p.communicate()
            if p.returncode != 0:
                print(f"py-spy on {name} failed: {err.decode()[-500:]}", file=sys.stderr)
        worker.join()
    finally:
        system.stop()
    for name in ("leader", "follower", "client"):
        raw = args.out / f"{args.workload}-{name}.txt"
        if raw.exists():
            text = f"== {args.workload}: {name}\n{summarize(raw)}"
            (args.out / f"{args.workload}-{name}-summary.txt").write_text(text + "\n")
            print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
