"""The client's retry policy, written once: what a failed attempt leads to.

Every client loop that retries (Admin's controller, partition-leader and group calls, the
group coordinator client, metadata refreshes and topic waits in ``Cluster``, the
partition reader, the consumer's heartbeat and commit, the producer's batches and its
producer id) asks one :class:`Retry` what to do after a failed attempt. Errors are judged
by the class-level flags of the contract's error table (``raftka.v1.errors``:
``retriable``, ``invalid_metadata``, plus the leader a NOT_LEADER/NOT_COORDINATOR names),
never by message text. The module is sans-I/O: the clock, the sleep and the random
source are the policy's (tests inject them); what "refresh" means (the metadata cache,
the group's coordinator) is the caller's.

Rules, in the order a failed attempt meets them:

1. **Surface what cannot succeed.** An error that is not ``retriable`` ends the operation
   at once: it is raised (or fails the records' futures) unchanged. Callers may know
   better for their own request and say so first (Admin treats UNKNOWN_TOPIC from the
   controller as definitive; the idempotent producer judges sequence errors itself, see
   ``_idempotence.py``; the consumer retries FENCED_MEMBER_EPOCH after a heartbeat).
2. **Follow the named leader.** NOT_LEADER / NOT_COORDINATOR naming the node that leads
   (its address, else its id resolved through the metadata) sends the next attempt there
   at once, without a backoff, when that is another node than the one that answered. At
   most ``redirects_max`` (3) such hops in a row: nodes with stale views can point at
   each other, so the next failure then backs off (rule 4) and the count starts again.
   The producer applies the same rule to the leader its refreshed metadata names.
3. **Refresh stale metadata.** A retriable error with ``invalid_metadata`` (a node down or
   silent, NOT_LEADER without a name, no leader yet, shutting down, no quorum) means the
   cached view of who leads is stale: forget the cached leader (or coordinator) and
   refresh before the next attempt. Refreshes are shared and rate limited
   (``Cluster.refresh_metadata(min_age_s=...)``), so a burst of errors costs one.
4. **Back off.** Any other retry waits first: bounded exponential backoff with jitter,
   the n-th consecutive wait drawn uniformly from [d/2, d] with d = min(initial * 2^(n-1),
   max). The jitter spreads clients that failed together; the lower half-bound keeps the
   wait growing. A success resets it (and the redirect count).
5. **One overall deadline.** An operation has one deadline for all its attempts (the
   caller's ``timeout``; for a producer batch ``delivery_timeout_ms`` counted from its
   first record), optionally also ``attempts_max`` attempts. No attempt starts after it,
   an attempt's RPC deadline is at most what remains, and a backoff never sleeps past it.
   Then the operation fails with :class:`RaftkaTimeoutError` whose ``__cause__`` is the
   last error; it is ``retriable`` (only retriable errors got it there), so a caller with
   a longer horizon (a consumer's heartbeat loop) simply tries again.
6. **Ambiguous results.** A retriable failure after which the request may still have
   been applied — a deadline (``RequestTimedOutError``), a dropped connection
   (``BrokerNotAvailableError``), NO_QUORUM (written, not yet committed) — leaves the
   attempt's outcome unknown (:func:`is_ambiguous`). A resend is safe only where the
   broker recognises it: the idempotent producer resends the same stamped batch and gets
   the original offsets back. Everyone else surfaces the ambiguity: :attr:`Retry.ambiguous`
   tells the caller, which judges the later answer (Admin: a create that then meets
   TOPIC_EXISTS accepts the topic if it is the one it asked for, a delete that meets
   UNKNOWN_TOPIC succeeds, ...), and a final timeout error says that an attempt's outcome
   is unknown. A producer without idempotence resends (the user chose at-least-once, as
   with Kafka's ``enable.idempotence=false``): a batch may then be written twice.

Threading: a :class:`RetryPolicy` is immutable and shared; a :class:`Retry` belongs to one
operation (one thread at a time). Nothing here blocks except :meth:`Retry.pause` (the
policy's ``sleep``): an event-driven caller (the producer's sender, an asyncio client)
takes :meth:`Retry.delay` and schedules the retry itself.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

from raftka.v1.errors import (
    BrokerNotAvailableError,
    NoQuorumError,
    NotCoordinatorError,
    NotLeaderError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
)

__all__ = [
    "Backoff",
    "Retry",
    "RetryPolicy",
    "Step",
    "is_ambiguous",
    "named_leader",
]

# Rule 6: failures after which the request may have been applied.
_AMBIGUOUS = (BrokerNotAvailableError, RequestTimedOutError, NoQuorumError)


class _Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


def is_ambiguous(error: BaseException) -> bool:
    """Rule 6: whether the failed request may still have been applied."""
    return isinstance(error, _AMBIGUOUS)


def named_leader(error: BaseException, resolve: Callable[[int], str | None]) -> str:
    """The address of the leader (or coordinator) a NOT_LEADER / NOT_COORDINATOR names:
    its address, else its id through ``resolve`` (the metadata); "" when it names none."""
    if isinstance(error, (NotLeaderError, NotCoordinatorError)):
        if error.leader_address:
            return error.leader_address
        if error.leader_id:
            return resolve(error.leader_id) or ""
    return ""


class Backoff:
    """Rule 4: exponential backoff with jitter; ``next()`` returns the seconds to wait:
    uniform in [d/2, d], d doubling from ``initial_s`` up to ``maximum_s``."""

    __slots__ = ("initial_s", "maximum_s", "_current", "_uniform")

    def __init__(self, initial_s: float = 0.05, maximum_s: float = 1.0,
                 rng: _Uniform | None = None) -> None:
        if initial_s <= 0 or maximum_s < initial_s:
            raise ValueError(f"backoff needs 0 < initial_s <= maximum_s, got {initial_s}, "
                             f"{maximum_s}")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self._current = initial_s
        self._uniform = (rng or random).uniform

    def next(self) -> float:
        delay = self._uniform(self._current / 2, self._current)
        self._current = min(self._current * 2, self.maximum_s)
        return delay

    def reset(self) -> None:
        self._current = self.initial_s


class Step(enum.Enum):
    """What to do after a failed attempt (rules 1-4)."""

    RAISE = "raise"  # rule 1: not retriable, surface it
    FOLLOW = "follow"  # rule 2: go at once to the named leader
    REFRESH = "refresh"  # rule 3: refresh the metadata, then back off (rule 4)
    BACKOFF = "backoff"  # rule 4: back off, then the same target again


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The knobs of the rules; one per kind of caller (see the module docstring).

    ``refresh_min_age_s``: a metadata refresh for rule 3 is skipped when the cache is
    younger than this. ``attempts_max``: None for a deadline only. ``clock``, ``sleep``
    and ``rng`` are injected by tests."""

    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    redirects_max: int = 3
    attempts_max: int | None = None
    refresh_min_age_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: _Uniform | None = None

    def __post_init__(self) -> None:
        Backoff(self.backoff_initial_s, self.backoff_max_s)  # validates both
        if self.redirects_max < 0:
            raise ValueError(f"redirects_max must be >= 0, got {self.redirects_max}")
        if self.attempts_max is not None and self.attempts_max < 1:
            raise ValueError(f"attempts_max must be at least 1, got {self.attempts_max}")

    def replace(self, **changes: object) -> RetryPolicy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def backoff(self) -> Backoff:
        return Backoff(self.backoff_initial_s, self.backoff_max_s, self.rng)

    def start(self, timeout_s: float | None = None, *,
              deadline: float | None = None) -> Retry:
        """The retries of one operation: its deadline is ``timeout_s`` from now, or the
        absolute ``deadline`` (the policy's clock), or none."""
        if deadline is None:
            deadline = math.inf if timeout_s is None else self.clock() + timeout_s
        return Retry(self, deadline, timeout_s)


