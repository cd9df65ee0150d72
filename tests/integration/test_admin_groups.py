"""Admin group operations and the group CLI against a real cluster: list, describe with
lag, reset offsets (earliest, latest, offset, timestamp; dry run; refused while members are
active), delete; `raftka consume --group`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from raftka.client import (
    Admin,
    Consumer,
    GroupNotEmptyError,
    Producer,
    TopicPartition,
    UnknownGroupError,
)
from tests.harness import REPO, Cluster, wait_for


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _raftka(cluster: Cluster, *args: str, timeout: float = 60, stdin: str = ""):
    env = dict(os.environ, RAFTKA_BOOTSTRAP=_bootstrap(cluster))
    return subprocess.run([sys.executable, "-m", "raftka.client", *args], text=True, input=stdin,
                          capture_output=True, env=env, cwd=REPO, timeout=timeout)


def _produce(bootstrap: str, topic: str, per_partition: int, partitions: int) -> None:
    with Producer(bootstrap, acks="all") as producer:
        futures = [producer.send(topic, b"%d-%d" % (p, i), partition=p)
                   for p in range(partitions) for i in range(per_partition)]
        producer.flush()
        for f in futures:
            f.result(timeout=30)


def _consume_all(bootstrap: str, group: str, topic: str, count: int) -> list:
    seen: list = []
    with Consumer(bootstrap, group, [topic], auto_offset_reset="earliest") as consumer:
        def step():
            records = consumer.poll(0.5)
            seen.extend(records)
            if records:
                consumer.commit()
            return len(seen) >= count
        wait_for(step, 60, f"{count} records for group {group}", interval=0)
    return seen


def test_describe_reset_and_delete_a_group(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("events", partitions=3, replication_factor=3)
        admin.wait_for_topic_ready("events", timeout=20)
        _produce(bootstrap, "events", 10, 3)
        assert len(_consume_all(bootstrap, "g1", "events", 30)) == 30

        assert "g1" in [g.group_id for g in admin.list_groups()]
        desc = admin.describe_group("g1")
        assert desc.group_id == "g1" and desc.members == ()
        assert [(p.topic, p.partition, p.committed_offset, p.log_end_offset, p.lag)
                for p in desc.partitions] == [("events", p, 10, 10, 0) for p in range(3)]
        assert desc.total_lag == 0

        # dry run: the plan, nothing changes
        plan = admin.reset_group_offsets("g1", "events", to="earliest", dry_run=True)
        assert [(r.partition, r.previous_offset, r.new_offset) for r in plan] == [
            (0, 10, 0), (1, 10, 0), (2, 10, 0)]
        assert admin.committed_offsets("g1") == {
            TopicPartition("events", p): 10 for p in range(3)}

        admin.reset_group_offsets("g1", "events", to="earliest")
        desc = admin.describe_group("g1")
        assert [(p.committed_offset, p.lag) for p in desc.partitions] == [(0, 10)] * 3
        assert desc.total_lag == 30

        # an offset is clamped into [log start, high watermark]; only the named partitions
        plan = admin.reset_group_offsets("g1", partitions=[("events", 1), ("events", 2)],
                                         to=99)
        assert [(r.partition, r.new_offset) for r in plan] == [(1, 10), (2, 10)]
        admin.reset_group_offsets("g1", partitions=[("events", 0)], to=4)
        assert admin.committed_offsets("g1") == {
            TopicPartition("events", 0): 4, TopicPartition("events", 1): 10,
            TopicPartition("events", 2): 10}

        # by time: nothing was written after now, so every partition goes to its end
        later = int(time.time() * 1000) + 60_000
        plan = admin.reset_group_offsets("g1", "events", timestamp_ms=later)
        assert [r.new_offset for r in plan] == [10, 10, 10]
        plan = admin.reset_group_offsets("g1", "events", timestamp_ms=0)
        assert [r.new_offset for r in plan] == [0, 0, 0]

        # a consumer reading again gets everything after the reset (at least once)
        again = _consume_all(bootstrap, "g1", "events", 30)
        assert len({(r.partition, r.offset) for r in again}) == 30

        # refused while a member is active
        with Consumer(bootstrap, "g1", ["events"]) as member:
            wait_for(lambda: member.poll(0.2) is not None and member.assignment(), 30,
                     "the member to own partitions")

            def described_with_its_member():
                # Membership lives on the coordinator, in memory: if leadership of the
                # group's __consumer_offsets partition moves (the preferred-leader hand-back
                # a few seconds after start), the member joins the new coordinator at its
                # next heartbeat, and until then that coordinator lists no member.
                member.poll(0.1)
                d = admin.describe_group("g1")
                return d if d.members and d.members[0].assignment else None

            desc = wait_for(described_with_its_member, 30,
                            "the coordinator to list the member with its partitions")
            assert len(desc.members) == 1
            assert desc.members[0].assignment == tuple(
                TopicPartition("events", p) for p in range(3))
            assert {p.member_id for p in desc.partitions} == {desc.members[0].member_id}
            with pytest.raises(GroupNotEmptyError):
                admin.reset_group_offsets("g1", "events", to="latest")
            with pytest.raises(GroupNotEmptyError):
                admin.delete_group("g1")

        admin.delete_group("g1")
        assert "g1" not in [g.group_id for g in admin.list_groups()]
        with pytest.raises(UnknownGroupError):
            admin.delete_group("g1")


def test_group_cli(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("clig", partitions=2, replication_factor=3)
        admin.wait_for_topic_ready("clig", timeout=20)
    _produce(bootstrap, "clig", 5, 2)

    r = _raftka(cluster, "consume", "clig", "--group", "cg", "--from-beginning", "-n", "10")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(f"{p}-{i}" for p in range(2) for i in range(5))
    # committed after printing: the group has nothing left
    r = _raftka(cluster, "consume", "clig", "--group", "cg", "--exit-at-end")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""

    r = _raftka(cluster, "group", "list")
    assert r.returncode == 0, r.stderr
    assert "cg" in r.stdout.split() and r.stdout.startswith("GROUP")
    r = _raftka(cluster, "group", "list", "--json")
    assert "cg" in [g["group_id"] for g in json.loads(r.stdout)]

    r = _raftka(cluster, "group", "describe", "cg")
    assert r.returncode == 0, r.stderr
    assert "TOPIC" in r.stdout and "LAG" in r.stdout and "LOG-END" in r.stdout
    r = _raftka(cluster, "group", "describe", "cg", "--json")
    data = json.loads(r.stdout)
    assert [(p["partition"], p["committed_offset"], p["lag"]) for p in data["partitions"]] == [
        (0, 5, 0), (1, 5, 0)]
    assert data["total_lag"] == 0

    r = _raftka(cluster, "group", "reset-offsets", "cg", "--topic", "clig", "--to-earliest",
                "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run" in r.stdout
    r = _raftka(cluster, "group", "reset-offsets", "cg", "--topic", "clig", "--to-offset", "3",
                "--partition", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert [(o["partition"], o["previous_offset"], o["new_offset"])
            for o in json.loads(r.stdout)["offsets"]] == [(1, 5, 3)]
    r = _raftka(cluster, "group", "reset-offsets", "cg", "--topic", "clig",
                "--to-datetime", "2000-01-01T00:00:00Z")
    assert r.returncode == 0, r.stderr
    r = _raftka(cluster, "consume", "clig", "--group", "cg", "--exit-at-end")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == 10

    r = _raftka(cluster, "group", "reset-offsets", "cg", "--topic", "clig", "--to-datetime",
                "yesterday")
    assert r.returncode == 2 and "ISO-8601" in r.stderr
    r = _raftka(cluster, "group", "reset-offsets", "cg", "--topic", "nope", "--to-latest",
                "--timeout", "3")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "nope" in r.stderr
    r = _raftka(cluster, "group", "delete", "cg")
    assert r.returncode == 0, r.stderr
    r = _raftka(cluster, "group", "delete", "cg")
    assert r.returncode == 1 and "group list" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
