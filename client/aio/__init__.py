"""Raftka's asyncio client: ``Producer``, ``Consumer`` (consumer groups),
``ShareConsumer`` (share groups), ``PartitionReader`` and ``Admin`` whose methods are
coroutines, on ``grpc.aio``.

    import raftka.aio

    async with raftka.aio.Admin(bootstrap) as admin:
        await admin.create_topic("events", partitions=3)
        await admin.wait_for_topic_ready("events")
    async with raftka.aio.Producer(bootstrap) as producer:
        partition, offset = await producer.send_and_wait("events", b"hello", key=b"k")
    async with raftka.aio.Consumer(bootstrap, "billing", ["events"]) as consumer:
        async for record in consumer:
            await consumer.commit()

It is the threaded client (``raftka.client``) with other I/O, not a second client: the
batching (``_accumulator.py``), the sender's decisions (``_sender.py``), idempotence
(``_idempotence.py``), the retry policy (``_retry.py``), the metadata cache and the
admin, group-coordinator and reader operations (``_ops.py`` generators) are the same
code, run here by an asyncio driver (``aio/_cluster.py``). Errors are the same
:class:`raftka.client.RaftkaError` classes. Nothing blocks the event loop.
"""

from raftka.client.aio._admin import Admin
from raftka.client.aio._cluster import AsyncCluster
from raftka.client.aio._consumer import Consumer
from raftka.client._retry_topics import RetryTopics
from raftka.client.aio._producer import Producer
from raftka.client.aio._reader import PartitionReader
from raftka.client.aio._share import ShareConsumer

__all__ = ["Admin", "AsyncCluster", "Consumer", "PartitionReader", "Producer", "RetryTopics",
           "ShareConsumer"]
