"""Delayed delivery against real node processes: records with a delivery time are
acknowledged at once but invisible (on every replica) until due, then appear exactly once;
a kill -9 of the leader while records are pending and while they are being released loses
none and doubles none; bad delivery times are refused with nothing written."""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Iterator

import grpc
import pytest

import raftka.aio
from raftka.client import Producer
from raftka.v1 import broker_pb2, errors_pb2
from raftka.v1.recordbatch import Record, build_batch
from tests.harness import Cluster, error_info, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("delayed"), 3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers[i] for i in sorted(cluster.peers))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _produce_at(cluster: Cluster, topic: str, values: list[bytes], deliver_at_ms: int,
                as_records: bool = False) -> broker_pb2.ProduceResponse:
    leader = cluster.wait_leader(topic, 0)
    request = broker_pb2.ProduceRequest(topic=topic, partition=0, acks=broker_pb2.ACKS_ALL,
                                        timeout_ms=10_000, deliver_at_ms=deliver_at_ms)
    if as_records:
        request.records.records.extend(broker_pb2.Record(value=v) for v in values)
    else:
        request.record_batches = build_batch([Record(None, v) for v in values],
                                             compression="none")
    return cluster.broker(leader).Produce(request, timeout=12)


def _replica_high_watermarks(cluster: Cluster, topic: str) -> list[int]:
    return [cluster.replica_position(n, topic, 0).high_watermark for n in cluster.responsive()]


@pytest.mark.shared_cluster
def test_delayed_records_are_invisible_everywhere_until_due_then_appear_once(
        cluster: Cluster) -> None:
    cluster.create_topic("later", partitions=1)
    due_ms = _now_ms() + 3000
    with Producer(_bootstrap(cluster), linger_ms=0) as producer:
        delayed = [producer.send("later", b"d%d" % i, partition=0, deliver_at=due_ms)
                   for i in range(5)]
        now = producer.send("later", b"now", partition=0)
        producer.flush()
        assert [f.result(10) for f in delayed] == [(0, -1)] * 5, "no offset before delivery"
        assert now.result(10) == (0, 0)
    response = _produce_at(cluster, "later", [b"pb1", b"pb2"], due_ms,
                           as_records=True)  # the plain-protobuf path
    assert (response.base_offset, response.last_offset) == (-1, -1)

    async def aio_send() -> tuple[int, int]:
        async with raftka.aio.Producer(_bootstrap(cluster), linger_ms=0) as producer:
            future = await producer.send("later", b"aio", partition=0, deliver_at=due_ms)
            return await future

    assert asyncio.run(aio_send()) == (0, -1)
    values = [v for _, v in cluster.values("later", 0)]
    high_watermarks = set(_replica_high_watermarks(cluster, "later"))
    if _now_ms() < due_ms:  # looked before the time (a very slow machine may not have)
        assert values == [b"now"]
        # a follower may not have learned the commit of "now" yet (0): none is past it
        assert max(high_watermarks) == 1 and high_watermarks <= {0, 1}, \
            "no replica shows a delayed record early"

    expected = Counter([b"now", b"pb1", b"pb2", b"aio"] + [b"d%d" % i for i in range(5)])

    def delivered():
        got = cluster.values("later", 0)
        seen_at = _now_ms()
        assert len(got) == 1 or seen_at >= due_ms, f"delivered {due_ms - seen_at} ms early"
        return got if len(got) >= len(expected) else None

    got = wait_for(delivered, 20, "the delayed records to be delivered")
    assert Counter(v for _, v in got) == expected, "each exactly once"
    assert [o for o, _ in got] == list(range(len(got))), "offsets assigned at delivery"
    cluster.assert_replicas_agree("later", 0)


