"""The idempotent producer's state: its producer id and epoch, per-partition sequence
numbers, and what a sequence error means.

Sans-I/O: no threads, no network. Its owner serializes every call (the ``Producer`` holds
its lock) and does the talking: getting the producer id, sending and resending batches.

Rules (the partition leader keeps, per producer id, the epoch, the next expected sequence
and its last 5 batches with their offsets; see node/_producer_state.py):

1. The producer gets an id and epoch from ``InitProducerId`` before its first batch
   (:meth:`IdempotenceState.set_producer_id`; only the controller leader answers, the
   other nodes name it).
2. A batch is stamped once, at its first send, with its partition's epoch and next
   sequence (:meth:`~IdempotenceState.stamp`; the sequence then advances by its record
   count, modulo 2^31), and every retry sends the same bytes. A retry of a batch that was
   written is answered with its original offsets, so nothing is written twice, also
   after a leader change. At most ``MAX_IN_FLIGHT_IDEMPOTENT`` (5) batches of a partition
   are in flight, so a retry is always among the batches the leader remembers.
3. OUT_OF_ORDER_SEQUENCE or UNKNOWN_PRODUCER_ID for a batch while an *earlier* batch of
   the partition is unfinished: that earlier batch is being retried; this one is resent
   right after it, never before (:attr:`Verdict.RESEND`).
4. The same error for the *oldest* unfinished batch means the gap before it is permanent:
   a batch before it failed for good or expired without being written (the leader only
   answers so once it has applied every earlier term's entries, so nothing it lacks can
   still commit). Once no request of the partition is in flight the partition starts a
   new epoch (the broker accepts a higher epoch at sequence 0) and its unfinished batches
   are re-stamped from sequence 0 (:attr:`Verdict.RESET`, :meth:`~IdempotenceState.bump`).
   All of them were rejected under the old epoch, so none is written twice, and the new
   epoch fences any old-epoch straggler. Answers to old-epoch batches that arrive while
   the reset waits are judged stale: they resend, never reset again.
5. Fatal (:attr:`Verdict.FAIL`): PRODUCER_FENCED for the current epoch (another instance
   took over the id); an epoch that cannot grow (2^15 - 1) fails the partition's
   unfinished batches with PRODUCER_FENCED. PRODUCER_FENCED for an older epoch of this
   partition is a straggler of rule 4: resent.

Everything else is the retry policy's (``_retry.py``): retriable errors resend the same
stamped bytes (safe for ambiguous failures, rule 6 there), other errors fail the batch.
A producer id whose producer is idle for 7 days is forgotten by the partitions; its next
batch gets UNKNOWN_PRODUCER_ID as the oldest unfinished one, and rule 4 starts a new epoch.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from crc32c import crc32c as _crc32c

from raftka.v1.errors import (
    OutOfOrderSequenceError,
    ProducerFencedError,
    RaftkaError,
    UnknownProducerIdError,
)

__all__ = [
    "EPOCH_MAX",
    "MAX_IN_FLIGHT_IDEMPOTENT",
    "IdempotenceState",
    "Verdict",
    "is_sequence_error",
    "restamp",
]

MAX_IN_FLIGHT_IDEMPOTENT = 5  # the broker keeps the last 5 batches per producer per partition
SEQUENCE_MOD = 1 << 31
EPOCH_MAX = 2**15 - 1
_PRODUCER_FIELDS = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence at byte 43
_CRC = struct.Struct(">I")  # at byte 17, over bytes 21..end
_SEQUENCE_ERRORS = (OutOfOrderSequenceError, UnknownProducerIdError, ProducerFencedError)

PartitionKey = tuple[str, int]


def restamp(batch: bytes, producer_id: int, epoch: int, sequence: int,
            transactional: bool = False) -> bytes:
    """``batch`` (one RecordBatch v2) with producerId/producerEpoch/baseSequence replaced
    (and the transactional attribute bit set, for a transactional producer) and its CRC-32C
    recomputed (the CRC covers those fields). Costs one CRC pass, no record work."""
    out = bytearray(batch)
    _PRODUCER_FIELDS.pack_into(out, 43, producer_id, epoch, sequence)
    if transactional:
        out[22] |= 0x10  # attributes (int16 at byte 21): bit 4
    _CRC.pack_into(out, 17, _crc32c(memoryview(out)[21:]))
    return bytes(out)


def is_sequence_error(error: BaseException) -> bool:
    """OUT_OF_ORDER_SEQUENCE, UNKNOWN_PRODUCER_ID, PRODUCER_FENCED: judged by
    :meth:`IdempotenceState.judge`, not by the retry policy."""
    return isinstance(error, _SEQUENCE_ERRORS)


class Verdict(enum.Enum):
    RESEND = "resend"  # rule 3: right after the batches before it
    RESET = "reset"  # rule 4: a new epoch once nothing is in flight, then resend
    FAIL = "fail"  # rule 5


@dataclass(slots=True)
class _Sequences:
    """One partition's stamp state; it outlives the partition's queue."""

    epoch: int
    next_sequence: int = 0


class IdempotenceState:
    """Rules 1-5 of the module docstring. Not thread-safe: the owner serializes calls."""

    __slots__ = ("producer_id", "producer_epoch", "_sequences", "transactional")

    def __init__(self, transactional: bool = False) -> None:
        self.producer_id = -1
        self.producer_epoch = -1
        self._sequences: dict[PartitionKey, _Sequences] = {}
        # A transactional producer's epoch is the coordinator's: a partition never starts a
        # new one on its own (rule 4 would desynchronize it from the markers), so a
        # permanent sequence gap fails the batches instead (the transaction must abort).
        self.transactional = transactional

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    def set_producer_id(self, producer_id: int, epoch: int) -> None:
        """Rule 1 (and a transactional producer's InitTransactions: sequences restart)."""
        if (producer_id, epoch) != (self.producer_id, self.producer_epoch):
            self._sequences.clear()
        self.producer_id, self.producer_epoch = producer_id, epoch

    def stamp(self, key: PartitionKey, record_count: int) -> tuple[int, int]:
        """Rule 2: the (epoch, base sequence) of the partition's next batch of
        ``record_count`` records; advances the sequence."""
        seq = self._sequences.get(key)
        if seq is None:
            seq = self._sequences[key] = _Sequences(self.producer_epoch)
        stamp = seq.epoch, seq.next_sequence
        seq.next_sequence = (seq.next_sequence + record_count) % SEQUENCE_MOD
        return stamp

    def epoch_of(self, key: PartitionKey) -> int | None:
        seq = self._sequences.get(key)
        return None if seq is None else seq.epoch

    def judge(self, error: RaftkaError, key: PartitionKey, batch_epoch: int, *,
              oldest: bool, reset_pending: bool) -> Verdict:
        """Rules 3-5 for a sequence error (:func:`is_sequence_error`) answered to a batch
        stamped with ``batch_epoch``; ``oldest``: it is the partition's oldest unfinished
        batch; ``reset_pending``: a rule-4 reset of the partition is already waiting (the
        answer is a straggler of the old epoch)."""
        seq = self._sequences.get(key)
        current = seq is not None and batch_epoch == seq.epoch and not reset_pending
        if isinstance(error, ProducerFencedError) and current:
            return Verdict.FAIL
        if current and oldest:
            return Verdict.RESET
        return Verdict.RESEND

    def bump(self, key: PartitionKey) -> bool | None:
        """Rule 4: a new epoch for the partition, sequences from 0 (its unfinished batches
        must then be re-stamped). None when nothing was stamped for it yet; False when the
        epoch cannot grow (rule 5: its batches fail)."""
        seq = self._sequences.get(key)
        if seq is None:
            return None
        if seq.epoch >= EPOCH_MAX or self.transactional:
            return False
        seq.epoch += 1
        seq.next_sequence = 0
        return True
