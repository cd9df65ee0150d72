"""The client's retry policy (client/_retry.py), rule by rule, on an injected clock, sleep
and random source: no wall-clock time, no network."""

from __future__ import annotations

import random

import pytest

from raftka.client._retry import Backoff, RetryPolicy, Step, is_ambiguous, named_leader
from raftka.v1.errors import (
    BrokerNotAvailableError,
    CoordinatorLoadingError,
    InvalidRequestError,
    NoQuorumError,
    NotCoordinatorError,
    NotLeaderError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    TopicExistsError,
    UnknownTopicError,
)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(round(seconds, 9))
        self.now += seconds


class Top:
    """An rng whose every draw is the top of the range (the nominal delay)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Bottom:
    def uniform(self, a: float, b: float) -> float:
        return a


def policy(t: FakeTime, **kwargs) -> RetryPolicy:
    kwargs.setdefault("rng", Top())
    return RetryPolicy(clock=t.clock, sleep=t.sleep, **kwargs)


def test_backoff_doubles_up_to_its_bound_and_resets() -> None:
    b = Backoff(0.1, 0.4, Top())
    assert [b.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.4, 0.4]
    b.reset()
    assert b.next() == 0.1


def test_backoff_jitter_stays_in_the_upper_half() -> None:
    low = Backoff(0.1, 0.4, Bottom())
    assert [low.next() for _ in range(4)] == [0.05, 0.1, 0.2, 0.2]
    seeded = Backoff(0.1, 0.4, random.Random(7))
    nominal = [0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    for d in nominal:
        assert d / 2 <= seeded.next() <= d
    assert Backoff(0.1, 0.4, random.Random(7)).next() == Backoff(0.1, 0.4,
                                                                 random.Random(7)).next()


def test_backoff_rejects_impossible_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(0.5, 0.1)
    with pytest.raises(ValueError):
        RetryPolicy(attempts_max=0)


def test_rule_1_what_is_not_retriable_is_raised() -> None:
    retry = RetryPolicy().start(10)
    for error in (TopicExistsError("x"), InvalidRequestError("x"), RaftkaError("closed")):
        assert retry.on_error(error, failed="a", leader="b") is Step.RAISE
        assert retry.last is error
    # the broker may mark an error retriable the class is not: the instance flag decides
    assert retry.classify(RaftkaError("new code", retriable=True)) is Step.BACKOFF


def test_rule_2_a_named_leader_is_followed_at_once_three_times_in_a_row() -> None:
    t = FakeTime()
    retry = policy(t).start(10)
    moved = NotLeaderError("x", leader_id=2, leader_address="b:2")
    assert [retry.on_error(moved, failed="a:1", leader="b:2") for _ in range(4)] == [
        Step.FOLLOW, Step.FOLLOW, Step.FOLLOW, Step.REFRESH]  # stale nodes can loop
    assert retry.on_error(moved, failed="a:1", leader="b:2") is Step.FOLLOW  # count restarted
    assert retry.on_error(moved, failed="b:2", leader="b:2") is Step.REFRESH  # names itself
    assert t.slept == []  # deciding never sleeps


def test_rule_2_leader_named_by_id_is_resolved_through_the_metadata() -> None:
    brokers = {3: "c:3"}
    assert named_leader(NotLeaderError("x", leader_id=3), brokers.get) == "c:3"
    assert named_leader(NotCoordinatorError("x", leader_address="d:4"), brokers.get) == "d:4"
    assert named_leader(NotLeaderError("x", leader_id=9), brokers.get) == ""
    assert named_leader(NotLeaderError("x"), brokers.get) == ""
    assert named_leader(UnknownTopicError("x"), brokers.get) == ""


def test_rule_3_invalid_metadata_refreshes_else_back_off_in_place() -> None:
    retry = RetryPolicy().start(10)
    for error in (NotLeaderError("no leader named"), BrokerNotAvailableError("down"),
                  RequestTimedOutError("slow"), NoQuorumError("x"), UnknownTopicError("x")):
        assert retry.on_error(error, failed="a", leader="") is Step.REFRESH, error
    # a new coordinator still loading: retriable, but the metadata is right
    assert retry.on_error(CoordinatorLoadingError("x"), failed="a") is Step.BACKOFF


def test_rule_4_pauses_grow_and_a_success_resets_them() -> None:
    t = FakeTime()
    retry = policy(t, backoff_initial_s=0.05, backoff_max_s=0.3).start(100)
    for _ in range(5):
        retry.pause()
    assert t.slept == [0.05, 0.1, 0.2, 0.3, 0.3]
    retry.follow("a", "b")
    retry.succeeded()
    assert retry.redirects == 0
    retry.pause()
    assert t.slept[-1] == 0.05


def test_rule_5_no_attempt_starts_after_the_deadline_and_no_pause_passes_it() -> None:
    t = FakeTime()
    retry = policy(t, backoff_initial_s=0.4, backoff_max_s=0.4).start(1.0)
    assert retry.attempt_timeout(5.0) == 1.0  # an RPC never outlives the operation
    attempts = 0
    while retry.next_attempt():
        attempts += 1
        retry.classify(BrokerNotAvailableError("down"))
        retry.pause()
    assert attempts == 3 and t.slept == [0.4, 0.4, 0.2]  # the last pause ends at the deadline
    assert t.now == retry.deadline and retry.expired()
    retry.pause(until=t.now - 5)  # also never past a caller's earlier bound
    assert t.slept[-1] == 0.0


def test_rule_5_the_timeout_error_is_retriable_and_names_the_last_error() -> None:
    t = FakeTime()
    retry = policy(t).start(2.0)
    while retry.next_attempt():
        retry.classify(NotLeaderError("still electing"))
        retry.pause()
    error = retry.timeout_error("create topic 'x'")
    assert isinstance(error, RaftkaTimeoutError) and isinstance(error, TimeoutError)
    assert str(error) == ("create topic 'x' did not succeed within 2s; last error: "
                          "still electing")
    assert error.retriable and error.__cause__ is retry.last


def test_rule_5_attempts_max_ends_before_the_deadline() -> None:
    t = FakeTime()
    retry = policy(t, attempts_max=3).start(60)
    while retry.next_attempt():
        retry.classify(CoordinatorLoadingError("loading"))
        retry.pause()
    assert retry.attempts == 3 and not retry.expired()
    assert "did not succeed after 3 attempts; last error: loading" in str(
        retry.timeout_error("DescribeGroup"))


def test_rule_6_ambiguous_failures_are_remembered_and_surfaced() -> None:
    assert is_ambiguous(RequestTimedOutError("x")) and is_ambiguous(NoQuorumError("x"))
    assert is_ambiguous(BrokerNotAvailableError("x"))
    assert not is_ambiguous(NotLeaderError("x")) and not is_ambiguous(TopicExistsError("x"))
    t = FakeTime()
    retry = policy(t).start(1.0)
    retry.classify(NotLeaderError("x"))
    assert not retry.ambiguous
    retry.classify(RequestTimedOutError("deadline"))
    retry.classify(NotLeaderError("x"))
    assert retry.ambiguous  # stays: an earlier attempt may have been applied
    t.now = retry.deadline
    assert "outcome of an earlier attempt is unknown" in str(retry.timeout_error("delete"))


def test_a_redirect_then_a_refresh_then_success() -> None:
    """The loop of the Retry docstring against a scripted cluster: a dead node, a
    redirect, a stale node pointing back, then the leader answers."""
    t = FakeTime()
    retry = policy(t, backoff_initial_s=0.1, backoff_max_s=1.0).start(30)
    script = {
        "a:1": [BrokerNotAvailableError("a down")],
        "b:2": [NotLeaderError("x", leader_address="c:3")],
        "c:3": [NotLeaderError("x", leader_address="b:2")],
    }
    calls: list[str] = []
    refreshes: list[float] = []
    target = "a:1"

    def call(address: str) -> str:
        calls.append(address)
        pending = script.get(address)
        if pending:
            raise pending.pop(0)
        return f"answered by {address}"

    result = None
    while retry.next_attempt():
        try:
            result = call(target)
            retry.succeeded()
            break
        except RaftkaError as e:
            leader = named_leader(e, {}.get)
            step = retry.on_error(e, failed=target, leader=leader)
            assert step is not Step.RAISE
        if step is Step.FOLLOW:
            target = leader
            continue
        if step is Step.REFRESH:
            refreshes.append(t.now)
            target = "b:2"  # what the refreshed metadata says
        retry.pause()
    assert result == "answered by b:2"
    assert calls == ["a:1", "b:2", "c:3", "b:2"]
    assert t.slept == [0.1] and refreshes == [1000.0]
    assert retry.ambiguous  # "a down" may have dropped an applied request
