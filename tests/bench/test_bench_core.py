"""Throughput of the pure Raft core: a 3-node in-memory cluster with batched proposals.

Measures entries committed (and applied on every node) per second, with the full Ready
cycle on each node: MemoryStorage.save, message delivery, apply, advance. No network,
no disk: this is the ceiling the core puts on a partition. Target: >= 50,000 entries/s.
"""

from __future__ import annotations

import random

import pytest

from raftka.raft import Config, ConfState, MemoryStorage, RawNode, Role

PAYLOAD = b"x" * 100


class _InMemoryCluster:
    def __init__(self, size: int = 3) -> None:
        conf = ConfState(frozenset(range(1, size + 1)))
        self.storage = {i: MemoryStorage(conf) for i in conf.voters}
        self.nodes = {
            i: RawNode(Config(i, max_inflight_msgs=64), self.storage[i], random.Random(i))
            for i in conf.voters
        }
        self.applied = {i: 0 for i in conf.voters}
        self.nodes[1].campaign()
        self.pump()
        assert self.nodes[1].role == Role.LEADER

    def pump(self) -> None:
        nodes, storage, applied = self.nodes, self.storage, self.applied
        busy = True
        while busy:
            busy = False
            for i, node in nodes.items():
                if not node.has_ready():
                    continue
                busy = True
                rd = node.ready()
                for m in rd.messages:
                    nodes[m.to].step(m)
                storage[i].save(rd.hard_state, rd.entries, rd.snapshot)
                for m in rd.messages_after_persist:
                    nodes[m.to].step(m)
                if rd.committed_entries:
                    applied[i] = rd.committed_entries[-1].index
                node.advance(rd)


@pytest.mark.parametrize("batch", [100, 1000])
def test_core_commit_throughput(benchmark, batch: int) -> None:
    cluster = _InMemoryCluster()
    leader = cluster.nodes[1]
    batches_per_round = 20
    payloads = [PAYLOAD] * batch

    def round_() -> None:
        for _ in range(batches_per_round):
            leader.propose_batch(payloads)
        cluster.pump()
        # Followers learn the final commit index from the next heartbeat (no empty APP is
        # sent just for it), as they would one tick later in a real cluster.
        leader.tick()
        cluster.pump()
        last = leader.last_index
        if min(cluster.applied.values()) != last:
            raise RuntimeError("round ended with uncommitted entries")

    benchmark.pedantic(round_, rounds=10, iterations=1, warmup_rounds=1)
    entries = batch * batches_per_round
    benchmark.extra_info["entries_per_round"] = entries
    benchmark.extra_info["entries_per_second"] = round(entries / benchmark.stats.stats.median)
