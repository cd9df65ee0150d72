"""Raftka's Raft: the pure consensus core and the storage adapter beside it.

- ``raftka.raft.core``: the deterministic state machine (``RawNode``: ``tick()``, ``step()``,
  ``propose()``, ``ready()``/``advance()``) with the storage interface and an in-memory store.
  It imports nothing but the standard library: no clock, sockets, threads or RocksDB.
- ``raftka.raft.rocksdb``: the RocksDB (rocksdict) log store for many groups in one DB.

The core's public names are re-exported here for convenience; importing this package never
imports rocksdict.
"""

from raftka.raft.core import *  # noqa: F403
from raftka.raft.core import __all__  # noqa: F401
