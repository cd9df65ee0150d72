"""Leader churn while 1,000 partitions are created under load. ``python -m
bench.create_churn [partitions]`` (default 1,000).

A fresh 3-node cluster (tests/harness.py, metrics on); a ``Producer`` thread keeps
sending ``send_many`` of 1,000 × 100 B to another topic throughout. Then one topic of
``partitions`` partitions (RF 3) is created and ``cluster_status`` polled (for up to
180 s) until every partition has a leader. Printed as JSON: the seconds until then
(``all_leaders_s``; ``leaderless_left`` if it never happened), the Raft elections
started on all nodes meanwhile (``raftka_raft_elections_started_total``), in the 5 s
after, in the next 10 s, how many partitions changed (leader, term) in those 10 s and
the leadership transfers (preferred-leader hand-backs) among them; then the ticker's
late-tick warnings from the node logs. Run it from two checkouts to compare (the load of
the machine counts: alternate the runs). Not part of ``make test``; quoted in
BENCHMARKS.md.
"""
import sys, time, tempfile, shutil, threading, urllib.request, json
from pathlib import Path
repo = str(Path(__file__).resolve().parents[1])
from tests.harness import Cluster
from raftka.client import Admin, Producer, RaftkaError
count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000

def elections(c, metric="raftka_raft_elections_started_total"):
    total = 0
    for nid in c.procs:
        try:
            text = urllib.request.urlopen(f"http://{c.metrics[nid]}/metrics", timeout=10).read().decode()
        except Exception:
            continue
        for line in text.splitlines():
            if line.startswith(metric):
                total += float(line.split()[-1])
    return int(total)

root = Path(tempfile.mkdtemp(prefix="lat2churn-"))
c = Cluster(root, 3, metrics=True)
c.start_all()
stop = threading.Event()
try:
    boot = ",".join(c.peers.values())
    c.create_topic("load", 1); c.wait_leader("load", 0)
    sent = [0]
    def load():
        with Producer(boot, linger_ms=5) as p:
            vals = [b"x" * 100] * 1000
            while not stop.is_set():
                try:
                    p.send_many("load", vals, partition=0); sent[0] += 1000
                    if sent[0] % 50000 == 0:
                        p.flush(30)
                except Exception:
                    time.sleep(0.1)
    th = threading.Thread(target=load, daemon=True); th.start()
    time.sleep(3)
    e0 = elections(c)
    t0 = time.monotonic()
    leaderless = count
    with Admin(boot, request_timeout_ms=20000) as admin:
        admin.create_topic("idle", partitions=count, replication_factor=3, timeout=300)
        while time.monotonic() - t0 < 180:
            try:
                st = admin.cluster_status(timeout=20)
            except RaftkaError:
                continue
            leaderless = sum(1 for tp in st.leaderless if tp.topic == "idle")
            if st.partition_count < count:
                leaderless = max(leaderless, count - st.partition_count)
            if not leaderless:
                break
            time.sleep(1.0)
    settle_s = time.monotonic() - t0
    e1 = elections(c)
    def terms():
        try:
            with Admin(boot, request_timeout_ms=20000) as admin:
                [d] = admin.describe_topics(["idle"], timeout=20)
            return {p.partition: (p.leader_id, p.leader_term) for p in d.partitions}
        except Exception:
            return {}
    time.sleep(5)
    e1b = elections(c)
    x1 = elections(c, "raftka_raft_leadership_transfers_total")
    t1 = terms()
    time.sleep(10)
    t2 = terms()
    e2 = elections(c)
    x2 = elections(c, "raftka_raft_leadership_transfers_total")
    changed = sum(1 for p, lt in t2.items() if t1.get(p) != lt) if t1 and t2 else None
    stop.set(); th.join(10)
    print(json.dumps({"repo": repo, "partitions": count, "all_leaders_s": round(settle_s, 1),
                      "leaderless_left": leaderless, "elections_during_create": e1 - e0,
                      "elections_in_5s_after": e1b - e1, "elections_in_next_10s": e2 - e1b, "leader_changes_in_those_10s": changed, "transfers_in_those_10s": x2 - x1, "load_records": sent[0]}), flush=True)
finally:
    stop.set()
    import subprocess; print(subprocess.run(f"grep -h \"raft ticker\" {root}/node-*.log | tail -12", shell=True, capture_output=True, text=True).stdout)
    c.stop_all(); shutil.rmtree(root, ignore_errors=True)
