"""``poll_batches``: the batch-level read API of PartitionReader and Consumer (threaded and
asyncio) against one real 3-node cluster. Every record comes back exactly once, in order,
with its key, headers and timestamp; batches mix with ``poll``; a group member's position
and commit follow the batches it was handed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import raftka.aio
from raftka.client import ConsumedBatch, Consumer, PartitionReader, Producer, TopicPartition

from tests.aio_loop import run_unblocked
from tests.harness import Cluster

TOPIC = "batches"
COUNT = 3000  # sent as 6 send_many calls of 500: several stored batches


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("batch-reads")), 3)
    try:
        c.start_all()
        c.create_topic(TOPIC, partitions=2)
        for p in range(2):
            c.wait_leader(TOPIC, p)
        with Producer(_bootstrap(c), linger_ms=5) as producer:
            for start in range(0, COUNT, 500):
                producer.send_many(TOPIC, [_value(i) for i in range(start, start + 500)],
                                   partition=0, key=b"k", headers={"h": b"x"})
            producer.send_many(TOPIC, [b"p1-%d" % i for i in range(10)], partition=1)
            producer.flush(30)
        yield c
    finally:
        c.stop_all()


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _value(i: int) -> bytes:
    return b"v%06d" % i


def _check(batches: list[ConsumedBatch], seen: list[int]) -> None:
    for b in batches:
        assert isinstance(b, ConsumedBatch) and len(b) > 0
        assert b.topic == TOPIC and b.partition == 0
        assert len(b.keys) == len(b.values) == len(b.timestamps_ms) == len(b.headers) == len(b)
        assert b.values == [_value(o) for o in b.offsets]
        assert set(b.keys) == {b"k"} and set(b.headers) == {(("h", b"x"),)}
        assert b.next_offset == b.offsets[-1] + 1
        assert [r.value for r in b] == b.values  # iterating yields ConsumedRecords
        seen.extend(b.offsets)


def test_partition_reader_hands_out_whole_batches_and_mixes_with_poll(cluster):
    seen: list[int] = []
    # from inside a stored batch: its records below 250 are not handed out
    with PartitionReader(_bootstrap(cluster), TOPIC, 0, offset=250) as reader:
        first = reader.poll(5.0, max_records=10)  # per record, then by batches
        assert [r.offset for r in first] == list(range(250, 260))
        seen.extend(r.offset for r in first)
        while len(seen) < COUNT - 250:
            batches = reader.poll_batches(5.0, max_records=700)
            assert batches, "a backlog is there"
            # the first batch whole, then more only while they total at most 700
            assert len(batches) == 1 or sum(map(len, batches)) <= 700
            _check(batches, seen)
        assert seen == list(range(250, COUNT))
        assert reader.position == COUNT and reader.at_end
        assert reader.poll_batches(0.2) == []


def test_consumer_poll_batches_moves_position_and_commits(cluster):
    bootstrap = _bootstrap(cluster)
    seen: list[int] = []
    with Consumer(bootstrap, "batch-group", [TOPIC], auto_offset_reset="earliest",
                  enable_auto_commit=False) as consumer:
        other = 0
        while len(seen) < COUNT or other < 10:
            for b in consumer.poll_batches(5.0):
                if b.partition == 1:
                    other += len(b)
                    assert b.values[0].startswith(b"p1-")
                else:
                    _check([b], seen)
        assert seen == list(range(COUNT))
        assert consumer.position(TOPIC, 0) == COUNT
        consumer.commit()
        assert consumer.committed([(TOPIC, 0)])[TopicPartition(TOPIC, 0)] == COUNT


def test_asyncio_reader_and_consumer_poll_batches(cluster):
    bootstrap = _bootstrap(cluster)

    async def main() -> None:
        seen: list[int] = []
        async with raftka.aio.PartitionReader(bootstrap, TOPIC, 0) as reader:
            while len(seen) < COUNT:
                _check(await reader.poll_batches(5.0), seen)
        assert seen == list(range(COUNT))
        seen = []
        async with raftka.aio.Consumer(bootstrap, "batch-group-aio", [TOPIC],
                                       auto_offset_reset="earliest") as consumer:
            while len(seen) < COUNT:
                _check([b for b in await consumer.poll_batches(5.0) if b.partition == 0],
                       seen)
        assert seen == list(range(COUNT))

    run_unblocked(main)