class Retry:
    """One operation's retry state (rules 1-6): attempts, the backoff, consecutive
    redirects, the last error and whether some attempt's outcome is unknown.

    The blocking form of a loop::

        retry = policy.start(timeout_s)
        while retry.next_attempt():
            try:
                return call(target, timeout=retry.attempt_timeout(per_call_s))
            except RaftkaError as e:
                step = retry.on_error(e, failed=target, leader=named_leader(e, resolve))
                if step is Step.RAISE:
                    raise
            if step is Step.FOLLOW: target = the leader; continue
            if step is Step.REFRESH: refresh the metadata
            retry.pause()
        raise retry.timeout_error(what)
    """

    __slots__ = ("policy", "deadline", "timeout_s", "attempts", "redirects", "last",
                 "ambiguous", "_backoff")

    def __init__(self, policy: RetryPolicy, deadline: float, timeout_s: float | None) -> None:
        self.policy = policy
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.attempts = 0
        self.redirects = 0  # rule 2: immediate hops in a row
        self.last: RaftkaError | None = None
        self.ambiguous = False  # rule 6: some attempt's outcome is unknown
        self._backoff: Backoff | None = None  # made at the first backoff

    # ------------------------------------------------------------------ deadline (rule 5)

    def remaining(self) -> float:
        return self.deadline - self.policy.clock()

    def expired(self) -> bool:
        return self.policy.clock() >= self.deadline

    def next_attempt(self) -> bool:
        """Whether another attempt may start (before the deadline, within
        ``attempts_max``); counts it."""
        attempts_max = self.policy.attempts_max
        if self.expired() or (attempts_max is not None and self.attempts >= attempts_max):
            return False
        self.attempts += 1
        return True

    def attempt_timeout(self, cap_s: float) -> float:
        """The deadline of one attempt's RPC: ``cap_s``, but not past the operation's."""
        return min(self.remaining(), cap_s)

    # ------------------------------------------------------------------ decisions

    def classify(self, error: RaftkaError) -> Step:
        """Rules 1, 3 and 4 for ``error`` (remembered as the last one; rule 6 noted):
        RAISE, REFRESH or BACKOFF. Rule 2 is :meth:`follow`."""
        self.last = error
        if isinstance(error, _AMBIGUOUS):
            self.ambiguous = True
        if not error.retriable:
            return Step.RAISE
        return Step.REFRESH if error.invalid_metadata else Step.BACKOFF

    def follow(self, failed: str, leader: str | None) -> bool:
        """Rule 2: whether to go to ``leader`` at once (another node than ``failed``,
        fewer than ``redirects_max`` hops in a row). Counts the hop; False resets it."""
        if leader and leader != failed and self.redirects < self.policy.redirects_max:
            self.redirects += 1
            return True
        self.redirects = 0
        return False

    def on_error(self, error: RaftkaError, *, failed: str = "",
                 leader: str | None = "") -> Step:
        """Rules 1-4: :meth:`classify`, and FOLLOW when ``leader`` (the one ``error``
        names, see :func:`named_leader`) is to be followed at once."""
        step = self.classify(error)
        if step is not Step.RAISE and self.follow(failed, leader):
            return Step.FOLLOW
        return step

    def succeeded(self) -> None:
        """An attempt worked: the next failure starts from the initial backoff."""
        self.redirects = 0
        if self._backoff is not None:
            self._backoff.reset()

    # ------------------------------------------------------------------ waiting (rule 4)

    def delay(self) -> float:
        """The next backoff, in seconds (it grows with each call until :meth:`succeeded`)."""
        if self._backoff is None:
            self._backoff = self.policy.backoff()
        return self._backoff.next()

    def pause(self, until: float | None = None) -> None:
        """Sleep the next backoff, never past the deadline (nor past ``until``, a time of
        the policy's clock)."""
        self.policy.sleep(self.pause_s(until))

    def pause_s(self, until: float | None = None) -> float:
        """The seconds :meth:`pause` would sleep (the next backoff, bounded by the
        deadline and ``until``), for a caller that sleeps itself (``_ops.Sleep``)."""
        end = self.deadline if until is None else min(self.deadline, until)
        delay = self.delay()
        return max(0.0, min(delay, end - self.policy.clock()))

    # ------------------------------------------------------------------ giving up (rule 5)

    def timeout_error(self, what: str) -> RaftkaTimeoutError:
        """The error that ends the operation after its deadline or ``attempts_max``:
        retriable when every error behind it was, ``__cause__`` = the last error, and it
        says when an attempt's outcome is unknown (rule 6)."""
        last = self.last
        attempts_max = self.policy.attempts_max
        if (attempts_max is not None and self.attempts >= attempts_max
                and last is not None and not self.expired()):
            message = f"{what} did not succeed after {attempts_max} attempts; last error: {last}"
        else:
            limit = "" if self.timeout_s is None else f" within {self.timeout_s:g}s"
            detail = f"; last error: {last}" if last else ""
            message = f"{what} did not succeed{limit}{detail}"
        if self.ambiguous:
            message += " (the outcome of an earlier attempt is unknown: it may have been applied)"
        error = RaftkaTimeoutError(message)
        error.retriable = last is None or last.retriable
        error.__cause__ = last
        return error
