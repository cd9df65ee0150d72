"""Queues on a real 3-node cluster (one cluster for the module): queue topics whose
finished records retention deletes (``retention.share.groups``), the classic Consumer's
retry and dead-letter topics, dead letters through ``Admin``, and bad share-group input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from raftka.client import ShareConsumer
from raftka.v1.recordbatch import Record, build_batch
from tests.harness import Cluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("queues")), 3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers[i] for i in sorted(cluster.peers))


def produce_entries(cluster: Cluster, topic: str, count: int) -> None:
    """``count`` records, one Raft entry each, so that retention can drop them one by one."""
    for i in range(count):
        cluster.produce(topic, 0, build_batch([Record(None, b"%s-%d" % (topic.encode(), i))],
                                              compression="none"))


def settle(consumer: ShareConsumer, count: int, accept: bool = True) -> list:
    """Poll until ``count`` records came; accept them (or release them all)."""
    got: list = []
    wait_for(lambda: got.extend(consumer.poll(0.5)) or len(got) >= count, 30,
             f"{count} records for {consumer.group_id}")
    for r in got:
        (consumer.accept if accept else consumer.release)(r)
    consumer.flush()
    return got


def log_start(cluster: Cluster, node: int, topic: str) -> int:
    return cluster.replica_position(node, topic, 0).log_start_offset


@pytest.mark.shared_cluster
def test_a_queue_topic_deletes_what_every_share_group_finished(cluster: Cluster):
    queue = {"retention.share.groups": "true"}
    # created in this order, each node's retention visits jobs and idle before ctl
    cluster.create_topic("jobs", configs=queue)
    cluster.create_topic("idle", configs=queue)
    cluster.create_topic("ctl", configs=queue)
    leader = cluster.wait_preferred_leader("jobs", 0)
    for topic in ("jobs", "idle", "ctl"):
        produce_entries(cluster, topic, 10)
    b = bootstrap(cluster)
    with ShareConsumer(b, "slow", ["jobs"], auto_accept=False, max_records=4) as slow:
        # "slow" joined (its state starts at the log start) but has read nothing yet
        with ShareConsumer(b, "fast", ["jobs"], auto_accept=False) as fast:
            assert len(settle(fast, 10)) == 10
        with ShareConsumer(b, "ctl-group", ["ctl"], auto_accept=False) as ctl:
            assert len(settle(ctl, 10)) == 10
        # a retention pass on jobs' leader ran after "fast" finished everything (it moved
        # ctl's log start, and visits jobs first): jobs keeps what "slow" did not read,
        # and idle, which no share group reads, keeps everything
        wait_for(lambda: log_start(cluster, leader, "ctl") == 10, 30,
                 "retention to drop ctl's finished records")
        assert log_start(cluster, leader, "jobs") == 0
        assert log_start(cluster, leader, "idle") == 0
        first = settle(slow, 4)  # max_records=4: offsets 0-3
        assert sorted(r.offset for r in first) == [0, 1, 2, 3]
        wait_for(lambda: log_start(cluster, leader, "jobs") == 4, 30,
                 "retention to drop what both groups finished")
        released = settle(slow, 1, accept=False)  # released records are not finished
        assert released[0].offset == 4
        rest = settle(slow, 6)
        assert sorted(r.offset for r in rest) == list(range(4, 10))
    # every replica drops them (each from its own copy of the replicated share state)
    for node in cluster.live():
        wait_for(lambda: log_start(cluster, node, "jobs") == 10, 30,
                 f"node {node} to drop every finished record")
    assert log_start(cluster, leader, "idle") == 0
    # a group that joins now starts at the log start: nothing of the old records is left
    with ShareConsumer(b, "late", ["jobs"], auto_accept=False) as late:
        assert late.poll(1.0) == []


class Poison(Exception):
    pass


@pytest.mark.shared_cluster
def test_consumer_retry_topics_do_not_block_and_dead_letter_after_max_attempts(
        cluster: Cluster):
    from raftka.client import Admin, Consumer, Producer, RetryTopics
    cluster.create_topic("payments-in")
    with Producer(bootstrap(cluster)) as producer:
        for value in (b"ok-1", b"poison", b"flaky", b"reject", b"ok-2"):
            producer.send("payments-in", value, key=value, partition=0,
                          headers=[("trace", b"t-" + value)]).result(timeout=30)
    calls: list[tuple[bytes, str, int, int]] = []  # value, topic, offset, failures before
    early: list[bytes] = []

    def handle(record) -> None:
        headers = dict(record.headers)
        failures = int(headers.get("raftka.retry.attempts", b"0"))
        if int(headers.get("raftka.retry.not-before", b"0")) > time.time() * 1000:
            early.append(record.value)
        calls.append((record.value, record.topic, record.offset, failures))
        if record.value == b"poison" or (record.value == b"flaky" and failures == 0):
            raise RuntimeError(f"cannot pay {record.value.decode()}")
        if record.value == b"reject":
            raise Poison("not a payment")

    policy = RetryTopics(max_attempts=3, backoff_initial_ms=300, backoff_multiplier=2.0,
                         not_retried=(Poison,))
    with Consumer(bootstrap(cluster), "billing", ["payments-in"],
                  retry_topics=policy) as consumer:
        assert consumer.topics == ("billing.retry", "payments-in")
        wait_for(lambda: consumer.process(handle, 0.5) is not None and
                 sum(1 for c in calls if c[0] == b"poison") == 3, 60,
                 "three deliveries of the poison record")
        committed = consumer.committed([("payments-in", 0)])
    assert early == []  # a retry is never delivered before its not-before time
    firsts = [c[0] for c in calls if c[3] == 0]
    assert firsts == [b"ok-1", b"poison", b"flaky", b"reject", b"ok-2"]  # in order, at once
    later = [(c[0], c[3]) for c in calls if c[3] > 0]
    assert sorted(later) == [(b"flaky", 1), (b"poison", 1), (b"poison", 2)]
    # the handler sees every attempt as the source record (same topic and offset)
    assert {(c[1], c[2]) for c in calls if c[0] == b"poison"} == {("payments-in", 1)}
    assert committed == {("payments-in", 0): 5}
    with Admin(bootstrap(cluster)) as admin:
        letters = wait_for(lambda: len(admin.list_dead_letters("billing")) == 2
                           and admin.list_dead_letters("billing"), 30, "two dead letters")
        by_value = {x.value: x for x in letters}
        poison, rejected = by_value[b"poison"], by_value[b"reject"]
        assert (poison.dlq_topic, poison.source_topic, poison.source_partition,
                poison.source_offset, poison.group, poison.delivery_count, poison.reason) == (
            "billing.dlq", "payments-in", 0, 1, "billing", 3, "attempts exhausted")
        assert "RuntimeError: cannot pay poison" in poison.error
        assert poison.headers == (("trace", b"t-poison"),)  # retry headers are not kept
        assert (rejected.delivery_count, rejected.reason) == (1, "rejected")
        shown = admin.dead_letter("billing", poison.dlq_partition, poison.dlq_offset)
        assert shown == poison
        with pytest.raises(ValueError, match="no dead letter"):
            admin.dead_letter("billing", 0, 999)
        with pytest.raises(ValueError, match="no dead letter waiting"):  # nothing is sent
            admin.replay_dead_letters("billing", [(poison.dlq_partition, poison.dlq_offset),
                                                  (0, 999)])
        done = admin.replay_dead_letters("billing", [(poison.dlq_partition,
                                                      poison.dlq_offset)])
        assert [(x.value, p) for x, p, _ in done] == [(b"poison", 0)]
        assert [x.value for x in admin.list_dead_letters("billing")] == [b"reject"]
    import json
    import os
    import subprocess
    import sys

    from tests.harness import REPO
    r = subprocess.run([sys.executable, "-m", "raftka.client", "dlq", "list", "billing",
                        "--json"], text=True, capture_output=True, cwd=REPO, timeout=60,
                       env={**os.environ, "RAFTKA_BOOTSTRAP": bootstrap(cluster)})
    assert r.returncode == 0, r.stderr
    assert [(x["value"], x["reason"]) for x in json.loads(r.stdout)] == [("reject", "rejected")]
    copy = cluster.values("payments-in", 0, start=done[0][2])
    assert [v for _, v in copy] == [b"poison"]


class Stop(BaseException):
    pass


@pytest.mark.shared_cluster
def test_process_stopped_in_the_middle_of_a_batch_reads_the_batch_again(cluster: Cluster):
    from raftka.client import Consumer, Producer, RetryTopics
    cluster.create_topic("stop-in")
    with Producer(bootstrap(cluster)) as producer:
        for value in (b"1", b"2", b"3"):
            producer.send("stop-in", value, partition=0).result(timeout=30)
    seen: list[bytes] = []

    def handle(record) -> None:
        seen.append(record.value)
        if record.value == b"2" and seen.count(b"2") == 1:
            raise Stop()  # not an Exception: not a failed delivery, it stops process()

    with Consumer(bootstrap(cluster), "stopper", ["stop-in"],
                  retry_topics=RetryTopics()) as consumer:
        with pytest.raises(Stop):
            wait_for(lambda: consumer.process(handle, 0.5) < 0, 30, "the stop")
        wait_for(lambda: consumer.process(handle, 0.5) is not None and b"3" in seen, 30,
                 "the rest")
        assert consumer.committed([("stop-in", 0)]) == {("stop-in", 0): 3}
    assert seen.count(b"2") == 2 and seen.count(b"3") == 1  # 2 again, nothing skipped


@pytest.mark.shared_cluster
def test_aio_consumer_and_admin_retry_and_dead_letter(cluster: Cluster):
    import asyncio

    import raftka.aio
    from raftka.client import Producer
    from tests.aio_loop import run_unblocked
    cluster.create_topic("aio-in")
    with Producer(bootstrap(cluster)) as producer:
        for value in (b"bad", b"good"):
            producer.send("aio-in", value, partition=0).result(timeout=30)
    seen: list[bytes] = []

    async def handle(record) -> None:
        await asyncio.sleep(0)
        seen.append(record.value)
        if record.value == b"bad":
            raise RuntimeError("bad record")

    async def main():
        policy = raftka.aio.RetryTopics(max_attempts=2, backoff_initial_ms=200)
        async with raftka.aio.Consumer(bootstrap(cluster), "aio-billing", ["aio-in"],
                                       retry_topics=policy) as consumer:
            deadline = time.monotonic() + 60
            while seen.count(b"bad") < 2 and time.monotonic() < deadline:
                await consumer.process(handle, 0.5)
        async with raftka.aio.Admin(bootstrap(cluster)) as admin:
            for _ in range(100):
                letters = await admin.list_dead_letters("aio-billing")
                if letters:
                    return letters
                await asyncio.sleep(0.2)
        return []

    letters = run_unblocked(main)
    assert seen == [b"bad", b"good", b"bad"]
    assert [(x.value, x.delivery_count, x.reason, x.source_offset) for x in letters] == [
        (b"bad", 2, "attempts exhausted", 0)]


def share_call(cluster: Cluster, method: str, request, topic: str | None = None):
    """One Share RPC at the leader of ``topic``/0 (any node for an unknown topic), its
    error as the client's exception; retriable errors other than UNKNOWN_TOPIC retried."""
    import grpc

    from raftka.v1 import share_pb2_grpc
    from raftka.v1.errors import UnknownTopicError, error_from_rpc
    deadline = time.monotonic() + 30
    while True:
        node = cluster.wait_leader(topic, 0) if topic else cluster.live()[0]
        try:
            return getattr(share_pb2_grpc.ShareStub(cluster.channel(node)), method)(
                request, timeout=10)
        except grpc.RpcError as exc:
            err = error_from_rpc(exc)
            if (isinstance(err, UnknownTopicError) or not err.retriable
                    or time.monotonic() > deadline):
                raise err from None
        time.sleep(0.1)


