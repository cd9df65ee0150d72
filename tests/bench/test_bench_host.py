"""Micro benchmark of the node's host: the asyncio adapter ``RaftHost`` around the host
driver, over a real RocksLogDB, without peers or gRPC.

One round: node 1 follows node 2 in every group. A batch with one APP per group (one 1 KiB
entry each) is delivered (``deliver_many``), then one pass runs: ONE synced write for all
groups on the sync thread, one APP_RESP per group; then a batch of heartbeats carrying the
new commit index, and a commit-only pass (unsynced write, apply). Per round: two batches,
two passes, one fsync. What it shows is the host's own Python work per group-message plus
one sync; the transport's queues are emptied between rounds (nothing is sent).
"""

from __future__ import annotations

import asyncio

import pytest

from raftka.node._host import RaftHost, RaftTiming, _SyncThread
from raftka.raft import ConfState, Entry, Message, MsgType
from raftka.raft.rocksdb import RocksLogDB

ENTRY = b"x" * 1024


class _Null:
    def restore(self, snapshot) -> None: ...
    def before_ready(self) -> None: ...
    def apply(self, entries) -> None: ...
    def on_ready(self, rd) -> None: ...


@pytest.mark.parametrize("groups", [1, 200])
def test_follower_round_of_many_groups(benchmark, tmp_path, groups: int) -> None:
    db = RocksLogDB(tmp_path / "raft")
    loop = asyncio.new_event_loop()
    host = RaftHost(1, db, {1: "a", 2: "b", 3: "c"}, RaftTiming(), seed=1)
    ids = range(1, groups + 1)
    for gid in ids:
        host.add_group(gid, _Null(), ConfState(frozenset({1, 2, 3})))
    host._storage.thread = _SyncThread(db.save_many, "bench-sync")
    peers = host.transport._peers.values()
    index = 0

    async def one_round() -> None:
        nonlocal index
        index += 1
        previous_term = 1 if index > 1 else 0
        host.deliver_many([(g, Message(MsgType.APP, 1, 2, term=1, index=index - 1,
                                       log_term=previous_term, commit=index - 1,
                                       entries=[Entry(1, index, 0, ENTRY)])) for g in ids], 2)
        await host._pass()
        host.deliver_many([(g, Message(MsgType.HEARTBEAT, 1, 2, term=1, commit=index))
                           for g in ids], 2)
        await host._pass()
        for peer in peers:
            peer.queue.clear()

    try:
        loop.run_until_complete(host._pass())
        benchmark.pedantic(lambda: loop.run_until_complete(one_round()), rounds=200,
                           warmup_rounds=20, iterations=1)
        assert all(host.groups[g].node.commit_index == index for g in ids)
        benchmark.extra_info["group_messages_per_round"] = 2 * groups
    finally:
        host._storage.thread.stop()
        loop.close()
        db.close()
