"""The host driver (``raftka.raft.host``) on its own: ordering rules, group commit, ticks,
node-level liveness. Groups are real RawNodes over ``MemoryStorage``; the store below
writes to those for real, and syncs complete when the test says so. The simulator
(tests/sim) runs the same driver under faults; these tests pin the rules one by one.
"""

from __future__ import annotations

import random

import pytest

from raftka.raft import Config, ConfState, Entry, MemoryStorage, Message, MsgType, RawNode, Role
from raftka.raft.host import HostDriver, HostGroup, HostOrderError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


class Wire:
    """A HostTransport that keeps what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []
        self.ticks = 0

    def send(self, group_id: int, message: Message) -> None:
        self.sent.append((group_id, message))

    def tick(self) -> None:
        self.ticks += 1

    def take(self) -> list[tuple[int, Message]]:
        sent, self.sent = self.sent, []
        return sent


class Disk:
    """A HostStorage over the groups' MemoryStorages: a synced write lands when
    ``complete()`` is called, as a real fsync returning later would."""

    def __init__(self, stores: dict[int, MemoryStorage]) -> None:
        self.stores = stores
        self.unsynced: list[list] = []
        self.syncing: list | None = None
        self.synced: list[list] = []

    def _save(self, items) -> None:
        for group_id, hard_state, entries, snapshot in items:
            self.stores[group_id].save(hard_state, entries, snapshot)

    def write(self, items) -> None:
        self.unsynced.append(list(items))
        self._save(items)

    def begin_sync(self, items) -> None:
        assert self.syncing is None
        self.syncing = list(items)

    def complete(self) -> None:
        items, self.syncing = self.syncing, None
        self._save(items)
        self.synced.append(items)


class Machine:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.readies = 0

    def restore(self, snapshot) -> None: ...

    def before_ready(self) -> None: ...

    def apply(self, entries) -> None:
        self.applied.extend(e.index for e in entries)

    def on_ready(self, rd) -> None:
        self.readies += 1


VOTERS = ConfState(frozenset({1, 2, 3}))


class Host:
    """Node 1 with groups 1..n, all members {1, 2, 3}."""

    def __init__(self, groups: int = 2, *, quiesce: bool = False,
                 late_skips_max: int = 3, ping_ticks: int = 1) -> None:
        self.clock = Clock()
        self.wire = Wire()
        self.stores = {g: MemoryStorage(VOTERS) for g in range(1, groups + 1)}
        self.disk = Disk(self.stores)
        self.wakes = 0
        self.driver = HostDriver(1, transport=self.wire, storage=self.disk, clock=self.clock,
                                 wake=self._wake, election_timeout=10.0,
                                 rng=random.Random(1), late_skips_max=late_skips_max,
                                 ping_ticks=ping_ticks)
        self.machines: dict[int, Machine] = {}
        for g in self.stores:
            node = RawNode(Config(1, election_tick=10, heartbeat_tick=1, quiesce=quiesce,
                                  pre_vote=False),
                           self.stores[g], random.Random(g))
            self.machines[g] = Machine()
            self.driver.add_group(HostGroup(g, node, self.machines[g]))

    def _wake(self) -> None:
        self.wakes += 1

    def run(self) -> None:
        """One pass, its sync completed at once if it started one."""
        if self.driver.run_pass():
            self.disk.complete()
            self.driver.sync_completed()

    def node(self, g: int) -> RawNode:
        return self.driver.groups[g].node


def _append(g: int, index: int, term: int = 1, commit: int = 0) -> tuple[int, Message]:
    """Leader 2's APP of one entry at ``index`` (after ``index - 1``)."""
    prev_term = term if index > 1 else 0
    return g, Message(MsgType.APP, 1, 2, term=term, index=index - 1, log_term=prev_term,
                      entries=[Entry(term, index, 0, b"x%d" % index)], commit=commit)


def _types(sent) -> list[tuple[int, MsgType]]:
    return [(g, m.type) for g, m in sent]