@pytest.mark.shared_cluster
def test_bad_share_input_is_refused_and_changes_nothing(cluster: Cluster):
    from raftka.client import (
        Admin,
        InconsistentGroupTypeError,
        InvalidRecordStateError,
        UnknownGroupError,
        UnknownTopicError,
        describe_share_group,
    )
    from raftka.v1 import share_pb2
    cluster.create_topic("bad-in")
    produce_entries(cluster, "bad-in", 2)
    b = bootstrap(cluster)
    accept_0 = [share_pb2.AcknowledgeRange(first_offset=0, last_offset=0,
                                           type=share_pb2.ACCEPT)]
    with pytest.raises(UnknownGroupError, match="does not exist"):  # acknowledging for a
        share_call(cluster, "ShareAcknowledge", share_pb2.ShareAcknowledgeRequest(  # group
            group_id="no-group", member_id="m", topic="bad-in", partition=0,  # never made
            ranges=accept_0), "bad-in")
    with pytest.raises(UnknownGroupError):
        share_call(cluster, "InitializeSharePartition", share_pb2.InitializeSharePartitionRequest(
            group_id="no-group", topic="bad-in", partition=0), "bad-in")
    for method, request in (
            ("ShareFetch", share_pb2.ShareFetchRequest(group_id="g", member_id="m",
                                                       topic="no-topic", partition=0)),
            ("ShareAcknowledge", share_pb2.ShareAcknowledgeRequest(
                group_id="g", member_id="m", topic="no-topic", partition=0,
                ranges=accept_0))):
        with pytest.raises(UnknownTopicError):
            share_call(cluster, method, request)
    with ShareConsumer(b, "short-locks", ["bad-in"], auto_accept=False,
                       record_lock_duration_ms=1000) as first:
        held: list = []
        wait_for(lambda: held.extend(first.poll(0.5)) or len(held) >= 2, 30, "two records")
        # the locks expire: the records go back; an acknowledgement of them now is refused
        # whole and changes nothing (they are not accepted, and are delivered again)
        with ShareConsumer(b, "short-locks", ["bad-in"], auto_accept=False) as second:
            again: list = []
            wait_for(lambda: again.extend(second.poll(0.5)) or len(again) >= 2, 30,
                     "the records again after the locks expired")
            assert sorted((r.offset, r.delivery_count) for r in again) == [(0, 2), (1, 2)]
            with pytest.raises(InvalidRecordStateError, match="not acquired by member"):
                share_call(cluster, "ShareAcknowledge", share_pb2.ShareAcknowledgeRequest(
                    group_id="short-locks", member_id=first.member_id, topic="bad-in",
                    partition=0, ranges=accept_0), "bad-in")
            state = describe_share_group(b, "short-locks").partitions[0]
            assert (state.accepted, state.acquired, state.members) == (
                0, 2, (second.member_id,))
            for r in again:
                second.accept(r)
            second.flush()
    state = describe_share_group(b, "short-locks").partitions[0]
    assert (state.start_offset, state.accepted) == (2, 2)
    # a consumer group's id is not a share group's, for the Admin and share RPCs either
    from raftka.client import Consumer
    with Consumer(b, "classic-q", ["bad-in"]) as c:
        wait_for(lambda: c.poll(0.5), 30, "the consumer group to read")
        c.commit()
    with pytest.raises(InconsistentGroupTypeError):
        describe_share_group(b, "classic-q")
    with Admin(b) as admin:
        with pytest.raises(InconsistentGroupTypeError):
            admin.describe_group("short-locks")
        with pytest.raises(UnknownGroupError):
            admin.list_dead_letters("no-group")
    assert "Traceback" not in cluster.logs()
