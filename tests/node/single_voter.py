"""A PartitionReplica over a real single-voter RawNode in memory, and the host's ready loop
for it: what the partition unit tests drive."""

from __future__ import annotations

import random
from typing import Callable

from raftka.node._host import Group
from raftka.node._partition import PartitionConfig, PartitionReplica
from raftka.node._watchlist import ReplicaWatchlist
from raftka.raft import Config, MemoryStorage, RawNode


def start_replica(storage: MemoryStorage, seed: int, *, config: PartitionConfig | None = None,
                  clock_ms: Callable[[], int] = lambda: 1_000_000,
                  restart: bool = False, data_watchlist: ReplicaWatchlist | None = None
                  ) -> tuple[PartitionReplica, RawNode]:
    """Node 1's replica of group 2 (partition t/0) on ``storage``, its clock fixed unless
    ``clock_ms`` is given. ``restart``: as the broker starts it over an existing log (the
    stored commit index counts as applied: ``attach`` recovers from the log, the host does
    not apply those entries again). ``data_watchlist``: retention's list of the replicas
    holding data, wired as the broker wires it (before ``attach``)."""
    applied = storage.hard_state().commit if restart else 0
    node = RawNode(Config(1, election_tick=10, heartbeat_tick=1, applied=applied), storage,
                   random.Random(seed))
    replica = PartitionReplica("t", 0, 2, config or PartitionConfig(), lambda _gid: None,
                               clock_ms=clock_ms)
    replica.data_listing.watchlist = data_watchlist
    replica.attach(Group(2, node, storage, replica))  # type: ignore[arg-type]
    return replica, node


def drive(replica: PartitionReplica, node: RawNode, storage: MemoryStorage,
          held: list | None = None) -> None:
    """The host's ready loop; with ``held`` the committed entries are kept back (not
    applied yet) instead of being applied."""
    replica.before_ready()
    while node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.committed_entries:
            if held is None:
                replica.apply(rd.committed_entries)
            else:
                held.extend(rd.committed_entries)
        node.advance(rd)
        replica.on_ready(rd)


def count_log_reads(node: RawNode) -> list[tuple]:
    """Every later ``node.log_entries`` call's arguments, appended to the list returned:
    for tests that a periodic check reads no storage (on the event loop)."""
    reads: list[tuple] = []
    real = node.log_entries

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        reads.append(args)
        return real(*args, **kwargs)

    node.log_entries = counted  # type: ignore[method-assign]
    return reads
