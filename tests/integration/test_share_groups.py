"""Share groups (KIP-932) against real 3-node clusters: several members on one partition,
accept / release / reject, lock expiry, the delivery limit and the dead-letter topic,
a kill -9 of the share-partition leader, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

from raftka.client import (
    InconsistentGroupTypeError,
    InvalidRecordStateError,
    Producer,
    ShareConsumer,
    UnknownGroupError,
)
from raftka.client import Consumer
from raftka.v1 import share_pb2, share_pb2_grpc
from tests.harness import REPO, Cluster, wait_for

TOPIC = "tasks"


def bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers[i] for i in sorted(cluster.peers))


def produce(cluster: Cluster, values: list[str], topic: str = TOPIC, partition: int = 0,
            headers=()) -> list[int]:
    with Producer(bootstrap(cluster)) as producer:
        futures = [producer.send(topic, v.encode(), key=v.encode(), partition=partition,
                                 headers=list(headers)) for v in values]
        return [f.result(timeout=30)[1] for f in futures]


def drain(consumer: ShareConsumer, want: int, timeout: float = 30.0, accept: bool = True):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        records = consumer.poll(0.5)
        for r in records:
            got.append(r)
            if accept:
                consumer.accept(r)
    consumer.flush()
    return got


def test_members_share_one_partition_and_each_record_is_accepted_once(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=1)
    values = [f"task-{i}" for i in range(300)]
    produce(cluster, values)
    seen: dict[str, list[str]] = {}
    lock = threading.Lock()

    def member(name: str) -> None:
        with ShareConsumer(bootstrap(cluster), "workers", [TOPIC], max_records=20,
                           auto_accept=False) as consumer:
            idle_until = time.monotonic() + 30
            while time.monotonic() < idle_until:
                records = consumer.poll(0.5)
                for r in records:
                    with lock:
                        seen.setdefault(r.value.decode(), []).append(name)
                    consumer.accept(r)
                    time.sleep(0.002)  # work, so that the others get records too
                with lock:
                    if len(seen) == len(values):
                        break

    threads = [threading.Thread(target=member, args=(f"m{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(seen) == sorted(values)
    assert all(len(who) == 1 for who in seen.values()), "a record was delivered twice"
    assert len({who[0] for who in seen.values()}) >= 2, "one member got everything"
    with ShareConsumer(bootstrap(cluster), "workers", [TOPIC]) as late:
        assert late.poll(1.0) == []  # everything was accepted: nothing comes back


def test_release_redelivers_and_reject_dead_letters_with_headers(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=1)
    produce(cluster, ["ok", "again", "poison"], headers=[("trace", b"t-1")])
    with ShareConsumer(bootstrap(cluster), "g1", [TOPIC], auto_accept=False) as consumer:
        first = {r.value: r for r in drain(consumer, 3, accept=False)}
        assert all(r.delivery_count == 1 for r in first.values())
        consumer.accept(first[b"ok"])
        consumer.release(first[b"again"], error="try later")
        consumer.reject(first[b"poison"], error="cannot parse")
        consumer.flush()
        again = drain(consumer, 1, accept=False)
        assert [(r.value, r.delivery_count) for r in again] == [(b"again", 2)]
        consumer.accept(again[0])
        consumer.flush()
        with pytest.raises(InvalidRecordStateError):  # settled already: not held
            call(cluster, "ShareAcknowledge", share_pb2.ShareAcknowledgeRequest(
                group_id="g1", member_id=consumer.member_id, topic=TOPIC, partition=0,
                ranges=[share_pb2.AcknowledgeRange(first_offset=0, last_offset=0,
                                                   type=share_pb2.ACCEPT)]))
    dead = read_dlq(cluster, "g1.dlq", 1)
    assert [r.value for r in dead] == [b"poison"]
    headers = dict(dead[0].headers)
    assert headers["trace"] == b"t-1" and dead[0].key == b"poison"
    assert headers["raftka.dlq.topic"] == TOPIC.encode()
    assert headers["raftka.dlq.partition"] == b"0"
    assert headers["raftka.dlq.offset"] == b"2"
    assert headers["raftka.dlq.group"] == b"g1"
    assert headers["raftka.dlq.delivery.count"] == b"1"
    assert headers["raftka.dlq.reason"] == b"rejected"
    assert headers["raftka.dlq.error"] == b"cannot parse"


def test_lock_expiry_redelivers_and_the_delivery_limit_dead_letters(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=1)
    produce(cluster, ["slow"])
    counts = []
    with ShareConsumer(bootstrap(cluster), "g2", [TOPIC], auto_accept=False,
                       record_lock_duration_ms=1000, max_delivery_attempts=3) as consumer:
        deadline = time.monotonic() + 30
        while len(counts) < 3 and time.monotonic() < deadline:
            for r in consumer.poll(0.5):
                counts.append(r.delivery_count)  # never settled: the lock expires
        assert counts == [1, 2, 3]
        assert consumer.poll(2.5) == []  # after the third expiry: dead-lettered
    dead = read_dlq(cluster, "g2.dlq", 1)
    headers = dict(dead[0].headers)
    assert headers["raftka.dlq.reason"] == b"attempts exhausted"
    assert headers["raftka.dlq.delivery.count"] == b"3"


def test_a_refused_acknowledgement_at_poll_gives_back_what_that_poll_acquired(
        cluster: Cluster):
    """poll sends each partition's acknowledgement, then acquires from it, partitions in
    parallel; when one is refused (the lock expired, another member holds the record),
    poll raises, and the records it acquired from other partitions go back to the group
    (the caller never saw them) instead of staying held or being auto-accepted."""
    cluster.create_topic(TOPIC, partitions=2)
    produce(cluster, ["late"], partition=0)
    b = bootstrap(cluster)
    with ShareConsumer(b, "g-late", [TOPIC], auto_accept=False,
                       record_lock_duration_ms=1000) as slow, \
            ShareConsumer(b, "g-late", [TOPIC], auto_accept=False) as other:
        [late] = drain(slow, 1, accept=False)
        taken = drain(other, 1, accept=False)  # once slow's lock expired
        assert [(r.value, r.delivery_count) for r in taken] == [(b"late", 2)]
        other.accept(taken[0])
        other.flush()
        produce(cluster, ["fresh"], partition=1)
        slow.accept(late)
        with pytest.raises(InvalidRecordStateError):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until a poll acquires "fresh" too
                assert slow.poll(0.5) == []
        slow.flush()  # sends the release of what that poll acquired
        # given back at once, not held until slow's lock expires (1 s later)
        [p1] = [s for s in describe(cluster, "g-late").partitions if s.partition == 1]
        assert (p1.acquired, p1.available) == (0, 1), p1
        again = drain(other, 1, accept=True)
        assert [(r.value, r.delivery_count) for r in again] == [(b"fresh", 2)]


def read_dlq(cluster: Cluster, topic: str, want: int, timeout: float = 30.0):
    from raftka.client import TopicReader
    out = []
    deadline = time.monotonic() + timeout
    wait_for(lambda: _topic_exists(cluster, topic), timeout, f"dead-letter topic {topic}")
    with TopicReader(bootstrap(cluster), topic, offset="earliest") as reader:
        while len(out) < want and time.monotonic() < deadline:
            out.extend(reader.poll(0.5))
    time.sleep(0.5)
    return out


def _topic_exists(cluster: Cluster, topic: str) -> bool:
    from raftka.v1 import admin_pb2
    try:
        cluster.admin(cluster.live()[0]).DescribeTopic(admin_pb2.DescribeTopicRequest(
            name=topic), timeout=2)
        return True
    except grpc.RpcError:
        return False


def call(cluster: Cluster, method: str, request, timeout: float = 30.0):
    """One Share RPC at the leader of tasks/0, errors as client exceptions; retriable ones
    (an election in progress, e.g. of the group's coordinator) are retried."""
    from raftka.v1.errors import error_from_rpc
    deadline = time.monotonic() + timeout
    while True:
        leader = cluster.wait_leader(TOPIC, 0)
        stub = share_pb2_grpc.ShareStub(cluster.channel(leader))
        try:
            return getattr(stub, method)(request, timeout=10)
        except grpc.RpcError as exc:
            err = error_from_rpc(exc)
            if not err.retriable or time.monotonic() > deadline:
                raise err from None
        time.sleep(0.1)


def test_kill_of_the_share_partition_leader_loses_nothing_and_redelivers_no_accepted_record(
        cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=1)
    values = [f"job-{i}" for i in range(600)]
    produce(cluster, values)
    leader = cluster.wait_preferred_leader(TOPIC, 0)
    lock = threading.Lock()
    confirmed: dict[str, float] = {}  # value -> when its acceptance was acknowledged
    deliveries: dict[str, list[tuple[float, int]]] = {}  # value -> [(when, count)]
    killed = threading.Event()
    errors: list[BaseException] = []

    def member() -> None:
        try:
            with ShareConsumer(bootstrap(cluster), "failover", [TOPIC], max_records=10,
                               auto_accept=False, request_timeout_ms=3000) as consumer:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    with lock:
                        if len(confirmed) == len(values):
                            return
                    records = consumer.poll(0.5)
                    now = time.monotonic()
                    with lock:
                        for r in records:
                            deliveries.setdefault(r.value.decode(), []).append(
                                (now, r.delivery_count))
                    for r in records:
                        consumer.accept(r)
                    consumer.flush()  # retried across the failover: success, same id
                    done = time.monotonic()
                    with lock:
                        for r in records:
                            confirmed.setdefault(r.value.decode(), done)
                        if len(confirmed) >= 150 and not killed.is_set():
                            killed.set()
                            cluster.kill(leader)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=member) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert killed.is_set()
    assert cluster.partition_leader(TOPIC, 0) != leader
    assert sorted(confirmed) == sorted(values), "records lost"
    for value, when in confirmed.items():
        late = [d for d in deliveries[value] if d[0] > when]
        assert not late, f"{value} delivered again after its acceptance was acknowledged"
    for value, ds in deliveries.items():  # a redelivery says so in its count
        counts = [c for _, c in ds]
        assert counts == sorted(counts) and len(set(counts)) == len(counts), (value, counts)
    state = describe(cluster, "failover").partitions[0]  # the new leader's replicated state
    assert (state.start_offset, state.accepted, state.dead_lettered) == (600, 600, 0)


