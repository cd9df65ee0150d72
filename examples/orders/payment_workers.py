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

Orders not paid in time are cancelled: ``order_service.py`` schedules a delayed "cancel if
unpaid" message per order on ``order-timeouts`` (``--cancel-after``); the ``--cancellers``
threads here read it in the share group ``order-cancellers`` once it is due and cancel the
order unless it was paid meanwhile. A cancelled order is never charged afterwards.

The ledger (``payment-workers.ledger``) is this example's payments database, one line per
event, ``<event> <worker> <order_id> <n>``:

    paid <worker> <order_id> <delivery_count>      charged
    failed <worker> <order_id> <delivery_count>    card declined (released, retried)
    skipped <worker> <order_id> <delivery_count>   not charged: cancelled (or paid) before
    cancelled <canceller> <order_id> <late_ms>     unpaid when its cancel message came
    kept <canceller> <order_id> <late_ms>          already paid when its cancel message came

``late_ms`` is how long after its scheduled time the cancel message was handled. Deciding
and appending happen under an exclusive lock of the file (any number of processes), so an
order is never both paid and cancelled.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raftka import Admin, ShareConsumer

from common import TIMEOUTS_TOPIC, TOPIC, bootstrap_from_env, ensure_topic, say

GROUP = "payment-workers"
CANCELLERS = "order-cancellers"


class PaymentDeclined(Exception):
    """The card was declined: retrying will not help (a poison order)."""


def charge(order: dict[str, Any]) -> str:
    if order.get("card") == "declined":
        raise PaymentDeclined(f"card declined for {order['order_id']}")
    cents = order["amount_cents"]
    return f"charged {cents // 100}.{cents % 100:02d} EUR for {order['order_id']}"


class Ledger:
    """The payments database: an append-only file shared by every worker process. Each
    decision reads the state under an exclusive ``flock`` (and a thread lock: one process's
    threads share its file description), then appends its event, so a payment and a
    cancellation of one order exclude each other."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._mutex = threading.Lock()
        self._read = 0  # bytes of the file already parsed into _state
        self._state: dict[str, str] = {}  # order id -> "paid" | "cancelled"

    @contextmanager
    def locked(self) -> Iterator[Ledger]:
        with self._mutex:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._catch_up()
                yield self
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        """Parse what other processes appended since the last look."""
        end = os.fstat(self._fd).st_size
        data = os.pread(self._fd, end - self._read, self._read)
        data = data[:data.rfind(b"\n") + 1]  # whole lines only
        self._read += len(data)
        for line in data.decode().splitlines():
            event, _, order_id, _ = line.split()
            if event in ("paid", "cancelled"):
                self._state[order_id] = event

    def state(self, order_id: str) -> str | None:
        """"paid", "cancelled" or None; only inside ``locked()``."""
        return self._state.get(order_id)

    def append(self, event: str, who: str, order_id: str, number: int) -> None:
        """Only inside ``locked()``."""
        os.write(self._fd, f"{event} {who} {order_id} {number}\n".encode())
        if event in ("paid", "cancelled"):
            self._state[order_id] = event

    def close(self) -> None:
        os.close(self._fd)


def worker(name: str, args: argparse.Namespace, stop: threading.Event, ledger: Ledger) -> None:
    with ShareConsumer(bootstrap_from_env(), args.group, [TOPIC], auto_accept=False,
                       client_id=name, max_delivery_attempts=args.max_attempts,
                       redelivery_backoff_initial_ms=args.backoff_ms,
                       max_records=args.max_records) as consumer:
        say(f"{name}: joined share group {args.group!r}")
        while not stop.is_set():
            for record in consumer.poll(0.5):
                order = json.loads(record.value or b"{}")
                order_id, count = order["order_id"], record.delivery_count
                time.sleep(args.work_ms / 1000)  # the "work"
                with ledger.locked():
                    state = ledger.state(order_id)
                    if state is not None:
                        # cancelled (never charge it now), or paid by a worker that died
                        # before its accept reached the broker (never charge twice)
                        ledger.append("skipped", name, order_id, count)
                        done = error = f"not charging {order_id}: {state}"
                    else:
                        try:
                            done, error = charge(order), None
                            ledger.append("paid", name, order_id, count)
                        except PaymentDeclined as exc:
                            error = str(exc)
                            ledger.append("failed", name, order_id, count)
                if error is not None and state is None:
                    # released: delivered again (maybe to another worker) until the group's
                    # max_delivery_attempts, then dead-lettered with this error text
                    consumer.release(record, error=error)
                    say(f"{name}: {error} (delivery {count})")
                    continue
                consumer.accept(record)
                say(f"{name}: {done} ({record.topic}/{record.partition}@{record.offset}, "
                    f"delivery {count})")
    say(f"{name}: left share group {args.group!r}")


def canceller(name: str, args: argparse.Namespace, stop: threading.Event,
              ledger: Ledger) -> None:
    """Handle the delayed "cancel if unpaid" messages (``order_service.py`` schedules one
    per order): the broker delivers each once its time has come, never earlier."""
    with ShareConsumer(bootstrap_from_env(), CANCELLERS, [TIMEOUTS_TOPIC],
                       auto_accept=False, client_id=name) as consumer:
        say(f"{name}: joined share group {CANCELLERS!r}")
        while not stop.is_set():
            for record in consumer.poll(0.5):
                message = json.loads(record.value or b"{}")
                order_id = message["order_id"]
                late_ms = int(time.time() * 1000) - message["cancel_at_ms"]
                with ledger.locked():
                    state = ledger.state(order_id)
                    if state is None:
                        ledger.append("cancelled", name, order_id, late_ms)
                    elif state == "paid":
                        ledger.append("kept", name, order_id, late_ms)
                    # "cancelled": a redelivery (we died before accepting): done already
                consumer.accept(record)
                say(f"{name}: {'cancelled unpaid' if state is None else 'kept ' + state} "
                    f"order {order_id} ({late_ms} ms after its cancel time)")
    say(f"{name}: left share group {CANCELLERS!r}")


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
    parser.add_argument("--cancellers", type=int, default=1,
                        help=f"threads cancelling unpaid orders (share group {CANCELLERS}, "
                             f"topic {TIMEOUTS_TOPIC}; default 1, 0 = none)")
    parser.add_argument("--partitions", type=int, default=4,
                        help=f"partitions of {TIMEOUTS_TOPIC} if it has to be created "
                             "(default 4)")
    parser.add_argument("--ledger", type=Path, default=Path(f"{GROUP}.ledger"),
                        help=f"event log to append to (default ./{GROUP}.ledger)")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.cancellers:
        with Admin(bootstrap_from_env()) as admin:
            ensure_topic(admin, TIMEOUTS_TOPIC, args.partitions)
    ledger = Ledger(args.ledger)
    threads = [threading.Thread(target=worker, args=(f"{args.name}-{i}", args, stop, ledger))
               for i in range(1, args.workers + 1)]
    threads += [threading.Thread(target=canceller,
                                 args=(f"{args.name}-cancel-{i}", args, stop, ledger))
                for i in range(1, args.cancellers + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
