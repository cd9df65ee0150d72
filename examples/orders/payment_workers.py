"""A pool of payment workers on a share group: every worker reads every partition of
``orders``, each order is handed to one worker at a time and settled on its own.

    python examples/orders/payment_workers.py --workers 4

Unlike ``payment_service.py`` (a consumer group: at most one instance per partition, a
slow order holds up its partition), any number of workers share the partitions here
(share group ``payment-workers``): a slow or crashed worker holds only the orders it has
acquired, which go to another worker when their acquisition lock expires. An order whose
payment fails is released and delivered again (its ``delivery_count`` rises, with the
group's redelivery backoff in between); after ``--max-attempts`` deliveries it lands in the
group's dead-letter topic (``payment-workers.dlq``) instead of being retried forever::

    raftka dlq list payment-workers              # the poison order, its error, its source
    raftka dlq replay payment-workers 0:0        # send it back once the card is fixed

Each payment appends ``paid <worker> <order_id> <delivery_count>`` to the ledger
(``payment-workers.ledger``), each failure ``failed <worker> <order_id> <delivery_count>``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from raftka import ShareConsumer

from common import TOPIC, bootstrap_from_env, say

GROUP = "payment-workers"


class PaymentDeclined(Exception):
    """The card was declined: retrying will not help (a poison order)."""


def charge(order: dict[str, Any]) -> str:
    if order.get("card") == "declined":
        raise PaymentDeclined(f"card declined for {order['order_id']}")
    cents = order["amount_cents"]
    return f"charged {cents // 100}.{cents % 100:02d} EUR for {order['order_id']}"


def worker(name: str, args: argparse.Namespace, stop: threading.Event, ledger: int) -> None:
    with ShareConsumer(bootstrap_from_env(), args.group, [TOPIC], auto_accept=False,
                       client_id=name, max_delivery_attempts=args.max_attempts,
                       redelivery_backoff_initial_ms=args.backoff_ms,
                       max_records=args.max_records) as consumer:
        say(f"{name}: joined share group {args.group!r}")
        while not stop.is_set():
            for record in consumer.poll(0.5):
                order = json.loads(record.value or b"{}")
                time.sleep(args.work_ms / 1000)  # the "work"
                try:
                    done = charge(order)
                except PaymentDeclined as exc:
                    # released: delivered again (maybe to another worker) until the group's
                    # max_delivery_attempts, then dead-lettered with this error text
                    consumer.release(record, error=str(exc))
                    os.write(ledger, f"failed {name} {order['order_id']} "
                                     f"{record.delivery_count}\n".encode())
                    say(f"{name}: {exc} (delivery {record.delivery_count})")
                    continue
                consumer.accept(record)
                os.write(ledger, f"paid {name} {order['order_id']} "
                                 f"{record.delivery_count}\n".encode())
                say(f"{name}: {done} ({record.topic}/{record.partition}@{record.offset}, "
                    f"delivery {record.delivery_count})")
    say(f"{name}: left share group {args.group!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3, help="workers in this process "
                        "(default 3; start more processes for more)")
    parser.add_argument("--name", default=f"payer-{os.getpid()}",
                        help="prefix of the workers' names (default payer-PID)")
    parser.add_argument("--group", default=GROUP, help=f"share group (default {GROUP})")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="deliveries before an order goes to the dead-letter topic "
                             "(default 3; fixed by the group's first member)")
    parser.add_argument("--backoff-ms", type=int, default=500,
                        help="redelivery backoff of the group, doubling per attempt "
                             "(default 500)")
    parser.add_argument("--max-records", type=int, default=10,
                        help="orders a worker acquires per partition and poll (default 10)")
    parser.add_argument("--work-ms", type=int, default=50,
                        help="simulated processing time per order (default 50)")
    parser.add_argument("--ledger", type=Path, default=Path(f"{GROUP}.ledger"),
                        help=f"event log to append to (default ./{GROUP}.ledger)")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ledger = os.open(args.ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    threads = [threading.Thread(target=worker, args=(f"{args.name}-{i}", args, stop, ledger))
               for i in range(1, args.workers + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(ledger)
    return 0


if __name__ == "__main__":
    sys.exit(main())
