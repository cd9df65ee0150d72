"""The transactional producer's AddPartitionsToTxn batching (``client/_transactions.py``):
sends queue their partitions, one call carries every partition queued while no call is
out, a failed call makes the transaction abortable, and the transaction ends only once the
adds are idle (the way partitions join at the highest epoch, where EndTxn cannot move the
epoch on); and the usual way, where a partition joins with its first batch (its leader
joins it: nothing queued, nothing gated). Pure state: no cluster."""

from __future__ import annotations

import pytest

from raftka.client._transactions import IN_TRANSACTION, TransactionManager
from raftka.v1.errors import ProducerFencedError, RaftkaError


def _open(joins: bool = False) -> TransactionManager:
    txn = TransactionManager(coordinator=None, transactional_id="t", timeout_ms=60_000)
    txn.state, txn.producer_id, txn.epoch = "ready", 7, 3
    txn.joins = joins
    txn.begin()
    return txn


def test_partitions_join_with_their_first_batch_unless_the_epoch_is_at_its_maximum() -> None:
    txn = _open(joins=True)
    assert txn.joining()
    assert not txn.queue_partition(("a", 0)) and not txn.queue_partition(("a", 2))
    assert not txn.queue_partition(("b", 1))
    assert txn.take_adds() is None and txn.adds_idle(), "no AddPartitionsToTxn"
    assert txn.partitions == {("a", 0), ("a", 2), ("b", 1)}, "EndTxn knows to end it"
    assert txn.hints("a", 0) == [2] and txn.hints("b", 1) == []
    txn.epoch = 32767  # EndTxn could not move it on: partitions are added first again
    assert not txn.joining() and txn.queue_partition(("c", 0))


def _partitions(request) -> set[tuple[str, int]]:
    return {(t.topic, p) for t in request.topics for p in t.partitions}


def test_one_call_carries_every_partition_queued_while_none_is_out() -> None:
    txn = _open()
    assert txn.queue_partition(("a", 0)) and txn.queue_partition(("a", 1))
    first = txn.take_adds()
    assert (first.transactional_id, first.producer_id, first.producer_epoch) == ("t", 7, 3)
    assert _partitions(first) == {("a", 0), ("a", 1)}
    # queued while the call is out: waits for the next call, not a second one in parallel
    assert txn.queue_partition(("b", 2)) and txn.queue_partition(("a", 0))
    assert txn.take_adds() is None
    assert txn.adds_done(None) == {("a", 0), ("a", 1)}
    assert not txn.queue_partition(("a", 0)), "added: its records go at once"
    second = txn.take_adds()
    assert _partitions(second) == {("b", 2)}
    assert not txn.adds_idle()
    txn.adds_done(None)
    assert txn.adds_idle() and txn.partitions == {("a", 0), ("a", 1), ("b", 2)}


def test_a_failed_add_makes_the_transaction_abortable_and_a_fence_fatal() -> None:
    txn = _open()
    txn.queue_partition(("a", 0))
    txn.take_adds()
    err = RaftkaError("coordinator unreachable")
    assert txn.adds_done(err) == {("a", 0)}
    assert txn.error is err and txn.state == IN_TRANSACTION and txn.partitions == set()
    txn.queue_partition(("a", 1))
    txn.take_adds()
    txn.adds_done(ProducerFencedError("fenced"))
    assert txn.state == "fatal"


def test_ending_while_adds_are_queued_or_out_is_refused() -> None:
    txn = _open()
    txn.queue_partition(("a", 0))
    with pytest.raises(RuntimeError):
        txn.end(True, 1.0)
    txn.take_adds()
    txn.adds_done(None)
    txn.queue_partition(("a", 1))
    txn.take_adds()  # out: an abort waits for it too
    with pytest.raises(RuntimeError):
        txn.end(False, 1.0)


def test_adds_finished_ungates_and_hands_back_unsent_batches_on_error() -> None:
    """Both producers' step after an AddPartitionsToTxn call (``adds_finished``): the
    call's partitions are ungated; on an error the batches not yet sent (no attempt,
    not done) are returned for the owner to fail, the others are left alone."""
    from types import SimpleNamespace

    from raftka.client._accumulator import PartitionQueue
    from raftka.client._transactions import adds_finished

    def batch(attempt: int = 0, done: bool = False) -> SimpleNamespace:
        return SimpleNamespace(attempt=attempt, done=done)

    txn = _open()
    queues = {("a", 0): PartitionQueue(txn_gated=True), ("a", 1): PartitionQueue(txn_gated=True)}
    waiting, sent, finished = batch(), batch(attempt=1), batch(done=True)
    queues[("a", 1)].batches.extend([finished, sent, waiting])
    txn.queue_partition(("a", 0))
    txn.take_adds()
    assert adds_finished(txn, queues, None) == []
    assert not queues[("a", 0)].txn_gated and queues[("a", 1)].txn_gated
    txn.queue_partition(("a", 1))
    txn.take_adds()
    err = RaftkaError("refused")
    assert adds_finished(txn, queues, err) == [waiting]
    assert not queues[("a", 1)].txn_gated and txn.error is err


