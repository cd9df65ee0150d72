"""The order service: writes new orders to the ``orders`` topic, keyed by order id.

Keying by order id sends every event of an order to the same partition (in order). The
producer is idempotent: a retry after a lost acknowledgement never writes an order twice.
For each order it also schedules a "cancel if unpaid" message on ``order-timeouts``,
delivered ``--cancel-after`` seconds later (delayed delivery; ``payment_workers.py`` acts
on it).

    python examples/orders/order_service.py --count 100 --rate 20
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import Future

from raftka import Admin, Producer

from common import TIMEOUTS_TOPIC, TOPIC, bootstrap_from_env, ensure_topic, say

SKUS = ["sku-apple", "sku-pear", "sku-plum", "sku-fig", "sku-kiwi"]


def schedule_cancel_if_unpaid(producer: Producer, order: dict, after_s: float) -> Future:
    """Send a "cancel unpaid order" message for ``order`` to ``order-timeouts``, delivered
    ``after_s`` seconds from now: the broker stores it at once (durable when acknowledged)
    but no consumer sees it before then. The canceller in ``payment_workers.py`` then
    cancels the order unless it was paid meanwhile. The message carries its delivery time
    (epoch ms), so the canceller can tell how late it came. Returns the send's future."""
    cancel_at_ms = int((time.time() + after_s) * 1000)
    message = {"order_id": order["order_id"], "cancel_at_ms": cancel_at_ms}
    # keyed by order id: the same partition for every message of one order
    return producer.send(TIMEOUTS_TOPIC, json.dumps(message).encode(),
                         key=order["order_id"].encode(), deliver_at=cancel_at_ms)


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
    parser.add_argument("--cancel-after", type=float, default=900, metavar="SECONDS",
                        help="cancel an order not paid this many seconds after it was "
                             "placed: a delayed message on order-timeouts (default 900; "
                             "0 = never)")
    args = parser.parse_args()
    if args.cancel_after < 0:
        parser.error("--cancel-after must be 0 (never) or a number of seconds")
    bootstrap = bootstrap_from_env()
    with Admin(bootstrap) as admin:
        for topic in (TOPIC, TIMEOUTS_TOPIC):
            if ensure_topic(admin, topic, args.partitions):
                say(f"created topic {topic!r} with {args.partitions} partitions")
    rng = random.Random(args.first)
    scheduled: list[Future] = []
    with Producer(bootstrap, acks="all", enable_idempotence=True) as producer:
        for number in range(args.first, args.first + args.count):
            order_id = f"order-{number:06d}"
            order = {"order_id": order_id, "sku": rng.choice(SKUS),
                     "quantity": rng.randint(1, 5), "amount_cents": rng.randint(100, 20_000)}
            if number in args.poison:
                order["card"] = "declined"
            partition, offset = producer.send(TOPIC, json.dumps(order).encode(),
                                              key=order_id.encode()).result(timeout=60)
            cancel = ""
            if args.cancel_after > 0:
                scheduled.append(schedule_cancel_if_unpaid(producer, order, args.cancel_after))
                cancel = f", cancelled if unpaid in {args.cancel_after:g} s"
            say(f"placed {order_id}: {order['quantity']} x {order['sku']} "
                f"({TOPIC}/{partition}@{offset}{cancel})")
            if args.rate > 0:
                time.sleep(1 / args.rate)
        for future in scheduled:
            future.result(timeout=60)  # raises if a cancel message was not stored
    say(f"placed {args.count} orders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
