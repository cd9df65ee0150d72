"""The transactional workload (``run --workload txn``): Jepsen's Kafka transactions test.

- **Producers** (OS processes, so the harness can kill -9 them mid-transaction), one per
  slot, each a ``Producer(transactional_id=...)``. A transaction sends one unique value to
  each of 2-4 keys (partitions of topics ``jepsen`` and ``jepsen-b``), then commits, or
  aborts on purpose (``ABORT_P``). Every third slot is a *consume-transform-produce*
  producer: a read_committed member of group ``jepsen-ctp`` on ``jepsen-b``; its
  transaction carries what its poll returned (``read``, the wr edges of the checker) and
  commits the consumed position with ``send_offsets_to_transaction``. A producer whose
  commit's outcome is unknown retires (exit ``RETIRE_EXIT``); a killed or retired slot
  comes back as a new process, half the time with the same transactional id (its
  ``init_transactions`` fences the old one and aborts what it left open), else with a new
  one (the coordinator aborts the orphan after ``TXN_TIMEOUT_MS``).
- **Readers** (OS processes): read_committed consumers, each alone in a group of its own
  from the earliest offset of every key, recording offset and value of what they poll.
- The harness kills a random producer or reader every ``--consumer-crash-interval`` s;
  the nemesis also hits the leaders of ``__transaction_state`` partitions (transaction
  coordinators). After healing: wait until no transaction is open, read every key from
  the start read_committed (``final-read``) and read_uncommitted (``final-read-raw``), and
  the group's committed offsets (``group-offsets``).

History ops (keys are ``"topic/partition"`` strings; values ``"<txn>.<i>"`` name their
transaction ``"<process>-<n>"``):

==================  ====================================================================
``init``            producer: ``{"tid"}``, init_transactions
``txn``             invoke ``{"txn", "tid", "intent": "commit"|"abort", "sends": [[key,
                    value], ...], "read": [[key, offset, value], ...], "offsets": [[key,
                    next offset], ...]}``; ``ok``: committed (adds ``"sends": [[key, value,
                    offset], ...]``); ``fail``: certainly not committed (aborted on
                    purpose, or a failure before the commit was asked for); ``info``:
                    unknown (the commit was asked for and did not answer)
``commit-start``    process ``"<p>-c"``, info: ``{"txn"}``, just before commit_transaction
                    (a transaction without one never asked to commit)
``poll``            reader, ok: ``{"records": [[key, offset, value], ...]}``
``committed``       ctp producer, ok: ``{"offsets": [[key, offset], ...]}`` of its group
``final-read``      ok: ``{"key", "records": [[offset, value], ...]}`` (read_committed);
``final-read-raw``  the same read_uncommitted
``txn-states``      harness: ``{"open": [...]}`` transactions still open before the final read
``group-offsets``   harness, ok: ``{"offsets": [[key, offset], ...]}`` of ``jepsen-ctp``
==================  ====================================================================
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rkjepsen.history import HistoryWriter

TOPIC = "jepsen"
TOPIC_B = "jepsen-b"
TOPIC_B_PARTITIONS = 2
TXN_STATE = "__transaction_state"
TXN_STATE_PARTITIONS = 6  # node/README.md: created with 6 partitions
CTP_GROUP = "jepsen-ctp"
ABORT_P = 0.2  # transactions aborted on purpose
TXN_TIMEOUT_MS = 4000  # an orphaned transaction is aborted by its coordinator after this
RETIRE_EXIT = 78  # a producer whose commit's outcome is unknown exits with this
COMMITTED_EVERY = 10  # a ctp producer reads its group's offsets every this many txns
OPEN_WAIT_S = 60.0
READY_TIMEOUT_S = 120.0


def keys_of(partitions: int) -> list[str]:
    return ([f"{TOPIC}/{p}" for p in range(partitions)]
            + [f"{TOPIC_B}/{p}" for p in range(TOPIC_B_PARTITIONS)])


def split_key(key: str) -> tuple[str, int]:
    topic, _, p = key.rpartition("/")
    return topic, int(p)


def txn_of(value: str) -> str:
    """The transaction that wrote ``value`` (``"<txn>.<i>"``)."""
    return value.rpartition(".")[0]


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------- producer process

def producer_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rkjepsen.txn_workload producer")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--process", type=int, required=True)
    p.add_argument("--tid", required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--keys", type=int, required=True, help="partitions of topic jepsen")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ctp", action="store_true")
    args = p.parse_args(argv)

    from raftka.client import Consumer, Producer, RaftkaError
    from raftka.v1.errors import InvalidTxnStateError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(args.seed ^ (args.process * 7919))
    h = HistoryWriter(args.history, args.t0)
    proc, tid = args.process, args.tid
    keys = keys_of(args.keys)
    producer = Producer(args.bootstrap, transactional_id=tid, linger_ms=0,
                        request_timeout_ms=3000, delivery_timeout_ms=10_000,
                        max_block_ms=10_000, transaction_timeout_ms=TXN_TIMEOUT_MS)
    consumer = None
    code = 0
    try:
        while not stop.is_set():  # init until it works (the coordinator may be down)
            h.invoke(proc, "init", {"tid": tid})
            try:
                producer.init_transactions(timeout=10)
                h.complete("ok", proc, "init", {"tid": tid})
                break
            except RaftkaError as exc:
                h.complete("info", proc, "init", {"tid": tid, "error": _err(exc)})
                time.sleep(0.3)
        if args.ctp and not stop.is_set():
            consumer = Consumer(args.bootstrap, CTP_GROUP, [TOPIC_B],
                                isolation_level="read_committed", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=6000,
                                request_timeout_ms=3000)
        n = 0
        while not stop.is_set():
            read: list[list[Any]] = []
            offsets: dict[tuple[str, int], int] = {}
            if consumer is not None:
                if n % COMMITTED_EVERY == 0:
                    _committed(h, proc, consumer)
                try:
                    records = consumer.poll(0.3)
                except RaftkaError:
                    time.sleep(0.1)
                    continue
                for r in records:
                    read.append([f"{r.topic}/{r.partition}", r.offset, r.value.decode()])
                    tp = (r.topic, r.partition)
                    offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
            name = f"{proc}-{n}"
            n += 1
            sends = [[k, f"{name}.{i}"] for i, k in enumerate(rng.sample(keys,
                                                                          rng.randint(2, 4)))]
            intent = "abort" if rng.random() < ABORT_P else "commit"
            h.invoke(proc, "txn", {"txn": name, "tid": tid, "intent": intent, "sends": sends,
                                   "read": read, "offsets": [[f"{t}/{q}", o] for (t, q), o
                                                             in sorted(offsets.items())]})
            outcome = _transaction(h, proc, name, producer, consumer, sends, intent, offsets,
                                   InvalidTxnStateError, RaftkaError)
            if outcome != "ok" and consumer is not None and read:
                _rewind(consumer, read)  # re-consume what the aborted txn had read
            if outcome == "retire":
                code = RETIRE_EXIT
                break
    finally:
        for closer in (consumer, producer):
            if closer is not None:
                try:
                    closer.close(timeout=2)
                except Exception:  # noqa: BLE001 - closing a broken client
                    pass
        h.close()
    return code


def _transaction(h, proc, name, producer, consumer, sends, intent, offsets,
                 InvalidTxnStateError, RaftkaError) -> str:
    """One transaction; returns ok, fail or retire (outcome unknown, or the producer is
    unusable: the process must go)."""
    value = {"txn": name}
    try:
        producer.begin_transaction()
    except RaftkaError as exc:
        h.complete("fail", proc, "txn", {**value, "error": _err(exc)})
        return "retire"
    futures = []
    try:
        for key, v in sends:
            topic, partition = split_key(key)
            futures.append(producer.send(topic, v.encode(), partition=partition))
        if offsets and consumer is not None:
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata(),
                                                 timeout=10)
        if intent == "abort":
            raise _AbortOnPurpose()
    except (_AbortOnPurpose, RaftkaError) as exc:
        # EndTxn(commit) was never sent: this transaction cannot commit
        abort_error = _abort(producer, RaftkaError)
        h.complete("fail", proc, "txn", {**value, "aborted": abort_error is None, **(
            {} if isinstance(exc, _AbortOnPurpose) else {"error": _err(exc)}), **(
            {"abort_error": abort_error} if abort_error else {})})
        return "fail" if abort_error is None else "retire"
    h.event("info", f"{proc}-c", "commit-start", {"txn": name})
    try:
        producer.commit_transaction(timeout=15)
    except InvalidTxnStateError as exc:
        if "abort it" in str(exc):  # a send failed: refused before EndTxn was sent
            abort_error = _abort(producer, RaftkaError)
            h.complete("fail", proc, "txn", {**value, "aborted": abort_error is None,
                                             "error": _err(exc), **(
                {"abort_error": abort_error} if abort_error else {})})
            return "fail" if abort_error is None else "retire"
        h.complete("info", proc, "txn", {**value, "error": _err(exc)})
        return "retire"
    except Exception as exc:  # noqa: BLE001 - an unknown outcome
        h.complete("info", proc, "txn", {**value, "error": _err(exc)})
        return "retire"
    written = []
    for (key, v), fut in zip(sends, futures):
        written.append([key, v, fut.result(0)[1]])
    h.complete("ok", proc, "txn", {**value, "sends": written})
    return "ok"


class _AbortOnPurpose(Exception):
    pass


def _abort(producer, RaftkaError) -> str | None:
    """Abort the open transaction; returns why it could not (None: aborted)."""
    try:
        producer.abort_transaction(timeout=10)
        return None
    except (RaftkaError, RuntimeError) as exc:
        return _err(exc)


def _rewind(consumer, read: list[list[Any]]) -> None:
    first: dict[tuple[str, int], int] = {}
    for key, offset, _ in read:
        tp = split_key(key)
        first[tp] = min(first.get(tp, offset), offset)
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(topic, partition, offset)
        except Exception:  # noqa: BLE001 - not owned any more: its new owner reads it
            pass


def _committed(h: HistoryWriter, proc: int, consumer) -> None:
    from raftka.client import RaftkaError

    h.invoke(proc, "committed")
    try:
        got = consumer.committed([(TOPIC_B, p) for p in range(TOPIC_B_PARTITIONS)],
                                 timeout=5)
        h.complete("ok", proc, "committed", {"offsets": [
            [f"{tp[0]}/{tp[1]}", off] for tp, off in sorted(got.items()) if off is not None]})
    except RaftkaError as exc:
        h.complete("info", proc, "committed", {"error": _err(exc)})


# ----------------------------------------------------------------------- reader process

def reader_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rkjepsen.txn_workload reader")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--process", type=int, required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--t0", type=float, required=True)
    args = p.parse_args(argv)

    from raftka.client import Consumer, RaftkaError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    h = HistoryWriter(args.history, args.t0)
    proc = args.process
    consumer = Consumer(args.bootstrap, f"jepsen-reader-{proc}", [TOPIC, TOPIC_B],
                        isolation_level="read_committed", enable_auto_commit=False,
                        auto_offset_reset="earliest", session_timeout_ms=6000,
                        request_timeout_ms=3000)
    try:
        while not stop.is_set():
            h.invoke(proc, "poll")
            try:
                records = consumer.poll(0.5)
            except RaftkaError as exc:
                h.complete("info", proc, "poll", {"error": _err(exc)})
                time.sleep(0.1)
                continue
            h.complete("ok", proc, "poll", {"records": [
                [f"{r.topic}/{r.partition}", r.offset, r.value.decode()] for r in records]})
    finally:
        try:
            consumer.close(timeout=2)
        finally:
            h.close()
    return 0


# ------------------------------------------------------------------------- harness side

def final_reads(bootstrap: str, history: HistoryWriter, partitions: int,
                timeout_s: float = 60.0) -> list[str]:
    """Every key read from the start to its end, read_committed (``final-read``) and
    read_uncommitted (``final-read-raw``); returns the keys not read to their end."""
    from raftka.client import PartitionReader
    from raftka.client._cluster import Cluster

    failed = []
    cluster = Cluster(bootstrap, request_timeout_ms=3000)  # one for all the readers
    try:
        for key in keys_of(partitions):
            topic, partition = split_key(key)
            for f, isolation in (("final-read", "read_committed"),
                                 ("final-read-raw", "read_uncommitted")):
                history.invoke("final", f, {"key": key})
                records: list[list[Any]] = []
                deadline = time.monotonic() + timeout_s
                try:
                    with PartitionReader(cluster, topic, partition, "earliest",
                                         max_wait_ms=50, isolation_level=isolation) as reader:
                        while True:
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"{key} not read to its end in "
                                                   f"{timeout_s:g}s")
                            batch = reader.poll(timeout=0.2)
                            records += [[r.offset, r.value.decode()] for r in batch]
                            if reader.at_end:  # no transaction is open: LSO = HW
                                break
                except Exception as exc:  # noqa: BLE001
                    history.complete("info", "final", f, {"key": key, "error": _err(exc)})
                    failed.append(f"{key} ({isolation})")
                    continue
                history.complete("ok", "final", f, {"key": key, "records": records})
    finally:
        cluster.close()
    return failed


def wait_no_open_transactions(bootstrap: str, history: HistoryWriter,
                              timeout_s: float = OPEN_WAIT_S) -> bool:
    """Wait (bounded) until no transaction is open (killed producers' transactions time
    out and are aborted by their coordinator); records the last state seen."""
    from raftka.client import Admin, RaftkaError

    history.invoke("harness", "txn-states")
    deadline = time.monotonic() + timeout_s
    open_: list[list[str]] | None = None
    with Admin(bootstrap, request_timeout_ms=3000) as admin:
        while time.monotonic() < deadline:
            try:
                txns = admin.list_transactions(timeout=5)
                open_ = [[t.transactional_id, t.state] for t in txns
                         if t.state in ("ongoing", "prepare_commit", "prepare_abort")]
                if not open_:
                    break
            except RaftkaError:
                pass
            time.sleep(0.5)
    if open_ is None:
        history.complete("info", "harness", "txn-states", {"error": "no answer"})
        return False
    history.complete("ok", "harness", "txn-states", {"open": open_})
    return not open_


def warm_up(bootstrap: str, timeout_s: float = 60.0) -> None:
    """One init_transactions before the clients start: it creates ``__transaction_state``
    (on the first FindCoordinator), so the clients' first transactions and the replica
    comparison at the end find it."""
    from raftka.client import Producer

    producer = Producer(bootstrap, transactional_id="jepsen-warm-up", request_timeout_ms=3000)
    try:
        producer.init_transactions(timeout=timeout_s)
    finally:
        producer.close(timeout=2)


def group_offsets(bootstrap: str, history: HistoryWriter) -> None:
    from raftka.client import Admin

    history.invoke("harness", "group-offsets")
    try:
        with Admin(bootstrap, request_timeout_ms=3000) as admin:
            d = admin.describe_group(CTP_GROUP, timeout=10)
        history.complete("ok", "harness", "group-offsets", {"offsets": [
            [f"{p.topic}/{p.partition}", p.committed_offset] for p in d.partitions
            if p.committed_offset is not None]})
    except Exception as exc:  # noqa: BLE001 - the checker sees it missing
        history.complete("info", "harness", "group-offsets", {"error": _err(exc)})


def leader_finder(cluster, partitions: int):
    """``leader_of(k)`` for the nemesis: k over the keys of both topics, then the
    partitions of ``__transaction_state`` (so faults hit transaction coordinators)."""
    from rkjepsen.leaders import LeaderFinder

    targets = [split_key(k) for k in keys_of(partitions)] + \
        [(TXN_STATE, p) for p in range(TXN_STATE_PARTITIONS)]
    finder = LeaderFinder(cluster)
    return (lambda k: finder.leader_of(*targets[k % len(targets)])), len(targets)


def _is_ready(out: Path, pid: int, producer: bool) -> bool:
    """The client finished init_transactions (a producer) or a poll (a reader)."""
    want = '"f":"init"' if producer else '"f":"poll"'
    try:
        with open(out / f"history.client-{pid}.jsonl") as fh:
            return any('"type":"ok"' in line and want in line for line in fh)
    except FileNotFoundError:
        return False


def _clients_ready(out: Path, clients: dict[int, subprocess.Popen], slot_of: dict[int, int],
                   ready: set[int], timeout_s: float) -> bool:
    """Wait (bounded) until every client is ready (``_is_ready``): faults and the run's
    clock start then, so that a loaded machine's slow process starts do not eat the run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready |= {pid for pid in clients if pid not in ready
                  and _is_ready(out, pid, pid in slot_of)}
        if ready >= set(clients):
            return True
        if any(proc.poll() is not None for proc in clients.values()):
            return False
        time.sleep(0.2)
    return False