def test_transactional_settings_checks_the_configuration() -> None:
    from raftka.client._transactions import transactional_settings
    from raftka.v1 import broker_pb2

    all_ = broker_pb2.ACKS_ALL
    assert transactional_settings(None, None, broker_pb2.ACKS_LEADER, 0) is None
    assert transactional_settings("t", None, all_, 60_000) is True
    for args, message in [(("", None, all_, 1), "empty"),
                          (("t", False, all_, 1), "idempotent"),
                          (("t", None, broker_pb2.ACKS_LEADER, 1), "acks='all'"),
                          (("t", None, all_, 0), "at least 1")]:
        with pytest.raises(ValueError, match=message):
            transactional_settings(*args)


def test_once_commit_or_abort_began_sends_fail_and_the_end_may_be_retried() -> None:
    """Kafka's COMMITTING/ABORTING: a send that waited for buffer room while the commit
    began must not join the transaction being flushed (it would be in no transaction
    anyone ends); a failed commit may be retried or turned into an abort."""
    from raftka.v1.errors import InvalidTxnStateError
    txn = _open()
    txn.check_send()
    txn.start_end("commit_transaction()")
    with pytest.raises(InvalidTxnStateError, match="being committed or aborted"):
        txn.check_send()
    with pytest.raises(InvalidTxnStateError, match="being committed or aborted"):
        txn._run(txn.send_offsets_ops({("a", 0): 1}, None, 1.0))
    txn.start_end("commit_transaction()")  # a retry after a failed commit
    txn.start_end("abort_transaction()")  # or an abort
    assert txn.end(False, 1.0) == (7, 3)  # nothing added: no EndTxn call
    assert not txn.ending and txn.state == "ready"
    with pytest.raises(InvalidTxnStateError):
        txn.check_send()  # between transactions
    txn.begin()
    txn.check_send()


def test_partitions_a_node_answered_without_joining_are_added_before_end_txn() -> None:
    """A node that predates joins ignores the transactional id of a produce request: the
    answer says the partition did not join, and the producer adds it itself (after the
    data, before EndTxn), then adds partitions first from the next transaction on."""
    from raftka.v1 import txn_pb2

    class Coordinator:
        def call_ops(self, method, request, timeout_s):
            return (yield (method, request))

    txn = _open(joins=True)
    txn.coordinator = Coordinator()
    for key in (("a", 0), ("a", 1)):
        txn.queue_partition(key)
    txn.not_joined("a", 1)
    ops = txn.end_ops(True, 5.0)
    method, request = next(ops)
    assert method == "AddPartitionsToTxn" and _partitions(request) == {("a", 1)}
    method, request = ops.send(txn_pb2.AddPartitionsToTxnResponse())
    assert method == "EndTxn"
    with pytest.raises(StopIteration) as done:
        ops.send(txn_pb2.EndTxnResponse(producer_id=7, producer_epoch=4))
    assert done.value.value == (7, 4)
    assert not txn.joining(), "the next transactions add their partitions first"


def test_a_transaction_begun_long_after_a_reopening_commit_ends_the_reopened_one() -> None:
    """EndTxn asks the coordinator to reopen the next transaction (txn.proto
    EndTxnRequest.reopen); its timeout counts from that commit, so a transaction begun more
    than half of transaction_timeout_ms later ends it first (EndTxn abort at its epoch) and
    goes on at the epoch answered. One begun soon after just goes on."""
    from raftka.v1 import txn_pb2

    class Coordinator:
        def call_ops(self, method, request, timeout_s):
            return (yield (method, request))

    txn = _open(joins=True)
    txn.coordinator = Coordinator()
    txn.queue_partition(("a", 0))
    ops = txn.end_ops(True, 5.0)
    method, request = next(ops)
    assert method == "EndTxn" and request.reopen and request.next_epoch
    with pytest.raises(StopIteration):
        ops.send(txn_pb2.EndTxnResponse(producer_id=7, producer_epoch=4, reopened=True))
    txn.begin()
    assert not txn.reset_due, "begun at once: the reopened transaction is this one"
    txn.state = "ready"
    txn.reopened_at -= txn.timeout_ms / 1000  # the producer idled a whole timeout
    txn.begin()
    assert txn.reset_due
    ops = txn.reset_ops(5.0)
    method, request = next(ops)
    assert (method, request.result, request.producer_epoch, request.next_epoch,
            request.reopen) == ("EndTxn", txn_pb2.TXN_ABORT, 4, True, False)
    with pytest.raises(StopIteration) as done:  # the coordinator let it lapse: epoch 6
        ops.send(txn_pb2.EndTxnResponse(producer_id=7, producer_epoch=6))
    assert done.value.value == (7, 6) and txn.epoch == 6 and txn.reopened_at is None
    # an empty transaction sends no EndTxn: what it found reopened stays as it was
    txn.reset_due, txn.reopened_at = False, 1.0
    ops = txn.end_ops(True, 5.0)
    with pytest.raises(StopIteration):
        next(ops)
    assert txn.reopened_at == 1.0
