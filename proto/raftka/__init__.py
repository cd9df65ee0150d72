"""Raftka: a distributed replicated log with Kafka's model and Raft's guarantees, over gRPC.

The public client API, importable from here::

    from raftka import Admin, Consumer, PartitionReader, Producer

    with Producer("127.0.0.1:7001") as producer:
        partition, offset = producer.send("events", b"hello", key=b"k").result()

The namespace (one distribution, nothing else at the top of site-packages):

- ``raftka.client``: the Python client library and the ``raftka`` command (``client/``);
- ``raftka.aio``: the asyncio client (``client/aio/``, re-exported by ``proto/raftka/aio.py``);
- ``raftka.node``: the broker (``node/``, run with ``python -m raftka.node``);
- ``raftka.raft``: the Raft core (``raftka.raft.core``, pure) and its RocksDB store (``raft/``);
- ``raftka.v1``: the wire contract that client and broker share (``proto/raftka/v1``): the
  ``.proto`` schema, the stubs generated from it, the RecordBatch v2 codec and the one table
  of error codes.

This module lives beside the contract because the contract is the one thing every part
imports; it re-exports the client's public names lazily (PEP 562), so that the broker, which
imports ``raftka.v1``, never loads the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from raftka.client import *  # noqa: F403


def __getattr__(name: str) -> Any:
    client = importlib.import_module("raftka.client")
    if name in client.__all__:
        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'raftka' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *importlib.import_module("raftka.client").__all__})
