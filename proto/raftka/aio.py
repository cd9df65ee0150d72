"""``raftka.aio``: the asyncio client (``Producer``, ``Consumer``, ``ShareConsumer``,
``PartitionReader``, ``Admin`` with coroutine methods). It lives in ``raftka.client.aio``
(``client/aio/``); this module re-exports it so applications write ``import raftka.aio``."""

from raftka.client.aio import (Admin, AsyncCluster, Consumer, PartitionReader, Producer,
                               RetryTopics, ShareConsumer)

__all__ = ["Admin", "AsyncCluster", "Consumer", "PartitionReader", "Producer", "RetryTopics",
           "ShareConsumer"]