def test_one_synced_write_per_pass_and_acknowledgements_only_after_it():
    h = Host(2)
    h.driver.deliver_many([_append(1, 1), _append(2, 1)], 2)
    assert h.driver.run_pass() is True  # a synced write is outstanding
    assert h.disk.syncing is not None and sorted(i[0] for i in h.disk.syncing) == [1, 2]
    assert h.wire.take() == []  # the APP_RESPs promise durability: not yet
    assert h.stores[1].last_index() == 0
    h.disk.complete()
    h.driver.sync_completed()
    assert sorted(_types(h.wire.take())) == [(1, MsgType.APP_RESP), (2, MsgType.APP_RESP)]
    assert h.stores[1].last_index() == 1 and h.stores[2].last_index() == 1
    assert len(h.disk.synced) == 1  # one sync for both groups


def test_inputs_during_a_sync_ride_the_next_pass():
    h = Host(2)
    h.driver.deliver_many([_append(1, 1)], 2)
    assert h.driver.run_pass()
    # Meanwhile: more entries for group 1, the first for group 2. Stepped at once ...
    h.driver.deliver_many([_append(1, 2), _append(2, 1)], 2)
    assert h.node(1).last_index == 2 and h.node(2).last_index == 1
    with pytest.raises(HostOrderError, match="rule 1"):
        h.driver.run_pass()
    h.disk.complete()
    h.driver.sync_completed()
    assert [m.index for _, m in h.wire.take()] == [1]  # only what the first write covers
    # ... and written together by the next pass: one sync for both groups.
    assert h.driver.run_pass()
    assert sorted((i[0], [e.index for e in i[2]]) for i in h.disk.syncing) == [(1, [2]), (2, [1])]
    h.disk.complete()
    h.driver.sync_completed()
    assert sorted((g, m.index) for g, m in h.wire.take()) == [(1, 2), (2, 1)]


def test_sync_completed_without_a_synced_write_is_refused():
    h = Host(1)
    with pytest.raises(HostOrderError, match="rule 4"):
        h.driver.sync_completed()
    h.driver.deliver_many([_append(1, 1)], 2)
    h.driver.run_pass()
    h.disk.complete()
    h.driver.sync_completed()
    with pytest.raises(HostOrderError, match="rule 4"):
        h.driver.sync_completed()


def test_a_commit_only_pass_writes_without_a_sync_and_applies_at_once():
    h = Host(1)
    h.driver.deliver_many([_append(1, 1)], 2)
    h.driver.run_pass()
    h.disk.complete()
    h.driver.sync_completed()
    h.wire.take()
    h.driver.deliver_many([(1, Message(MsgType.HEARTBEAT, 1, 2, term=1, commit=1))], 2)
    assert h.driver.run_pass() is False  # no sync outstanding: the pass is complete
    assert len(h.disk.unsynced) == 1 and h.disk.syncing is None
    assert h.machines[1].applied == [1]
    assert _types(h.wire.take()) == [(1, MsgType.HEARTBEAT_RESP)]


def test_a_leader_replicates_before_its_own_write_and_commits_only_after_it():
    h = Host(1)
    node = h.node(1)
    node.campaign()
    h.driver.mark(1)
    assert h.driver.run_pass()  # candidacy (term, vote) must be durable first
    assert h.wire.take() == []
    h.disk.complete()
    h.driver.sync_completed()
    votes = h.wire.take()
    assert _types(votes) == [(1, MsgType.VOTE), (1, MsgType.VOTE)]
    h.driver.deliver_many([(1, Message(MsgType.VOTE_RESP, 1, 2, term=node.term))], 2)
    assert node.role == Role.LEADER
    assert h.driver.run_pass()  # the new leader's empty entry: APPs go out before its write
    assert {m.type for _, m in h.wire.take()} == {MsgType.APP}
    h.disk.complete()
    h.driver.sync_completed()
    h.driver.deliver_many([(1, Message(MsgType.APP_RESP, 1, 2, term=node.term, index=1))], 2)
    assert node.commit_index == 1  # a quorum of durable logs: node 2 and our own
    h.driver.run_pass()
    assert h.machines[1].applied == [1]


