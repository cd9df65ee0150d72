"""Share groups as a work queue, side by side with NATS JetStream (issue 14): members of
one group accept records one by one, in batches; accepted records per second.

    .venv/bin/python -m bench.share_groups [--records 300000] [--members 3] [--partitions 6]
        [--only raftka|nats] [--repeat N] [--profile DIR]

**Raftka**: a 3-node cluster (tests/harness.py), a ``--partitions`` topic, a backlog of
``--records`` 100-byte records produced first. ``--members`` processes, each a
``ShareConsumer`` (``auto_accept=False``; the group's in-flight cap 10,000 records per
partition, so every member's poll finds room): poll (up to 1,000 records per partition),
``accept`` every record, then ``poll`` again, which sends the acceptances (as offset ranges,
one ShareAcknowledge per partition, replicated by Raft) before acquiring more. Done when
the group's state says every partition is finished (start offset at the high watermark:
every acceptance was applied). The rate is records / that time from the members' start.

**NATS JetStream** (the peer: the ``nats-server`` binary from the ``bench`` extra; RabbitMQ
quorum queues would need Erlang and the server from apt): 3 servers, an R3 file stream with
WorkQueue retention and ``sync_interval: always`` (fsync before ack, as Raftka), the same
backlog published first. ``--members`` workers (one connection each, the Go client
bench/natsload, NATS's fastest) share one durable pull consumer with AckExplicit, fetch
batches of 1,000 and ``Ack`` every message on its own; done when the stream is empty
(every ack applied). One stream, not 6: a work queue in JetStream is one stream that any
number of workers pull from.

``--profile DIR``: py-spy records the partition leaders' nodes and one member during the
Raftka run and prints the top functions (bench/profile.py's reader).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import value_of

GROUP = "bench-share"
MAX_RECORDS = 1000  # per partition per poll
# records in flight per partition (the group's cap; 2,000 by default): room for every
# member's poll, as NATS's consumer gets MaxAckPending of 1M
IN_FLIGHT = 10_000


def _member(bootstrap: str, topic: str, ready, go, out) -> None:
    from raftka.client import ShareConsumer
    count = 0
    with ShareConsumer(bootstrap, GROUP, [topic], auto_accept=False, max_records=MAX_RECORDS,
                       max_in_flight_records=IN_FLIGHT) as consumer:
        ready.put(1)
        go.wait()
        idle = time.monotonic()
        while time.monotonic() - idle < 2.0:
            records = consumer.poll(0.2)
            if records:
                for r in records:
                    consumer.accept(r)
                count += len(records)
                idle = time.monotonic()
        consumer.flush()
    out.put(count)


def _finished(bootstrap: str, topic: str, total: int) -> bool:
    from raftka.client import describe_share_group
    d = describe_share_group(bootstrap, GROUP)
    states = [s for s in d.partitions if s.topic == topic]
    return sum(s.start_offset for s in states) >= total and not any(
        s.acquired or s.available for s in states)


def run_raftka(args, root: Path) -> dict:
    from raftka.client import Producer
    from tests.harness import Cluster
    root.mkdir(parents=True)
    cluster = Cluster(root, 3)
    try:
        cluster.start_all()
        topic = "share-bench"
        cluster.create_topic(topic, partitions=args.partitions)
        bootstrap = ",".join(cluster.peers[i] for i in sorted(cluster.peers))
        payload = value_of(100)
        with Producer(bootstrap, linger_ms=5) as producer:
            futures = [producer.send(topic, payload, partition=i % args.partitions)
                       for i in range(args.records)]
            for f in futures:
                f.result(timeout=120)
        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_member, args=(bootstrap, topic, ready, go, out))
                 for _ in range(args.members)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        spies = []
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            from bench.profile import record
            targets = {f"node{n}": p.pid for n, p in cluster.procs.items()}
            targets["member"] = procs[0].pid
            spies = [(name, args.profile / f"{name}.txt",
                      record(pid, args.profile_seconds, args.profile / f"{name}.txt"))
                     for name, pid in targets.items()]
        started = time.monotonic()
        go.set()
        while not _finished(bootstrap, topic, args.records):
            if time.monotonic() - started > 600:
                raise TimeoutError("the share group did not finish in 600 s")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        counts = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        for name, path, spy in spies:
            spy.wait()
            _print_profile(name, path)
        return {"system": "raftka", "records": args.records, "accepted": sum(counts),
                "per_member": counts, "seconds": round(elapsed, 3),
                "rate": round(args.records / elapsed)}
    finally:
        cluster.stop_all()


def _print_profile(name: str, path: Path, top: int = 25) -> None:
    from collections import Counter
    if not path.exists():
        print(f"  profile {name}: none")
        return
    self_, total, samples = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        n = int(n)
        samples += n
        self_[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    print(f"  profile {name}: {samples} samples; self (top {top}):")
    for f, n in self_.most_common(top):
        print(f"    {100 * n / samples:5.1f}%  {f[:150]}")
    print(f"  profile {name}: inclusive (top {top}):")
    for f, n in total.most_common(top):
        print(f"    {100 * n / samples:5.1f}%  {f[:150]}")


def run_nats(args, root: Path) -> dict:
    import nats
    from nats.js import api

    from bench._nats import NatsCluster, build_natsload, server_version
    natsload = build_natsload(root)
    cluster = NatsCluster(root / "nats")
    (root / "nats").mkdir()
    cluster.start_all()
    try:
        async def make_stream() -> None:
            nc = await nats.connect(cluster.urls)
            js = nc.jetstream(timeout=10)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await js.add_stream(api.StreamConfig(
                        name="work", subjects=["work.q"], storage=api.StorageType.FILE,
                        num_replicas=3, retention=api.RetentionPolicy.WORK_QUEUE))
                    break
                except Exception:  # noqa: BLE001 - meta group not ready yet
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            await nc.close()

        asyncio.run(make_stream())
        url = ",".join(cluster.urls)
        common = [str(natsload), "-url", url, "-subjects", "work.q", "-size", "100"]
        subprocess.run([*common, "-mode", "pub", "-count", str(args.records)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        done = subprocess.run([*common, "-mode", "work", "-stream", "work", "-count",
                               str(args.records), "-batch", "1000", "-workers",
                               str(args.members)], check=True, capture_output=True, text=True,
                              timeout=600)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {"system": f"nats jetstream {server_version()}", "records": args.records,
                "accepted": result["count"], "seconds": round(result["seconds"], 3),
                "rate": round(result["rate"])}
    finally:
        cluster.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--only", choices=("raftka", "nats"))
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each system, alternated; medians are compared")
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    args = parser.parse_args()
    rates: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="raftka-share-bench-") as root:
            for system, run in (("raftka", run_raftka), ("nats", run_nats)):
                if args.only not in (None, system):
                    continue
                result = run(args, Path(root) / system if system == "raftka" else Path(root))
                print(json.dumps({"run": i + 1, **result}), flush=True)
                rates.setdefault(system, []).append(result["rate"])
                names[system] = result["system"]
                args.profile = None  # the first Raftka run only
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    print(f"members={args.members} partitions={args.partitions} records={args.records} "
          f"100-byte, accept per record, load average {load}: "
          + ", ".join(f"{names[k]} median {median[k]:,}/s of {sorted(v)}"
                      for k, v in rates.items())
          + (f"; raftka/nats {median['raftka'] / max(median['nats'], 1):.2f}x"
             if len(median) == 2 else ""))


if __name__ == "__main__":
    sys.exit(main())
