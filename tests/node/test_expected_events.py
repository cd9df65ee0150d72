"""Expected events are logged quietly (INFO, no traceback), real errors stay ERROR: a
produce, offset commit or metadata write whose requester went away before it failed, a decommission step
that lost the controller leadership, an error answer to an RPC that has ended already, a
retention point Raft has not counted as applied yet (jepsen-like/FINDINGS.md, "Found on
the way" 2)."""

from __future__ import annotations

import asyncio
import gc
import logging
from types import SimpleNamespace

import pytest
from grpc._cython.cygrpc import ExecuteBatchError

from raftka.node._broker import Broker
from raftka.node._controller_replica import ControllerReplica
from raftka.node._errors import BrokerError, Code, abort_with
from raftka.node._group_service import GroupCoordinatorService
from raftka.node._partition import PartitionReplica
from raftka.node._reassignment import ReassignmentDriver
from raftka.node._watchlist import Listing, ReplicaWatchlist
from raftka.raft import Role


def _unretrieved_after_the_requester_left(wait) -> list[dict]:
    """What asyncio reports as never retrieved when the task awaiting ``wait(future)`` is
    cancelled (its client went away) and the future then fails."""
    reported: list[dict] = []

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        future = asyncio.get_running_loop().create_future()
        waiter = asyncio.ensure_future(wait(future))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        if not future.done():  # (a produce's wait cancels its request itself: nothing fails)
            future.set_exception(BrokerError(Code.NOT_LEADER, "the write was lost in a "
                                              "leader change", retriable=True))
        await asyncio.sleep(0)
        del future, waiter
        gc.collect()

    asyncio.run(run())
    return [ctx for ctx in reported if "never retrieved" in ctx.get("message", "")]


def test_a_produce_whose_client_went_away_fails_quietly() -> None:
    assert _unretrieved_after_the_requester_left(
        lambda f: PartitionReplica.wait_acked(None, f, -1, 5.0)) == []  # type: ignore[arg-type]


def test_a_metadata_write_whose_requester_went_away_fails_quietly() -> None:
    replica = ControllerReplica([1, 2, 3], lambda: None, lambda gid: None)

    async def wait(future: asyncio.Future):
        node = SimpleNamespace(propose=lambda command: 5, term=2)
        replica.group = SimpleNamespace(node=node)  # type: ignore[assignment]
        replica.require_leader = lambda: None  # type: ignore[method-assign]
        replica._waiters = SimpleNamespace(append=lambda item: None)  # holds no reference
        loop = asyncio.get_running_loop()
        real = loop.create_future
        ours = iter([future])  # the waiter's future is the first one propose creates
        loop.create_future = lambda: next(ours, None) or real()  # type: ignore[method-assign]
        try:
            return await replica.propose(b"command", 5.0)
        finally:
            loop.create_future = real  # type: ignore[method-assign]

    assert _unretrieved_after_the_requester_left(wait) == []


def test_the_check_can_fail_without_the_fix() -> None:
    async def bare(future: asyncio.Future):
        return await asyncio.wait_for(asyncio.shield(future), 5.0)

    assert _unretrieved_after_the_requester_left(bare)


def test_a_decommission_step_that_lost_the_leadership_is_logged_at_info(caplog) -> None:
    node = SimpleNamespace(role=Role.LEADER, conf_change_pending=True)

    async def propose(command: bytes, timeout_s: float):
        raise BrokerError(Code.NOT_LEADER, "the metadata change was lost in a leader change",
                          retriable=True)

    state = SimpleNamespace(reassignments=lambda: [], decommissioning=frozenset({3}),
                            hosts_anything=lambda n: False)
    controller = SimpleNamespace(group=SimpleNamespace(node=node), state=state,
                                 propose=propose)
    broker = SimpleNamespace(controller=controller, forget_departed_nodes=lambda: None)
    driver = ReassignmentDriver(broker)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="raftka.reassignment"):
        asyncio.run(driver.step())
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "leader change" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is None


class _EndedContext:
    """A servicer context whose RPC has ended (``done``), or ends during the abort."""

    def __init__(self, done: bool) -> None:
        self._done = done
        self.aborted = False

    def done(self) -> bool:
        return self._done

    async def abort(self, code, details, trailing_metadata=()) -> None:
        self.aborted = True
        raise ExecuteBatchError("Failed 'execute_batch': (<grpc._cython.cygrpc."
                                "SendStatusFromServerOperation ...>)")


@pytest.mark.parametrize("done", [True, False], ids=["ended", "ends-during-abort"])
def test_an_error_for_an_rpc_that_ended_ends_it_as_cancelled(done: bool) -> None:
    """A forwarded join that timed out after its client gave up: nothing to answer, and no
    ExecuteBatchError out of gRPC (which logs it with a traceback)."""
    context = _EndedContext(done)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(abort_with(context, BrokerError(Code.NO_QUORUM, "timed out")))
    assert context.aborted is not done


def test_retention_waits_for_raft_to_count_what_the_replica_applied() -> None:
    """A replica's retention point may be an entry it applied early in a pass whose
    advance() waits for the sync: the maintenance pass leaves it for next time instead of
    failing ("cannot snapshot at N: only N-1 is applied")."""
    compacted: list[int] = []

    def snapshot_meta(index: int):
        raise AssertionError(f"snapshot at {index} asked of a node that applied 10")

    node = SimpleNamespace(applied_index=10, snapshot_meta=snapshot_meta)
    replica = SimpleNamespace(topic="t", partition=0,
                              group=SimpleNamespace(node=node, closed=False), holds_data=True,
                              retention_point=lambda: (11, b"state"),
                              compacted=lambda index, data: compacted.append(index))
    data_replicas = ReplicaWatchlist()
    data_replicas.add(Listing(replica))
    broker = SimpleNamespace(partitions={("t", 0): replica}, data_replicas=data_replicas)
    asyncio.run(Broker._apply_retention(broker))  # type: ignore[arg-type]
    assert compacted == []


def test_an_offset_commit_whose_client_went_away_fails_quietly() -> None:
    """The commit's write runs as a task of its own (other readers wait for it); the
    handler gone, the task's failure (NO_QUORUM after 10 s, seen in the membership
    nemesis's run) is not logged as "Task exception was never retrieved"."""
    inflight: set = set()

    async def wait(future: asyncio.Future):
        async def produce(payload: bytes, acks: int, timeout_s: float):
            return await future
        coordinated = SimpleNamespace(inflight=inflight)
        replica = SimpleNamespace(produce=produce)
        return await GroupCoordinatorService._write(
            None, coordinated, replica, "g", [("t", 0, 5, "")])  # type: ignore[arg-type]

    assert _unretrieved_after_the_requester_left(wait) == []
    assert not inflight
