"""``jepsen-like/run`` and ``jepsen-like/check``."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rkjepsen import checker, history, report
from rkjepsen.netcluster import REPO, HarnessError, NetCluster, check_privileges, enter_netns

HERE = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- check

def check_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="jepsen-like/check",
                                description="Rerun the checker on a saved history.")
    p.add_argument("history", type=Path)
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--out", type=Path, help="also write the report (JSON) here")
    args = p.parse_args(argv)
    try:
        ops = history.load(args.history)
    except (OSError, ValueError, KeyError) as exc:
        print(f"check: cannot read {args.history}: {exc}", file=sys.stderr)
        return 2
    rep = checker.check(ops)
    summary = report.summarize(ops, rep)
    doc = {**rep.to_json(), "summary": summary}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(report.format_summary(summary))
        _print_examples(rep)
    return 0 if rep.valid else 1


def check_run(out: Path, client_histories: str, args: argparse.Namespace,
              problems: list[str], disagreements: list[str],
              **fields) -> tuple[list, checker.Report, dict]:
    """After a run: merge the harness's and the clients' histories (``client_histories``, a
    glob in ``out``) into history.jsonl, check it, and write report.json with the run's
    settings, ``problems``, replica ``disagreements`` and ``fields`` in its summary."""
    parts = [out / "history.main.jsonl", *sorted(out.glob(client_histories))]
    history.merge(parts, out / "history.jsonl")
    for part in parts:
        part.unlink()
    ops = history.load(out / "history.jsonl")
    rep = checker.check(ops)
    summary = report.summarize(ops, rep)
    summary.update(seed=args.seed, nodes=args.nodes, nemesis=args.nemeses,
                   time_s=args.time, consumers=args.consumers, problems=problems,
                   replica_disagreements=disagreements, **fields)
    summary["valid"] = summary["valid"] and not disagreements
    (out / "report.json").write_text(json.dumps({**rep.to_json(), "summary": summary},
                                                indent=1))
    return ops, rep, summary


def _print_examples(rep: checker.Report, per_class: int = 3) -> None:
    for cls, items in [*rep.anomalies.items(), *rep.problems.items()]:
        for item in items[:per_class]:
            print(f"  {cls}: {json.dumps(item)[:600]}")


# ---------------------------------------------------------------------------- run

def _parse_run_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="jepsen-like/run",
        description="Run a real Raftka cluster in network namespaces under faults, record a "
                    "history and check it. Needs root, iproute2 and nftables.")
    p.add_argument("--workload", default="log", choices=("log", "queue", "txn"),
                   help="log: producers and a consumer group (Jepsen's Kafka test); "
                        "queue: producers and share-group workers with poison records and "
                        "a dead-letter topic; txn: transactional producers (some "
                        "consume-transform-produce) and read_committed readers (see README)")
    p.add_argument("--client", default="grpc", choices=("grpc", "kafka"),
                   help="grpc: our client; kafka: confluent-kafka through the nodes' Kafka "
                        "listeners (the log workload only; see README)")
    p.add_argument("--nemesis", default="partition,kill,pause,disk",
                   help="comma-separated: partition, kill, pause, clock, disk, membership "
                        "(or none); default partition,kill,pause,disk")
    p.add_argument("--time", type=float, default=60, help="seconds of workload under faults")
    p.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    p.add_argument("--interval", type=float, default=8.0,
                   help="seconds a fault is held (jittered); quiet gaps are about half")
    p.add_argument("--seed", type=int, default=None, help="fault schedule seed")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: jepsen-like/store/<timestamp>)")
    p.add_argument("--keys", type=int, default=4, help="partitions of the test topic")
    p.add_argument("--replication-factor", type=int, default=3)
    p.add_argument("--producers", type=int, default=3)
    p.add_argument("--consumers", type=int, default=2,
                   help="consumer processes in the group, or share-group workers with "
                        "--workload queue (0: no consumer workload)")
    p.add_argument("--consumer-crash-interval", type=float, default=15.0,
                   help="seconds between kill -9 of a random consumer (0: never)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    from rkjepsen.nemesis import parse_nemeses

    try:
        args.nemeses = parse_nemeses(args.nemesis)
    except ValueError as exc:
        p.error(str(exc))
    if args.client == "kafka" and args.workload != "log":
        p.error("--client kafka runs the log workload only")
    if args.replication_factor > args.nodes:
        p.error("--replication-factor cannot exceed --nodes")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if args.out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        args.out = HERE / "store" / stamp
    return args


class _Interrupted(Exception):
    pass


def run_main(argv: list[str]) -> int:
    args = _parse_run_args(argv)
    try:
        check_privileges()
    except HarnessError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=False)
    cluster = NetCluster(args.nodes, out, faketime="clock" in args.nemeses,
                         kafka=args.client == "kafka")
    atexit.register(cluster.close)

    def on_signal(signum, frame):
        raise _Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    print(f"jepsen-like: {args.nodes} nodes, nemesis {','.join(args.nemeses) or 'none'}, "
          f"{args.time:g}s, seed {args.seed}, run id {cluster.run_id}, out {out}", flush=True)
    consumers: dict[int, subprocess.Popen] = {}
    try:
        cluster.create_network()
        cluster.start_all()
        enter_netns(cluster.client_ns)  # before any thread: gRPC's threads inherit it
        return _run(args, cluster, consumers)
    except _Interrupted as exc:
        print(f"jepsen-like: interrupted ({exc}); tearing down", file=sys.stderr)
        return 130
    except HarnessError as exc:
        print(f"jepsen-like: {exc}", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in consumers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cluster.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_clients(clients: dict[int, subprocess.Popen], main_hist: history.HistoryWriter,
                 wait_s: float) -> None:
    """SIGTERM every client process, then wait for each; one still running after
    ``wait_s`` is killed (a ``crash`` event in the history). Empties ``clients``."""
    for proc in clients.values():
        proc.send_signal(signal.SIGTERM)
    for pid, proc in list(clients.items()):
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            main_hist.event("info", pid, "crash", {"signal": "SIGKILL (did not stop)"})
    clients.clear()


def _leader_finder(cluster: NetCluster):
    from rkjepsen.leaders import LeaderFinder
    from rkjepsen.workload import TOPIC

    finder = LeaderFinder(cluster)
    return lambda key: finder.leader_of(TOPIC, key)


def _replica_disagreements(cluster: NetCluster, problems: list[str],
                           extra_topics: tuple[str, ...] = ()) -> list[str]:
    """After the faults healed: every replica of every partition of the test topic and of
    ``__consumer_offsets`` holds the same records at the same offsets up to the high
    watermark (``tests/safety.py`` over the nodes' Debug service, waiting, bounded, for
    followers to reach the leader's high watermark). Returns one line per partition whose
    replicas hold different records (the verdict is then invalid); replicas that could not
    be compared in time (one not running its partition, or behind) are added to
    ``problems``."""
    from tests.safety import check_topic_replicas
    from rkjepsen.workload import TOPIC

    up = {n: cluster.addresses[n] for n in cluster.alive() if n not in cluster.paused}
    checks = [c for topic in (TOPIC, "__consumer_offsets", *extra_topics)
              for c in check_topic_replicas(up, topic)]
    problems += [f"replicas not compared: {c.problem}" for c in checks if not c.settled]
    found = [c.problem for c in checks if c.settled]
    verdict = "agree" if not checks else (f"{len(found)} partition(s) disagree, "
                                          f"{len(checks) - len(found)} not compared")
    print(f"replicas compared on nodes {sorted(up)}: {verdict}", flush=True)
    return found


def _run(args: argparse.Namespace, cluster: NetCluster,
         consumers: dict[int, subprocess.Popen]) -> int:
    from raftka.client import Admin, RaftkaError

    from rkjepsen.nemesis import Nemesis
    from rkjepsen import queue
    from rkjepsen.workload import TOPIC, Producers, final_read

    if args.workload == "txn":  # transactions: rkjepsen/txn_workload.py
        from rkjepsen import txn_workload

        return txn_workload.run(args, cluster, consumers)
    out: Path = args.out
    t0 = time.monotonic()
    main_hist = history.HistoryWriter(out / "history.main.jsonl", t0)
    main_hist.event("info", "harness", "config", {
        "nodes": args.nodes, "nemesis": args.nemeses, "time_s": args.time, "seed": args.seed,
        "keys": args.keys, "producers": args.producers, "consumers": args.consumers,
        "workload": args.workload, "client": args.client,
        **({"attempts": queue.ATTEMPTS, "lock_ms": queue.LOCK_MS, "poison": queue.POISON_P,
            "failing": queue.FAILING_P, "delayed": queue.DELAYED_P,
            "delay_max_s": queue.DELAY_MAX_S} if args.workload == "queue" else {})})
    problems: list[str] = []
    with Admin(cluster.bootstrap, request_timeout_ms=3000) as admin:
        admin.wait_for_brokers(timeout=60)
        admin.create_topic(TOPIC, partitions=args.keys,
                           replication_factor=args.replication_factor)
        admin.wait_for_topic_ready(TOPIC, timeout=60)
    print(f"cluster up in {time.monotonic() - t0:.1f}s: {cluster.bootstrap}", flush=True)

    rng = random.Random(args.seed ^ 0x5EED)
    kafka = args.client == "kafka"
    if kafka:
        from rkjepsen import kafka_client

    def workload_bootstrap() -> str:
        """The clients' bootstrap of this moment: the membership nemesis retires nodes, and
        after a long run none of the first ones may be left (a 30-minute run's final
        reads, given the first list, found no node and timed out)."""
        return cluster.kafka_bootstrap if kafka else cluster.bootstrap
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{REPO}")
    next_consumer = [1000]

    def spawn_consumer() -> None:
        pid = next_consumer[0]
        next_consumer[0] += 1
        log = open(out / f"consumer-{pid}.log", "ab")
        module = "rkjepsen.queue" if args.workload == "queue" else \
            "rkjepsen.kafka_client" if kafka else "rkjepsen.workload"
        extra = ["--seed", str(args.seed), "--drain-flag", str(out / "draining")] \
            if args.workload == "queue" else []
        consumers[pid] = subprocess.Popen(
            [sys.executable, "-m", module, "--bootstrap", workload_bootstrap(),
             "--process", str(pid), "--history", str(out / f"history.consumer-{pid}.jsonl"),
             "--t0", repr(t0), *extra], cwd=REPO, env=env, stdout=log, stderr=log)
        log.close()

    for _ in range(args.consumers):
        spawn_consumer()

    producers = Producers(workload_bootstrap(), main_hist, args.producers, args.keys,
                          seed=args.seed, value_suffix=queue.value_suffix
                          if args.workload == "queue" else None,
                          delivery=queue.delivery if args.workload == "queue" else None,
                          **({"make_producer": kafka_client.make_producer,
                              "definitely_not_sent": kafka_client.definitely_not_sent}
                             if kafka else {}))
    producers.start()
    nemesis = Nemesis(cluster, main_hist, args.nemeses, args.interval, args.seed,
                      _leader_finder(cluster), args.keys)
    nemesis.start()
    membership = None
    if "membership" in args.nemeses:
        from rkjepsen.membership import Membership

        def members_changed() -> None:  # new producers bootstrap from current members
            producers.bootstrap = workload_bootstrap()

        membership = Membership(cluster, main_hist, interval_s=args.interval, seed=args.seed,
                                topic=TOPIC, keys=args.keys,
                                replication_factor=args.replication_factor,
                                max_nodes=args.nodes + 2, ids=nemesis._ids,
                                busy_nodes=nemesis.busy_nodes,
                                on_members_changed=members_changed)
        membership.start()
    end = time.monotonic() + args.time
    next_crash = time.monotonic() + args.consumer_crash_interval
    next_report = time.monotonic() + 30
    node_exits: dict[int, int] = {}
    try:
        while time.monotonic() < end:
            time.sleep(0.2)
            for nid, code in cluster.exited().items():
                cluster.procs.pop(nid, None)
                if nemesis.take_refusal(nid, code):  # a damaged store: recovered before
                    continue                         # the next fault
                node_exits[nid] = code
                problems.append(f"node {nid} exited on its own with code {code} "
                                f"(see node-{nid}.log)")
                cluster.start(nid)
            if args.consumers and args.consumer_crash_interval and \
                    time.monotonic() >= next_crash:
                next_crash = time.monotonic() + args.consumer_crash_interval
                victim = rng.choice(sorted(consumers))
                proc = consumers.pop(victim)
                proc.kill()
                proc.wait()
                main_hist.event("info", victim, "crash", {"signal": "SIGKILL"})
                spawn_consumer()
            for pid, proc in list(consumers.items()):
                if args.workload == "queue" and proc.poll() == queue.CRASH_EXIT:
                    consumers.pop(pid)  # crashed on purpose, holding records
                    spawn_consumer()
                    continue
                if proc.poll() is not None:
                    problems.append(f"consumer {pid} exited on its own ({proc.returncode}); "
                                    f"see consumer-{pid}.log")
                    consumers.pop(pid)
                    spawn_consumer()
            if time.monotonic() >= next_report:
                next_report += 30
                print(f"  t={time.monotonic() - t0:.0f}s faults {sum(nemesis.counts.values())}"
                      f" producers idempotent={producers.idempotent}", flush=True)
    finally:
        if args.workload == "queue":  # workers stop crashing on purpose: the harness no
            (out / "draining").touch()  # longer replaces them until the drain below
        if membership is not None:
            membership.stop()  # a drain it asked for goes on; converged() waits for it
        nemesis.stop()  # heals everything
    main_hist.event("info", "nemesis", "healed", {})
    print(f"healed at t={time.monotonic() - t0:.0f}s; settling", flush=True)
    producers.stop()
    problems += producers.errors + [f"nemesis: {e}" for e in nemesis.errors]
    for r in nemesis.refusals:
        print(f"disk fault detected: node {r['node']} refused to start (exit {r['exit_code']},"
              f" {r['when']}); its log moved to {r['moved_to']}: {r['error_line'][:300]}")
    # Settle: every key led and served again; consumers catch up on what is there.
    try:
        with Admin(cluster.bootstrap, request_timeout_ms=3000) as admin:
            admin.wait_for_topic_ready(TOPIC, timeout=60)
    except RaftkaError as exc:  # the final read shows which keys it cannot read
        problems.append(f"after healing: {exc}")
    if args.workload == "queue":  # the workers finish every record (bounded wait)
        for pid, proc in list(consumers.items()):  # died after the loop's last look
            if proc.poll() is not None:
                if proc.returncode != queue.CRASH_EXIT:
                    problems.append(f"consumer {pid} exited on its own ({proc.returncode})"
                                    f"; see consumer-{pid}.log")
                consumers.pop(pid)
                spawn_consumer()
        if not queue.wait_delayed_released(cluster.bootstrap, main_hist,
                                           producers.delayed_acked, producers.last_due):
            problems.append("acknowledged delayed records not released within "
                            f"{queue.DRAIN_TIMEOUT_S:g}s of their time")
        if args.consumers and not queue.drain(cluster.bootstrap, main_hist, args.keys):
            problems.append("the share group did not drain within "
                            f"{queue.DRAIN_TIMEOUT_S:g}s (see share-state in the history)")
    else:
        time.sleep(5.0 if args.consumers else 0.5)  # consumers drain; not a correctness wait
    stop_clients(consumers, main_hist, 15)
    missing = (kafka_client.final_read if kafka else final_read)(
        workload_bootstrap(), main_hist, args.keys)
    if missing:
        problems.append(f"final read incomplete for keys {missing}")
    if membership is not None:  # the cluster converged: replicas, voters, one controller
        unsettled = membership.converged((TOPIC, "__consumer_offsets"))
        main_hist.event("info", "harness", "membership-converged",
                        {"ok": not unsettled, "problems": unsettled[:20]})
        problems += [f"membership: {line}" for line in unsettled]
        problems += membership.errors
    extra_topics: tuple[str, ...] = ()
    if args.workload == "queue":
        read = queue.final_read_dlq(cluster.bootstrap, main_hist)
        if read is None:
            problems.append(f"final read of {queue.DLQ_TOPIC} incomplete")
        if read is not False:  # it exists: its replicas are compared too
            extra_topics = (queue.DLQ_TOPIC,)
    disagreements = _replica_disagreements(cluster, problems, extra_topics)
    main_hist.close()
    cluster.close()

    extra = {"membership": membership.summary()} if membership is not None else {}
    ops, rep, summary = check_run(out, "history.consumer-*.jsonl", args, problems,
                                  disagreements, idempotent_producer=producers.idempotent,
                                  **extra)
    if not args.no_plots:
        try:
            report.plot(ops, out)
        except Exception as exc:  # noqa: BLE001 - plots never hide a verdict
            problems.append(f"plots failed: {exc!r}")
    print(report.format_summary(summary))
    if membership is not None:
        m = summary["membership"]
        print(f"membership ops: {m['ops']} ({m['done']} done, {m['refused']} refused, "
              f"{m['invalid_refused']} invalid ones refused): "
              + ", ".join(f"{k} {dict(sorted(v.items()))}" for k, v in sorted(
                  m["by_kind"].items())) + f"; nodes retired {m['retired_nodes']}")
    _print_examples(rep)
    for line in disagreements:
        print(f"  replicas disagree: {line}")
    if disagreements:
        print(f"INVALID: the replicas of {len(disagreements)} partition(s) disagree")
    if producers.idempotent is False:
        print("note: this client has no enable_idempotence; producers ran without it")
    for line in problems:
        print(f"problem: {line}")
    print(f"history, report.json and plots in {out}")
    if not summary["valid"]:
        return 1
    if problems:
        return 2
    return 0
