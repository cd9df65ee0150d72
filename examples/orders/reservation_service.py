"""The reservation service, exactly once: reads orders (group ``reservations``,
read_committed) and writes one reservation event per order to the ``reservations`` topic in
a transaction that also commits the offsets it consumed. Kill it (even ``kill -9``) at
any point and start it again: a read_committed reader of ``reservations`` sees every
order's reservation exactly once, never a duplicate, never a gap.

    python examples/orders/reservation_service.py --instance reservations-1
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from raftka import Admin, Consumer, Producer, RaftkaError, TopicExistsError

from common import TOPIC, bootstrap_from_env, say

OUTPUT = "reservations"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instance", default="reservations-1",
                        help="this instance's name; its transactional id is derived from it, "
                             "so a restarted instance fences its previous incarnation")
    parser.add_argument("--group", default="reservations")
    parser.add_argument("--work-ms", type=int, default=50, help="simulated work per order")
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    args = parser.parse_args()
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    bootstrap = bootstrap_from_env()
    with Admin(bootstrap) as admin:
        try:
            admin.create_topic(OUTPUT, partitions=4, replication_factor=3)
        except TopicExistsError:
            pass
        admin.wait_for_topic_ready(OUTPUT, timeout=30)
    with Producer(bootstrap, transactional_id=f"reservation-service-{args.instance}") as producer:
        producer.init_transactions()  # aborts what a killed predecessor left open
        while not stopping:
            # (re)join: a failed transaction is aborted and the group's committed offsets,
            # which only committed transactions moved, are where we go on from
            with Consumer(bootstrap, args.group, [TOPIC], auto_offset_reset="earliest",
                          enable_auto_commit=False, isolation_level="read_committed",
                          session_timeout_ms=args.session_timeout_ms,
                          client_id=args.instance) as consumer:
                while not stopping:
                    records = consumer.poll(0.5)
                    if not records:
                        continue
                    producer.begin_transaction()
                    say(f"{args.instance}: transaction of {len(records)} orders begun")
                    ends: dict[tuple[str, int], int] = {}
                    try:
                        for r in records:
                            order = json.loads(r.value or b"{}")
                            time.sleep(args.work_ms / 1000)  # the "work"
                            event = {"order_id": order["order_id"], "sku": order["sku"],
                                     "quantity": order["quantity"],
                                     "source": f"{r.partition}@{r.offset}"}
                            producer.send(OUTPUT, json.dumps(event).encode(),
                                          key=order["order_id"].encode())
                            ends[(r.topic, r.partition)] = r.offset + 1
                        producer.send_offsets_to_transaction(ends, consumer.group_metadata())
                        producer.commit_transaction()
                    except RaftkaError as e:  # e.g. our partitions moved: redo from commits
                        say(f"{args.instance}: transaction aborted ({e}); rejoining")
                        producer.abort_transaction()
                        break
                    say(f"{args.instance}: reserved {len(records)} orders up to "
                        + ", ".join(f"{t}/{p}@{o}" for (t, p), o in sorted(ends.items())))
    say(f"{args.instance}: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
