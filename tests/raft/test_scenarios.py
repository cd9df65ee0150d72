"""Scenarios of the Raft core, run in the deterministic simulator (``tests/sim``).

Each test reads as a sentence of the specification; where it traces the Raft paper
("In Search of an Understandable Consensus Algorithm", extended version) or Ongaro's thesis
("Consensus: Bridging Theory and Practice"), the section is cited. The simulator's checker
verifies election safety, log matching, leader completeness and state-machine safety after
every step of every test; a failure prints the seed and the command that replays it.
"""

from __future__ import annotations

import random

import pytest


from raftka.raft import ConfChange, ConfChangeKind, ConfChangeRejected, ConfState, MsgType, Role  # noqa: E402
from tests.sim import Cluster  # noqa: E402

ADD_VOTER = ConfChangeKind.ADD_VOTER
ADD_LEARNER = ConfChangeKind.ADD_LEARNER
REMOVE = ConfChangeKind.REMOVE_NODE


@pytest.fixture
def sim(request):
    """Build a Cluster whose failure messages say how to re-run this very test."""

    def make(nodes: int | ConfState = 3, seed: int = 1, **options) -> Cluster:
        replay = f".venv/bin/python -m pytest '{request.node.nodeid}'"
        return Cluster(nodes, seed, replay=replay, **options)

    return make


def values(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(count)]


def followers_of(c: Cluster, leader: int) -> list[int]:
    return [n for n in sorted(c.nodes) if n != leader]


def replicate_all(c: Cluster, datas: list[bytes], **kwargs) -> list[int]:
    return [c.replicate(d, **kwargs) for d in datas]


def wait_for_leader_among(c: Cluster, nodes: list[int], max_time: int) -> int:
    def elected() -> bool:
        return any(c.node(n).up and c.raw(n).role == Role.LEADER for n in nodes)

    c.wait_for(elected, max_time, f"a leader among {nodes}")
    return next(n for n in nodes if c.node(n).up and c.raw(n).role == Role.LEADER)


# ---------------------------------------------------------------------------------------
# Leader election (§5.2)
# ---------------------------------------------------------------------------------------
def test_initial_election(sim):
    """§5.2: servers start as followers; one times out, wins a majority and stays leader
    as long as it keeps sending heartbeats. All servers agree on the term and the leader."""
    c = sim(3)
    leader = c.wait_for_leader(max_time=3 * c.election_timeout)
    c.run_for(c.election_timeout)
    term = c.raw(leader).term
    assert c.leaders() == [leader]
    assert {c.raw(n).term for n in c.nodes} == {term}
    assert {c.raw(n).leader_id for n in c.nodes} == {leader}

    c.run_for(20 * c.election_timeout)  # no failures: no new election
    assert c.leaders() == [leader]
    assert {c.raw(n).term for n in c.nodes} == {term}


def test_reelection_after_leader_loss(sim):
    """§5.2: if followers receive no communication from the leader within an election
    timeout they elect a new one; the old leader, back, follows the newer term."""
    c = sim(3)
    old = c.wait_for_leader()
    old_term = c.raw(old).term

    c.isolate(old)
    new = wait_for_leader_among(c, followers_of(c, old), 10 * c.election_timeout)
    assert c.raw(new).term > old_term
    c.heal()
    c.wait_for(lambda: c.raw(old).role == Role.FOLLOWER and c.raw(old).leader_id == new,
               5 * c.election_timeout, "the old leader follows the new one")

    c.crash(new)  # and again, by a crash this time
    third = wait_for_leader_among(c, [n for n in c.nodes if n != new], 10 * c.election_timeout)
    c.restart(new)
    c.replicate(b"after two elections")
    assert c.leader() == third