def run(args: argparse.Namespace, cluster, clients: dict[int, subprocess.Popen]) -> int:
    """``jepsen-like/run --workload txn``: the harness side (``cli.run_main`` set up the
    cluster and tears it down)."""
    from raftka.client import Admin, RaftkaError

    from rkjepsen import history, report
    from rkjepsen.cli import (HERE, _print_examples, _replica_disagreements, check_run,
                              stop_clients)
    from rkjepsen.nemesis import Nemesis
    from rkjepsen.netcluster import REPO

    out: Path = args.out
    t0 = time.monotonic()
    main_hist = history.HistoryWriter(out / "history.main.jsonl", t0)
    main_hist.event("info", "harness", "config", {
        "nodes": args.nodes, "nemesis": args.nemeses, "time_s": args.time, "seed": args.seed,
        "keys": keys_of(args.keys), "producers": args.producers, "consumers": args.consumers,
        "workload": "txn", "abort_p": ABORT_P, "txn_timeout_ms": TXN_TIMEOUT_MS})
    problems: list[str] = []
    with Admin(cluster.bootstrap, request_timeout_ms=3000) as admin:
        admin.wait_for_brokers(timeout=60)
        for topic, n in ((TOPIC, args.keys), (TOPIC_B, TOPIC_B_PARTITIONS)):
            admin.create_topic(topic, partitions=n, replication_factor=args.replication_factor)
        for topic in (TOPIC, TOPIC_B):
            admin.wait_for_topic_ready(topic, timeout=60)
    warm_up(cluster.bootstrap)
    print(f"cluster up in {time.monotonic() - t0:.1f}s: {cluster.bootstrap}", flush=True)

    rng = random.Random(args.seed ^ 0x7A7)
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{REPO}")
    next_pid = [1000]
    slot_of: dict[int, int] = {}  # producer process -> slot; readers are absent
    tid_of_slot = {s: f"jepsen-tx-{s}" for s in range(args.producers)}

    def spawn(role: str, slot: int | None = None, new_tid: bool = False) -> None:
        pid = next_pid[0]
        next_pid[0] += 1
        log = open(out / f"{role}-{pid}.log", "ab")
        cmd = [sys.executable, "-m", "rkjepsen.txn_workload", role,
               "--bootstrap", cluster.bootstrap, "--process", str(pid),
               "--history", str(out / f"history.client-{pid}.jsonl"), "--t0", repr(t0)]
        if role == "producer":
            assert slot is not None
            if new_tid:
                tid_of_slot[slot] = f"jepsen-tx-{slot}-{pid}"
            cmd += ["--tid", tid_of_slot[slot], "--keys", str(args.keys),
                    "--seed", str(args.seed)] + (["--ctp"] if slot % 3 == 2 else [])
            slot_of[pid] = slot
        clients[pid] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
        log.close()

    def respawn(pid: int) -> None:
        slot = slot_of.pop(pid, None)
        if slot is None:
            spawn("reader")
        else:
            spawn("producer", slot, new_tid=rng.random() < 0.5)

    for s in range(args.producers):
        spawn("producer", s)
    for _ in range(args.consumers):
        spawn("reader")

    ready: set[int] = set()  # clients that did something: the ones the harness kills
    if not _clients_ready(out, clients, slot_of, ready, READY_TIMEOUT_S):
        problems.append(f"clients not all ready within {READY_TIMEOUT_S:g}s "
                        "(an init_transactions or a first poll)")
    print(f"clients ready at t={time.monotonic() - t0:.0f}s", flush=True)
    leader_of, targets = leader_finder(cluster, args.keys)
    nemesis = Nemesis(cluster, main_hist, args.nemeses, args.interval, args.seed,
                      leader_of, targets)
    nemesis.start()
    end = time.monotonic() + args.time
    next_crash = time.monotonic() + args.consumer_crash_interval
    next_report = time.monotonic() + 30
    try:
        while time.monotonic() < end:
            time.sleep(0.2)
            for nid, code in cluster.exited().items():
                cluster.procs.pop(nid, None)
                if nemesis.take_refusal(nid, code):
                    continue
                problems.append(f"node {nid} exited on its own with code {code} "
                                f"(see node-{nid}.log)")
                cluster.start(nid)
            if args.consumer_crash_interval and time.monotonic() >= next_crash:
                next_crash = time.monotonic() + args.consumer_crash_interval
                # a client still starting (slow on a loaded machine) is not worth killing:
                # the victim is one that has done something
                ready |= {pid for pid in clients if pid not in ready
                          and _is_ready(out, pid, pid in slot_of)}
                candidates = sorted(ready & set(clients))
                if candidates:
                    victim = rng.choice(candidates)
                    proc = clients.pop(victim)
                    proc.kill()
                    proc.wait()
                    main_hist.event("info", victim, "crash", {"signal": "SIGKILL"})
                    respawn(victim)
            for pid, proc in list(clients.items()):
                code = proc.poll()
                if code is None:
                    continue
                clients.pop(pid)
                if code != RETIRE_EXIT:
                    problems.append(f"client {pid} exited on its own ({code}); see its log")
                respawn(pid)
            if time.monotonic() >= next_report:
                next_report += 30
                print(f"  t={time.monotonic() - t0:.0f}s faults "
                      f"{sum(nemesis.counts.values())}", flush=True)
    finally:
        nemesis.stop()  # heals everything
    main_hist.event("info", "nemesis", "healed", {})
    print(f"healed at t={time.monotonic() - t0:.0f}s; settling", flush=True)
    problems += [f"nemesis: {e}" for e in nemesis.errors]
    try:
        with Admin(cluster.bootstrap, request_timeout_ms=3000) as admin:
            for topic in (TOPIC, TOPIC_B):
                admin.wait_for_topic_ready(topic, timeout=60)
    except RaftkaError as exc:
        problems.append(f"after healing: {exc}")
    time.sleep(1.0)  # clients run on the healed cluster a little; not a correctness wait
    stop_clients(clients, main_hist, 20)
    if not wait_no_open_transactions(cluster.bootstrap, main_hist):
        problems.append(f"transactions still open {OPEN_WAIT_S:g}s after the clients "
                        "stopped (see txn-states in the history)")
    print(f"clients stopped, no transaction open at t={time.monotonic() - t0:.0f}s; "
          "final reads", flush=True)
    missing = final_reads(cluster.bootstrap, main_hist, args.keys)
    if missing:
        problems.append(f"final read incomplete for {missing}")
    group_offsets(cluster.bootstrap, main_hist)
    disagreements = _replica_disagreements(cluster, problems, (TOPIC_B, TXN_STATE))
    main_hist.close()
    cluster.close()

    _, rep, summary = check_run(out, "history.client-*.jsonl", args, problems,
                                disagreements)
    print(report.format_summary(summary))
    _print_examples(rep)
    for line in disagreements:
        print(f"  replicas disagree: {line}")
    if disagreements:
        print(f"INVALID: the replicas of {len(disagreements)} partition(s) disagree")
    for line in problems:
        print(f"problem: {line}")
    print(f"history and report.json in {out}")
    if not summary["valid"]:
        return 1
    return 2 if problems else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("producer", "reader"):
        print("usage: python -m rkjepsen.txn_workload producer|reader ...", file=sys.stderr)
        return 2
    return (producer_main if argv[0] == "producer" else reader_main)(argv[1:])


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(main())
