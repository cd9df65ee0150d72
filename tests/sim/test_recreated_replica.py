"""A replica deleted from a node and re-created there under the same Raft id (a partition
moved off a node and back) must not help a stale node win an election: rule 13 of
``raft/core/_raft.py`` (tombstone, vote floor, no vote without a configuration).

The scenario is the membership nemesis's seed-2020 failure (jepsen-like/FINDINGS.md), with
node ids 1, 2, 3, 4 for its nodes 1, 7, 8, 9: node 1 is stale (its log still has the
configuration {1, 2, 3}) while the group moves on to {1, 2, 4} and commits acknowledged
writes on 2 and 4; node 3 deletes its replica and re-creates it empty; node 1 restarts
cut off with node 3 alone. Node 3's vote plus its own is a majority of node 1's stale
configuration. The simulator's checker fails the run if node 1 is elected (leader
completeness: it lacks committed entries) or an acknowledged write is lost.

Each test also runs the scenario with the fix taken out (the core as before rule 13, no
tombstone) and demands that the checker then catches the stale leader: the test can fail.

    .venv/bin/python -m pytest -q tests/sim/test_recreated_replica.py
"""

from __future__ import annotations

import pytest

from raftka.raft import ConfChange, ConfChangeKind, ConfChangeRejected, Role
from raftka.raft.core import _raft
from tests.sim import Cluster
from tests.sim.errors import InvariantViolation

STALE, LEADER, RECREATED, ADDED = 1, 2, 3, 4
SEEDS = range(3)


def _change(c: Cluster, kind: ConfChangeKind, node: int) -> None:
    """Propose a one-server change until the leader accepts it, then wait until the
    leader has applied it."""
    end = c.now + 30 * c.election_timeout
    while c.now < end:
        try:
            index = c.propose_conf_change(ConfChange(kind, node))
        except ConfChangeRejected:
            index = None
        if index is not None:
            leader = c.leader()
            if c.run_until(lambda: c.node(leader).up
                           and c.node(leader).sm.applied_index >= index, c.election_timeout):
                return
        c.run_for(c.options.tick_interval)
    raise AssertionError(f"{kind.name} {node} not committed:\n{c.describe()}")


def _stale_node_and_moved_group(seed: int, **options) -> Cluster:
    """Steps 1-2 of the finding: node 1 falls behind with the configuration {1, 2, 3 | 4}
    (4 a learner); the group commits more entries, promotes 4, removes 3 and commits
    acknowledged writes without node 1."""
    c = Cluster(3, seed, replay=f".venv/bin/python -m pytest -q "
                f"'tests/sim/test_recreated_replica.py' (seed {seed})",
                vote_only_with_configuration=True, **options)  # as the broker runs it
    c.wait_for_leader()
    c.transfer_leader(LEADER)
    c.wait_for(lambda: c.leader() == LEADER, 10 * c.election_timeout, "n2 leads")
    for i in range(3):
        c.replicate(b"before-%d" % i)
    _change(c, ConfChangeKind.ADD_LEARNER, ADDED)
    for i in range(3):
        c.replicate(b"learner-%d" % i)
    c.crash(STALE)
    for i in range(3):
        c.replicate(b"without-n1-%d" % i)  # beyond node 1's log, still in {1, 2, 3 | 4}
    _change(c, ConfChangeKind.ADD_VOTER, ADDED)
    _change(c, ConfChangeKind.REMOVE_NODE, RECREATED)
    # Acknowledged writes that only {2, 4} hold: what a stale leader would overwrite.
    assert c.produce([b"acked-%d" % i for i in range(10)], LEADER)
    c.wait_for(lambda: c.stats["acks"] >= 10, 10 * c.election_timeout, "10 acks")
    return c


def _stale_node_campaigns(c: Cluster) -> None:
    """Step 3: node 1 restarts cut off with node 3 alone and campaigns for a while."""
    c.partition([STALE, RECREATED], [LEADER, ADDED])
    c.restart(STALE)
    c.run_for(30 * c.election_timeout)


def _without_the_configuration_guard_and_floor(monkeypatch) -> None:
    """Any log at least as up to date as our own gets the vote (the core before rule 13)."""
    monkeypatch.setattr(_raft.Raft, "_candidate_log_ok",
                        lambda self, m: self.log.is_up_to_date(m.index, m.log_term))


