"""Many partitions: does creation settle without leader churn, what does an idle cluster cost,
how long does a decommission take? ``python -m bench.scale [--partitions 10000]``

Issue 19's scale figures. Two fresh clusters (tests/harness.py: real ``python -m raftka.node``
processes on loopback, tick 50 ms, balancer off):

1. 3 nodes. RSS of each node is read, then one topic of ``--partitions`` partitions
   (replication factor 3) is created. *Settle*: from the CreateTopic call until every
   partition has a leader (``cluster_status``: no leaderless partition), then until every
   partition is led by its preferred replica, as one node's metadata shows it. *Churn*: each
   partition's (leader, term) is read then, and again after ``--idle-s`` seconds of idling:
   partitions whose leader or term changed are counted (0 is the goal), and the terms at
   settle are summarized (a partition whose first election went smoothly is at term 1, 2
   after a hand-back to its preferred replica). *Idle CPU*: utime + stime of the three
   processes over that window, as percent of one core, summed (target: < 10%). *Memory*:
   (RSS after - RSS before) summed over the nodes, per partition replica.
2. 4 nodes, ``--decommission-partitions`` partitions (default: the same), settled as above;
   then node 4 is decommissioned and the time until the controller marks it removed is
   reported, or, after ``--decommission-timeout``, how many of its replicas moved and the
   rate, with the time the whole drain would take at that rate.

Prints one JSON object. The machine these run on is usually shared (other processes compete
for its 2 cores): run it niced and say so with the figures. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from raftka.client import Admin
from raftka.v1.errors import RaftkaError, RaftkaTimeoutError, TopicExistsError
from bench._common import idle_usage, proc_rss_bytes
from tests.harness import Cluster

TOPIC_PREFIX = "scale-"
TOPICS = 1  # set by --topics
PACED = False  # set by --paced


def _names(count: int) -> list[str]:
    return [f"{TOPIC_PREFIX}{t}" for t in range(min(TOPICS, count))]


def _sizes(count: int) -> list[int]:
    n = len(_names(count))
    return [count // n + (1 if t < count % n else 0) for t in range(n)]


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _describe(admin: Admin, count: int) -> list:
    """Every partition of the bench's topics, each as a node hosting it sees it (a node
    that does not host a partition names its preferred replica as a hint, and one
    client's merged view keeps the higher leader term it saw: with 4 nodes and RF 3 a
    single node's metadata, or a long-lived client's, can show a leader that is long
    gone). Asks every node, each with a fresh client."""
    found: dict[tuple[str, int], object] = {}
    for node_id, address in sorted(admin_brokers(admin).items()):
        with Admin(address, request_timeout_ms=60_000) as one:
            for desc in one.describe_topics(_names(count), timeout=120):
                for p in desc.partitions:
                    if node_id in p.replicas:
                        found.setdefault((desc.name, p.partition), p)
    return list(found.values())


def admin_brokers(admin: Admin) -> dict[int, str]:
    """Node id -> client address of every node of the cluster, from its metadata."""
    return {n.id: n.address for n in admin.list_nodes(timeout=60) if n.state != "removed"}


def _leader_terms(admin: Admin, count: int) -> dict[tuple[str, int], tuple[int, int]]:
    """(leader, term) of every partition, from one node's metadata ({} if none answered)."""
    try:
        descs = admin.describe_topics(_names(count), timeout=120)
    except (RaftkaError, ValueError):
        return {}
    return {(d.name, p.partition): (p.leader_id, p.leader_term)
            for d in descs for p in d.partitions}


def _wait_led(admin: Admin, count: int, deadline: float) -> int:
    """Poll until ``count`` partitions of the bench's topics exist and each has a leader, or
    ``deadline``; the number still leaderless."""
    leaderless = count
    while time.monotonic() < deadline:
        try:
            status = admin.cluster_status(timeout=60)
        except RaftkaError as exc:
            _log(f"cluster_status: {exc}")
            time.sleep(2)
            continue
        leaderless = sum(1 for tp in status.leaderless if tp.topic.startswith(TOPIC_PREFIX))
        if status.partition_count < count:
            leaderless = max(leaderless, count - status.partition_count)
        _log(f"{count - leaderless}/{count} partitions have a leader")
        if not leaderless:
            return 0
        time.sleep(2)
    return leaderless