def test_no_election_without_quorum(sim):
    """§5.2: a candidate wins only with votes from a majority, so a lone survivor of a
    3-node cluster never becomes leader (and, with pre-vote, never even bumps its term)."""
    c = sim(3)
    leader = c.wait_for_leader()
    survivor, other = followers_of(c, leader)
    c.crash(leader)
    c.crash(other)
    term = c.raw(survivor).term
    assert not c.run_until(lambda: c.leader() is not None, 20 * c.election_timeout)
    assert c.raw(survivor).term == term  # thesis §9.6: pre-vote failed, term unchanged

    c.restart(other)
    wait_for_leader_among(c, [survivor, other], 10 * c.election_timeout)
    c.replicate(b"quorum again")


# ---------------------------------------------------------------------------------------
# Log replication (§5.3)
# ---------------------------------------------------------------------------------------
def test_basic_agreement(sim):
    """§5.3: the leader appends each command to its log, replicates it, and once it is
    committed every server applies it, in the same order, at the same index."""
    c = sim(3)
    c.wait_for_leader()
    datas = values("cmd", 10)
    indexes = replicate_all(c, datas)
    assert indexes == list(range(indexes[0], indexes[0] + 10))
    for n in c.nodes:
        assert c.applied(n) == datas


def test_agreement_despite_follower_failure(sim):
    """§5.3: a leader commits with a majority while a follower is down, and "retries
    AppendEntries indefinitely" so the follower catches up when it returns."""
    c = sim(3)
    leader = c.wait_for_leader()
    c.replicate(b"before")
    down = followers_of(c, leader)[0]
    c.crash(down)
    replicate_all(c, values("during", 5), expected=2)
    assert c.applied(down) == []  # crashed: its state machine is gone
    c.restart(down)
    c.replicate(b"after")
    expected = [b"before", *values("during", 5), b"after"]
    for n in c.nodes:
        assert c.applied(n) == expected


def test_no_agreement_without_majority(sim):
    """§5.3: an entry is committed only once a majority stores it; with 3 of 5 followers
    down, nothing the leader appends is applied anywhere."""
    c = sim(5)
    leader = c.wait_for_leader()
    c.replicate(b"committed")
    down = followers_of(c, leader)[:3]
    for n in down:
        c.crash(n)
    index = c.propose(b"stranded")
    assert index is not None
    c.run_for(5 * c.election_timeout)
    assert c.applied_on(b"stranded") == []
    assert all(c.raw(n).commit_index < index for n in c.live())

    for n in down:
        c.restart(n)
    c.replicate(b"progress again")
    # "stranded" may have been kept by the next leader or discarded; never half-applied.
    applied = c.applied(c.leader())
    for n in c.nodes:
        assert c.applied(n) == applied


def test_concurrent_proposals(sim):
    """§5.3: proposals that arrive together each get their own index; all servers apply
    all of them in the leader's order."""
    c = sim(3)
    leader = c.wait_for_leader()
    c.replicate(b"warm-up")
    datas = values("concurrent", 50)
    indexes = [c.propose(d, leader) for d in datas]
    assert None not in indexes
    assert indexes == sorted(set(indexes))
    c.wait_for(lambda: all(len(c.applied(n)) == 51 for n in c.nodes), 5 * c.election_timeout,
               "all proposals applied everywhere")
    for n in c.nodes:
        assert c.applied(n) == [b"warm-up", *datas]


def test_rejoin_of_partitioned_leader(sim):
    """§5.3: a leader cut off from the majority cannot commit; the new leader's log wins
    and the old leader's uncommitted entries are overwritten when it rejoins."""
    c = sim(3)
    old = c.wait_for_leader()
    c.replicate(b"v1")
    c.isolate(old)
    for d in values("lost", 3):
        assert c.propose(d, old) is not None
    new = wait_for_leader_among(c, followers_of(c, old), 10 * c.election_timeout)
    c.replicate(b"v2", expected=2)

    c.heal()
    c.isolate(new)  # the old leader must now work with the remaining follower
    wait_for_leader_among(c, followers_of(c, new), 10 * c.election_timeout)
    c.replicate(b"v3", expected=2)
    c.heal()
    c.replicate(b"v4")
    for n in c.nodes:
        assert c.applied(n) == [b"v1", b"v2", b"v3", b"v4"]