def describe(cluster: Cluster, group: str):
    from raftka.client import describe_share_group
    return describe_share_group(bootstrap(cluster), group)


def test_bad_input_is_refused_with_clear_errors_and_changes_nothing(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=1)
    produce(cluster, ["a", "b"])
    b = bootstrap(cluster)
    with pytest.raises(UnknownGroupError):  # a partition leader knows no such group
        call(cluster, "ShareFetch", share_pb2.ShareFetchRequest(
            group_id="nobody", member_id="m", topic=TOPIC, partition=0))
    from raftka.client import UnknownTopicError
    with pytest.raises(UnknownTopicError):
        ShareConsumer(b, "g-topic", ["no-such-topic"], join_timeout_s=5)
    with ShareConsumer(b, "share-one", [TOPIC], auto_accept=False) as consumer:
        got = drain(consumer, 2, accept=False)
        assert len(got) == 2
        for bad, exc in (
                ([share_pb2.AcknowledgeRange(first_offset=0, last_offset=5,
                                             type=share_pb2.ACCEPT)], InvalidRecordStateError),
                ([share_pb2.AcknowledgeRange(first_offset=1, last_offset=0,
                                             type=share_pb2.ACCEPT)], None),
                ([share_pb2.AcknowledgeRange(first_offset=0, last_offset=0, type=0)], None),
                ([share_pb2.AcknowledgeRange(first_offset=0, last_offset=0,
                                             type=share_pb2.RELEASE, release_delay_ms=-1)],
                 None)):
            from raftka.client import InvalidRequestError
            with pytest.raises(exc or InvalidRequestError):
                call(cluster, "ShareAcknowledge", share_pb2.ShareAcknowledgeRequest(
                    group_id="share-one", member_id=consumer.member_id, topic=TOPIC,
                    partition=0, ranges=bad))
        with pytest.raises(InvalidRecordStateError):  # held by this member, not "intruder"
            call(cluster, "ShareAcknowledge", share_pb2.ShareAcknowledgeRequest(
                group_id="share-one", member_id="intruder", topic=TOPIC, partition=0,
                ranges=[share_pb2.AcknowledgeRange(first_offset=0, last_offset=1,
                                                   type=share_pb2.ACCEPT)]))
        # nothing of that changed the records: this member still holds and settles both
        for r in got:
            consumer.accept(r)
        consumer.flush()
    # a share group's id cannot be used by a consumer group, nor the other way round
    with pytest.raises(InconsistentGroupTypeError):
        with Consumer(b, "share-one", [TOPIC]) as c:
            c.poll(2.0)
    with Consumer(b, "classic", [TOPIC], auto_offset_reset="earliest") as c:
        wait_for(lambda: c.poll(0.5), 30, "the consumer group to read")
        c.commit()
    with pytest.raises(InconsistentGroupTypeError):
        ShareConsumer(b, "classic", [TOPIC], join_timeout_s=5)
    from raftka.client import InvalidConfigError
    with pytest.raises(InvalidConfigError):
        ShareConsumer(b, "bad-config", [TOPIC], record_lock_duration_ms=10, join_timeout_s=5)
    # the process logs no traceback for any of it
    assert "Traceback" not in cluster.logs()


