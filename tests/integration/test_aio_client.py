"""The asyncio client (``raftka.aio``) against real 3-node clusters: produce/consume
round trip, admin topics, an idempotent producer across kill -9 of the partition leader
(no loss, no duplicate), and a group of two asyncio consumers rebalancing as one joins
and leaves. Every test runs its loop in debug mode and fails if any callback held the
loop longer than tests/aio_loop.SLOW_CALLBACK_S (the client must never block it)."""

from __future__ import annotations

import asyncio
import time

import pytest

import raftka.aio
from raftka.client import TopicExistsError, TopicPartition, UnknownTopicError

from tests.aio_loop import run_unblocked
from tests.harness import Cluster, wait_for


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


async def _until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Await ``predicate()`` (a coroutine function) until it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def test_admin_creates_lists_describes_and_deletes_topics(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)

    async def main() -> None:
        async with raftka.aio.Admin(bootstrap) as admin:
            brokers = await admin.wait_for_brokers(10)
            assert len(brokers) == 3
            created = await admin.create_topic("aio-admin", partitions=3,
                                               replication_factor=3,
                                               configs={"retention.ms": 600000})
            assert created.partition_count == 3
            ready = await admin.wait_for_topic_ready("aio-admin", 30)
            assert all(p.has_leader for p in ready.partitions)
            assert "aio-admin" in await admin.list_topics()
            with pytest.raises(TopicExistsError):
                await admin.create_topic("aio-admin", partitions=3)
            configs = {c.name: c for c in await admin.describe_topic_configs("aio-admin")}
            assert configs["retention.ms"].value == "600000"
            status = await admin.cluster_status()  # every node asked concurrently
            assert [n.reachable for n in status.nodes] == [True, True, True]
            offsets = await admin.list_offsets("aio-admin", 0, "latest")
            assert offsets.high_watermark == 0
            await admin.delete_topic("aio-admin")
            await _until(lambda: _gone(admin, "aio-admin"), 30, "the topic to go")
            with pytest.raises(UnknownTopicError):
                await admin.delete_topic("aio-admin", timeout=5)

    run_unblocked(main)


async def _gone(admin: raftka.aio.Admin, topic: str) -> bool:
    return topic not in await admin.list_topics()


