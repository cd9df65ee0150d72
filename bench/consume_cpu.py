"""Client CPU per record reading a backlog. ``python -m bench.consume_cpu [repeats]
[variants]`` (variants, comma-separated: per_record, batches, group, per_record_old,
group_old; default all).

A fresh 3-node cluster (tests/harness.py); a ``Producer`` fills one partition with
1,000,000 records of 100 B (1,000 distinct JSON-like values, as w4 does); then each
variant reads it all from "earliest" with 4 MiB fetches, ``repeats`` times, alternated.
Printed per variant: records/s (wall; meaningless on a loaded machine) and the reading
process's CPU time per record (``time.process_time()``: every thread of the client,
gRPC's included), which depends far less on other load. ``*_old`` run the same reader
with the compiled decoder switched off (the fallback, aiokafka's reader: what every
reader used before ``raftka.v1._records``). Not part of ``make test``; quoted in
BENCHMARKS.md.
"""
import sys, time, tempfile, statistics, shutil
from pathlib import Path
from tests.harness import Cluster
from bench._common import value_of
from raftka.client import Producer, PartitionReader, Admin
N = 1_000_000
root = Path(tempfile.mkdtemp(prefix="lat2c-"))
c = Cluster(root, 3); c.start_all()
try:
    boot = ",".join(c.peers.values())
    c.create_topic("t", 1)
    c.wait_leader("t", 0)
    vals = [value_of(100, i) for i in range(1000)]
    with Producer(boot, linger_ms=5, batch_size=1024000) as p:
        for _ in range(N // 1000):
            p.send_many("t", vals, partition=0)
        p.flush(60)
    time.sleep(3)
    def per_record():
        got = 0
        with PartitionReader(boot, "t", 0, "earliest", max_bytes=4 << 20) as r:
            t = time.perf_counter()
            while got < N:
                got += len(r.poll(1.0))
            return got / (time.perf_counter() - t)
    def batches():
        got = 0
        with PartitionReader(boot, "t", 0, "earliest", max_bytes=4 << 20) as r:
            if not hasattr(r, "poll_batches"):
                return 0
            t = time.perf_counter()
            while got < N:
                for b in r.poll_batches(1.0):
                    got += len(b)
            return got / (time.perf_counter() - t)
    def group():
        from raftka.client import Consumer
        got = 0
        t = time.perf_counter()
        cons = Consumer(boot, f"g{time.time()}", ["t"], auto_offset_reset="earliest", max_poll_records=1000, fetch_max_bytes=4 << 20)
        try:
            while got < N:
                got += len(cons.poll(1.0))
        finally:
            cons.close()
        return got / (time.perf_counter() - t)
    import raftka.v1.recordbatch as rb
    compiled = rb._compiled_decode
    def fallback(f):
        def g():
            rb._compiled_decode = None
            try:
                return f()
            finally:
                rb._compiled_decode = compiled
        return g
    def cpu(f):
        def g():
            c0 = time.process_time()
            rate = f()
            return rate, (time.process_time() - c0) / N * 1e6
        return g
    variants = {"per_record": cpu(per_record), "batches": cpu(batches), "group": cpu(group),
                "per_record_old": cpu(fallback(per_record)), "group_old": cpu(fallback(group))}
    sel = sys.argv[2].split(",") if len(sys.argv) > 2 else list(variants)
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    res = {k: [] for k in sel}
    for _ in range(reps):
        for k in sel:
            res[k].append(variants[k]())
    for k, v in res.items():
        rates = [x[0] for x in v]; cpus = [x[1] for x in v]
        print(f"{k}: median {statistics.median(rates):,.0f}/s max {max(rates):,.0f}; client CPU median {statistics.median(cpus):.2f} us/record, min {min(cpus):.2f}; runs {[round(x) for x in rates]}")
finally:
    c.stop_all(); shutil.rmtree(root, ignore_errors=True)