def _raftka(cluster: Cluster, *args: str, timeout: float = 60):
    env = {**os.environ, "RAFTKA_BOOTSTRAP": bootstrap(cluster)}
    return subprocess.run([sys.executable, "-m", "raftka.client", *args], text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=timeout)


def test_cli_share_consume_and_describe(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=2)
    produce(cluster, [f"p0-{i}" for i in range(3)], partition=0)
    produce(cluster, [f"p1-{i}" for i in range(2)], partition=1)
    r = _raftka(cluster, "share", "consume", "cli-group", "--topic", TOPIC, "-n", "5")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted([f"p0-{i}" for i in range(3)]
                                              + [f"p1-{i}" for i in range(2)])
    r = _raftka(cluster, "share", "consume", "cli-group", "--topic", TOPIC, "--idle-exit", "1")
    assert (r.returncode, r.stdout) == (0, "")  # all accepted: nothing comes again
    r = _raftka(cluster, "share", "describe", "cli-group", "--json")
    assert r.returncode == 0, r.stderr
    desc = json.loads(r.stdout)
    assert desc["dead_letter_topic"] == "cli-group.dlq"
    assert desc["max_delivery_attempts"] == 5
    by_partition = {p["partition"]: p for p in desc["partitions"]}
    assert {p: (s["start_offset"], s["lag"], s["accepted"])
            for p, s in by_partition.items()} == {0: (3, 0, 3), 1: (2, 0, 2)}
    r = _raftka(cluster, "share", "describe", "cli-group")
    assert r.returncode == 0 and "cli-group.dlq" in r.stdout and "ACCEPTED" in r.stdout
    r = _raftka(cluster, "share", "describe", "no-such-group")
    assert r.returncode == 1 and "UNKNOWN_GROUP" in r.stderr and "Traceback" not in r.stderr


