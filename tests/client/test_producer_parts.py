"""The producer's sans-I/O parts on their own (client/_accumulator.py,
client/_idempotence.py): batching, stickiness and buffer accounting; stamps, sequence
verdicts and epoch bumps. An injected clock and rng, no threads, no network."""

from __future__ import annotations

import random

import pytest

from raftka.client._accumulator import RECORD_OVERHEAD_BYTES, Accumulator
from raftka.client._idempotence import (
    EPOCH_MAX,
    IdempotenceState,
    Verdict,
    is_sequence_error,
    restamp,
)
from raftka.v1 import recordbatch
from raftka.v1.errors import (
    NotLeaderError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    UnknownProducerIdError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Group:
    """What the accumulator needs of a send_many group: a pending count."""

    pending = 0


def accumulator(batch_size: int = 1024, buffer_memory: int = 4096, seed: int = 1,
                clock: Clock | None = None) -> Accumulator:
    return Accumulator(compression="none", batch_size=batch_size, buffer_memory=buffer_memory,
                       clock=clock or Clock(), rng=random.Random(seed))


def size(value: bytes) -> int:
    return len(value) + RECORD_OVERHEAD_BYTES


def add(acc: Accumulator, partition: int | None, value: bytes, count: int = 3):
    return acc.append("t", partition, count, None, value, (), None, size(value))


# --------------------------------------------------------------------------- accumulator


def test_records_fill_the_open_batch_then_a_new_one_opens_behind_it() -> None:
    clock = Clock()
    acc = accumulator(batch_size=300, clock=clock)
    first, changed = add(acc, 0, b"a" * 100)
    assert changed and first.created == 50.0 and not first.closed  # rule 1: opened
    clock.now = 51.0
    same, changed = add(acc, 0, b"b" * 100)
    assert same is first and not changed
    second, changed = add(acc, 0, b"c" * 100)  # does not fit: closes the first
    assert changed and second is not first and first.closed and not second.closed
    assert second.created == 51.0
    assert list(acc.queues[("t", 0)].batches) == [first, second]
    assert acc.buffered_bytes == 3 * size(b"a" * 100)
    assert first.size_bytes == 2 * size(b"a" * 100)


def test_a_batch_taken_by_the_sender_takes_no_more_records() -> None:
    acc = accumulator()
    batch, _ = add(acc, 2, b"x")
    batch.closed = True  # the sender took it
    other, changed = add(acc, 2, b"y")
    assert other is not batch and changed
    assert len(batch.builder) == 1 and len(other.builder) == 1


def test_keyless_records_stick_to_one_partition_until_its_batch_closes() -> None:
    acc = accumulator(batch_size=300, seed=4)
    start = random.Random(4).randrange(3)  # rule 5: the first partition is drawn
    batches = [add(acc, None, b"v" * 100)[0] for _ in range(2)]
    assert {b.partition for b in batches} == {start} and batches[0] is batches[1]
    moved, changed = add(acc, None, b"v" * 100)  # the sticky batch is full
    assert changed and batches[0].closed and moved.partition == (start + 1) % 3
    moved.closed = True  # taken by the sender, not full: the next record moves on too
    assert add(acc, None, b"w")[0].partition == (start + 2) % 3


def test_keyless_records_join_an_open_batch_of_the_next_partition() -> None:
    acc = accumulator(batch_size=300, seed=4)
    start = random.Random(4).randrange(3)
    keyed, _ = add(acc, (start + 1) % 3, b"k")  # a keyed record opened it
    add(acc, None, b"v" * 100)
    add(acc, None, b"v" * 100)
    batch, _ = add(acc, None, b"v" * 100)
    assert batch is keyed and len(keyed.builder) == 2


def test_buffer_memory_bounds_what_is_held_and_done_batches_free_it() -> None:
    acc = accumulator(batch_size=1024, buffer_memory=1024)
    assert acc.fits(5000)  # rule 3: an empty accumulator takes even an oversized record
    batch, _ = add(acc, 0, b"a" * 600)
    assert acc.fits(1024 - size(b"a" * 600)) and not acc.fits(1025 - size(b"a" * 600))
    assert acc.release(batch) and acc.buffered_bytes == 0
    assert batch.done and batch.closed
    assert not acc.release(batch)  # its futures are resolved once
    assert acc.buffered_bytes == 0


def test_done_batches_leave_the_queue_only_from_the_head() -> None:
    acc = accumulator(batch_size=200)
    batches = [add(acc, 0, b"z" * 150)[0] for _ in range(3)]
    q = acc.queues[("t", 0)]
    acc.release(batches[1])
    acc.prune(q)
    assert list(q.batches) == batches  # rule 4: the window still counts it
    assert acc.unfinished() == [batches[0], batches[2]]
    acc.release(batches[0])
    acc.prune(q)
    assert list(q.batches) == [batches[2]]
    batches[2].futures.append(None)  # the owner's handle of its one record
    assert acc.buffered_records() == 1


def test_send_many_spreads_one_group_over_as_many_batches_as_needed() -> None:
    acc = accumulator(batch_size=400, buffer_memory=10_000)
    group = Group()
    values = [bytes([65 + i]) * 100 for i in range(7)]
    records = [(None, v, (), None) for v in values]
    sizes = [size(v) for v in values]
    part = acc.extend("t", 1, 3, records, sizes, group)
    batches = list(acc.queues[("t", 1)].batches)
    assert part == 1 and group.pending == len(batches) > 1
    assert all(b.closed for b in batches[:-1]) and not batches[-1].closed
    parts = [(g, group_start, batch_start, count) for b in batches
             for g, group_start, batch_start, count in b.groups]
    assert all(g is group for g, *_ in parts)
    assert [p[1] for p in parts] == [sum(p[3] for p in parts[:i]) for i in range(len(parts))]
    assert sum(p[3] for p in parts) == 7 and all(p[2] == 0 for p in parts)
    assert sum(len(b.futures) for b in batches) == 7
    assert all(f is None for b in batches for f in b.futures)
    assert acc.buffered_bytes == sum(sizes)
    decoded = [r.value for b in batches for r in recordbatch.decode_batches(b.builder.build())]
    assert decoded == values


def test_take_everything_hands_back_what_is_not_done() -> None:
    acc = accumulator()
    a, _ = add(acc, 0, b"a")
    b, _ = add(acc, 1, b"b")
    acc.release(a)
    assert acc.take_everything() == [b] and acc.queues == {}


# --------------------------------------------------------------------------- idempotence

KEY = ("t", 0)


def state(producer_id: int = 7, epoch: int = 3) -> IdempotenceState:
    s = IdempotenceState()
    assert not s.has_producer_id
    s.set_producer_id(producer_id, epoch)
    assert s.has_producer_id
    return s


def test_stamps_advance_per_partition_by_record_count_and_wrap() -> None:
    s = state()
    assert s.stamp(KEY, 10) == (3, 0)
    assert s.stamp(KEY, 5) == (3, 10)
    assert s.stamp(("t", 1), 4) == (3, 0)  # each partition has its own sequence
    assert s.stamp(KEY, 1) == (3, 15)
    s._sequences[KEY].next_sequence = 2**31 - 2
    assert s.stamp(KEY, 5) == (3, 2**31 - 2)
    assert s.stamp(KEY, 1) == (3, 3)  # modulo 2^31, like Kafka


def test_sequence_errors_are_judged_by_the_idempotence_state() -> None:
    assert is_sequence_error(OutOfOrderSequenceError("x"))
    assert is_sequence_error(UnknownProducerIdError("x"))
    assert is_sequence_error(ProducerFencedError("x"))
    assert not is_sequence_error(NotLeaderError("x"))


@pytest.mark.parametrize("error", [OutOfOrderSequenceError("gap"),
                                   UnknownProducerIdError("expired")])
def test_a_gap_before_the_oldest_batch_resets_the_epoch_else_it_is_resent(error) -> None:
    s = state()
    s.stamp(KEY, 1)
    # rule 3: an earlier batch is being retried
    assert s.judge(error, KEY, 3, oldest=False, reset_pending=False) is Verdict.RESEND
    # rule 4: the gap is permanent
    assert s.judge(error, KEY, 3, oldest=True, reset_pending=False) is Verdict.RESET
    # a straggler of the old epoch while the reset waits, or after it: resent
    assert s.judge(error, KEY, 3, oldest=True, reset_pending=True) is Verdict.RESEND
    assert s.bump(KEY) is True
    assert s.judge(error, KEY, 3, oldest=True, reset_pending=False) is Verdict.RESEND


def test_fenced_is_fatal_only_for_the_current_epoch() -> None:
    s = state()
    s.stamp(KEY, 1)
    fenced = ProducerFencedError("newer instance")
    assert s.judge(fenced, KEY, 3, oldest=False, reset_pending=False) is Verdict.FAIL
    assert s.judge(fenced, KEY, 2, oldest=True, reset_pending=False) is Verdict.RESEND
    assert s.judge(fenced, KEY, 3, oldest=True, reset_pending=True) is Verdict.RESEND


def test_an_epoch_bump_restarts_the_sequence_and_has_a_limit() -> None:
    s = state(epoch=EPOCH_MAX - 1)
    assert s.bump(KEY) is None  # nothing stamped for the partition yet: nothing to reset
    s.stamp(KEY, 9)
    assert s.bump(KEY) is True
    assert s.epoch_of(KEY) == EPOCH_MAX and s.stamp(KEY, 2) == (EPOCH_MAX, 0)
    assert s.stamp(("t", 1), 1) == (EPOCH_MAX - 1, 0)  # other partitions keep theirs
    assert s.bump(KEY) is False  # rule 5: the epoch cannot grow


def test_restamp_rewrites_the_producer_fields_and_keeps_the_crc_valid() -> None:
    raw = recordbatch.build_batch([(b"k", b"v"), (None, b"w")])
    stamped = restamp(raw, 4242, 7, 1000)
    header = recordbatch.parse_header(stamped)  # validates the CRC
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (4242, 7, 1000)
    assert [r.value for r in recordbatch.decode_batches(stamped)] == [b"v", b"w"]
    assert len(stamped) == len(raw)


# --------------------------------------------------------------------------- sender rule 5


class _NoCluster:
    """Selection (``Sender._select``) never touches the cluster; the streams need a stub
    factory only when something is written."""

    def broker_stub(self, address: str):  # pragma: no cover - never called here
        raise AssertionError(address)


def _sender(acc: Accumulator, linger_s: float, cluster: object | None = None):
    import threading

    from raftka.client._retry import RetryPolicy
    from raftka.client._sender import Sender

    return Sender(cluster or _NoCluster(), acc, None, acks=-1, max_in_flight=5,
                  linger_s=linger_s,
                  request_timeout_ms=30_000, delivery_timeout_s=120.0, retry=RetryPolicy(),
                  lock=threading.RLock())


def _on_the_stream(sender, q, batch) -> None:
    """``batch`` selected and sent on the stream (not unary), as a retry or a burst does."""
    batch.closed = True
    batch.attempt = 99
    q.in_flight += 1


@pytest.mark.parametrize("linger_s", [0.0, 0.005])
def test_a_lone_small_batch_behind_stream_requests_waits_and_goes_unary_at_linger_0(
        linger_s) -> None:
    """Sender rule 5: with linger_ms=0, records arriving while the partition's stream
    requests are out gather into one batch that goes unary once they are answered (before,
    each went on the stream at once, so the partition never left it: a request per record).
    With a linger, the lone batch still joins the stream when its linger is over."""
    clock = Clock()
    acc = accumulator(batch_size=1 << 20, buffer_memory=1 << 22, clock=clock)
    sender = _sender(acc, linger_s)
    first, _ = add(acc, 0, b"a", count=1)
    q = acc.queues[("t", 0)]
    _on_the_stream(sender, q, first)
    second, _ = add(acc, 0, b"b", count=1)
    assert second is not first
    clock.now += 0.01  # past any linger
    wakes: list[float] = []
    selected = sender._select(q, clock.now, False, wakes.append)
    if linger_s:
        assert selected == [second] and not second.unary and q.in_flight == 2
        return
    assert selected == [] and not second.closed  # it still takes records
    add(acc, 0, b"c", count=1)
    assert len(q.batches) == 2  # "c" joined the held batch
    first.attempt, first.done = 0, True  # its answer came
    q.in_flight -= 1
    q.batches.popleft()
    selected = sender._select(q, clock.now, False, wakes.append)
    assert selected == [second] and second.unary and q.unary


def test_a_retried_batch_is_not_held_behind_stream_requests() -> None:
    clock = Clock()
    acc = accumulator(batch_size=1 << 20, buffer_memory=1 << 22, clock=clock)
    sender = _sender(acc, 0.0)
    first, _ = add(acc, 0, b"a", count=1)
    q = acc.queues[("t", 0)]
    _on_the_stream(sender, q, first)
    second, _ = add(acc, 0, b"b", count=1)
    second.closed, second.attempts = True, 1  # handed back after a failure
    selected = sender._select(q, clock.now, False, lambda _t: None)
    assert selected == [second] and not second.unary


class _AnswerCluster(_NoCluster):
    """Runs ``during`` where a successful answer is noted, i.e. while it is completed."""

    def __init__(self) -> None:
        self.during = lambda: None

    def note_success(self, address: str) -> None:
        self.during()


def test_a_batch_answered_ok_is_not_selected_again_while_its_answer_is_completed() -> None:
    """Between the end of a batch's attempt and its release, another thread's selection
    saw it neither in flight nor done and sent it again: 1 MB batches resent after their
    success in every bulk run (3-13 'retries' a run of w1, no error behind them). With
    idempotence the broker answered DUPLICATE; without, the records were written twice."""
    import types

    clock = Clock()
    acc = accumulator(batch_size=1 << 20, buffer_memory=1 << 22, clock=clock)
    cluster = _AnswerCluster()
    sender = _sender(acc, 0.0, cluster)
    batch, _ = add(acc, 0, b"a", count=1)
    q = acc.queues[("t", 0)]
    clock.now += 0.01
    assert sender._select(q, clock.now, True, lambda _t: None) == [batch]
    batch.attempts = 1  # written once
    selected_meanwhile: list = []
    cluster.during = lambda: selected_meanwhile.append(
        sender._select(q, clock.now, True, lambda _t: None))
    answer = types.SimpleNamespace(base_offset=0, transaction_joined=True)
    sender._complete(batch, batch.attempt, "127.0.0.1:1", answer, None)
    assert selected_meanwhile == [[]], "nothing selected while the answer was completed"
    assert batch.done and not batch.attempt and q.in_flight == 0
    assert sender._select(q, clock.now, True, lambda _t: None) == []
