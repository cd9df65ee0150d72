"""Randomized soak of the Raft core and the node's host driver in the deterministic
simulator (VOPR style).

Each seed picks its own fault mix -- cluster size, loss, duplication, latency and long
delays, disk latency, pre-vote / check-quorum, flow-control limits, snapshot frequency,
and the weights of the faults injected during the run (symmetric and one-way partitions,
isolation, crashes that lose unsynced writes, restarts, leadership transfers, membership
changes, forced elections, ReadIndex reads), for half the seeds quiescence of idle groups,
and for half the seeds several Raft groups per node (all through each node's one host
driver; then without membership changes) -- and runs a bounded simulated time with the
checker after every step. The client is an acks=all producer (``Cluster.produce``): every
acknowledgement is recorded and checked, during the run and at its end. Then everything
heals and the run must be LIVE: a leader is elected in every group, a final proposal
commits on every live member, and all logs and state machines converge.

    .venv/bin/python -m tests.sim.soak --seeds 1000 [--start 0] [--jobs 2]
    .venv/bin/python -m tests.sim.soak --seed 1234            # replay one, full trace
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from raftka.raft import ConfChange, ConfChangeKind, ConfChangeRejected
from raftka.raft.host import HostDriver

from .cluster import DOWN, STOPPED, UP, Cluster, SimOptions
from .errors import LivenessFailure, SimulationFailure

STALL_TIMEOUTS = 40  # settle fails after this many election timeouts without any progress
SETTLE_TIMEOUTS_MAX = 2_000
RUN_TIME = 20_000  # simulated units of faults per seed (~100-200 election timeouts)
MAX_NODES_CREATED = 4  # nodes a seed may add through membership changes
ACTIONS = (
    "propose", "propose_batch", "propose_elsewhere", "read", "partition", "one_way",
    "isolate", "heal", "crash", "restart", "transfer", "conf_change", "campaign", "network",
)


def replay_command(seed: int) -> str:
    return f".venv/bin/python -m tests.sim.soak --seed {seed}"


@dataclass
class FaultMix:
    nodes: int
    options: SimOptions
    weights: dict[str, int] = field(default_factory=dict)
    step_max: int = 30  # simulated units between two injected actions, at most

    def describe(self) -> str:
        o = self.options
        active = ", ".join(f"{a}={w}" for a, w in self.weights.items() if w)
        return (f"{self.nodes} nodes; loss={o.loss} dup={o.duplication} latency=[{o.latency_min},"
                f"{o.latency_max}] long_delay={o.long_delay}/{o.long_delay_max} disk<={o.disk_latency_max}"
                f" election_tick={o.election_tick} heartbeat_tick={o.heartbeat_tick} "
                f"pre_vote={o.pre_vote} check_quorum={o.check_quorum} inflight={o.max_inflight_msgs}"
                f"/{o.max_inflight_learner_msgs or o.max_inflight_msgs}"
                f" msg_size={o.max_size_per_msg} snapshot_every={o.snapshot_interval}"
                f" keep={o.compaction_keep} jitter={o.tick_jitter} quiesce={o.quiesce}"
                f" groups={o.groups}"
                f"\n  actions: {active}")


def choose_mix(rng: random.Random, *, verbose: bool = False) -> FaultMix:
    options = SimOptions(
        tick_interval=10,
        tick_jitter=rng.choice((0, 0, 1)),  # +-10% clock rate: more starves elections
        latency_min=1,
        latency_max=rng.choice((3, 5, 10, 25)),
        loss=rng.choice((0.0, 0.0, 0.01, 0.05, 0.2)),
        duplication=rng.choice((0.0, 0.0, 0.02, 0.1)),
        long_delay=rng.choice((0.0, 0.0, 0.005, 0.02)),
        long_delay_max=rng.choice((100, 400)),
        disk_latency_min=0,
        disk_latency_max=rng.choice((0, 2, 5, 15)),
        election_tick=rng.choice((5, 10, 10)),
        heartbeat_tick=rng.choice((1, 1, 2)),
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        max_size_per_msg=rng.choice((16, 1 << 20)),
        max_inflight_msgs=rng.choice((1, 4, 256)),
        # not drawn from rng: earlier seeds keep replaying exactly (tests/sim/FINDINGS.md)
        max_inflight_learner_msgs=random.Random(hash(rng.getstate())).choice((0, 1, 4)),
        snapshot_interval=rng.choice((0, 3, 10, 40)),
        compaction_keep=rng.choice((0, 0, 5)),
        stop_removed=True,
        unique_payloads=True,
        trace_size=40,
        verbose=verbose,
    )
    weights = {action: rng.choice((0, 1, 2, 4)) for action in ACTIONS}
    weights["propose"] = rng.choice((10, 20, 40))
    weights["read"] = rng.choice((0, 2, 5))
    if rng.random() < 0.15:  # some seeds: a quiet network, only crashes and membership
        for action in ("partition", "one_way", "isolate"):
            weights[action] = 0
    mix = FaultMix(rng.choice((1, 3, 3, 3, 4, 5, 5)), options, weights, rng.choice((10, 30, 60)))
    # Half the seeds run with quiescence (idle groups stop their timers; node-level liveness
    # pings wake them). Drawn last so the rest of every seed's mix is what it was before.
    options.quiesce = rng.random() < 0.5
    # Half the seeds host several Raft groups on every node, all through each node's one
    # host driver (one write per pass for all of them: group commit across groups);
    # membership changes are simulated with one group only.
    options.groups = rng.choice((1, 1, 2, 3))
    if options.groups > 1:
        mix.weights["conf_change"] = 0
    return mix


class Soak:
    """One seed's run: the cluster plus the client and operator that torment it."""

    def __init__(self, seed: int, *, verbose: bool = False, run_time: int = RUN_TIME,
                 driver_factory: Callable[..., HostDriver] = HostDriver) -> None:
        """``driver_factory``: builds each node's host driver (the driver mutation tests
        pass a subclass with one bug)."""
        self.seed = seed
        # The fault mix and the injected actions draw from their own stream; the cluster
        # (network, nodes, disks) from Random(seed), so reports name the seed one replays.
        self.rng = random.Random(f"soak-{seed}")
        self.mix = choose_mix(self.rng, verbose=verbose)
        self.run_time = run_time
        self.cluster = Cluster(self.mix.nodes, seed, options=self.mix.options,
                               replay=replay_command(seed), driver_factory=driver_factory)
        self._proposals = 0
        self._created = 0
        # group -> (payload, leader, term, time) of its final proposal
        self._final: dict[int, tuple[bytes, int, int, int]] = {}
        self._final_attempts = 0
        self._actions = list(self.mix.weights)
        self._weights = [self.mix.weights[a] for a in self._actions]
        if verbose:
            print(f"seed {seed}: {self.mix.describe()}")

    def run(self) -> Cluster:
        cluster = self.cluster
        rng = self.rng
        end = cluster.now + self.run_time
        while cluster.now < end:
            cluster.run_for(rng.randint(1, self.mix.step_max))
            if self.mix.options.quiesce and rng.random() < 0.03:
                # a quiet spell: groups quiesce, and whatever faults are in force meet
                # quiesced replicas (crashes, partitions, then the next proposal)
                cluster.run_for(rng.randint(1, 6) * cluster.election_timeout)
            action = rng.choices(self._actions, self._weights)[0]
            getattr(self, "_" + action)()
        self._settle()
        acks = cluster.check_acks()
        if self.mix.options.verbose:
            print(f"seed {self.seed}: {acks} acknowledged writes, all applied everywhere")
        return cluster

    # -- the client -----------------------------------------------------------------------
    def _payload(self) -> bytes:
        self._proposals += 1
        return b"s%d-%d" % (self.seed, self._proposals)

    def _group(self) -> int:
        groups = self.cluster.group_ids
        return groups[0] if len(groups) == 1 else self.rng.choice(groups)

    def _propose(self) -> None:  # an acks=all produce request of one record, to the leader
        self.cluster.produce([self._payload()], group=self._group())

    def _propose_batch(self) -> None:
        payloads = [self._payload() for _ in range(self.rng.randint(2, 8))]
        self.cluster.produce(payloads, group=self._group())

    def _propose_elsewhere(self) -> None:  # a client that does not know who leads
        live = self.cluster.live()
        if live:
            self.cluster.produce([self._payload()], self.rng.choice(live), group=self._group())

    def _read(self) -> None:
        live = self.cluster.live()
        if live:
            self.cluster.read_index(self.rng.choice(live))

    # -- the network --------------------------------------------------------------------
    def _partition(self) -> None:
        ids = sorted(self.cluster.nodes)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, max(1, len(ids) - 1))
        groups = [ids[:cut], ids[cut:]]
        if len(ids) >= 4 and self.rng.random() < 0.3:
            groups = [ids[:1], ids[1:cut + 1], ids[cut + 1:]]
        self.cluster.partition(*[g for g in groups if g])

    def _one_way(self) -> None:
        ids = sorted(self.cluster.nodes)
        if len(ids) < 2:
            return
        leader = self.cluster.leader()
        if leader is not None and self.rng.random() < 0.5:
            # the leader can talk but cannot hear: check-quorum must make it step down
            for other in ids:
                if other != leader:
                    self.cluster.one_way(other, leader)
            return
        a, b = self.rng.sample(ids, 2)
        self.cluster.one_way(a, b)

    def _isolate(self) -> None:
        target = self.cluster.leader() if self.rng.random() < 0.5 else None
        if target is None:
            target = self.rng.choice(sorted(self.cluster.nodes))
        self.cluster.isolate(target)

    def _heal(self) -> None:
        self.cluster.heal()

    def _network(self) -> None:
        rng = self.rng
        self.cluster.set_loss(rng.choice((0.0, 0.01, 0.1, 0.3)))
        self.cluster.set_duplication(rng.choice((0.0, 0.05, 0.2)))

    # -- processes ------------------------------------------------------------------------
    def _crash(self) -> None:
        nodes = [n for n in self.cluster.nodes.values() if n.status == UP]
        if not nodes:
            return
        busy = [n for n in nodes if n.busy]
        # Half the time crash a node mid-write: it has sent messages whose Ready is unsaved.
        victim = self.rng.choice(busy if busy and self.rng.random() < 0.5 else nodes)
        self.cluster.crash(victim.id)

    def _restart(self) -> None:
        down = [n.id for n in self.cluster.nodes.values() if n.status == DOWN]
        if down:
            self.cluster.restart(self.rng.choice(down))

    def _campaign(self) -> None:
        live = self.cluster.live()
        if live:
            self.cluster.campaign(self.rng.choice(live), group=self._group())

    # -- the operator -----------------------------------------------------------------------
    def _transfer(self) -> None:
        group = self._group()
        leader = self.cluster.leader(group)
        if leader is None:
            return
        voters = sorted(self.cluster.raw(leader, group).conf_state.voters - {leader})
        if voters:
            self.cluster.transfer_leader(self.rng.choice(voters), group=group)

    def _conf_change(self) -> None:
        cluster = self.cluster
        leader = cluster.leader()
        if leader is None:
            return
        conf = cluster.raw(leader).conf_state
        rng = self.rng
        choices = ["remove"]
        if self._created < MAX_NODES_CREATED:
            choices += ["add_voter", "add_learner"]
        if conf.learners:
            choices += ["promote"]
        if len(conf.voters) > 1:
            choices += ["demote"]
        choice = rng.choice(choices)
        if choice in ("add_voter", "add_learner"):
            self._created += 1
            node_id = max(cluster.nodes) + 1
            kind = ConfChangeKind.ADD_VOTER if choice == "add_voter" else ConfChangeKind.ADD_LEARNER
        elif choice == "promote":
            node_id, kind = rng.choice(sorted(conf.learners)), ConfChangeKind.ADD_VOTER
        elif choice == "demote":
            node_id, kind = rng.choice(sorted(conf.voters)), ConfChangeKind.ADD_LEARNER
        else:
            members = sorted(conf.all_nodes())
            if len(conf.voters) <= 1:
                members = sorted(conf.learners) or members
            node_id, kind = rng.choice(members), ConfChangeKind.REMOVE_NODE
        try:
            cluster.propose_conf_change(ConfChange(kind, node_id))
        except ConfChangeRejected:
            pass

    # -- the end: heal everything and demand progress -----------------------------------------
    def _settle(self) -> None:
        cluster = self.cluster
        cluster._trace("--- settle: heal everything, restart crashed nodes, expect progress ---")
        cluster.heal()
        cluster.set_loss(0.0)
        cluster.set_duplication(0.0)
        cluster.set_long_delay(0.0, 0)
        cluster.set_latency(1, 5)
        for node in list(cluster.nodes.values()):
            if node.status == DOWN:
                cluster.restart(node.id)
        self._wait_progressing(self._final_committed, "a final proposal commits")
        # Whoever is not a member of the final configuration is shut down.
        members = cluster.raw(cluster.leader()).conf_state.all_nodes()
        for node in list(cluster.nodes.values()):
            if node.id not in members and node.status != STOPPED:
                cluster.stop(node.id)
        self._wait_progressing(self._converged, "all logs and state machines converge")

    def _wait_progressing(self, predicate, what: str) -> None:
        """Run until ``predicate()``; fail if nothing is applied anywhere for STALL_TIMEOUTS
        election timeouts (a slow but moving catch-up is not a liveness failure)."""
        cluster = self.cluster
        stall = STALL_TIMEOUTS * cluster.election_timeout
        hard_end = cluster.now + SETTLE_TIMEOUTS_MAX * cluster.election_timeout
        progress = self._progress()
        while not cluster.run_until(predicate, stall):
            now_progress = self._progress()
            if now_progress == progress or cluster.now >= hard_end:
                raise LivenessFailure(cluster.report(
                    "liveness", f"{what}: no progress for {stall} units"
                    if now_progress == progress else f"{what}: not by time {hard_end}"))
            progress = now_progress

    def _progress(self) -> tuple[int, int]:
        """Applied entries, and log entries replicated: a follower catching up through a
        reordering network (one entry per round trip while the leader re-probes) moves
        the second long before anything new commits."""
        up = [n for n in self.cluster.nodes.values() if n.status == UP]
        return (sum(r.sm.applied_index for n in up for r in n.replicas.values()),
                sum(r.storage.last_index() for n in up for r in n.replicas.values()))

    def _final_committed(self) -> bool:
        return all([self._group_final_committed(g) for g in self.cluster.group_ids])

    def _group_final_committed(self, group: int) -> bool:
        """Keep one final proposal outstanding at the group's current leader; true once
        the leader has applied it (so it is committed)."""
        cluster = self.cluster
        leader = cluster.leader(group)
        if leader is None:
            return False
        replica = cluster.replica(leader, group)
        final = self._final.get(group)
        if final is not None:
            payload, at_leader, at_term, at_time = final
            if replica.sm.index_of(payload) is not None:
                return True
            if (at_leader, at_term) == (leader, replica.raw.term) and (
                    cluster.now - at_time < cluster.election_timeout):
                return False
        self._final_attempts += 1
        payload = b"final-%d-%d" % (self.seed, self._final_attempts)
        if cluster.propose(payload, leader, group) is not None:
            self._final[group] = (payload, leader, replica.raw.term, cluster.now)
        return False

    def _converged(self) -> bool:
        return all(self._group_converged(g) for g in self.cluster.group_ids)

    def _group_converged(self, group: int) -> bool:
        cluster = self.cluster
        leader = cluster.leader(group)
        if leader is None:
            return False
        raw = cluster.raw(leader, group)
        members = raw.conf_state.all_nodes()
        nodes = [cluster.nodes[m] for m in sorted(members)]
        if any(n.status != UP or n.busy for n in nodes):
            return False
        reference = cluster.replica(leader, group)
        last = reference.storage.last_index()
        if raw.commit_index != last:
            return False
        chains = cluster.checkers[group].chains
        replicas = [n.replicas[group] for n in nodes]
        for replica in replicas:
            if replica.storage.last_index() != last or replica.sm.applied_index != last:
                return False
            if chains[replica.id].at(last) != chains[leader].at(last):
                return False
        payloads = reference.sm.payloads()
        return all(replica.sm.payloads() == payloads for replica in replicas)


