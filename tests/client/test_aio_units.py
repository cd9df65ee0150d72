"""Units of the asyncio client: the loop-blocking check itself (it must be able to fail),
the asyncio driver of the shared operations (``raftka.client.aio._cluster.run``), and
that the asyncio classes refuse to be made outside a running loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest

import raftka.aio
from raftka.client._ops import Gather, Join, Refresh, Rpc, Sleep, Start
from raftka.client.aio._cluster import AsyncCluster, run
from raftka.client import TopicPartition
from raftka.v1.errors import BrokerNotAvailableError, RaftkaError

from tests.aio_loop import LoopBlocked, overlap, run_unblocked


def test_a_sleeping_callback_fails_the_loop_check() -> None:
    async def main() -> None:
        time.sleep(0.2)  # blocks the loop: what the client must never do

    with pytest.raises(LoopBlocked, match="asleep"):
        run_unblocked(main)


def test_a_busy_callback_fails_the_loop_check() -> None:
    async def main() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass

    with pytest.raises(LoopBlocked, match="on the CPU"):
        run_unblocked(main)


def test_a_sleep_while_another_thread_spawns_a_process_still_fails_the_loop_check() -> None:
    """The spawn's time is forgiven (CPython 3.11 holds the GIL across vfork), the rest
    of the sleep is not."""
    def spawn() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    async def main() -> None:
        spawner = threading.Thread(target=spawn)
        spawner.start()
        time.sleep(0.5)
        spawner.join()

    with pytest.raises(LoopBlocked, match="asleep .* while another thread spawned"):
        run_unblocked(main)


def test_overlap_counts_the_covered_part_of_a_callback_once_per_span() -> None:
    assert overlap(10.0, 11.0, []) == 0.0
    assert overlap(10.0, 11.0, [(9.0, 9.5), (11.5, 12.0)]) == 0.0
    assert overlap(10.0, 11.0, [(9.5, 10.25), (10.75, 12.0)]) == pytest.approx(0.5)
    assert overlap(10.0, 11.0, [(9.0, 12.0), (10.0, 11.0)]) == 1.0  # never more than all


def test_awaiting_does_not_fail_the_loop_check() -> None:
    async def main() -> int:
        await asyncio.sleep(0.2)
        return 7

    assert run_unblocked(main) == 7


class _FakeCluster(AsyncCluster):
    """AsyncCluster whose RPCs answer from a table (no network)."""

    def __init__(self, answers: dict) -> None:
        super().__init__("127.0.0.1:1")
        self.answers = answers
        self.calls: list[tuple[str, str]] = []
        self.refreshes = 0

    async def call(self, address, service, method, request, timeout_s, what=""):  # noqa: ANN001, ANN201
        self.calls.append((address, method))
        await asyncio.sleep(0.01)
        answer = self.answers[(address, method)]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def try_refresh(self, timeout_s: float, min_age_s: float) -> bool:
        self.refreshes += 1
        return True


def test_the_driver_sends_answers_in_and_throws_errors_in() -> None:
    cluster = _FakeCluster({("a:1", "M"): "ok", ("b:1", "M"): BrokerNotAvailableError("down")})

    def ops():
        first = yield Rpc("a:1", "broker", "M", None, 1.0)
        try:
            yield Rpc("b:1", "broker", "M", None, 1.0)
        except RaftkaError as e:
            second = type(e).__name__
        refreshed = yield Refresh(1.0)
        yield Sleep(0.01)
        handle = yield Start(Rpc("a:1", "broker", "M", None, 1.0))
        third = yield Join(handle)
        both = yield Gather([one("a:1"), one("a:1")])
        return first, second, refreshed, third, both

    def one(address):
        return (yield Rpc(address, "broker", "M", None, 1.0))

    assert run_unblocked(lambda: run(cluster, ops())) == (
        "ok", "BrokerNotAvailableError", True, "ok", ["ok", "ok"])
    assert cluster.refreshes == 1
    assert len(cluster.calls) == 5


def test_a_cancelled_task_closes_its_operation() -> None:
    cluster = _FakeCluster({("a:1", "M"): "ok"})
    closed = []

    def ops():
        try:
            yield Sleep(10.0)
        finally:
            closed.append(True)

    async def main() -> None:
        task = asyncio.ensure_future(run(cluster, ops()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_unblocked(main)
    assert closed == [True]


@pytest.mark.parametrize("make", [
    lambda: raftka.aio.Producer("127.0.0.1:1"),
    lambda: raftka.aio.Consumer("127.0.0.1:1", "g", ["t"]),
])
def test_loop_bound_classes_need_a_running_loop(make) -> None:  # noqa: ANN001
    with pytest.raises(RuntimeError, match="no running event loop"):
        make()


def test_bad_settings_are_refused_before_any_io() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="max_in_flight"):
            raftka.aio.Producer("127.0.0.1:1", max_in_flight=9)
        with pytest.raises(ValueError, match="bootstrap"):
            raftka.aio.Admin("nonsense")
        with pytest.raises(ValueError, match="auto_offset_reset"):
            raftka.aio.Consumer("127.0.0.1:1", "g", ["t"], auto_offset_reset="middle")

    run_unblocked(main)


# ---------------------------------------------------------------------- GroupMembership
# The membership bookkeeping both consumers drive (client/_consumer.py), without I/O.

def _answer(member_id: str, epoch: int, *partitions: int):  # noqa: ANN202
    from raftka.v1 import group_pb2

    return group_pb2.GroupHeartbeatResponse(
        member_id=member_id, member_epoch=epoch,
        assignment=[group_pb2.TopicPartitions(topic="t", partitions=list(partitions))])


class _Settings:
    group_id, topics = "g", ("t",)
    _session_timeout_ms, _rebalance_timeout_ms, _assignor, _client_id = 10_000, 30_000, "", "c"
    _isolation_level = "read_uncommitted"


def test_membership_joins_applies_and_acknowledges() -> None:
    from raftka.client._consumer import GroupMembership

    m = GroupMembership()
    join = m.heartbeat(_Settings)
    assert (join.member_id, join.member_epoch, list(join.topics)) == ("", 0, ["t"])
    assert m.on_answer(_answer("m1", 3, 0, 1))
    err, dropped, incoming = m.take()
    assert err is None and dropped is None
    revoked, added = m.plan(incoming)
    assert not revoked and added == {TopicPartition("t", 0), TopicPartition("t", 1)}
    assert m.heartbeat(_Settings).member_epoch == 0, "not acknowledged before it is applied"
    m.applied(incoming)
    beat = m.heartbeat(_Settings)
    assert (beat.member_id, beat.member_epoch, list(beat.topics)) == ("m1", 3, [])
    assert not m.on_answer(_answer("m1", 3, 0, 1)), "nothing new"
    assert m.on_answer(_answer("m1", 4, 1))
    _, _, incoming = m.take()
    revoked, added = m.plan(incoming)
    assert revoked == {TopicPartition("t", 0)} and not added


def test_a_fenced_member_drops_everything_and_ignores_the_old_target() -> None:
    from raftka.client._consumer import GroupMembership

    m = GroupMembership()
    m.on_answer(_answer("m1", 3, 0, 1))
    _, _, incoming = m.take()
    m.applied(incoming)
    m.on_answer(_answer("m1", 5, 0))  # a new target poll has not taken yet ...
    stale = m.incoming
    m.on_fenced()  # ... when the member is fenced
    assert m.has_news
    err, dropped, incoming = m.take()
    assert dropped == {TopicPartition("t", 0), TopicPartition("t", 1)} and incoming is None
    assert m.owned == frozenset() and m.heartbeat(_Settings).member_id == ""
    assert m.plan(stale) is None, "a target of the lost membership is never applied"
    m.keep(stale)
    assert m.take()[2] == stale  # kept for the next poll, which refuses it again


def test_a_cancellation_is_never_lost_while_waiting_for_an_event() -> None:
    """The event set and the waiting task cancelled in the same loop iteration: on Python
    3.11 asyncio.wait_for returns normally there (the cancellation is lost; a cancelled
    consumer task went on polling and an application's shutdown hung); wait_event
    raises CancelledError."""
    from raftka.client.aio._waits import wait_event

    async def scenario() -> str:
        event = asyncio.Event()

        async def waiter() -> str:
            await wait_event(event, 1.0)
            return "returned"

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # the task now waits inside
        event.set()
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(scenario()) == "cancelled"
    assert asyncio.run(_timed_out()) is False


async def _timed_out() -> bool:
    from raftka.client.aio._waits import wait_event
    return await wait_event(asyncio.Event(), 0.01)


def test_a_cancellation_swallowed_by_the_awaited_call_is_raised_again() -> None:
    """What a grpc.aio call does when its answer and the caller's cancel meet: the inner
    task catches CancelledError and finishes with the answer. A bare await then returns
    (the caller never learns it was cancelled); cancellation_kept raises CancelledError."""
    from raftka.client.aio._waits import cancellation_kept

    async def scenario(guarded: bool) -> str:
        answered = asyncio.Event()

        async def swallowing_call() -> str:
            try:
                await answered.wait()
            except asyncio.CancelledError:
                pass  # grpc.aio's _invoke: the RPC was done already; return its answer
            return "answer"

        async def caller() -> str:
            inner = asyncio.ensure_future(swallowing_call())
            return await (cancellation_kept(inner) if guarded else inner)

        task = asyncio.ensure_future(caller())
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the caller waits on the inner task now
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(scenario(guarded=False)) == "answer"  # the loss this guards against
    assert asyncio.run(scenario(guarded=True)) == "cancelled"