def _without_the_floor_on_votes(monkeypatch) -> None:
    """Rule 13 but for the floor in vote grants (a replica with a configuration grants
    any log at least as up to date as its own)."""
    monkeypatch.setattr(_raft.Raft, "_candidate_log_ok",
                        lambda self, m: bool(self.conf.voters)  # the configuration guard
                        and self.log.is_up_to_date(m.index, m.log_term))


def _without_the_floor_on_campaigns(monkeypatch) -> None:
    """Rule 13 but a replica below its floor campaigns."""
    monkeypatch.setattr(_raft.Raft, "_below_vote_floor", lambda self: False)


def _empty_replica_scenario(seed: int, tombstone: bool) -> Cluster:
    """As in the finding: nothing heard from a leader yet. The replica has no
    configuration, so it votes for nobody."""
    c = _stale_node_and_moved_group(seed)
    c.recreate_replica(RECREATED, tombstone=tombstone)
    _stale_node_campaigns(c)
    return c


def _part_way(seed: int, tombstone: bool, past_stale_log: bool) -> Cluster:
    """The re-created replica is added back as a learner and has caught up part of the
    log, entry by entry, when the cut comes: it is a voter in the configuration it holds
    ({1, 2, 3 | 4}), and its log is behind the one it held before (its vote floor)."""
    c = _stale_node_and_moved_group(seed, max_size_per_msg=1, max_inflight_learner_msgs=1)
    stale_last = c.node(STALE).storage.last_index()
    c.recreate_replica(RECREATED, tombstone=tombstone)
    _change(c, ConfChangeKind.ADD_LEARNER, RECREATED)
    recreated = c.node(RECREATED)
    if past_stale_log:
        c.wait_for(lambda: recreated.storage.last_index() > stale_last,
                   20 * c.election_timeout, "n3 past n1's log")
    else:
        c.wait_for(lambda: ADDED in recreated.raw.conf_state.learners,
                   20 * c.election_timeout, "n3 holds {1, 2, 3 | 4}")
        assert recreated.raw.last_index < stale_last
    assert recreated.raw.conf_state.voters == {STALE, LEADER, RECREATED}
    _stale_node_campaigns(c)
    return c


def _part_way_behind_the_stale_node(seed: int, tombstone: bool) -> Cluster:
    """Its log is behind node 1's: only the vote floor keeps it from voting for node 1."""
    return _part_way(seed, tombstone, past_stale_log=False)


def _part_way_past_the_stale_node(seed: int, tombstone: bool) -> Cluster:
    """Its log is past node 1's (but behind the committed entries): only the floor keeps
    it from campaigning, and node 1 from electing it."""
    return _part_way(seed, tombstone, past_stale_log=True)


SCENARIOS = [_empty_replica_scenario, _part_way_behind_the_stale_node,
             _part_way_past_the_stale_node]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.strip("_"))
def test_a_stale_node_is_not_elected_with_a_recreated_replicas_vote(scenario, seed):
    c = scenario(seed, tombstone=True)
    assert all(c.raw(n).role != Role.LEADER for n in (STALE, RECREATED))
    assert c.checker.max_acked >= 10
    c.heal()
    if RECREATED not in c.raw(c.wait_for_leader()).conf_state.learners:
        _change(c, ConfChangeKind.ADD_LEARNER, RECREATED)  # the move back goes on
    c.replicate(b"after")  # on every replica: all have caught up
    assert c.check_acks() >= 10  # every acknowledged write is in every log


@pytest.mark.parametrize("scenario,tombstone,mutation", [
    (_empty_replica_scenario, False, _without_the_configuration_guard_and_floor),
    (_part_way_behind_the_stale_node, True, _without_the_floor_on_votes),
    (_part_way_past_the_stale_node, True, _without_the_floor_on_campaigns),
], ids=["no-fix", "no-floor-on-votes", "no-floor-on-campaigns"])
def test_each_part_of_the_fix_is_needed(scenario, tombstone, mutation, monkeypatch):
    """The test above can fail: with one part of rule 13 taken out of the core, each
    scenario elects a stale leader (node 1, or the re-created node 3 with node 1's vote)
    in every seed, and the checker reports the acknowledged writes it lacks."""
    mutation(monkeypatch)
    for seed in SEEDS:
        with pytest.raises(InvariantViolation, match="acknowledged writes are never lost: "
                           "n[13] became leader"):
            scenario(seed, tombstone=tombstone)
