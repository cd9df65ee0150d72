"""examples/orders against a real cluster: two inventory instances split the partitions;
killing one (SIGKILL) hands its partitions to the other; every order is processed by the
inventory and the payment service, and no committed order is processed again (the
ledger check in examples/orders/common.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO, Cluster, wait_for

EXAMPLE = REPO / "examples" / "orders"


def _load_common():
    spec = importlib.util.spec_from_file_location("orders_common", EXAMPLE / "common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


common = _load_common()


class Services:
    def __init__(self, cluster: Cluster, tmp: Path) -> None:
        self.env = dict(os.environ, RAFTKA_BOOTSTRAP=",".join(cluster.peers.values()),
                        PYTHONUNBUFFERED="1")
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, script: str, instance: str, *args: str) -> subprocess.Popen:
        out = open(self.tmp / f"{instance}.out", "wb")
        proc = subprocess.Popen([sys.executable, str(EXAMPLE / script), *args], cwd=self.tmp,
                                env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[instance] = proc
        return proc

    def service(self, name: str, instance: str) -> subprocess.Popen:
        return self.start(f"{name}_service.py", instance, "--instance", instance,
                          "--ledger", str(self.tmp / f"{name}.ledger"), "--work-ms", "5",
                          "--session-timeout-ms", "3000")

    def orders(self, first: int, count: int, *extra: str) -> None:
        r = subprocess.run([sys.executable, str(EXAMPLE / "order_service.py"), "--first",
                            str(first), "--count", str(count), "--rate", "0", *extra],
                           cwd=self.tmp, env=self.env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"placed {count} orders" in r.stdout

    def output(self, instance: str) -> str:
        return (self.tmp / f"{instance}.out").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _owned_now(services: Services, instance: str) -> list[int] | None:
    """The partitions an instance owns according to its LATEST "now owns partitions ..."
    line (None before its first): an earlier line says nothing about now."""
    lines = [line for line in services.output(instance).splitlines()
             if "now owns partitions " in line]
    if not lines:
        return None
    owned = lines[-1].split("now owns partitions ", 1)[1].strip()
    return [] if owned == "none" else [int(p) for p in owned.strip("[]").split(",")]


def _report(tmp: Path, name: str):
    path = tmp / f"{name}.ledger"
    return common.check_ledger(path) if path.exists() else None


def _processed_all(tmp: Path, name: str, ids: list[str]) -> bool:
    report = _report(tmp, name)
    return report is not None and not report.missing(ids)


def test_orders_example_survives_killing_an_inventory_instance(cluster: Cluster,
                                                               tmp_path: Path) -> None:
    services = Services(cluster, tmp_path)
    try:
        services.orders(1, 40)  # creates the topic: 4 partitions
        services.service("inventory", "inventory-a")
        services.service("payment", "payment-1")
        wait_for(lambda: _owned_now(services, "inventory-a") == [0, 1, 2, 3],
                 60, "inventory-a to own every partition")
        services.service("inventory", "inventory-b")
        # two instances split the partitions
        wait_for(lambda: _owned_now(services, "inventory-b") not in (None, [], [0, 1, 2, 3]),
                 60, "inventory-b to get a share")
        services.orders(41, 40)
        first = [f"order-{n:06d}" for n in range(1, 81)]
        wait_for(lambda: _processed_all(tmp_path, "inventory", first), 60,
                 "inventory to process the first 80 orders")
        before = _report(tmp_path, "inventory")
        a_parts = before.by_instance.get("inventory-a", set())
        b_parts = before.by_instance.get("inventory-b", set())
        assert b_parts and a_parts, before.by_instance

        # crash one instance: its partitions go to the other after its session timeout
        victim = services.procs["inventory-a"]
        victim.kill()
        victim.wait()
        services.orders(81, 80)
        every = [f"order-{n:06d}" for n in range(1, 161)]
        wait_for(lambda: _processed_all(tmp_path, "inventory", every), 90,
                 "inventory to process every order after the kill")
        wait_for(lambda: _processed_all(tmp_path, "payment", every), 90,
                 "payment to process every order")
        wait_for(lambda: _owned_now(services, "inventory-b") == [0, 1, 2, 3], 30,
                 "inventory-b to own every partition")

        for name in ("inventory", "payment"):
            report = _report(tmp_path, name)
            assert report.violations == [], report.violations  # no committed order redone
            assert not report.missing(every)
        after = _report(tmp_path, "inventory")
        assert after.by_instance["inventory-b"] == {0, 1, 2, 3}

        # the ledger checker script agrees
        r = subprocess.run([sys.executable, str(EXAMPLE / "check_ledger.py"),
                            str(tmp_path / "inventory.ledger"), "--orders", "160"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout

        # graceful stop: the services leave their groups and exit 0
        for instance in ("inventory-b", "payment-1"):
            services.procs[instance].send_signal(signal.SIGTERM)
        for instance in ("inventory-b", "payment-1"):
            assert services.procs[instance].wait(30) == 0, services.output(instance)
    except BaseException:
        for instance in services.procs:
            print(f"==== {instance}\n" + services.output(instance)[-3000:])
        raise
    finally:
        services.stop_all()


def _payments(tmp: Path) -> dict[str, list[tuple[str, int]]]:
    """payment-workers.ledger: order id -> [(event, delivery count or late ms)] in order."""
    path = tmp / "payment-workers.ledger"
    out: dict[str, list[tuple[str, int]]] = {}
    for line in (path.read_text().splitlines() if path.exists() else []):
        event, _, order_id, count = line.split()
        out.setdefault(order_id, []).append((event, int(count)))
    return out


def test_payment_workers_share_orders_and_dead_letter_the_poison_one(cluster: Cluster,
                                                                     tmp_path: Path) -> None:
    """Then the delayed "cancel if unpaid" messages: the poison order is cancelled, the
    paid one kept, neither before its time."""
    from raftka import Admin
    services = Services(cluster, tmp_path)
    try:
        services.orders(1, 30, "--poison", "7")  # order-000007's card is always declined
        for name in ("a", "b"):  # two processes of two workers each: one share group
            services.start("payment_workers.py", f"workers-{name}", "--workers", "2",
                           "--name", name, "--work-ms", "5", "--backoff-ms", "200",
                           "--ledger", str(tmp_path / "payment-workers.ledger"))
        good = [f"order-{n:06d}" for n in range(1, 31) if n != 7]
        wait_for(lambda: all(("paid", 1) in _payments(tmp_path).get(o, []) for o in good)
                 and len(_payments(tmp_path).get("order-000007", [])) == 3, 90,
                 "every good order paid and three failed deliveries of the poison one")
        from raftka import UnknownTopicError

        def dead_letters(admin: Admin) -> list:
            try:
                return admin.list_dead_letters("payment-workers")
            except UnknownTopicError:
                return []  # created with the first dead letter

        with Admin(",".join(cluster.peers.values())) as admin:
            letters = wait_for(lambda: dead_letters(admin), 60,
                               "the poison order in the dead-letter topic")
        assert [(json.loads(x.value)["order_id"], x.source_topic, x.delivery_count, x.reason,
                 x.error) for x in letters] == [
            ("order-000007", "orders", 3, "attempts exhausted",
             "card declined for order-000007")]
        payments = _payments(tmp_path)
        assert payments["order-000007"] == [("failed", 1), ("failed", 2), ("failed", 3)]
        assert all(payments[o] == [("paid", 1)] for o in good)  # each paid once
        # (orders 1-30 got cancel messages due in 15 minutes: none came)

        # delayed delivery: two more orders, cancelled if not paid within 3 s; the poison
        # one (32) is never paid, so its cancel message cancels it; 31 is paid long before
        # (the workers are running) and kept
        services.orders(31, 2, "--poison", "32", "--cancel-after", "3")
        wait_for(lambda: len(_payments(tmp_path).get("order-000031", [])) == 2
                 and len(_payments(tmp_path).get("order-000032", [])) == 4, 60,
                 "the cancel messages of orders 31 and 32 to be handled")
        payments = _payments(tmp_path)
        (paid, kept), [*failed, cancelled] = payments["order-000031"], payments["order-000032"]
        assert paid == ("paid", 1) and kept[0] == "kept", payments["order-000031"]
        assert failed == [("failed", 1), ("failed", 2), ("failed", 3)], failed
        assert cancelled[0] == "cancelled", payments["order-000032"]
        # never before its time: the producer, the brokers and the canceller read one clock
        assert kept[1] >= 0 and cancelled[1] >= 0, (kept, cancelled)
        for instance in ("workers-a", "workers-b"):
            services.procs[instance].send_signal(signal.SIGTERM)
        for instance in ("workers-a", "workers-b"):
            assert services.procs[instance].wait(30) == 0, services.output(instance)
    except BaseException:
        for instance in services.procs:
            print(f"==== {instance}\n" + services.output(instance)[-3000:])
        raise
    finally:
        services.stop_all()


def test_ledger_check_finds_a_committed_order_processed_again(tmp_path: Path) -> None:
    ledger = tmp_path / "x.ledger"
    ledger.write_text("processed a 0 0 order-1\n"
                      "processed a 0 1 order-2\n"
                      "committed a 0 1\n"
                      "processed b 0 1 order-2\n"  # uncommitted: allowed again
                      "committed b 0 2\n"
                      "processed c 0 0 order-1\n")  # committed by a: a violation
    report = common.check_ledger(ledger)
    assert report.processed == {"order-1": 2, "order-2": 2}
    assert len(report.violations) == 1 and "order-1" in report.violations[0]
    assert report.missing(["order-1", "order-3"]) == ["order-3"]


def test_reservation_service_is_exactly_once_across_kill_9(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    """The exactly-once stage: killed (SIGKILL) twice mid-stream and started again, it
    leaves every order's reservation exactly once for read_committed readers."""
    import json
    import time

    from raftka.client import TopicReader

    services = Services(cluster, tmp_path)
    bootstrap = ",".join(cluster.peers.values())

    def reservations(level: str = "read_committed") -> list[str]:
        with TopicReader(bootstrap, "reservations", isolation_level=level) as r:
            out: list[str] = []
            idle = 0
            while idle < 3:
                records = r.poll(0.3)
                idle = 0 if records else idle + 1
                out += [json.loads(x.value)["order_id"] for x in records]
            return out

    def start(n: int) -> subprocess.Popen:
        return services.start("reservation_service.py", f"reservations-{n}", "--instance",
                              "reservations", "--work-ms", "20", "--session-timeout-ms", "3000")

    try:
        services.orders(1, 60)
        for n in range(2):  # killed mid-stream, twice
            proc = start(n)
            # inside a transaction (20 ms of "work" per order): records sent, not committed
            wait_for(lambda n=n: "begun" in services.output(f"reservations-{n}"), 60,
                     "a transaction to begin", interval=0.01)
            time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            services.orders(61 + 20 * n, 20)
        start(2)
        every = [f"order-{n:06d}" for n in range(1, 101)]
        wait_for(lambda: set(every) <= set(reservations()), 90, "every reservation")
        got = reservations()
        duplicates = sorted({o for o in got if got.count(o) > 1})
        assert not duplicates, duplicates
        assert sorted(got) == every
        # the kills did leave aborted reservations behind (read_uncommitted sees them)
        assert len(reservations("read_uncommitted")) > len(got)
    finally:
        services.stop_all()