def test_durable_committed_entries_apply_while_the_pass_syncs_new_ones():
    """Rule 6a: the pass that learns of a follower's acknowledgement also writes new
    proposals; the entries the acknowledgement committed (durable here already) are
    applied as soon as that write starts, not after its sync. Entries of the Ready's
    own write are not applied before it is durable."""
    h = Host(1)
    node = h.node(1)
    node.campaign()
    h.driver.mark(1)
    h.run()
    h.wire.take()
    h.driver.deliver_many([(1, Message(MsgType.VOTE_RESP, 1, 2, term=node.term))], 2)
    h.run()  # the leader's empty entry at index 1, durable here
    h.wire.take()
    node.propose(b"next")  # index 2, not written yet
    h.driver.deliver_many([(1, Message(MsgType.APP_RESP, 1, 2, term=node.term, index=1))], 2)
    assert node.commit_index == 1
    assert h.driver.run_pass()  # writes index 2 (a sync) ...
    assert h.machines[1].applied == [1]  # ... and index 1 is applied meanwhile
    h.disk.complete()
    h.driver.sync_completed()
    assert h.machines[1].applied == [1]  # once, not again after the sync
    h.driver.deliver_many([(1, Message(MsgType.APP_RESP, 1, 2, term=node.term, index=2))], 2)
    h.driver.run_pass()
    assert h.machines[1].applied == [1, 2]


def test_a_follower_applies_entries_of_its_own_pending_write_only_after_the_sync():
    h = Host(1)
    h.driver.deliver_many([_append(1, 1, commit=1)], 2)  # committed, but not on our disk
    assert h.driver.run_pass()
    assert h.machines[1].applied == []
    h.disk.complete()
    h.driver.sync_completed()
    assert h.machines[1].applied == [1]


def test_a_group_removed_during_the_sync_is_advanced_but_applies_nothing():
    h = Host(1)
    h.driver.deliver_many([_append(1, 1, commit=1)], 2)
    assert h.driver.run_pass()
    group = h.driver.remove_group(1)
    h.disk.complete()
    h.driver.sync_completed()
    assert group.closed and h.machines[1].applied == [] and h.machines[1].readies == 0
    assert not group.node.has_ready()  # advanced: the RawNode is consistent


def test_the_ticker_skips_quiesced_groups_and_pings_each_tick():
    h = Host(2, quiesce=True)
    for g in (1, 2):
        h.driver.deliver_many([(g, Message(MsgType.QUIESCE, 1, 2, term=1, index=0, log_term=0,
                                           commit=0))], 2)
    h.run()
    assert h.node(1).quiesced and h.node(2).quiesced
    h.driver.deliver_many([(2, Message(MsgType.HEARTBEAT, 1, 2, term=1))], 2)  # wakes group 2
    h.run()
    elapsed = h.node(1)._raft.election_elapsed, h.node(2)._raft.election_elapsed
    h.driver.tick()
    assert h.wire.ticks == 1
    assert h.node(1)._raft.election_elapsed == elapsed[0]  # skipped
    assert h.node(2)._raft.election_elapsed == elapsed[1] + 1