def test_kill_of_the_leader_while_pending_and_while_releasing_loses_and_doubles_nothing(
        cluster: Cluster) -> None:
    cluster.create_topic("failover", partitions=1)
    base = _now_ms() + 1500
    # 60 scheduled entries due over 2 s from 1.5 s on: a kill -9 at ~2.5 s hits releases
    sent: list[bytes] = []
    for i in range(60):
        values = [b"f%d-%d" % (i, j) for j in range(3)]
        _produce_at(cluster, "failover", values, base + i * 33)
        sent.extend(values)
    leader = cluster.wait_leader("failover", 0)
    wait_for(lambda: _now_ms() >= base + 1000, 10, "some releases to have begun")
    cluster.kill(leader)
    try:
        wait_for(lambda: len(cluster.values("failover", 0)) >= len(sent), 30,
                 "every delayed record after the failover")
        got = cluster.values("failover", 0)
        counts = Counter(v for _, v in got)
        assert counts == Counter(sent), (
            f"lost {sorted(set(sent) - set(counts))[:5]}, "
            f"doubled {[v for v, n in counts.items() if n > 1][:5]}")
    finally:
        cluster.start(leader)
    cluster.wait_healthy()
    # leadership goes back to the restarted node (the preferred replica), whose pending
    # set was rebuilt from its log at start: it must release nothing again
    assert cluster.wait_preferred_leader("failover", 0, timeout=30) == leader
    _produce_at(cluster, "failover", [b"end"], 0)
    assert Counter(v for _, v in cluster.values("failover", 0)) == Counter(sent + [b"end"])
    cluster.assert_replicas_agree("failover", 0)


@pytest.mark.parametrize("deliver_at, words", [(-1, "negative"),
                                               (None, "max.delivery.delay.ms")])
@pytest.mark.shared_cluster
def test_bad_delivery_times_are_refused_and_nothing_is_written(cluster: Cluster, deliver_at,
                                                               words) -> None:
    topic = "bad-delay" if deliver_at is None else "bad-delay-neg"
    cluster.create_topic(topic, partitions=1, configs={"max.delivery.delay.ms": "60000"})
    before = cluster.values(topic, 0)
    at = _now_ms() + 120_000 if deliver_at is None else deliver_at
    with pytest.raises(grpc.RpcError) as err:
        _produce_at(cluster, topic, [b"x"], at)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err.value)
    assert info is not None and info.code == errors_pb2.INVALID_REQUEST
    assert words in info.message
    assert cluster.values(topic, 0) == before
    assert set(_replica_high_watermarks(cluster, topic)) == {0}


def _cli(cluster: Cluster, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, RAFTKA_BOOTSTRAP=_bootstrap(cluster))
    return subprocess.run([sys.executable, "-m", "raftka.client", *args], input=stdin,
                          text=True, capture_output=True, env=env, timeout=60)


@pytest.mark.shared_cluster
def test_cli_produce_with_a_delay_and_a_time(cluster: Cluster) -> None:
    cluster.create_topic("cli-later", partitions=1)
    start = time.time()
    done = _cli(cluster, "produce", "cli-later", "--delay", "1500ms", stdin="a\nb\n")
    assert done.returncode == 0, done.stderr
    assert "produced 2 records" in done.stderr and "delivered after 1.5s" in done.stderr
    at = datetime.datetime.fromtimestamp(time.time() + 1.5, datetime.timezone.utc)
    done = _cli(cluster, "produce", "cli-later", "--deliver-at", at.isoformat(), stdin="c\n")
    assert done.returncode == 0, done.stderr
    if time.time() - start < 1.4:  # the CLI started fast enough to look before the time
        assert cluster.values("cli-later", 0) == []
    wait_for(lambda: len(cluster.values("cli-later", 0)) >= 3, 20, "the CLI's records")
    assert sorted(v for _, v in cluster.values("cli-later", 0)) == [b"a", b"b", b"c"]
    bad = _cli(cluster, "produce", "cli-later", "--delay=-5s", stdin="x\n")
    assert bad.returncode == 2 and "negative delays are not allowed" in bad.stderr
