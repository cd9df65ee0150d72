"""PartitionReplica with idempotent batches over a real single-voter RawNode (in memory):
the new-leader rule (no idempotent batch before the leader applied its own term's first
entry) and duplicates answered from the state rebuilt from the log."""

from __future__ import annotations

import asyncio

from raftka.v1.recordbatch import Record, build_batch
from raftka.node._errors import BrokerError, Code
from raftka.raft import ConfState, MemoryStorage, Role

from tests.node.single_voter import drive, start_replica

PID = 42


def _batch(seq: int, *values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="none",
                       producer_id=PID, producer_epoch=0, base_sequence=seq)


def test_a_new_leader_waits_for_its_term_start_before_judging_sequences() -> None:
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        first, node = start_replica(storage, 1)
        node.campaign()
        drive(first, node, storage)
        assert node.role == Role.LEADER
        original = first.submit(_batch(0, b"a", b"b"), acks=-1)
        first.before_ready()  # proposed; then the process dies before applying it
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        assert original is not None and not original.done()

        # Restart: a new term, the old entry is in the log but not applied yet.
        second, node = start_replica(storage, 2)
        held: list = []
        node.campaign()
        drive(second, node, storage, held)
        assert node.role == Role.LEADER and second.applied_index == 0
        early = second.submit(_batch(0, b"a", b"b"), acks=-1)
        second.before_ready()
        assert early is not None and not early.done(), "held while earlier terms apply"
        assert second.high_watermark == 0

        second.apply(held)  # now the earlier term's entries are applied
        drive(second, node, storage)
        assert early.result() == (0, 1), "the original offsets"
        assert second.high_watermark == 2, "not written twice"
        nxt = second.submit(_batch(2, b"c"), acks=-1)
        drive(second, node, storage)
        assert nxt is not None and nxt.result() == (2, 2)

    asyncio.run(scenario())


def test_pipelined_batches_of_one_pass_are_judged_in_order() -> None:
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = start_replica(storage, 3)
        node.campaign()
        drive(replica, node, storage)
        futures = [replica.submit(_batch(i, b"%d" % i), acks=-1) for i in range(5)]
        dup = replica.submit(_batch(2, b"2"), acks=-1)  # a retry while the original is pending
        gap = replica.submit(_batch(9, b"9"), acks=-1)
        drive(replica, node, storage)
        assert [f.result() for f in futures] == [(i, i) for i in range(5)]
        assert dup.result() == (2, 2)
        assert isinstance(gap.exception(), BrokerError)
        assert gap.exception().code == Code.OUT_OF_ORDER_SEQUENCE
        assert replica.high_watermark == 5

    asyncio.run(scenario())


def test_a_write_not_acknowledged_in_time_fails_no_quorum_and_is_never_proposed() -> None:
    """``wait_acked``'s timer fails the request's future with NO_QUORUM; a request still
    queued is then skipped by the next proposal pass (the producer retries it)."""
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = start_replica(storage, 1)
        node.campaign()
        drive(replica, node, storage)
        try:
            await replica.produce(_batch(0, b"late"), acks=-1, timeout_s=0.01)
        except BrokerError as exc:
            assert exc.code == Code.NO_QUORUM and exc.retriable
        else:
            raise AssertionError("produce returned without any pass")
        drive(replica, node, storage)
        assert replica.high_watermark == 0, "the expired request was proposed"
        # the retry of the same sequence is written (the first was not): the ready loop
        # runs once the call below has queued its request
        asyncio.get_running_loop().call_soon(drive, replica, node, storage)
        assert await replica.produce(_batch(0, b"retry"), acks=-1, timeout_s=5) == (0, 0)
    asyncio.run(scenario())