def test_ticks_visit_only_awake_groups_and_a_full_scan_finds_a_wake_the_driver_missed():
    """Rule 8: a tick looks only at the groups the passes saw awake; a group woken behind
    the driver's back (the owner calling the core, no mark) is found by the next full scan,
    within FULL_SCAN_TICKS ticks."""
    from raftka.raft.host import FULL_SCAN_TICKS

    h = Host(3, quiesce=True)
    for g in (1, 2, 3):
        h.driver.deliver_many([(g, Message(MsgType.QUIESCE, 1, 2, term=1, index=0,
                                           log_term=0, commit=0))], 2)
    h.run()
    h.driver.tick()  # the first tick's full scan: nobody is awake
    assert h.driver._awake == set()

    h.driver.deliver_many([(2, Message(MsgType.HEARTBEAT, 1, 2, term=1))], 2)  # wakes 2
    h.run()
    assert h.driver._awake == {2}
    before = h.node(2)._raft.election_elapsed
    h.driver.tick()
    assert h.node(2)._raft.election_elapsed == before + 1

    h.node(3)._raft._wake()  # woken without the driver knowing
    ticks = 0
    while 3 not in h.driver._awake:
        h.driver.tick()
        h.run()
        ticks += 1
        assert ticks <= FULL_SCAN_TICKS, "a full scan must find the awake group"
    assert not h.node(3).quiesced


def test_a_silent_peer_is_reported_after_two_ticks_and_again_every_election_timeout():
    h = Host(1, quiesce=True)
    for peer in (2, 3):
        h.driver.add_peer(peer)
    reported: list[int] = []
    node = h.node(1)
    node.report_peer_down = lambda peer, down=(): reported.append(peer)  # in order
    h.driver.deliver_many([(1, Message(MsgType.QUIESCE, 1, 2, term=1, index=0, log_term=0,
                                       commit=0))], 2)
    assert node.quiesced

    def tick_at(t: float) -> None:
        h.clock.t = t
        h.driver.deliver_many([], 3)  # node 3 stays alive throughout
        h.driver.tick()

    tick_at(9.0)
    tick_at(10.0)  # silent for an election timeout: a suspect only
    assert reported == []
    tick_at(11.0)  # silent at the second tick in a row
    assert reported == [2]
    tick_at(12.0)
    tick_at(20.0)
    assert reported == [2]  # not again within an election timeout
    tick_at(21.0)
    assert reported == [2, 2]  # still silent: again (a group may have quiesced since)
    for t in range(31, 122, 10):
        tick_at(float(t))
    assert reported == [2] * 12
    h.clock.t = 125.5  # heard from, 11.45 timeouts after the first report: it was down
    h.driver.deliver_many([], 2)  # cleared
    assert h.driver.false_alarms == 0
    tick_at(134.0)
    tick_at(135.0)
    assert reported == [2] * 12
    tick_at(136.0)  # silent for an election timeout again: a suspect
    assert reported == [2] * 12
    tick_at(137.0)
    assert reported == [2] * 13


def test_a_peer_heard_soon_after_its_report_gets_a_wider_threshold_that_calm_narrows():
    """Rule 9b: a false alarm (a starved peer, not a dead one) doubles that peer's silence
    threshold, up to SILENCE_FACTOR_MAX timeouts; SILENCE_DECAY_TIMEOUTS of calm halve it."""
    from raftka.raft.host import SILENCE_DECAY_TIMEOUTS, SILENCE_FACTOR_MAX

    h = Host(1, quiesce=True)
    h.driver.add_peer(2)
    reported: list[float] = []
    h.node(1).report_peer_down = lambda peer, down=(): reported.append(h.clock.t)
    h.driver.deliver_many([(1, Message(MsgType.QUIESCE, 1, 2, term=1, index=0, log_term=0,
                                       commit=0))], 2)
    assert h.node(1).quiesced

    def silent_until_reported(start: float) -> float:
        """Tick every unit from ``start`` until peer 2 is reported; when it was."""
        t = start
        while not reported or reported[-1] < start:
            t += 1.0
            h.clock.t = t
            h.driver.tick()
            assert t < start + 200
        return reported[-1] - start

    h.clock.t = 0.0
    h.driver.deliver_many([], 2)
    assert silent_until_reported(0.0) == 11.0  # one timeout, then the second tick
    factor = 1
    for alarm in range(1, 5):
        h.clock.t += 2.0  # back 2 units after its report: a false alarm
        h.driver.deliver_many([], 2)
        assert h.driver.false_alarms == alarm
        factor = min(factor * 2, SILENCE_FACTOR_MAX)
        assert silent_until_reported(h.clock.t) == 10.0 * factor + 1
    assert factor == SILENCE_FACTOR_MAX
    h.clock.t += 2.0
    h.driver.deliver_many([], 2)  # widest already: stays at the maximum
    calm_until = h.clock.t + SILENCE_DECAY_TIMEOUTS * 10.0
    while h.clock.t < calm_until:  # calm: heard every unit
        h.clock.t += 1.0
        h.driver.deliver_many([], 2)
        h.driver.tick()
    h.driver.deliver_many([], 2)
    assert silent_until_reported(h.clock.t) == 10.0 * SILENCE_FACTOR_MAX / 2 + 1