def _settle(admin: Admin, count: int, timeout_s: float) -> dict:
    """Create the topics and wait until every partition has a leader, then its preferred
    one. With PACED, each topic is created once the previous ones' partitions all have a
    leader. Returns the times (None: not reached within ``timeout_s``)."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    created = 0
    for name, size in zip(_names(count), _sizes(count)):
        try:
            admin.create_topic(name, partitions=size, replication_factor=3, timeout=600)
        except TopicExistsError:  # a retry after an answer that came too late: created
            pass
        except RaftkaTimeoutError as exc:  # the nodes are too busy to answer: look below
            _log(f"create {name}: {exc}")
        created += size
        _log(f"created {name} ({size} partitions)")
        if PACED and created < count and _wait_led(admin, created, deadline):
            break
    created_s = time.monotonic() - t0
    _log(f"topics created in {created_s:.1f} s")
    leaders_s = preferred_s = None
    leaderless = _wait_led(admin, count, deadline)
    if not leaderless:
        leaders_s = time.monotonic() - t0
    not_preferred = None
    while leaders_s is not None and time.monotonic() < deadline:
        try:
            parts = _describe(admin, count)
        except (RaftkaError, ValueError) as exc:
            _log(f"describe: {exc}")
            time.sleep(2)
            continue
        not_preferred = sum(1 for p in parts if p.leader_id != p.replicas[0])
        _log(f"{count - not_preferred}/{count} partitions led by their preferred replica")
        if not not_preferred:
            preferred_s = time.monotonic() - t0
            break
        time.sleep(5)
    return {"create_call_s": round(created_s, 1),
            "all_led_s": round(leaders_s, 1) if leaders_s is not None else None,
            "all_preferred_s": round(preferred_s, 1) if preferred_s is not None else None,
            "leaderless_at_end": leaderless, "not_preferred_at_end": not_preferred}


def phase_idle(root: Path, count: int, idle_s: float, settle_timeout_s: float) -> dict:
    (root / "three").mkdir()
    cluster = Cluster(root / "three", 3)
    try:
        cluster.start_all()
        pids = [p.pid for p in cluster.procs.values()]
        rss0 = sum(proc_rss_bytes(p) for p in pids)
        with Admin(",".join(cluster.peers.values()), request_timeout_ms=60_000) as admin:
            out = _settle(admin, count, settle_timeout_s)
            before = _leader_terms(admin, count)
            _log(f"idle for {idle_s:.0f} s")
            usage = idle_usage(pids, idle_s)
            after = _leader_terms(admin, count)
        rss1 = sum(proc_rss_bytes(p) for p in pids)
        terms = sorted(t for _, t in before.values())
        out.update({
            "partitions": count, "nodes": 3,
            "leader_changes_while_idle": (sum(1 for p, lt in after.items()
                                              if before.get(p) != lt)
                                          if before and after else None),
            "terms_at_settle": ({"max": terms[-1], "above_2": sum(t > 2 for t in terms),
                                 "median": terms[len(terms) // 2]} if terms else None),
            "idle_cpu_percent_of_a_core": usage["cpu_percent"], "idle_window_s": usage["seconds"],
            "rss_mib_total": round(rss1 / 2**20, 1),
            "rss_kib_per_partition_replica": round((rss1 - rss0) / (3 * count) / 1024, 1),
        })
        return out
    finally:
        cluster.stop_all()


def phase_decommission(root: Path, count: int, settle_timeout_s: float,
                       timeout_s: float) -> dict:
    (root / "four").mkdir()
    cluster = Cluster(root / "four", 4)
    try:
        cluster.start_all()
        with Admin(",".join(cluster.peers.values()), request_timeout_ms=60_000) as admin:
            out = _settle(admin, count, settle_timeout_s)
            hosted0 = _hosted(admin, 4)
            _log(f"decommissioning node 4 ({hosted0} replicas)")
            t0 = time.monotonic()
            admin.decommission_node(4, timeout=120)
            state, hosted = "decommissioning", hosted0
            while time.monotonic() - t0 < timeout_s:
                time.sleep(10)
                try:
                    state = {n.id: n.state for n in admin.list_nodes(timeout=60)}.get(4, "?")
                    hosted = _hosted(admin, 4)
                except RaftkaError as exc:
                    _log(f"progress: {exc}")
                    continue
                _log(f"node 4: {state}, {hosted}/{hosted0} replicas left")
                if state == "removed":
                    break
            elapsed = time.monotonic() - t0
            moved = hosted0 - hosted
            rate = moved / elapsed if elapsed > 0 else 0.0
            out.update({
                "partitions": count, "nodes": 4, "replicas_on_node_4": hosted0,
                "decommission_done": state == "removed",
                "decommission_s": round(elapsed, 1), "replicas_moved": moved,
                "moves_per_s": round(rate, 3),
                "estimated_total_s": round(hosted0 / rate, 0) if rate > 0 else None,
            })
            return out
    finally:
        cluster.stop_all()


def _hosted(admin: Admin, node: int) -> int:
    return {n.id: n.replica_count for n in admin.list_nodes(timeout=60)}.get(node, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--topics", type=int, default=1,
                        help="spread the partitions over this many topics, created in turn")
    parser.add_argument("--paced", action="store_true",
                        help="create each topic once the previous ones all have leaders")
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--settle-timeout", type=float, default=1800.0)
    parser.add_argument("--decommission-partitions", type=int, default=None)
    parser.add_argument("--decommission-timeout", type=float, default=1800.0)
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--dir", type=Path, default=None,
                        help="keep the clusters' data and logs here (default: a temporary "
                        "directory, removed at the end)")
    parser.add_argument("--skip-decommission", action="store_true")
    args = parser.parse_args()
    global TOPICS, PACED
    TOPICS = max(1, args.topics)
    PACED = args.paced
    result: dict = {"topics": TOPICS, "paced": PACED}
    with tempfile.TemporaryDirectory(prefix="raftka-bench-scale-") as tmp:
        if args.dir is not None:
            args.dir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.dir)
        if not args.skip_idle:
            result["idle"] = phase_idle(Path(tmp), args.partitions, args.idle_s,
                                        args.settle_timeout)
            _log(json.dumps(result["idle"]))
        if not args.skip_decommission:
            result["decommission"] = phase_decommission(
                Path(tmp), args.decommission_partitions or args.partitions,
                args.settle_timeout, args.decommission_timeout)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
