"""Damage found by the Raft loop while the node runs: the loop stops with the
``StorageCorruption`` and logs nothing itself, so the server says it in the one documented
line (node/README.md, "Operations: damaged storage") that an operator, or the jepsen-like
harness, recovers from. Any other failure of the loop is logged with its traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftka.node._host import RaftHost, RaftTiming
from raftka.raft import StorageCorruption
from raftka.raft.rocksdb import RocksLogDB


@pytest.mark.parametrize("failure", [StorageCorruption(8, 91, "missing entry inside "
                                                       "[first, last]"), RuntimeError("bug")],
                         ids=["damage", "bug"])
def test_the_ready_loop_stops_on_damage_without_a_traceback(tmp_path, caplog, failure):
    async def run() -> BaseException | None:
        db = RocksLogDB(tmp_path / "raft")
        host = RaftHost(1, db, {1: "127.0.0.1:1"},
                        RaftTiming(tick_s=0.05, election_tick=6, heartbeat_tick=2), seed=7)

        async def failing_pass() -> None:
            raise failure
        host._pass = failing_pass  # type: ignore[method-assign]
        host.start()
        host._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(host.ready_loop), 5)
        except BaseException:  # noqa: BLE001 - the loop's own failure, read below
            pass
        error = host.ready_loop.exception()
        await host.stop()
        db.close()
        return error

    with caplog.at_level(logging.ERROR, logger="raftka.host"):
        error = asyncio.run(run())
    assert error is failure
    logged = [r for r in caplog.records if "raft ready loop failed" in r.getMessage()]
    assert bool(logged) == isinstance(failure, RuntimeError)
