"""A partition joins its producer's transaction with the first batch (``node/_txn_join.py``)
over a real single-voter RawNode, with the coordinator's JoinTxn replaced by a function: the
answer waits for both the commit and the join, the batches of a transaction share one
join, a refused join aborts what was written and refuses what follows (a retried duplicate
included: never "OK" for aborted data), and a new leader settles a transaction it finds
open (joined if the coordinator still has it, aborted if not)."""

from __future__ import annotations

import asyncio
import gc

from raftka.node._errors import BrokerError, Code
from raftka.node._txn_join import SETTLE_AFTER_MS, TxnJoins
from tests.node.test_partition_transactions import _Cluster, _txn


class _Coordinator:
    """JoinTxn as a function: records the calls; answers OK, a refusal, or waits."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.refuse: BrokerError | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, tid, pid, epoch, topic, partition, hints) -> None:
        self.calls.append((tid, pid, epoch, topic, partition, tuple(hints)))
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse is not None:
            raise self.refuse


async def _run(c: _Cluster, *futures: asyncio.Future, rounds: int = 50) -> None:
    """Drive the node and the loop until ``futures`` are done (or ``rounds`` passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
        c.drive()
        if futures and all(f.done() for f in futures):
            return


def _send(c: _Cluster, joins: TxnJoins, payload: bytes, pid: int, epoch: int,
          hints: tuple[int, ...] = ()) -> asyncio.Future:
    data = c.replica.submit(payload, -1)
    assert data is not None
    return joins.joined(c.replica, "tx", pid, epoch, list(hints), data)


def test_the_answer_waits_for_the_commit_and_the_join_which_batches_share() -> None:
    async def scenario() -> None:
        c = _Cluster()
        coordinator = _Coordinator()
        coordinator.gate = asyncio.Event()
        joins = TxnJoins(coordinator)
        first = _send(c, joins, _txn(7, 0, 0, b"a"), 7, 0, hints=(1, 2))
        second = _send(c, joins, _txn(7, 0, 1, b"b"), 7, 0)
        await _run(c, rounds=10)
        assert c.replica.high_watermark == 2, "the batches replicate while the join runs"
        assert not first.done() and not second.done(), "no answer before the join"
        assert coordinator.calls == [("tx", 7, 0, "t", 0, (1, 2))], "one join, hints kept"
        coordinator.gate.set()
        await _run(c, first, second)
        assert first.result() == (0, 0) and second.result() == (1, 1)
        assert c.replica.last_stable_offset == 0, "open until the coordinator's marker"
        # the next transaction (the next epoch) joins again
        coordinator.gate = None
        c.marker(7, 0, True)
        await _run(c, rounds=5)
        third = _send(c, joins, _txn(7, 1, 0, b"c"), 7, 1)
        await _run(c, third)
        assert third.result() == (3, 3) and len(coordinator.calls) == 2
    asyncio.run(scenario())


def test_a_refused_join_aborts_what_was_written_and_refuses_what_follows() -> None:
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        coordinator = _Coordinator()
        coordinator.refuse = BrokerError(Code.PRODUCER_FENCED, "fenced")
        joins = TxnJoins(coordinator)
        early = _send(c, joins, _txn(5, 0, 0, b"never"), 5, 0)
        await _run(c, early)
        assert early.exception().code == Code.PRODUCER_FENCED
        assert r.high_watermark == 1 and not r.txns.open and not r.txns.aborted, \
            "refused before it was written (only the abort marker was, as a no-op)"
        c.produce(_txn(9, 0, 0, b"other"))              # 1: another producer's, open
        coordinator.gate = asyncio.Event()
        answer = _send(c, joins, _txn(7, 3, 0, b"zombie"), 7, 3)
        await _run(c, rounds=10)
        assert r.high_watermark == 3 and 7 in r.txns.open, "written while the join ran"
        coordinator.gate.set()
        await _run(c, answer)
        assert isinstance(answer.exception(), BrokerError)
        assert answer.exception().code == Code.PRODUCER_FENCED
        assert 7 not in r.txns.open, "the partition's own abort marker ended it"
        assert [a.producer_id for a in r.txns.aborted] == [7]
        assert r.last_stable_offset == 1, "producer 9's transaction is still open"
        c.marker(9, 0, True)
        await _run(c, rounds=5)
        assert c.values(True) == [b"other"], "the refused batch is never read committed"
        hw = r.high_watermark
        # a retried duplicate and a later batch of that epoch: refused, nothing written
        dup = _send(c, joins, _txn(7, 3, 0, b"zombie"), 7, 3)
        later = _send(c, joins, _txn(7, 3, 1, b"more"), 7, 3)
        await _run(c, dup, later)
        assert dup.exception().code == later.exception().code == Code.PRODUCER_FENCED
        assert r.high_watermark == hw
        assert len(coordinator.calls) == 2, "the refusal is kept for the leader's term"
    asyncio.run(scenario())


def test_a_duplicate_is_answered_only_once_its_partition_joined() -> None:
    """A new leader (a fresh TxnJoins: nothing joined in its term) gets a retry of a batch
    its predecessor appended but may never have joined: the retry's "OK" waits for the
    join; refused, it is an error and the batch is aborted."""
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        c.produce(_txn(7, 0, 0, b"a"))  # appended, the join lost with the old leader
        coordinator = _Coordinator()
        coordinator.gate = asyncio.Event()
        joins = TxnJoins(coordinator)
        dup = _send(c, joins, _txn(7, 0, 0, b"a"), 7, 0)
        await _run(c, rounds=10)
        assert not dup.done() and coordinator.calls, "the duplicate waits for the join"
        coordinator.refuse = BrokerError(Code.INVALID_PRODUCER_EPOCH, "no such transaction")
        coordinator.gate.set()
        await _run(c, dup)
        assert dup.exception().code == Code.INVALID_PRODUCER_EPOCH
        assert r.high_watermark == 2 and not r.txns.open, "written once, then aborted"
        assert c.values(True) == []
    asyncio.run(scenario())


def test_a_new_leader_settles_a_transaction_it_finds_open() -> None:
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        c.produce(_txn(7, 0, 0, b"kept"))     # the coordinator still has it
        c.produce(_txn(8, 2, 0, b"orphan"))   # its producer moved on: epoch 2 is fenced
        coordinator = _Coordinator()
        now = [1_000_000]
        joins = TxnJoins(coordinator, clock_ms=lambda: now[0])
        replicas = {("t", 0): r}
        settle = lambda: joins.settle(replicas.get, list(replicas))  # noqa: E731
        settle()
        await _run(c, rounds=5)
        assert coordinator.calls == [], "too young: a produce's own join goes first"
        now[0] += SETTLE_AFTER_MS + 1

        async def ask(tid, pid, epoch, topic, partition, hints):
            coordinator.calls.append((tid, pid, epoch))
            if pid == 8:
                raise BrokerError(Code.PRODUCER_FENCED, "epoch 2 is fenced")
        joins._ask = ask
        settle()
        await _run(c, rounds=30)
        assert sorted(coordinator.calls) == [("", 7, 0), ("", 8, 2)], "by producer id"
        assert set(r.txns.open) == {7}, "joined: left for the coordinator's marker"
        assert [a.producer_id for a in r.txns.aborted] == [8]
        settle()
        await _run(c, rounds=5)
        assert len(coordinator.calls) == 2, "settled once per leader term"
    asyncio.run(scenario())


async def _first_transaction_joined() -> tuple[_Cluster, _Coordinator, TxnJoins]:
    """Producer id 7's transaction of epoch 0 written and joined (one JoinTxn)."""
    c = _Cluster()
    coordinator = _Coordinator()
    joins = TxnJoins(coordinator)
    first = _send(c, joins, _txn(7, 0, 0, b"a"), 7, 0)
    await _run(c, first)
    return c, coordinator, joins


def test_a_marker_that_names_the_reopened_epoch_pre_joins_its_partition() -> None:
    """Rule 5: the marker of a transaction whose commit reopened the next one names that
    next epoch; its batches here then need no JoinTxn. A late marker request, whose
    producer is at that epoch's marker or past it here, pre-joins nothing."""
    async def scenario() -> None:
        c, coordinator, joins = await _first_transaction_joined()
        assert len(coordinator.calls) == 1
        joins.prejoined(c.replica, 7, 1)  # the commit of epoch 0 reopened epoch 1 ...
        c.marker(7, 0, True)
        await _run(c, rounds=5)
        joins.marked(c.replica, 7, 0)  # ... and its marker was written
        second = _send(c, joins, _txn(7, 1, 0, b"b"), 7, 1)
        await _run(c, second)
        assert second.result() == (2, 2) and len(coordinator.calls) == 1, "no JoinTxn"
        assert c.replica.last_stable_offset == 2, "open until its own marker"
        c.marker(7, 1, True)
        await _run(c, rounds=5)
        joins.marked(c.replica, 7, 1)
        joins.prejoined(c.replica, 7, 1)  # a late request: the producer is past it here
        assert joins._joins[("t", 0)].get(7) is None, "nothing pre-joined"
        third = _send(c, joins, _txn(7, 2, 0, b"c"), 7, 2)
        await _run(c, third)
        assert len(coordinator.calls) == 2, "epoch 2 was not pre-joined: it asks"
        assert [call[2] for call in coordinator.calls] == [0, 2]
    asyncio.run(scenario())


def test_a_marker_that_comes_before_the_batchs_join_has_begun_answers_it() -> None:
    """Rule 5: the next transaction's batch came first, and the marker pre-joining its
    epoch arrives before the batch's join task has run (it starts on a later loop turn):
    the join is answered by the marker, with no JoinTxn. (Before, the marker found the
    epoch already seen and pre-joined nothing, and the join asked the coordinator: 0.18
    JoinTxn calls per transaction under the transactions benchmark, 0.02 after.)"""
    async def scenario() -> None:
        c, coordinator, joins = await _first_transaction_joined()
        second = _send(c, joins, _txn(7, 1, 0, b"b"), 7, 1)  # its join's task not begun
        joins.prejoined(c.replica, 7, 1)                   # epoch 0's marker arrives
        c.marker(7, 0, True)
        await _run(c, second)
        assert second.result() == (2, 2) and len(coordinator.calls) == 1, "no JoinTxn"
    asyncio.run(scenario())


def test_a_batch_behind_its_producers_previous_marker_waits_for_it_before_asking() -> None:
    """Rule 5: the next transaction's batch that arrives before the previous one's marker
    (it cannot be written before it anyway) joins through that marker when it pre-joins
    the batch's epoch, and asks the coordinator only when it does not."""
    async def scenario() -> None:
        c, coordinator, joins = await _first_transaction_joined()
        second = _send(c, joins, _txn(7, 1, 0, b"b"), 7, 1)  # before epoch 0's marker
        await _run(c, rounds=10)
        assert len(coordinator.calls) == 1 and not second.done(), "waiting for the marker"
        joins.prejoined(c.replica, 7, 1)
        c.marker(7, 0, True)
        await _run(c, second)
        assert second.result() == (2, 2) and len(coordinator.calls) == 1, "no JoinTxn"
        # a marker that pre-joins nothing: the waiting join asks once it is written
        third = _send(c, joins, _txn(7, 2, 0, b"c"), 7, 2)
        await _run(c, rounds=10)
        assert len(coordinator.calls) == 1 and not third.done()
        c.marker(7, 1, True)
        await _run(c, rounds=5)
        joins.marked(c.replica, 7, 1)
        await _run(c, third)
        assert third.result() == (4, 4)
        assert [call[2] for call in coordinator.calls] == [0, 2]
    asyncio.run(scenario())


def test_a_failure_of_the_write_after_the_answer_was_decided_is_read() -> None:
    """The answer fails with the join's refusal; the write's own failure that comes later
    (lost in a leader change) has no reader: it is read, not logged by asyncio as "Future
    exception was never retrieved" (jepsen-like runs logged it after leader changes)."""
    async def scenario() -> None:
        unread: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unread.append(ctx))
        c = _Cluster()
        coordinator = _Coordinator()
        coordinator.refuse = BrokerError(Code.PRODUCER_FENCED, "fenced")
        joins = TxnJoins(coordinator)
        data = asyncio.get_running_loop().create_future()
        answer = joins.joined(c.replica, "tx", 7, 0, [], data)
        await _run(c, answer)
        assert answer.exception().code == Code.PRODUCER_FENCED
        data.set_exception(BrokerError(Code.NOT_LEADER, "lost in a leader change"))
        await asyncio.sleep(0)
        del data
        gc.collect()
        assert [ctx["message"] for ctx in unread] == []
    asyncio.run(scenario())