def _quiesced_follower_of_node_2() -> tuple[Host, list[int]]:
    """Node 1's group 1 quiesced behind leader 2; the peers it reports down, in order."""
    h = Host(1, quiesce=True)
    h.driver.add_peer(2)
    reported: list[int] = []
    h.node(1).report_peer_down = lambda peer, down=(): reported.append(peer)
    h.driver.deliver_many([(1, Message(MsgType.QUIESCE, 1, 2, term=1, index=0, log_term=0,
                                       commit=0))], 2)
    return h, reported


def test_a_removed_peer_is_never_reported_down():
    """A node removed from the cluster is no longer watched (HostDriver.remove_peer)."""
    h, reported = _quiesced_follower_of_node_2()
    h.clock.t = 10.0
    h.driver.tick()  # a suspect
    h.driver.remove_peer(2)
    for t in (11.0, 12.0, 30.0):
        h.clock.t = t
        h.driver.tick()
    assert reported == [] and h.driver.silent_for(2) == 0.0


def test_one_stalled_tick_does_not_report_a_peer_whose_batches_are_waiting():
    h, reported = _quiesced_follower_of_node_2()
    h.clock.t = 25.0  # our own loop stalled for 25 units: the first tick after it ...
    h.driver.tick()
    h.driver.deliver_many([], 2)  # ... is followed by node 2's batches that waited meanwhile
    h.clock.t = 26.0
    h.driver.tick()
    assert reported == []


def test_pings_go_every_ping_ticks_on_time_and_on_every_late_tick():
    """Rule 9: the node pings once a heartbeat interval (``ping_ticks``), not every tick;
    a late tick pings at once (its peers may be waiting on us)."""
    h = Host(1, ping_ticks=2)
    for _ in range(6):
        h.driver.tick()
    assert h.wire.ticks == 3
    h.driver.tick(late=True)
    h.driver.tick(late=True)
    assert h.wire.ticks == 5
    try:
        Host(1, ping_ticks=0)
        raise AssertionError("ping_ticks=0 was accepted")
    except ValueError:
        pass


def test_a_late_tick_after_a_stall_lets_a_follower_read_its_leader_first():
    """Rule 8a: our own loop stalled while leader 2's heartbeats waited in the socket. The
    late tick does not count, so the follower reads them before its timer moves again;
    without the flag the same tick makes it campaign against a live leader."""
    outcomes = []
    for late in (True, False):
        h = Host(1)
        node = h.node(1)
        h.driver.deliver_many([(1, Message(MsgType.HEARTBEAT, 1, 2, term=1))], 2)
        h.run()
        timeout = node._raft.randomized_election_timeout
        for _ in range(timeout - 1):
            h.driver.tick()  # on time, nothing heard: one tick short of the timeout
        h.run()
        assert node.role == Role.FOLLOWER
        h.driver.tick(late=late)  # the first tick after the stall ...
        h.driver.deliver_many([(1, Message(MsgType.HEARTBEAT, 1, 2, term=1))], 2)  # ... then
        h.run()  # the heartbeat that waited meanwhile
        outcomes.append((node.role, node.term))
        assert h.wire.ticks == timeout  # pings go out on the late tick too
    assert outcomes[0] == (Role.FOLLOWER, 1)
    assert outcomes[1][0] != Role.FOLLOWER  # the stall was held against the leader