def test_fast_backup_over_long_divergent_logs(sim):
    """§5.3 (the optimization at its end) and thesis §3.5: a follower rejecting
    AppendEntries reports the conflicting term and index, so the leader backs up over a
    whole term per round trip instead of one entry at a time."""
    # A fixed latency keeps each link FIFO: a rejection then means a real log mismatch,
    # not a pipelined APP overtaken by a later one.
    c = sim(5, latency_min=3, latency_max=3)
    rejections = []
    c.on_deliver.append(
        lambda m: rejections.append(m) if m.type == MsgType.APP_RESP and m.reject else None)
    leader1 = c.wait_for_leader()
    c.replicate(b"base")
    f1, *rest = followers_of(c, leader1)

    # leader1 and f1 in a minority: 50 entries that will never commit
    c.partition([leader1, f1], rest)
    for d in values("minority-a", 50):
        c.propose(d, leader1)
    leader2 = wait_for_leader_among(c, rest, 10 * c.election_timeout)
    replicate_all(c, values("majority-a", 50), expected=3)

    # leader2 and one follower in a minority: 50 more that never commit
    x = next(n for n in rest if n != leader2)
    y = next(n for n in rest if n not in (leader2, x))
    rejections.clear()  # from here on the leaders must reconcile divergent logs
    c.partition([leader2, x], [leader1, f1, y])
    for d in values("minority-b", 50):
        c.propose(d, leader2)
    wait_for_leader_among(c, [leader1, f1, y], 10 * c.election_timeout)
    replicate_all(c, values("majority-b", 50), expected=3)

    c.heal()
    c.replicate(b"final")
    expected = [b"base", *values("majority-a", 50), *values("majority-b", 50), b"final"]
    for n in c.nodes:
        assert c.applied(n) == expected
    # leader1 and f1 held 50 divergent entries, then leader2 and x 50 more. Backing up one
    # entry per rejection would take ~200 round trips; by term it takes a handful.
    assert len(rejections) <= 8, f"{len(rejections)} APP rejections: {rejections}"


# ---------------------------------------------------------------------------------------
# Persistence and crashes (§5.1, figure 2 "persistent state on all servers")
# ---------------------------------------------------------------------------------------
def test_persistence_across_crashes_of_every_node(sim):
    """Figure 2: term, vote and log are persisted before answering RPCs, so a cluster whose
    servers all crash, even mid-write, restarts with every committed entry; the state
    machine is rebuilt from the snapshot plus the committed log."""
    c = sim(3, disk_latency_max=4, snapshot_interval=3)
    c.wait_for_leader()
    replicate_all(c, values("a", 5))
    for n in c.nodes:
        c.crash(n)
    for n in c.nodes:
        c.restart(n)
    c.wait_for_leader()
    c.wait_for(lambda: all(c.applied(n)[:5] == values("a", 5) for n in c.nodes),
               5 * c.election_timeout, "committed entries re-applied after restart")

    c.replicate(b"b")
    leader = c.leader()
    c.crash(leader)
    c.replicate(b"c", expected=2)
    c.restart(leader)
    for n in sorted(c.nodes):  # one at a time, each while the others keep committing
        c.crash(n)
        c.replicate(f"while {n} down".encode(), expected=2)
        c.restart(n)
    c.replicate(b"end")
    expected = [*values("a", 5), b"b", b"c", *[f"while {n} down".encode() for n in sorted(c.nodes)],
                b"end"]
    for n in c.nodes:
        assert c.applied(n) == expected


