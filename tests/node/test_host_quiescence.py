"""RaftHost with quiesced groups: the ticker skips them, node-level liveness wakes them.

Drives one RaftHost's driver by hand (no peers running, no ticker task): messages are built
as the leader on node 2 would send them, and time is a clock the test sets, so nothing here
sleeps. The rules are those of ``raftka.raft.host`` (rule 9); tests/raft/test_host_driver.py
has the driver's own tests.
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


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def _host(tmp_path, groups: int, clock: _Clock) -> tuple[RaftHost, RocksLogDB]:
    db = RocksLogDB(tmp_path / "raft")
    host = RaftHost(1, db, {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
                    RaftTiming(tick_s=0.05, election_tick=6, heartbeat_tick=2), seed=7,
                    clock=clock)
    for gid in range(1, groups + 1):
        host.add_group(gid, _NullMachine(), ConfState(frozenset({1, 2, 3})))
    return host, db


def _quiesce_from(host: RaftHost, gid: int, leader: int) -> None:
    node = host.groups[gid].node
    host.deliver_many([(gid, Message(MsgType.QUIESCE, 1, leader, term=1, index=0, log_term=0,
                                     commit=0))], leader)
    assert node.quiesced and node.leader_id == leader and node.role == Role.FOLLOWER


def test_liveness_wakes_only_the_quiesced_followers_of_a_silent_peer(tmp_path):
    async def run() -> None:
        clock = _Clock(1000.0)
        host, db = _host(tmp_path, 3, clock)
        try:
            for peer in (2, 3):
                host.driver.add_peer(peer)
            for gid in (1, 2):
                _quiesce_from(host, gid, 2)
            _quiesce_from(host, 3, 3)  # group 3 follows node 3
            quiesced = lambda: [host.groups[g].node.quiesced for g in (1, 2, 3)]  # noqa: E731
            clock.t = 1000.2
            host.deliver_many([], 3)  # node 3 keeps pinging; node 2 went silent at 1000.0
            clock.t = 1000.25
            host.driver.tick()  # silent for 250 ms < the 300 ms election timeout
            assert quiesced() == [True, True, True]
            clock.t = 1000.35
            host.driver.tick()  # silent once: only a suspect
            assert quiesced() == [True, True, True]
            clock.t = 1000.40
            host.driver.tick()  # silent at two ticks in a row: reported
            assert quiesced() == [False, False, True]  # group 3's leader was heard from
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
        clock = _Clock(1000.0)
        host, db = _host(tmp_path, 1, clock)
        try:
            for peer in (2, 3):
                host.driver.add_peer(peer)
            _quiesce_from(host, 1, 2)
            clock.t = 1000.35
            host.driver.tick()  # node 2 is a suspect
            clock.t = 1000.38
            host.deliver_many([], 2)  # a ping from node 2
            clock.t = 1000.40
            host.driver.tick()
            assert host.groups[1].node.quiesced
        finally:
            db.close()

    asyncio.run(run())
