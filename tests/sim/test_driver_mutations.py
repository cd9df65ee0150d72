"""Mutation tests of the host driver: is the simulator strong enough to catch its bugs?

Each case injects ONE bug into ``raftka.raft.host.HostDriver`` (a subclass overriding one
method with a wrong copy of it, built into every simulated node through
``Soak(driver_factory=...)`` / ``Cluster(driver_factory=...)``) and runs seeds from 0 until
the simulator reports a failure, at most ``SEEDS_MAX`` of them. The case passes only if
that failure names an invariant the bug breaks (tests/sim/checker.py's names: the headline
of an InvariantViolation, or "liveness" for a bug that only stops progress); another
failure, or none, fails the test. A case lists one invariant when its bug can only show as
that one; a bug that makes a write unreliable in general (never synced, left out of the
batch) lists the checks that catch a write relied on before it is durable, whichever the
seed's workload meets first.

Not simulated, so not here: reporting a silent peer without the two-tick confirmation.
The confirmation guards against a stall of the node's own event loop (the peer's batches
wait unread while our clock jumps); the simulator's nodes never stall, so without the
confirmation a peer is reported one tick earlier and nothing observable changes.

    .venv/bin/python -m tests.sim.test_driver_mutations [SEEDS]   # what each bug trips, per seed
"""

from __future__ import annotations

import re

import pytest

from raftka.raft import Role
from raftka.raft.host import HostDriver, HostOrderError
from tests.sim.cluster import Cluster
from tests.sim.errors import InvariantViolation, LivenessFailure, SimulationFailure
from tests.sim.soak import Soak

SEEDS_MAX = 50
RUN_TIME = 5_000  # simulated units of faults per seed (a quarter of the soak's)


class AfterPersistBeforeSyncDriver(HostDriver):
    """Sends every Ready's ``messages_after_persist`` with its ``messages``, before the
    write (rule 5 broken)."""

    def run_pass(self) -> bool:
        readies = self._take_readies()
        if not readies:
            return False
        for group, rd in readies:
            for m in rd.messages + rd.messages_after_persist:
                self._send(group.group_id, m)
            rd.messages_after_persist = []
        return self._write(readies)


def _early(kind: str):
    """A driver that sends the after-persist messages of one type before the write."""

    class Early(HostDriver):
        def run_pass(self) -> bool:
            readies = self._take_readies()
            if not readies:
                return False
            for group, rd in readies:
                early = [m for m in rd.messages_after_persist if m.type.name == kind]
                rd.messages_after_persist = [m for m in rd.messages_after_persist
                                             if m.type.name != kind]
                for m in rd.messages + early:
                    self._send(group.group_id, m)
            return self._write(readies)

    return Early


class AppendAckBeforeSyncDriver(_early("APP_RESP")):
    """Sends append acknowledgements before the write of the entries they acknowledge."""


class VoteBeforeSyncDriver(_early("VOTE_RESP")):
    """Sends vote grants before the write that makes the vote durable."""


class NeverSyncDriver(HostDriver):
    """Treats every pass as commit-only: writes without a sync (so a crash loses it), then
    sends the acknowledgements at once: rule 3 broken."""

    def _write(self, readies) -> bool:
        items = [(g.group_id, rd.hard_state, rd.entries, rd.snapshot) for g, rd in readies
                 if rd.hard_state is not None or rd.entries or rd.snapshot is not None]
        self._readies = readies
        if items:
            self._storage.write(items)
        self._written = True
        self._finish_pass()
        return False


class SkipOneGroupsWriteDriver(HostDriver):
    """In a pass that writes several groups, leaves the last group's write out of the one
    batch (and advances it as if written): group commit broken."""

    def _write(self, readies) -> bool:
        items = [(g.group_id, rd.hard_state, rd.entries, rd.snapshot) for g, rd in readies
                 if rd.hard_state is not None or rd.entries or rd.snapshot is not None]
        if len(items) > 1:
            items.pop()
        must_sync = any(rd.must_sync for _, rd in readies)
        self._readies = readies
        if items and must_sync:
            self._written = False
            self._storage.begin_sync(items)
            return True
        if items:
            self._storage.write(items)
        self._written = True
        self._finish_pass()
        return False


