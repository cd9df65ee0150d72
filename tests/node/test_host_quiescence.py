"""RaftHost with quiesced groups: the ticker skips them, node-level liveness wakes them.

Drives one RaftHost's groups by hand (no peers running, no ticker task): messages are built
as the leader on node 2 would send them, and the liveness check is called with explicit
times, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio

from raftka.node._host import RaftHost, RaftTiming
from raftka.raft import ConfState, Message, MsgType, Role
from raftka.raft.rocksdb import RocksLogDB


class _NullMachine:
    def restore(self, snapshot) -> None: ...
    def before_ready(self) -> None: ...
    def apply(self, entries) -> None: ...
    def on_ready(self, rd) -> None: ...


def _host(tmp_path, groups: int) -> tuple[RaftHost, RocksLogDB]:
    db = RocksLogDB(tmp_path / "raft")
    host = RaftHost(1, db, {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
                    RaftTiming(tick_s=0.05, election_tick=6, heartbeat_tick=2), seed=7)
    for gid in range(1, groups + 1):
        host.add_group(gid, _NullMachine(), ConfState(frozenset({1, 2, 3})))
    return host, db


def _quiesce_from_node_2(host: RaftHost, gid: int) -> None:
    node = host.groups[gid].node
    host.deliver_many([(gid, Message(MsgType.QUIESCE, 1, 2, term=1, index=0, log_term=0,
                                     commit=0))], 2)
    assert node.quiesced and node.leader_id == 2 and node.role == Role.FOLLOWER


def test_liveness_wakes_only_the_quiesced_followers_of_a_silent_peer(tmp_path):
    async def run() -> None:
        host, db = _host(tmp_path, 3)
        try:
            for gid in (1, 2):
                _quiesce_from_node_2(host, gid)
            # group 3 follows node 3
            host.deliver_many([(3, Message(MsgType.QUIESCE, 1, 3, term=1, index=0,
                                           log_term=0, commit=0))], 3)
            t0 = 1000.0
            host._heard = {2: t0, 3: t0 + 1.0}
            silence = 0.3
            host._check_liveness(t0 + 0.2, silence)  # not silent long enough
            assert all(host.groups[g].node.quiesced for g in (1, 2, 3))
            host._check_liveness(t0 + 0.35, silence)  # silent once: only a suspect
            assert all(host.groups[g].node.quiesced for g in (1, 2, 3))
            host._check_liveness(t0 + 0.40, silence)  # silent at two ticks in a row
            assert not host.groups[1].node.quiesced and not host.groups[2].node.quiesced
            assert host.groups[3].node.quiesced  # its leader, node 3, was heard from
            # Woken with the lease over: they campaign within their randomized timeout.
            for _ in range(12):
                for gid in (1, 2):
                    host.groups[gid].node.tick()
            assert all(host.groups[g].node.role == Role.PRE_CANDIDATE for g in (1, 2))
        finally:
            db.close()

    asyncio.run(run())


def test_a_batch_from_a_peer_clears_its_silence(tmp_path):
    async def run() -> None:
        host, db = _host(tmp_path, 1)
        try:
            _quiesce_from_node_2(host, 1)
            host._heard = {2: 1000.0, 3: 1000.0}
            host._check_liveness(1000.35, 0.3)
            host.deliver_many([], 2)  # a ping from node 2
            host._heard[2] = 1000.38  # (deliver_many stamps the real clock)
            host._check_liveness(1000.40, 0.3)
            assert host.groups[1].node.quiesced
        finally:
            db.close()

    asyncio.run(run())
