"""The order service: writes new orders to the ``orders`` topic, keyed by order id.

Keying by order id sends every event of an order to the same partition (in order). The
producer is idempotent: a retry after a lost acknowledgement never writes an order twice.

    python examples/orders/order_service.py --count 100 --rate 20
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from raftka import Admin, Producer, TopicExistsError

from common import TOPIC, bootstrap_from_env, say

SKUS = ["sku-apple", "sku-pear", "sku-plum", "sku-fig", "sku-kiwi"]


def schedule_cancel_if_unpaid(producer: Producer, order: dict) -> None:
    """HOOK (issue 14, delayed delivery): once producers can set a delivery time
    (``Producer.send(..., deliver_at=...)``, being built on the ``delay`` branch), send a
    "cancel unpaid order" message for ``order`` to an ``order-timeouts`` topic, delivered
    e.g. 15 minutes from now; a canceller (a share group) then cancels the order unless
    ``payment-workers.ledger`` says it was paid. Until then: nothing is scheduled."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="orders to place (default 100)")
    parser.add_argument("--first", type=int, default=1, help="first order number (default 1)")
    parser.add_argument("--rate", type=float, default=20,
                        help="orders per second; 0 = as fast as possible (default 20)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of the topic if it has to be created (default 4)")
    parser.add_argument("--poison", type=int, action="append", default=[], metavar="NUMBER",
                        help="place order NUMBER with a card that is always declined (a "
                             "poison order for payment_workers.py; repeatable)")
    args = parser.parse_args()
    bootstrap = bootstrap_from_env()
    with Admin(bootstrap) as admin:
        try:
            admin.create_topic(TOPIC, partitions=args.partitions, replication_factor=3)
            say(f"created topic {TOPIC!r} with {args.partitions} partitions")
        except TopicExistsError:
            pass
        admin.wait_for_topic_ready(TOPIC, timeout=30)
    rng = random.Random(args.first)
    with Producer(bootstrap, acks="all", enable_idempotence=True) as producer:
        for number in range(args.first, args.first + args.count):
            order_id = f"order-{number:06d}"
            order = {"order_id": order_id, "sku": rng.choice(SKUS),
                     "quantity": rng.randint(1, 5), "amount_cents": rng.randint(100, 20_000)}
            if number in args.poison:
                order["card"] = "declined"
            partition, offset = producer.send(TOPIC, json.dumps(order).encode(),
                                              key=order_id.encode()).result(timeout=60)
            schedule_cancel_if_unpaid(producer, order)
            say(f"placed {order_id}: {order['quantity']} x {order['sku']} "
                f"({TOPIC}/{partition}@{offset})")
            if args.rate > 0:
                time.sleep(1 / args.rate)
    say(f"placed {args.count} orders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
