"""Shared by the order-processing example's services: settings, the ledger, the consumer loop.

The ledger is how you (and the integration test) can check the delivery guarantee. Every
instance of a service appends to the same file, one line per event, in the order they
happen (O_APPEND writes of one short line are atomic on a local filesystem)::

    processed <instance> <partition> <offset> <order_id>   after handling a record
    committed <instance> <partition> <next_offset>        after the group commit succeeded

Kafka's at-least-once rule, which `check_ledger.py` verifies: an order may be processed
again only if it was not yet committed when the instance that processed it died. So once
a ``committed p n`` line is written, no later ``processed p o`` with ``o < n`` may appear.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftka import DEFAULT_BOOTSTRAP, Admin, CommitFailedError, Consumer, TopicExistsError

TOPIC = "orders"
TIMEOUTS_TOPIC = "order-timeouts"  # delayed "cancel if unpaid" messages
BOOTSTRAP_ENV = "RAFTKA_BOOTSTRAP"


def bootstrap_from_env() -> str:
    return os.environ.get(BOOTSTRAP_ENV, "").strip() or DEFAULT_BOOTSTRAP


def say(text: str) -> None:
    print(text, flush=True)


def ensure_topic(admin: Admin, topic: str, partitions: int) -> bool:
    """Create ``topic`` (replication factor 3) unless it exists; wait until it is ready.
    True if this call created it."""
    try:
        admin.create_topic(topic, partitions=partitions, replication_factor=3)
        created = True
    except TopicExistsError:
        created = False
    admin.wait_for_topic_ready(topic, timeout=30)
    return created


class Ledger:
    """Append-only event log of one service (shared by its instances)."""

    def __init__(self, path: Path, instance: str) -> None:
        self.instance = instance
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode())

    def processed(self, partition: int, offset: int, order_id: str) -> None:
        self._write(f"processed {self.instance} {partition} {offset} {order_id}")

    def committed(self, partition: int, next_offset: int) -> None:
        self._write(f"committed {self.instance} {partition} {next_offset}")

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class LedgerReport:
    processed: dict[str, int]  # order id -> how many times it was processed
    by_instance: dict[str, set[int]]  # instance -> partitions it processed
    violations: list[str]  # committed orders processed again

    def missing(self, order_ids: list[str]) -> list[str]:
        return [o for o in order_ids if o not in self.processed]


def check_ledger(path: Path) -> LedgerReport:
    """Read a ledger and check the rule in the module docstring."""
    committed: dict[int, tuple[int, str]] = {}  # partition -> (next offset, by instance)
    processed: dict[str, int] = {}
    by_instance: dict[str, set[int]] = {}
    violations: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "processed":
            instance, partition, offset, order_id = fields[1], int(fields[2]), int(fields[3]), \
                fields[4]
            processed[order_id] = processed.get(order_id, 0) + 1
            by_instance.setdefault(instance, set()).add(partition)
            done = committed.get(partition)
            if done is not None and offset < done[0]:
                violations.append(
                    f"line {number}: {instance} processed {order_id} (partition {partition} "
                    f"offset {offset}) after {done[1]} had committed up to {done[0]}")
        elif fields[0] == "committed":
            instance, partition, next_offset = fields[1], int(fields[2]), int(fields[3])
            if next_offset > committed.get(partition, (-1, ""))[0]:
                committed[partition] = (next_offset, instance)
    return LedgerReport(processed, by_instance, violations)


def service_args(service: str, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"{service}_service.py", description=description)
    parser.add_argument("--instance", default=f"{service}-{os.getpid()}",
                        help="this instance's name in output and ledger (default: "
                             f"{service}-PID)")
    parser.add_argument("--group", default=service,
                        help=f"consumer group (default: {service})")
    parser.add_argument("--ledger", type=Path, default=Path(f"{service}.ledger"),
                        help=f"event log to append to (default: ./{service}.ledger)")
    parser.add_argument("--work-ms", type=int, default=50,
                        help="simulated processing time per order (default 50)")
    parser.add_argument("--session-timeout-ms", type=int, default=10_000,
                        help="how long a crashed instance keeps its partitions (default 10000)")
    return parser.parse_args()


def run_service(service: str, args: argparse.Namespace,
                handle: Callable[[dict[str, Any], str], str]) -> int:
    """Consume ``orders`` in the service's group until SIGINT/SIGTERM; for each poll:
    handle every record, then commit. ``handle(order, instance)`` returns what to print."""
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ledger = Ledger(args.ledger, args.instance)
    bootstrap = bootstrap_from_env()
    say(f"{args.instance}: joining group {args.group!r} on {bootstrap}")
    owned: set[int] = set()
    with Consumer(bootstrap, args.group, [TOPIC], auto_offset_reset="earliest",
                  enable_auto_commit=False, session_timeout_ms=args.session_timeout_ms,
                  client_id=args.instance) as consumer:
        while not stopping:
            records = consumer.poll(0.5)
            now_owned = {tp.partition for tp in consumer.assignment()}
            if now_owned != owned:
                owned = now_owned
                say(f"{args.instance}: now owns partitions {sorted(owned) or 'none'}")
            if not records:
                continue
            ends: dict[tuple[str, int], int] = {}
            for r in records:
                order = json.loads(r.value or b"{}")
                time.sleep(args.work_ms / 1000)  # the "work"
                say(f"{args.instance}: {handle(order, args.instance)} "
                    f"({r.topic}/{r.partition}@{r.offset})")
                ledger.processed(r.partition, r.offset, order["order_id"])
                ends[(r.topic, r.partition)] = r.offset + 1
            try:
                consumer.commit(ends)
            except CommitFailedError as e:
                # The partitions moved to another instance before we committed: it will
                # process these orders again (at-least-once), which is allowed.
                say(f"{args.instance}: commit refused ({e}); another instance redoes them")
                continue
            for (_, partition), next_offset in sorted(ends.items()):
                ledger.committed(partition, next_offset)
    ledger.close()
    say(f"{args.instance}: left group {args.group!r}")
    return 0


if __name__ == "__main__":
    sys.exit("run order_service.py, inventory_service.py or payment_service.py")