def test_produce_and_read_back_round_trip(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    cluster.create_topic("aio-rt", partitions=3)
    for p in range(3):
        cluster.wait_leader("aio-rt", p)

    async def main() -> None:
        async with raftka.aio.Producer(bootstrap, linger_ms=0) as producer:
            futures = []
            for i in range(300):
                futures.append(await producer.send("aio-rt", b"v%d" % i, key=b"k%d" % (i % 7),
                                                   headers={"i": str(i)}))
                if i % 25 == 0:  # send() returns without suspending when there is room:
                    await asyncio.sleep(0)  # the test's own loop must yield (debug mode)
            acks = await asyncio.gather(*futures)
            bulk = await (await producer.send_many("aio-rt", [b"bulk%d" % i for i in range(50)],
                                                   partition=1))
            one = await producer.send_and_wait("aio-rt", "text", partition=2)
            assert producer.statistics()["records_sent"] == 351
        expected: dict[int, dict[int, bytes]] = {0: {}, 1: {}, 2: {}}
        for i, (partition, offset) in enumerate(acks):
            expected[partition][offset] = b"v%d" % i
        for i, (partition, offset) in enumerate(bulk):
            assert partition == 1
            expected[1][offset] = b"bulk%d" % i
        expected[one[0]][one[1]] = b"text"
        for partition in range(3):
            got: dict[int, bytes] = {}
            async with raftka.aio.PartitionReader(bootstrap, "aio-rt", partition) as reader:
                while len(got) < len(expected[partition]):
                    for r in await reader.poll(2.0):
                        assert r.offset not in got, "no record twice"
                        got[r.offset] = r.value
                assert reader.at_end
            assert got == expected[partition]
        # async for over a reader, from an offset
        async with raftka.aio.PartitionReader(bootstrap, "aio-rt", 1, offset=3) as reader:
            seen = []
            async for record in reader:
                seen.append(record.offset)
                if len(seen) == 5:
                    break
            assert seen == [3, 4, 5, 6, 7]

    run_unblocked(main)


@pytest.mark.parametrize(("linger_ms", "wait_every"), [
    pytest.param(0, 0, id="linger0-flat-out"), pytest.param(1, 0, id="linger1-flat-out"),
    pytest.param(0, 4, id="linger0-few-in-flight")])
def test_idempotent_producer_across_leader_kills_has_no_loss_and_no_duplicates(
        cluster: Cluster, linger_ms: int, wait_every: int) -> None:
    """kill -9 of the partition leader twice while an asyncio producer keeps batches in
    flight (or, awaiting every 4th record, a few lone unary calls: the low-rate path);
    then every offset holds exactly the value sent in that position."""
    bootstrap = _bootstrap(cluster)
    cluster.create_topic("aio-chaos", partitions=1)
    cluster.wait_leader("aio-chaos", 0)
    futures: list[asyncio.Future] = []

    async def main() -> dict[str, int]:
        stop = asyncio.Event()
        producer = raftka.aio.Producer(bootstrap, acks="all", linger_ms=linger_ms,
                                       batch_size=4096, buffer_memory=256 * 1024,
                                       enable_idempotence=True, request_timeout_ms=3000)

        async def send_forever() -> None:
            i = 0
            while not stop.is_set():
                future = await producer.send("aio-chaos", b"value-%08d" % i, partition=0)
                futures.append(future)
                i += 1
                if wait_every and i % wait_every == 0:
                    await asyncio.wait([future])  # its failure is checked at the end
                elif i % 8 == 0:
                    # send() does not yield while there is buffer room: a loop of sends
                    # is the application's to break up (debug mode makes each costly)
                    await asyncio.sleep(0)

        async def progress(records: int) -> None:
            if wait_every:  # each wait a round trip: the low-rate path needs fewer
                records //= wait_every
            mark = len(futures) + records
            await _until(lambda: _at_least(futures, mark), 60, "records to be sent")

        sender = asyncio.ensure_future(send_forever())
        try:
            for _ in range(2):
                await progress(2000)
                leader = await asyncio.to_thread(cluster.wait_leader, "aio-chaos", 0)
                await asyncio.to_thread(cluster.kill, leader)
                await asyncio.to_thread(
                    wait_for, lambda: cluster.partition_leader("aio-chaos", 0) not in
                    (0, leader), 30, "a new leader")
                await asyncio.to_thread(cluster.start, leader)
            await progress(2000)
        finally:
            stop.set()
            await sender
            await producer.flush(120)
            stats = producer.statistics()
            await producer.close()
        return stats

    stats = run_unblocked(main)
    assert stats["retries"] > 0, "the kills did interrupt writes"
    sent = [b"value-%08d" % i for i in range(len(futures))]
    offsets = [f.result()[1] for f in futures]
    assert offsets == list(range(len(futures))), "offsets follow send order, no gaps"
    cluster.assert_acknowledged("aio-chaos", 0, sent, dict(zip(sent, offsets)))
    cluster.assert_replicas_agree("aio-chaos", 0)


async def _at_least(items: list, count: int) -> bool:
    return len(items) >= count


def test_two_asyncio_consumers_rebalance_and_resume_from_commits(cluster: Cluster) -> None:
    """Member A alone owns all 4 partitions; B joins: each partition is owned by exactly
    one of them and both read; B leaves: A owns all again and continues each of B's
    partitions from B's last commit (nothing B committed comes again)."""
    bootstrap = _bootstrap(cluster)
    topic = "aio-group"
    cluster.create_topic(topic, partitions=4)
    for p in range(4):
        cluster.wait_leader(topic, p)
    everything = {TopicPartition(topic, p) for p in range(4)}

    async def produce(producer: raftka.aio.Producer, start: int, count: int) -> None:
        futures = []
        for i in range(start, start + count):
            futures.append(await producer.send(topic, b"%d" % i, partition=i % 4))
            if i % 25 == 0:  # send() does not suspend when there is room: yield ourselves
                await asyncio.sleep(0)
        await asyncio.gather(*futures)

    async def drain(consumer: raftka.aio.Consumer, into: dict, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for r in await consumer.poll(0.2):
                into.setdefault((r.partition, r.offset), r.value)
                into.setdefault("by", []).append((consumer.member_id, r.partition, r.offset))
            await consumer.commit()

    async def main() -> None:
        async with raftka.aio.Producer(bootstrap, linger_ms=0) as producer:
            await produce(producer, 0, 200)
            a = raftka.aio.Consumer(bootstrap, "aio-g", [topic], session_timeout_ms=6000)
            seen_a: dict = {}

            async def a_owns(wanted: set) -> bool:
                await drain(a, seen_a, 0.3)
                return a.assignment() == wanted

            await _until(lambda: a_owns(everything), 30, "A to own every partition")
            b = raftka.aio.Consumer(bootstrap, "aio-g", [topic], session_timeout_ms=6000)
            seen_b: dict = {}

            async def split() -> bool:
                await asyncio.gather(drain(a, seen_a, 0.3), drain(b, seen_b, 0.3))
                owned_a, owned_b = a.assignment(), b.assignment()
                return (owned_a and owned_b and not owned_a & owned_b
                        and owned_a | owned_b == everything)

            await _until(split, 30, "A and B to split the partitions")
            b_parts = b.assignment()
            await produce(producer, 200, 200)
            await _until(lambda: _read_all(a, b, seen_a, seen_b, drain, 400), 30,
                         "every record read by one of them")
            # each record read by the member owning its partition
            b_records = {k for k in seen_b if k != "by"}
            assert b_records and {p for p, _ in b_records} <= {tp.partition for tp in b_parts}
            await b.commit()
            b_committed = await b.committed()
            await b.close()  # leaves the group
            a_reads_before = len(seen_a["by"])
            await produce(producer, 400, 100)
            await _until(lambda: a_owns(everything), 30, "A to own every partition again")
            assert b_committed and all(b_committed[tp] is not None for tp in b_parts)
            await _until(lambda: _read_all(a, None, seen_a, seen_b, drain, 500), 30,
                         "A to read the rest")
            # A resumed B's partitions at B's commits: nothing B had committed came again
            again = [(p, o) for _m, p, o in seen_a["by"][a_reads_before:]
                     if TopicPartition(topic, p) in b_parts
                     and o < b_committed[TopicPartition(topic, p)]
                     and (p, o) in b_records]
            assert not again, f"A re-read what B had committed: {again[:5]}"
            for tp in b_parts:  # and went on exactly where B's commit said
                first = min(o for _m, p, o in seen_a["by"][a_reads_before:]
                            if p == tp.partition)
                assert first == b_committed[tp], (tp, first, b_committed[tp])
            await a.close()

    run_unblocked(main)


async def _read_all(a, b, seen_a, seen_b, drain, total: int) -> bool:
    await asyncio.gather(drain(a, seen_a, 0.2), *( [drain(b, seen_b, 0.2)] if b else []))
    keys = {k for k in seen_a if k != "by"} | {k for k in seen_b if k != "by"}
    return len(keys) >= total


def test_reader_follows_a_killed_leader_without_gaps_or_repeats(cluster: Cluster) -> None:
    """An asyncio PartitionReader reading a backlog while its partition's leader is
    killed -9: it follows the new leader and returns every record once, in order."""
    bootstrap = _bootstrap(cluster)
    cluster.create_topic("aio-follow", partitions=1)
    cluster.wait_leader("aio-follow", 0)
    total = 3000  # ~300 KiB: about 20 fetches of 16 KiB, most after the kill

    async def main() -> None:
        async with raftka.aio.Producer(bootstrap, linger_ms=2, batch_size=16 * 1024,
                                       compression="none") as producer:
            futures = []
            for i in range(total):
                futures.append(await producer.send("aio-follow", _padded(i), partition=0))
                if i % 50 == 0:
                    await asyncio.sleep(0)
            await producer.flush()  # (gathering 3,000 futures would hold the loop itself)
            assert [f.result()[1] for f in futures] == list(range(total))
        offsets: list[int] = []
        killed = False
        async with raftka.aio.PartitionReader(bootstrap, "aio-follow", 0,
                                              max_bytes=16 * 1024) as reader:
            while len(offsets) < total:
                for r in await reader.poll(2.0, max_records=200):
                    assert r.value == _padded(r.offset)
                    offsets.append(r.offset)
                if not killed and len(offsets) >= total // 3:
                    leader = await asyncio.to_thread(cluster.wait_leader, "aio-follow", 0)
                    await asyncio.to_thread(cluster.kill, leader)
                    killed = True
        assert killed
        assert offsets == list(range(total)), "every record once, in order"

    run_unblocked(main)


def _padded(i: int) -> bytes:
    return b"%d-" % i + b"x" * 100
