"""Share groups: members of one share group on one topic accept records in batches;
accepted records per second (issue 14's workload: 3 members, a 6-partition topic,
100-byte records). Not yet side by side with another system.

    .venv/bin/python -m bench.share_groups [--records 60000] [--members 3] [--partitions 6]

Each member is its own process (ShareConsumer, auto_accept=False, accept_all after each
poll, acknowledgements sent at the next poll). The backlog is produced first; the rate is
records / (time the last acceptance was acknowledged - time the members started).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from bench._common import PAYLOAD_100


def _member(bootstrap: str, topic: str, total: int, started: float, out) -> None:
    from raftka.client import ShareConsumer
    count, last = 0, started
    with ShareConsumer(bootstrap, "bench-share", [topic], auto_accept=False,
                       max_records=500) as consumer:
        idle = time.monotonic()
        while time.monotonic() - idle < 3.0:
            records = consumer.poll(0.5)
            if records:
                consumer.accept_all()
                consumer.flush()
                count += len(records)
                last = time.time()
                idle = time.monotonic()
    out.put((count, last))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    from raftka.client import Producer
    from tests.harness import Cluster
    with tempfile.TemporaryDirectory(prefix="raftka-share-bench-") as root:
        cluster = Cluster(Path(root), 3)
        try:
            cluster.start_all()
            topic = "share-bench"
            cluster.create_topic(topic, partitions=args.partitions)
            bootstrap = ",".join(cluster.peers[i] for i in sorted(cluster.peers))
            with Producer(bootstrap) as producer:
                futures = [producer.send(topic, PAYLOAD_100) for _ in range(args.records)]
                for f in futures:
                    f.result(timeout=60)
            out = mp.Queue()
            started = time.time()
            procs = [mp.Process(target=_member, args=(bootstrap, topic, args.records, started,
                                                      out)) for _ in range(args.members)]
            for p in procs:
                p.start()
            results = [out.get(timeout=600) for _ in procs]
            for p in procs:
                p.join(30)
            accepted = sum(c for c, _ in results)
            elapsed = max(t for _, t in results) - started
            print(f"members={args.members} partitions={args.partitions} "
                  f"records={args.records} accepted={accepted} elapsed={elapsed:.2f}s "
                  f"rate={accepted / elapsed:,.0f} records/s "
                  f"per-member={[c for c, _ in results]}")
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