class AckBeforeCommitDriver(HostDriver):
    """Hands a leader's new data entries to its state machine as soon as its own write of
    them is durable, as if that committed them: the producer is answered before commit
    (acks=1's moment for an acks=all request)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._applied_early: dict[int, int] = {}  # group -> last index handed over early

    def _finish_pass(self) -> None:
        for group, rd in self._readies:
            early = self._applied_early.get(group.group_id, 0)
            committed = [e for e in rd.committed_entries if e.index > early]
            if rd.role == Role.LEADER and rd.entries and rd.entries[-1].data:
                after = committed[-1].index if committed else group.node.applied_index
                committed += [e for e in rd.entries if e.index > max(after, early)]
                self._applied_early[group.group_id] = rd.entries[-1].index
            rd.committed_entries = committed
        super()._finish_pass()


class SilentPeersNeverReportedDriver(HostDriver):
    """Node-level liveness never reports a silent peer: a quiesced follower whose leader
    died never wakes (rule 9's reason to exist)."""

    def _check_liveness(self, now: float) -> None:
        return


# The checks that catch a write relied on before it is durable (checker invariants 6, 4, 9).
PERSISTENCE = ("vote is durable before it is granted",
               "candidacy is durable before votes are requested",
               "entries are durable before they are acknowledged",
               "snapshot is durable before it is acknowledged",
               "term is durable before messages carry it")
RELIED_ON_UNDURABLE = PERSISTENCE + ("apply only durable entries",
                                     "acknowledged writes are never lost")

CASES = [
    (AfterPersistBeforeSyncDriver, PERSISTENCE),
    # (an early acknowledgement may also carry a term its node has not made durable yet)
    (AppendAckBeforeSyncDriver, ("entries are durable before they are acknowledged",
                                 "term is durable before messages carry it")),
    (VoteBeforeSyncDriver, ("vote is durable before it is granted",)),
    (NeverSyncDriver, RELIED_ON_UNDURABLE),
    (SkipOneGroupsWriteDriver, RELIED_ON_UNDURABLE),
    (AckBeforeCommitDriver, ("acknowledged writes are committed",)),
]


def first_failure_of_seed(driver: type[HostDriver], seed: int) -> tuple[int, str, str]:
    """(seed, name, message) of the seed's failure: ``name`` is the invariant of an
    InvariantViolation, "liveness" for a LivenessFailure, the class name otherwise, "none"
    if it passed."""
    try:
        Soak(seed, run_time=RUN_TIME, driver_factory=driver).run()
    except InvariantViolation as exc:
        match = re.match(r"invariant violated: (.*?): ", str(exc))
        return seed, match.group(1) if match else "?", str(exc)
    except LivenessFailure as exc:
        return seed, "liveness", str(exc)
    except (SimulationFailure, HostOrderError) as exc:
        return seed, type(exc).__name__, str(exc)
    return seed, "none", ""


def first_failure(driver: type[HostDriver], seeds: int = SEEDS_MAX) -> tuple[int, str, str]:
    """The first of seeds 0.. that fails (at most ``seeds`` of them)."""
    for seed in range(seeds):
        result = first_failure_of_seed(driver, seed)
        if result[1] != "none":
            return result
    return -1, "none", f"no failure in {seeds} seeds"


@pytest.mark.parametrize("driver, invariants", CASES, ids=[c[0].__name__ for c in CASES])
def test_the_simulator_catches_the_injected_driver_bug(driver, invariants):
    seed, name, message = first_failure(driver)
    assert name in invariants, (
        f"{driver.__name__}: expected one of {invariants}, got '{name}' (seed {seed}):\n"
        f"{message[:3000]}")


def leader_crash_while_quiesced(driver: type[HostDriver], seed: int) -> None:
    """tests/raft/test_quiescence.py's scenario: a quiet group loses its leader; the
    followers' timers are stopped, so only node-level liveness can make them elect."""
    c = Cluster(3, seed, quiesce=True, driver_factory=driver,
                replay=f"leader_crash_while_quiesced({driver.__name__}, {seed})")
    old = c.wait_for_leader()
    c.replicate(b"first")
    c.wait_for(lambda: all(c.raw(n).quiesced for n in c.live()), 4 * c.election_timeout,
               "every replica quiesced")
    c.crash(old)
    c.wait_for_leader(10 * c.election_timeout)


def test_the_simulator_catches_a_liveness_check_that_never_reports():
    """Rule 9 only keeps the group live, so the bug shows as a liveness failure."""
    leader_crash_while_quiesced(HostDriver, 0)  # the real driver elects a new leader
    failure = None
    for seed in range(SEEDS_MAX):
        try:
            leader_crash_while_quiesced(SilentPeersNeverReportedDriver, seed)
        except SimulationFailure as exc:
            failure = exc
            break
    assert isinstance(failure, LivenessFailure), failure
    assert str(failure).startswith("liveness: a leader: not within"), str(failure)[:2000]


if __name__ == "__main__":  # which invariant each mutant trips, seed by seed
    import collections
    import sys

    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else SEEDS_MAX
    for driver, invariant in CASES:
        names: collections.Counter = collections.Counter()
        first = None
        for seed in range(seeds):
            _, name, _ = first_failure_of_seed(driver, seed)
            names[name] += 1
            if first is None and name != "none":
                first = (seed, name)
        print(f"{driver.__name__:34} first {first}  all: {dict(names)}  (expected {invariant})")