def run_seed(seed: int, *, verbose: bool = False, run_time: int = RUN_TIME) -> None:
    """Run one seed; raises SimulationFailure (with seed, replay command, trace) on failure."""
    Soak(seed, verbose=verbose, run_time=run_time).run()


def _worker(seed: int, run_time: int = RUN_TIME) -> tuple[int, str | None, int]:
    try:
        cluster = Soak(seed, run_time=run_time).run()
        return seed, None, cluster.events
    except SimulationFailure as exc:
        return seed, f"{type(exc).__name__}: {exc}", 0
    except Exception:  # a bug in the simulator itself
        return seed, traceback.format_exc(), 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, help="replay one seed with a verbose trace")
    parser.add_argument("--quiet", action="store_true", help="with --seed: no trace")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a failure")
    parser.add_argument("--run-time", type=int, default=RUN_TIME, help="simulated units")
    args = parser.parse_args(argv)

    if args.seed is not None:
        started = time.perf_counter()
        try:
            soak = Soak(args.seed, verbose=not args.quiet, run_time=args.run_time)
            cluster = soak.run()
        except LivenessFailure as exc:
            print(f"\nseed {args.seed} FAILED (liveness)\n{exc}")
            return 1
        except AssertionError as exc:
            print(f"\nseed {args.seed} FAILED\n{exc}")
            return 1
        elapsed = time.perf_counter() - started
        print(f"seed {args.seed} passed: {cluster.events} events, simulated time {cluster.now}, "
              f"{elapsed:.2f} s; {dict(cluster.stats)}")
        return 0

    seeds = range(args.start, args.start + args.seeds)
    failures: list[tuple[int, str]] = []
    started = time.perf_counter()
    last_print = started
    done = events = 0
    context = multiprocessing.get_context("fork")
    with context.Pool(args.jobs) as pool:
        for seed, error, count in pool.imap_unordered(
                functools.partial(_worker, run_time=args.run_time), seeds, chunksize=4):
            done += 1
            events += count
            if error is not None:
                failures.append((seed, error))
                print(f"\nseed {seed} FAILED; replay: {replay_command(seed)}\n{error}", flush=True)
                if not args.keep_going:
                    pool.terminate()
                    break
            now = time.perf_counter()
            if now - last_print >= 5 or done == len(seeds):
                rate = done / (now - started)
                print(f"  {done}/{len(seeds)} seeds, {rate:.1f} seeds/s, "
                      f"{events / (now - started):,.0f} events/s", flush=True)
                last_print = now
    elapsed = time.perf_counter() - started
    if failures:
        print(f"\n{len(failures)} of {done} seeds FAILED in {elapsed:.1f} s:")
        for seed, _ in sorted(failures):
            print(f"  seed {seed}: {replay_command(seed)}")
        return 1
    print(f"{done} seeds passed in {elapsed:.1f} s ({done / elapsed:.1f} seeds/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