def _figure8(c: Cluster, rng: random.Random, iterations: int, crash: bool) -> None:
    """6.824's Figure 8 tests: leaders come and go after appending entries that may or
    may not reach a majority; the checker verifies §5.4.2 at every step."""
    nodes = sorted(c.nodes)
    for i in range(iterations):
        leader = c.leader()
        if leader is not None:
            c.propose(f"fig8-{i}".encode(), leader)
        if rng.random() < 0.1:
            c.run_for(rng.randint(0, c.election_timeout // 2))
        else:
            c.run_for(rng.randint(0, 13))
        leader = c.leader()
        if leader is not None and rng.random() < 0.5:
            if crash:
                c.crash(leader)
            else:
                c.isolate(leader)
        down = [n for n in nodes if not c.node(n).up] if crash else []
        if crash and len(down) > 2 or (not crash and rng.random() < 0.3):
            if crash:
                c.restart(rng.choice(down))
            else:
                c.heal()
    c.heal()
    for n in nodes:
        if not c.node(n).up:
            c.restart(n)


def test_figure8_reliable(sim):
    """§5.4.2, figure 8: a leader never commits an entry of a previous term by counting
    replicas; only entries of its own term are committed by counting. Leaders crash right
    after appending, over and over; nothing once applied is ever lost or changed."""
    c = sim(5, seed=8, disk_latency_max=3)
    rng = random.Random(8)
    c.wait_for_leader()
    _figure8(c, rng, 300, crash=True)
    c.set_latency(1, 5)
    c.replicate(b"final", max_time=40 * c.election_timeout)
    applied = c.applied(c.leader())
    assert all(c.applied(n) == applied for n in c.nodes)


def test_figure8_unreliable(sim):
    """§5.4.2 under an unreliable network: loss, duplication and long delays (old
    AppendEntries arriving after newer ones) while leaders are cut off repeatedly."""
    c = sim(5, seed=88, loss=0.1, duplication=0.05, long_delay=0.05, long_delay_max=400,
            latency_max=20)
    rng = random.Random(88)
    c.wait_for_leader()
    _figure8(c, rng, 300, crash=False)
    c.set_loss(0.0)
    c.set_duplication(0.0)
    c.set_long_delay(0.0, 0)
    c.set_latency(1, 5)
    c.replicate(b"final", max_time=40 * c.election_timeout)
    applied = c.applied(c.leader())
    assert all(c.applied(n) == applied for n in c.nodes)


def test_unreliable_churn(sim):
    """Clients keep writing while servers crash, restart and get cut off on a lossy,
    duplicating network; afterwards every server holds the same history, and everything
    any server applied is in it."""
    c = sim(5, seed=5, loss=0.05, duplication=0.05, latency_max=15, disk_latency_max=4,
            snapshot_interval=20)
    rng = random.Random(5)
    nodes = sorted(c.nodes)
    c.wait_for_leader()
    written = 0
    for _ in range(400):
        for _ in range(rng.randint(0, 3)):
            written += 1
            c.propose(f"churn-{written}".encode())
        c.run_for(rng.randint(1, 20))
        r = rng.random()
        victim = rng.choice(nodes)
        if r < 0.04:
            c.crash(victim)
        elif r < 0.10:
            c.restart(victim)
        elif r < 0.13:
            c.isolate(victim)
        elif r < 0.18:
            c.heal()
    c.heal()
    c.set_loss(0.0)
    c.set_duplication(0.0)
    for n in nodes:
        c.restart(n)
    c.replicate(b"final", max_time=40 * c.election_timeout)
    history = c.applied(c.leader())
    assert len(history) > 50
    assert all(c.applied(n) == history for n in nodes)


# ---------------------------------------------------------------------------------------
# Snapshots (§7)
# ---------------------------------------------------------------------------------------
def test_snapshot_install_to_lagging_follower(sim):
    """§7: when the leader has discarded the entries a follower needs, it sends
    InstallSnapshot; the follower replaces its state with the snapshot and then
    continues from the log."""
    c = sim(3, snapshot_interval=5)
    snapshots_to = []
    c.on_deliver.append(lambda m: snapshots_to.append(m.to) if m.type == MsgType.SNAP else None)
    leader = c.wait_for_leader()
    c.replicate(b"first")
    lagging = followers_of(c, leader)[0]
    c.crash(lagging)
    replicate_all(c, values("missed", 30), expected=2)
    assert c.node(leader).storage.first_index() > c.node(lagging).storage.last_index() + 1
    c.restart(lagging)
    c.replicate(b"caught up")
    assert lagging in snapshots_to
    assert c.node(lagging).storage.snapshot().meta.index > 1
    expected = [b"first", *values("missed", 30), b"caught up"]
    for n in c.nodes:
        assert c.applied(n) == expected


# ---------------------------------------------------------------------------------------
# Leadership transfer (thesis §3.10)
# ---------------------------------------------------------------------------------------
def test_leadership_transfer(sim):
    """Thesis §3.10: the leader brings the target's log up to date, then sends TimeoutNow;
    the target starts an election at once (no waiting for a timeout) and wins it."""
    c = sim(3, disk_latency_max=2)
    old = c.wait_for_leader()
    c.replicate(b"before")
    target = followers_of(c, old)[0]
    term = c.raw(old).term
    c.transfer_leader(target)
    c.wait_for(lambda: c.leader() == target, c.election_timeout // 2,
               "the target leads within half an election timeout")
    assert c.raw(target).term == term + 1
    assert c.raw(old).role == Role.FOLLOWER

    # A lagging target is caught up first.
    lagging = old
    c.crash(lagging)
    replicate_all(c, values("while-down", 10), expected=2)
    c.restart(lagging)
    c.transfer_leader(lagging)
    c.wait_for(lambda: c.leader() == lagging, 2 * c.election_timeout,
               "the lagging target is caught up and leads")
    c.replicate(b"after")
    for n in c.nodes:
        assert c.applied(n) == [b"before", *values("while-down", 10), b"after"]


# ---------------------------------------------------------------------------------------
# Membership changes (§6; thesis §4: one server at a time)
# ---------------------------------------------------------------------------------------
def _conf_change(c: Cluster, change: ConfChange, max_time: int) -> int:
    """Propose ``change`` to the leader until it is accepted (a fresh leader refuses until
    it has committed an entry of its term), then wait until it is applied by a majority."""
    end = c.now + max_time
    while c.now < end:
        try:
            index = c.propose_conf_change(change)
        except ConfChangeRejected:
            index = None
        if index is not None:
            leader = c.leader()
            if c.run_until(lambda: leader is not None and c.node(leader).up
                           and c.node(leader).sm.applied_index >= index, c.election_timeout):
                return index
        c.run_for(c.options.tick_interval)
    raise AssertionError(f"{change} not committed within {max_time}:\n{c.describe()}")


def test_membership_add_remove_during_partitions(sim):
    """Thesis §4.1: changing one server at a time keeps every majority of the old and the
    new configuration overlapping, so partitions during changes cannot elect two leaders
    or lose committed entries."""
    c = sim(3, disk_latency_max=2)
    c.wait_for_leader()
    c.replicate(b"v1")
    _conf_change(c, ConfChange(ADD_VOTER, 4), 20 * c.election_timeout)
    c.wait_for(lambda: c.applied(4) == [b"v1"], 10 * c.election_timeout, "n4 catches up")
    assert c.raw(4).conf_state.voters == {1, 2, 3, 4}

    # Cut the leader off: {2,3,4} minus it still form a majority of four.
    cut = c.leader()
    others = [n for n in sorted(c.nodes) if n != cut]
    c.isolate(cut)
    wait_for_leader_among(c, others, 10 * c.election_timeout)
    c.replicate(b"v2", expected=3)
    _conf_change(c, ConfChange(REMOVE, cut), 20 * c.election_timeout)
    removal_term = c.raw(c.leader()).term

    # With three voters left, a 2-1 split still commits on the majority side.
    leader = c.leader()
    minority = next(n for n in others if n != leader)
    c.partition([leader, *[n for n in others if n not in (leader, minority)]], [minority, cut])
    c.replicate(b"v3", expected=2)
    c.heal()
    c.replicate(b"v4", expected=3)
    _conf_change(c, ConfChange(ADD_LEARNER, 5), 20 * c.election_timeout)
    c.partition([1, 2], [3, 4, 5])
    c.run_for(3 * c.election_timeout)
    c.heal()
    c.replicate(b"v5", expected=4)

    members = c.raw(c.leader()).conf_state
    assert members.voters == set(others) and members.learners == {5}
    for n in [*others, 5]:
        assert c.applied(n) == [b"v1", b"v2", b"v3", b"v4", b"v5"]
    # The removed server never led again.
    assert all(leader != cut for term, leader in c.checker.leader_of_term.items()
               if term >= removal_term)


def test_learner_catches_up_but_never_votes(sim):
    """Thesis §4.2.1: a new server joins as a non-voting member; it receives the log but
    never campaigns and does not count toward a majority, until it is promoted."""
    c = sim(3)
    leader = c.wait_for_leader()
    replicate_all(c, values("v", 10))
    roles = set()
    campaigned = []
    c.on_deliver.append(lambda m: campaigned.append(m) if m.frm == 4 and m.type in (
        MsgType.PRE_VOTE, MsgType.VOTE) else None)
    _conf_change(c, ConfChange(ADD_LEARNER, 4), 10 * c.election_timeout)
    c.replicate(b"learned")
    assert c.applied(4) == [*values("v", 10), b"learned"]

    # Leader + learner are not a majority of {1,2,3}: nothing commits, nobody is elected.
    voters = followers_of(c, leader)
    voters.remove(4)
    for n in voters:
        c.crash(n)
    index = c.propose(b"needs a voter", leader)
    c.run_until(lambda: roles.add(c.raw(4).role) and False, 10 * c.election_timeout)
    assert c.raw(leader).role != Role.LEADER  # check-quorum: the learner's acks don't count
    assert index is None or c.applied_on(b"needs a voter") == []
    assert roles == {Role.FOLLOWER}
    assert campaigned == []

    for n in voters:
        c.restart(n)
    c.wait_for_leader()
    _conf_change(c, ConfChange(ADD_VOTER, 4), 20 * c.election_timeout)
    # Now {1,2,3,4}: with one of the old voters down, n4's vote is needed for a majority.
    c.crash(voters[0])
    c.replicate(b"counted", expected=3)


# ---------------------------------------------------------------------------------------
# Check-quorum and pre-vote (thesis §6.2, §9.6)
# ---------------------------------------------------------------------------------------
def test_leader_isolated_by_one_way_partition_steps_down(sim):
    """Thesis §6.2 (check-quorum): a leader that can send but not hear from a majority for
    an election timeout steps down, so the majority can elect a leader that works."""
    c = sim(3)
    old = c.wait_for_leader()
    c.replicate(b"before")
    followers = followers_of(c, old)
    for f in followers:
        c.one_way(f, old)  # the followers hear the leader; the leader hears nobody
    c.wait_for(lambda: c.raw(old).role != Role.LEADER, 2 * c.election_timeout,
               "the deaf leader steps down")
    assert c.propose(b"refused", old) is None
    new = wait_for_leader_among(c, followers, 10 * c.election_timeout)
    term = c.raw(new).term
    c.replicate(b"after", expected=2)
    c.run_for(10 * c.election_timeout)
    assert c.leader() == new and c.raw(new).term == term  # the deaf node cannot disrupt it
    c.heal()
    c.replicate(b"healed")
    assert c.applied(old) == [b"before", b"after", b"healed"]


def test_prevote_keeps_partitioned_node_from_disrupting_leader(sim):
    """Thesis §9.6: a server cut off for a long time does not inflate its term (its
    pre-votes fail), so when it returns the leader stays in charge. Without pre-vote and
    check-quorum the same partition bumps its term and deposes the leader."""
    c = sim(3)
    leader = c.wait_for_leader()
    term = c.raw(leader).term
    lonely = followers_of(c, leader)[0]
    c.isolate(lonely)
    c.run_for(20 * c.election_timeout)
    assert c.raw(lonely).term == term
    c.heal()
    c.replicate(b"undisturbed")
    c.run_for(5 * c.election_timeout)
    assert c.leader() == leader and c.raw(leader).term == term

    control = sim(3, pre_vote=False, check_quorum=False)
    leader = control.wait_for_leader()
    term = control.raw(leader).term
    lonely = followers_of(control, leader)[0]
    control.isolate(lonely)
    control.run_for(20 * control.election_timeout)
    assert control.raw(lonely).term > term + 5
    control.heal()
    control.replicate(b"disturbed")
    assert control.raw(control.leader()).term > term + 5


# ---------------------------------------------------------------------------------------
# Reads (thesis §6.4)
# ---------------------------------------------------------------------------------------
def test_read_index_is_linearizable(sim):
    """Thesis §6.4: a ReadIndex read returns a commit index at least as new as any write
    completed before the read began, confirmed by a heartbeat round with a majority; a
    deposed leader that cannot reach a majority never answers."""
    c = sim(3)
    leader = c.wait_for_leader()
    replicate_all(c, values("w", 3))
    written = c.raw(leader).commit_index

    ctx = c.read_index(leader)
    c.wait_for(lambda: c.reads[ctx].results, c.election_timeout, "the leader answers")
    _, index, _ = c.reads[ctx].results[0]
    assert index >= written
    c.wait_for(lambda: c.node(leader).sm.applied_index >= index, c.election_timeout, "applied")
    assert c.applied(leader) == values("w", 3)

    follower = followers_of(c, leader)[0]
    ctx = c.read_index(follower)
    c.wait_for(lambda: c.reads[ctx].results, c.election_timeout, "a follower's read answers")
    assert c.reads[ctx].results[0][1] >= written

    # A leader partitioned away: its read must not be answered from stale state.
    c.isolate(leader)
    stale = c.read_index(leader)
    new = wait_for_leader_among(c, followers_of(c, leader), 10 * c.election_timeout)
    later = c.replicate(b"w-new", expected=2)
    c.run_for(3 * c.election_timeout)
    assert c.reads[stale].results == []
    ctx = c.read_index(new)
    c.wait_for(lambda: c.reads[ctx].results, c.election_timeout, "the new leader answers")
    assert c.reads[ctx].results[0][1] >= later
    c.heal()
    c.replicate(b"healed")


# ---------------------------------------------------------------------------------------
# Removing the leader (thesis §4.2.2)
# ---------------------------------------------------------------------------------------
def test_removed_leader_steps_down(sim):
    """Thesis §4.2.2: a leader removed from the configuration keeps managing the cluster
    until the change commits (without counting itself), then steps down; the remaining
    servers elect a leader among themselves and the removed one never leads again."""
    c = sim(3)
    leader = c.wait_for_leader()
    c.replicate(b"v1")
    index = c.propose_conf_change(ConfChange(REMOVE, leader))
    assert index is not None
    rest = followers_of(c, leader)
    c.wait_for(lambda: all(c.node(n).sm.applied_index >= index for n in rest),
               5 * c.election_timeout, "the removal commits")
    c.wait_for(lambda: c.raw(leader).role != Role.LEADER, c.election_timeout,
               "the removed leader steps down")
    removal_term = c.raw(leader).term
    wait_for_leader_among(c, rest, 10 * c.election_timeout)
    c.replicate(b"v2")
    c.run_for(10 * c.election_timeout)
    assert c.raw(c.leader()).conf_state.voters == set(rest)
    assert all(n != leader for t, n in c.checker.leader_of_term.items() if t > removal_term)
    for n in rest:
        assert c.applied(n) == [b"v1", b"v2"]


def test_leader_removing_itself_from_two_voters_does_not_deadlock(sim):
    """Thesis §4.2.2 with in-force-on-append configurations: the leader of voters {a, b}
    appends its own removal, which never reaches b. Both servers are up and connected, so
    a leader must be elected again (soak seeds 63, 71 and 685 found this)."""
    c = sim(ConfState(voters=frozenset({1, 2})))
    leader = c.wait_for_leader()
    other = 3 - leader
    c.replicate(b"v1")
    c.isolate(other)
    assert c.propose_conf_change(ConfChange(REMOVE, leader)) is not None
    c.run_for(3 * c.election_timeout)  # check-quorum: the leader cannot hear its only voter
    c.heal()
    c.wait_for(lambda: c.leader() is not None, 30 * c.election_timeout,
               "a leader after the removal that never replicated")
    c.replicate(b"v2", expected=1)


# ---------------------------------------------------------------------------------------
# A removed server that never learnt it was removed (thesis §4.2.3), without pre-vote and
# check-quorum: it may disrupt the group, but must never stall it (soak seed 437)
# ---------------------------------------------------------------------------------------
def _strand_a_learner_behind_a_removed_server(c: Cluster) -> tuple[int, int, int]:
    """Build soak seed 437's end state in three nodes. Returns (leader, survivor, removed).

    The removed server R never learns of its removal and campaigns every election timeout;
    its VOTEs reach the survivor S (not the leader L: in seed 437 R's stale configuration
    did not name L) and raise S's term past L's. S was demoted to a learner, learnt that
    committed, and missed its re-promotion, so it never campaigns itself; L's latest
    configuration {L, S} needs S's vote and ack. Only L can bring S its own term back."""
    leader = c.wait_for_leader()
    survivor, removed = followers_of(c, leader)
    c.replicate(b"v1")
    c.isolate(removed)
    _conf_change(c, ConfChange(REMOVE, removed), 10 * c.election_timeout)
    demoted = _conf_change(c, ConfChange(ADD_LEARNER, survivor), 10 * c.election_timeout)
    c.wait_for(lambda: c.raw(survivor).commit_index >= demoted, 5 * c.election_timeout,
               "the survivor learns its demotion is committed")
    c.heal()
    c.partition([leader], [survivor, removed])
    assert c.propose_conf_change(ConfChange(ADD_VOTER, survivor), leader) is not None
    leader_term = c.raw(leader).term
    c.wait_for(lambda: c.raw(survivor).term > leader_term + 5, 20 * c.election_timeout,
               "the removed server raises the survivor's term")
    assert c.raw(survivor).conf_state == ConfState(frozenset({leader}), frozenset({survivor}))
    assert c.raw(leader).conf_state.voters == {leader, survivor}
    return leader, survivor, removed


@pytest.mark.parametrize("leader_restarts", [False, True], ids=["stale-leader", "stale-candidate"])
def test_removed_server_disrupts_but_never_stalls_without_prevote_and_check_quorum(
        sim, leader_restarts):
    """Thesis §4.2.3: a server removed from the configuration that never learnt it keeps
    campaigning, and without pre-vote and check-quorum (no lease) each of its VOTEs raises
    the term of the servers it reaches. That is disruption, which only the lease prevents;
    it must not become a stall. The survivor it disrupts cannot campaign (a learner in its
    own latest configuration), so the node that needs the survivor's vote must learn the
    higher term from the survivor's answers: a stale VOTE (stale-candidate: the leader
    restarted and campaigns at its old term) and a stale APP or HEARTBEAT (stale-leader:
    without check-quorum the leader never steps down on its own) are answered with the
    survivor's term (Raft paper figure 2: replies carry currentTerm "for the candidate /
    leader to update itself"). Soak seed 437 found the stale-candidate case."""
    c = sim(3, seed=2, pre_vote=False, check_quorum=False)
    leader, survivor, removed = _strand_a_learner_behind_a_removed_server(c)
    if leader_restarts:
        c.crash(leader)
        c.restart(leader)
    c.heal()
    c.one_way(removed, leader)  # the removed server still cannot reach the leader
    c.replicate(b"v2", expected=2)
    assert c.raw(survivor).conf_state.voters == {leader, survivor}
    assert c.applied(survivor) == [b"v1", b"v2"]