@pytest.mark.parametrize("skips", [0, 1, 3])
def test_under_sustained_lag_one_tick_in_late_skips_max_plus_one_counts(skips):
    """Rule 8a's bound: a loop that is late at every tick still times out, at most
    ``late_skips_max + 1`` times as slowly (a dead leader is still replaced)."""
    h = Host(1, late_skips_max=skips)
    node = h.node(1)
    h.driver.deliver_many([(1, Message(MsgType.HEARTBEAT, 1, 2, term=1))], 2)
    h.run()
    timeout = node._raft.randomized_election_timeout
    for _ in range((skips + 1) * timeout - 1):
        h.driver.tick(late=True)
        h.run()
    assert node.role == Role.FOLLOWER and node.term == 1
    h.driver.tick(late=True)
    h.run()
    assert node.role != Role.FOLLOWER  # campaigned after (skips + 1) x timeout late ticks
    assert (h.driver.late_ticks, h.driver.skipped_ticks) == ((skips + 1) * timeout,
                                                             skips * timeout)


def test_late_skips_max_must_not_be_negative():
    with pytest.raises(ValueError):
        Host(1, late_skips_max=-1)


def test_a_leader_skips_late_ticks_too_so_check_quorum_widens():
    """Rule 8a: a starved leader does not step down (check-quorum) for followers whose
    answers it has not read yet: its late ticks are skipped like a follower's."""
    h = Host(2)
    leader = h.node(1)
    leader.campaign()
    h.run()
    h.driver.deliver_many([(1, Message(MsgType.VOTE_RESP, 1, 2, term=leader.term))], 2)
    h.run()
    assert leader.role == Role.LEADER
    for _ in range(3 * 10):  # three election timeouts of late ticks, nothing heard
        h.driver.tick(late=True)
        h.run()
    # one tick in 4 counted: not a whole election timeout (10 ticks) yet
    assert leader.role == Role.LEADER
    for _ in range(4 * 10 * 2):  # on time (or late without bound) it would step down
        h.driver.tick()
        h.run()
    assert leader.role != Role.LEADER


def test_a_late_tick_checks_no_liveness_and_forgets_suspects():
    h, reported = _quiesced_follower_of_node_2()
    h.clock.t = 10.0
    h.driver.tick()  # silent for an election timeout: a suspect
    h.clock.t = 40.0  # then our loop stalled: the next tick is late
    h.driver.tick(late=True)
    assert reported == []  # not reported on a late tick ...
    h.clock.t = 41.0
    h.driver.tick()  # ... and a suspect again from scratch, not reported yet
    assert reported == []
    h.clock.t = 42.0
    h.driver.tick()
    assert reported == [2]  # really silent: two on-time ticks in a row


def test_transfer_leaderships_moves_each_led_group_to_a_reachable_voter():
    h = Host(1)
    node = h.node(1)
    node.campaign()
    h.run()
    h.driver.deliver_many([(1, Message(MsgType.VOTE_RESP, 1, 2, term=node.term))], 2)
    assert node.role == Role.LEADER
    assert h.driver.transfer_leaderships(lambda peer: peer == 3) is True
    assert node._raft.lead_transferee == 3


def test_the_driver_is_pure_like_the_core():
    """No asyncio, threads, clock, sockets or RocksDB: only the stdlib and the core."""
    import ast
    import sys
    from pathlib import Path

    from tests.raft.test_core_purity import FORBIDDEN

    path = Path(__file__).resolve().parents[2] / "raft" / "host.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module)
    tops = {name.split(".")[0] for name in imported} - {"__future__", "raftka"}
    assert not tops & FORBIDDEN, sorted(tops & FORBIDDEN)
    assert all(name in sys.stdlib_module_names for name in tops), sorted(tops)
    assert {n for n in imported if n.startswith("raftka")} == {"raftka.raft.core"}
