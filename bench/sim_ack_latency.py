"""``python -m bench.sim_ack_latency [--seeds N]``: acks=all answer latency of the host
driver in the simulator (``tests/sim``), in simulated time, with and without the driver's
rule 6a (committed entries durable before a pass are applied while its write syncs).

Deterministic, so it shows what a driver change does to the answer path without the noise
of a shared machine: a fault-free 3-node group, one payload produced every 4 time units,
network latency 1-5 units, a synced disk write 2-6 units; per payload, from ``produce`` to
the leader's acknowledgement. Prints mean, p50 and p99 for both drivers.
"""

from __future__ import annotations

import argparse
import statistics

from raftka.raft.host import HostDriver
from tests.sim.cluster import Cluster


class WithoutRule6a(HostDriver):
    """The driver as it was before rule 6a: every apply waits for the pass's write."""

    def run_pass(self) -> bool:
        if self._readies is not None:
            return super().run_pass()  # raises the rule-1 error
        readies = self._take_readies()
        if not readies:
            return False
        for group, rd in readies:
            for m in rd.messages:
                self._send(group.group_id, m)
        return self._write(readies)


def latencies(factory: type[HostDriver], seed: int, payloads: int = 500) -> list[int]:
    c = Cluster(3, seed, driver_factory=factory, disk_latency_min=2, disk_latency_max=6,
                unique_payloads=True)
    c.run_until(lambda: c.leader() is not None, 5000)
    c.run_for(300)
    sent: dict[bytes, int] = {}
    acked: dict[bytes, int] = {}
    for checker in c.checkers.values():
        original = checker.on_ack

        def on_ack(replica, index, term, payload, data, original=original):
            acked.setdefault(payload, c.now)
            return original(replica, index, term, payload, data)

        checker.on_ack = on_ack  # type: ignore[method-assign]
    for i in range(payloads):
        payload = b"p%d" % i
        if c.produce([payload]):
            sent[payload] = c.now
        c.run_for(4)
    c.run_for(200)
    return sorted(acked[p] - t for p, t in sent.items() if p in acked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    for name, factory in (("rule 6a", HostDriver), ("without", WithoutRule6a)):
        values = sorted(v for seed in range(args.seeds) for v in latencies(factory, seed))
        print(f"{name:8s} acks={len(values)} mean={statistics.mean(values):.2f} "
              f"p50={values[len(values) // 2]} p99={values[int(len(values) * 0.99)]} "
              f"(simulated time units)")


if __name__ == "__main__":
    main()