def test_dead_letters_are_listed_shown_and_replayed_once(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=2)
    produce(cluster, ["bad-0", "good"], partition=0, headers=[("h", b"1")])
    produce(cluster, ["bad-1"], partition=1)
    with ShareConsumer(bootstrap(cluster), "dl", [TOPIC], auto_accept=False) as consumer:
        for r in drain(consumer, 3, accept=False):
            if r.value.startswith(b"bad"):
                consumer.reject(r, error=f"no {r.value.decode()}")
            else:
                consumer.accept(r)
        consumer.flush()
    wait_for(lambda: len(_letters(cluster)) == 2, 30, "two dead letters")
    r = _raftka(cluster, "dlq", "list", "dl", "--json")
    assert r.returncode == 0, r.stderr
    letters = json.loads(r.stdout)
    assert sorted((x["source_partition"], x["source_offset"], x["reason"], x["error"])
                  for x in letters) == [(0, 0, "rejected", "no bad-0"),
                                        (1, 0, "rejected", "no bad-1")]
    first = next(x for x in letters if x["source_partition"] == 0)
    place = f"{first['dlq_partition']}:{first['dlq_offset']}"
    r = _raftka(cluster, "dlq", "show", "dl", place, "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["value"], shown["headers"]) == ("bad-0", {"h": "1"})
    r = _raftka(cluster, "dlq", "replay", "dl", place, "--dry-run")
    assert r.returncode == 0 and "would replay 1 dead letter" in r.stdout
    assert len(_letters(cluster)) == 2
    r = _raftka(cluster, "dlq", "replay", "dl", place)
    assert r.returncode == 0 and "replayed 1 dead letter" in r.stdout, r.stderr
    r = _raftka(cluster, "dlq", "replay", "dl", place)  # already replayed: refused
    assert r.returncode == 1 and "already replayed" in r.stderr
    assert [x.source_partition for x in _letters(cluster)] == [1]
    assert [x.replayed for x in _letters(cluster, include_replayed=True)
            if x.source_partition == 0] == [True]
    with ShareConsumer(bootstrap(cluster), "dl", [TOPIC], auto_accept=False) as consumer:
        again = drain(consumer, 1)
    assert [(r.partition, r.value) for r in again] == [(0, b"bad-0")]
    headers = dict(again[0].headers)
    assert headers["h"] == b"1" and headers["raftka.dlq.replayed-from"] == (
        f"dl.dlq/{first['dlq_partition']}/{first['dlq_offset']}".encode())
    r = _raftka(cluster, "dlq", "list", "nobody")
    assert r.returncode == 1 and "UNKNOWN_GROUP" in r.stderr and "Traceback" not in r.stderr


def _letters(cluster: Cluster, include_replayed: bool = False):
    from raftka.client import UnknownTopicError, list_dead_letters
    try:
        return list_dead_letters(bootstrap(cluster), "dl", include_replayed=include_replayed,
                                 timeout_s=10)
    except UnknownTopicError:
        return []  # not created yet


def test_group_redelivery_backoff_holds_a_released_record_back(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=1)
    produce(cluster, ["flaky"])
    with ShareConsumer(bootstrap(cluster), "backoff", [TOPIC], auto_accept=False,
                       redelivery_backoff_initial_ms=8000, redelivery_backoff_multiplier=3,
                       redelivery_backoff_max_ms=20000) as consumer:
        assert (consumer.config.redelivery_backoff_initial_ms,
                consumer.config.redelivery_backoff_multiplier) == (8000, 3.0)
        first = drain(consumer, 1, accept=False)
        consumer.release(first[0], error="downstream busy")  # no delay of its own
        consumer.flush()
        assert consumer.poll(1.0) == []  # held back by the group's backoff (8 s)
        again = drain(consumer, 1)
        assert [(r.value, r.delivery_count) for r in again] == [(b"flaky", 2)]
    desc = describe(cluster, "backoff")
    assert desc.redelivery_backoff == (8000, 3.0, 20000)
    from raftka.client import InvalidConfigError
    with pytest.raises(InvalidConfigError):
        ShareConsumer(bootstrap(cluster), "bad-backoff", [TOPIC], join_timeout_s=5,
                      redelivery_backoff_initial_ms=100, redelivery_backoff_multiplier=50)


def test_share_state_survives_retention_snapshots_and_a_full_restart(cluster: Cluster):
    from raftka.v1.recordbatch import Record, build_batch
    cluster.create_topic(TOPIC, partitions=1)
    for i in range(50):  # one entry each, so that retention drops a few at a time
        cluster.produce(TOPIC, 0, build_batch([Record(None, b"%04d" % i + b"x" * 96)],
                                              compression="none"))
    with ShareConsumer(bootstrap(cluster), "durable", [TOPIC], max_records=5,
                       auto_accept=False) as consumer:
        accepted = []
        while len(accepted) < 30:  # many share entries, interleaved with nothing else
            for r in consumer.poll(1.0):
                if len(accepted) < 30:
                    consumer.accept(r)
                    accepted.append(r.offset)
                else:
                    consumer.release(r)
            consumer.flush()
        released = drain(consumer, 1, accept=False)
        consumer.release_all()
        consumer.flush()
    assert sorted(accepted) == list(range(30))
    assert released and all(r.offset >= 30 for r in released)
    for i in range(50, 70):  # later entries, so that retention drops the share entries
        cluster.produce(TOPIC, 0, build_batch([Record(None, b"%04d" % i + b"x" * 96)],
                                              compression="none"))
    from raftka.client import Admin
    with Admin(bootstrap(cluster)) as admin:  # now keep about the last 15 entries
        admin.alter_topic_config(TOPIC, set={"retention.bytes": "2500"})

    def log_start() -> int:  # the lowest of all replicas: each applies retention itself,
        # and any of them may lead after the restart
        return min(cluster.replica_position(nid, TOPIC, 0).log_start_offset
                   for nid in sorted(cluster.live()))
    start = wait_for(lambda: log_start() > 50, 30, "every replica's retention to drop past "
                     "the share entries", interval=0.5) and log_start()
    # the share state of the dropped entries is in the retention snapshot only now
    for nid in sorted(cluster.live()):
        cluster.kill(nid)
    cluster.start_all()
    cluster.wait_healthy()
    with ShareConsumer(bootstrap(cluster), "durable", [TOPIC], auto_accept=False) as consumer:
        rest = drain(consumer, 70 - start)  # each replica applies retention itself: the
        rest += drain(consumer, 70, timeout=2.0)  # new leader's log start may differ a bit
    # nothing accepted again; what retention removed is finished; the rest comes once
    offsets = sorted(r.offset for r in rest)
    assert offsets and offsets[0] > 50 and offsets == list(range(offsets[0], 70))
    assert {r.delivery_count for r in rest} == {1}
    state = describe(cluster, "durable").partitions[0]
    assert (state.start_offset, state.in_flight) == (70, 0)
    assert state.accepted == 30 + len(rest)  # the 30 from before: in the snapshot
