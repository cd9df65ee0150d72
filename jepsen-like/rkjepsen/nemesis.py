"""Nemeses: real faults against a ``NetCluster``, on a schedule drawn from one seed.

Each cycle the scheduler picks one enabled family, then one of its kinds, starts the
fault, holds it for ``interval`` seconds (jittered), heals it, and waits a quiet gap of
about half an interval. Every start/stop goes into the history as a nemesis op with the
same ``id``; ``heal_all()`` undoes whatever is still active (the runner calls it before
the final read, and on any exit).

==========  =====================================================================
partition   ``halves`` (random minority | majority), ``isolate-one``,
            ``isolate-leader`` (of a random key), ``bridge`` (two majorities that
            share one node), ``one-way`` (a node hears nobody, others hear it)
kill        kill -9 of ``one`` node, a ``minority``, or the ``leader`` of a key;
            restarted when the fault stops
pause       SIGSTOP of ``one`` node or the ``leader`` of a key; SIGCONT at stop
clock       wall-clock skew of ``one`` node by -300..+300 s (libfaketime)
disk        kill -9 one node, then damage its data while it is down: ``truncate-wal``
            (cut the newest RocksDB WAL file short) or ``flip-bits`` (flip 8 random
            bits in a random WAL or SST file); restart at stop. See "Disk faults".
==========  =====================================================================

Disk faults and their recovery. A damaged node either starts (``disk-accepted``: RocksDB
took the damage for a torn tail, or it is in data not read at start) or refuses to start
with the one ERROR line node/README.md documents ("Operations: damaged storage"). On a
refusal the harness does what that section tells the operator (``disk-refused``): with
every other node up, it moves ``<data-dir>/raft`` aside to ``raft.damaged-<fault id>``
(kept for diagnosis) and starts the node, which begins with an empty log that the leaders
of its groups fill. A refusal without that one line (a traceback, another exit code) is a
problem of the run. Either way the fault ends only once the node has caught up
(``disk-caught-up``: for every partition it replicates, it reports a high watermark at
least as high as its leader's when the node came back), because until then its records
exist on one node fewer: the next fault waits, as the operator is told to wait before
touching another node. A node that refuses later (restarted after a kill, with damage it
had not read at the first start) is recovered the same way before the next fault starts
(``take_refusal``, called by the runner when a node exits on its own). Serving damaged
data shows up in the checker.

The schedule (families, kinds, node choices that do not depend on who leads, hold times)
comes from ``random.Random(seed)``; choices that name "the leader" depend on the run.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any, Callable

from rkjepsen.history import HistoryWriter
from rkjepsen.netcluster import NetCluster

FAMILIES = ("partition", "kill", "pause", "clock", "disk", "membership")
# membership runs in a thread of its own, beside the faults (rkjepsen/membership.py)
SCHEDULED = ("partition", "kill", "pause", "clock", "disk")
KINDS = {
    "partition": ("halves", "isolate-one", "isolate-leader", "bridge", "one-way"),
    "kill": ("one", "minority", "leader"),
    "pause": ("one", "leader"),
    "clock": ("skew-one",),
    "disk": ("truncate-wal", "flip-bits"),
}
START_WAIT_S = 30.0  # a restarted node says it serves, or exits, within this
CATCH_UP_WAIT_S = 90.0  # a node whose log was damaged or moved aside catches up within this

# (node, leaders_only) -> {(topic, partition): (high watermark, replicas, leader term)} as
# that node reports them (only the partitions it leads if leaders_only); None: no answer
HighWatermarks = Callable[[int, bool], "dict[tuple[str, int], tuple] | None"]


def parse_nemeses(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    bad = [n for n in names if n not in FAMILIES]
    if bad:
        raise ValueError(f"unknown nemesis {', '.join(bad)}; choose from "
                         f"{', '.join(FAMILIES)} (comma-separated) or none")
    return names


def _both_ways(a: set[int], b: set[int]) -> set[tuple[int, int]]:
    return {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}


class Nemesis:
    def __init__(self, cluster: NetCluster, history: HistoryWriter, families: list[str],
                 interval_s: float, seed: int, leader_of: Callable[[int], int],
                 keys: int, high_watermarks: HighWatermarks | None = None) -> None:
        self.cluster = cluster
        self.history = history
        self.families = [f for f in families if f in SCHEDULED]
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.leader_of = leader_of  # key -> node id leading it now (0: unknown)
        self.high_watermarks: HighWatermarks = high_watermarks or (
            lambda node, leaders_only: _high_watermarks(cluster.addresses[node], node,
                                                        leaders_only))
        self.keys = keys
        self._ids = itertools.count(1)
        self._active: dict[int, tuple[str, dict, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.refusals: list[dict] = []  # disk faults a node detected by refusing to start
        self._refused: list[tuple[int, int | None]] = []  # (node, exit code) to recover

    # ------------------------------------------------------------------ schedule

    def start(self) -> None:
        if not self.families:
            return
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:  # its current fault's undo may wait for a catch-up
            self._thread.join(2 * START_WAIT_S + CATCH_UP_WAIT_S + 60)
        self.heal_all()

    def _run(self) -> None:
        self._stop.wait(self.interval_s / 2)  # let the workload warm up
        while not self._stop.is_set():
            self._recover_refused()
            family = self.rng.choice(self.families)
            kind = self.rng.choice(KINDS[family])
            hold = self.interval_s * self.rng.uniform(0.6, 1.4)
            gap = self.interval_s * self.rng.uniform(0.3, 0.7)
            try:
                fid = self._start_fault(family, kind)
            except Exception as exc:  # noqa: BLE001 - a fault that could not start
                self.errors.append(f"{family}/{kind}: {exc!r}")
                fid = None
            self._stop.wait(hold)
            if fid is not None:
                self._stop_fault(fid)
            self._stop.wait(gap)

    # ------------------------------------------------------------------ faults

    def _pick_nodes(self, count: int) -> list[int]:
        return sorted(self.rng.sample(sorted(self.cluster.node_ns), count))

    def _leader(self) -> tuple[int, int]:
        key = self.rng.randrange(self.keys)
        leader = self.leader_of(key)
        if not leader:  # nobody leads it right now: take any node
            leader = self.rng.choice(sorted(self.cluster.node_ns))
        return key, leader

    def _start_fault(self, family: str, kind: str) -> int:
        c = self.cluster
        nodes = sorted(c.node_ns)
        n = len(nodes)
        detail: dict[str, Any] = {"fault": family, "kind": f"{family}-{kind}"}
        undo: Callable[[], None]
        if family == "partition":
            shuffled = self.rng.sample(nodes, n)
            if kind == "halves":
                minority = set(shuffled[: (n - 1) // 2 or 1])
                links = _both_ways(minority, set(nodes) - minority)
                detail["components"] = [sorted(minority), sorted(set(nodes) - minority)]
            elif kind in ("isolate-one", "isolate-leader"):
                if kind == "isolate-one":
                    victim = shuffled[0]
                else:
                    detail["key"], victim = self._leader()
                links = _both_ways({victim}, set(nodes) - {victim})
                detail["nodes"] = [victim]
            elif kind == "bridge":
                half = (n - 1) // 2
                a, bridge, b = shuffled[:half], shuffled[half], shuffled[half + 1:]
                links = _both_ways(set(a), set(b))
                detail.update(components=[sorted(a) + [bridge], [bridge] + sorted(b)],
                              bridge=bridge)
            else:  # one-way: nobody reaches the victim; the victim reaches everyone
                victim = shuffled[0]
                links = {(o, victim) for o in nodes if o != victim}
                detail["nodes"] = [victim]
                detail["direction"] = "others -> victim dropped"
            detail["dropped"] = sorted(links)
            c.set_drops(links)
            undo = c.heal
        elif family == "kill":
            if kind == "one":
                victims = self._pick_nodes(1)
            elif kind == "minority":
                victims = self._pick_nodes((n - 1) // 2)
            else:
                detail["key"], leader = self._leader()
                victims = [leader]
            for v in victims:
                c.kill(v)
            detail["nodes"] = victims

            def undo(victims=victims):
                for v in victims:
                    if not c.running(v):
                        c.procs.pop(v, None)
                        c.start(v)
        elif family == "pause":
            if kind == "one":
                victims = self._pick_nodes(1)
            else:
                detail["key"], leader = self._leader()
                victims = [leader]
            for v in victims:
                c.pause(v)
            detail["nodes"] = victims

            def undo(victims=victims):
                for v in victims:
                    c.resume(v)
        elif family == "clock":
            victim = self._pick_nodes(1)[0]
            offset = self.rng.choice([-1, 1]) * self.rng.randint(1, 300)
            c.skew_clock(victim, offset)
            detail.update(nodes=[victim], offset_s=offset)

            def undo(victim=victim):
                c.skew_clock(victim, 0)
        elif family == "disk":
            victim = self._pick_nodes(1)[0]
            c.kill(victim)
            detail.update(nodes=[victim], damage=self._damage(kind, c.data_dir(victim)))

            def undo(victim=victim, detail=detail):
                self._restart_after_damage(victim, detail)
        else:
            raise ValueError(f"unknown nemesis family {family}")
        fid = next(self._ids)
        detail["id"] = fid
        with self._lock:
            self._active[fid] = (family, detail, undo)
        self.counts[detail["kind"]] = self.counts.get(detail["kind"], 0) + 1
        self.history.event("info", "nemesis", "start", detail)
        return fid

    def _damage(self, kind: str, data) -> dict:
        files = sorted(p for p in data.rglob("*") if p.is_file()
                       and (p.suffix in (".log", ".sst")) and p.stat().st_size > 64)
        wals = [p for p in files if p.suffix == ".log"]
        if kind == "truncate-wal" and wals:
            target = max(wals, key=lambda p: p.name)
            size = target.stat().st_size
            new_size = int(size * self.rng.uniform(0.3, 0.95))
            with open(target, "r+b") as fh:
                fh.truncate(new_size)
            return {"file": target.name, "size": size, "truncated_to": new_size}
        if not files:
            return {"file": None}
        target = self.rng.choice(files)
        size = target.stat().st_size
        flips = []
        with open(target, "r+b") as fh:
            for _ in range(8):
                pos = self.rng.randrange(size)
                bit = self.rng.randrange(8)
                fh.seek(pos)
                byte = fh.read(1)[0]
                fh.seek(pos)
                fh.write(bytes([byte ^ (1 << bit)]))
                flips.append([pos, bit])
        return {"file": target.name, "size": size, "flipped": flips}

    # ------------------------------------------------------------------ disk recovery

    def _restart_after_damage(self, victim: int, detail: dict) -> None:
        c = self.cluster
        c.expected_exits.add(victim)
        try:
            c.procs.pop(victim, None)
            c.start(victim)
            started = self._await_start(victim)
            if started == "serving":
                self.history.event("info", "nemesis", "disk-accepted",
                                   {"node": victim, "id": detail["id"],
                                    "damage": detail["damage"]})
            elif started == "exited":
                code = c.procs.pop(victim).returncode
                self._recover(victim, code, detail["id"], detail["damage"])
            else:
                self.errors.append(f"node {victim} neither served nor exited within "
                                   f"{START_WAIT_S:g}s of its restart after a disk fault")
            self._await_caught_up(victim, detail["id"])
        finally:
            c.expected_exits.discard(victim)

    def take_refusal(self, node: int, code: int | None) -> bool:
        """Called by the runner for a node that exited on its own (it is no longer in
        ``cluster.procs``). If it refused to start because its store is damaged, the
        nemesis recovers it before the next fault and True is returned; else False (the
        runner reports the exit and restarts the node)."""
        if _damaged_store_line(self.cluster.log_since_start(node), node) is None:
            return False
        with self._lock:
            self._refused.append((node, code))
        return True

    def _recover_refused(self) -> None:
        with self._lock:
            refused, self._refused = self._refused, []
        c = self.cluster
        for node, code in refused:
            if not c.running(node):
                self._recover_and_catch_up(node, code)

    def _recover_refused_now(self, node: int) -> bool:
        """Recover ``node`` if it refused to go on since (``take_refusal``); whether it
        did. Its recovery takes a fault id of its own, as a later refusal does."""
        c = self.cluster
        proc = c.procs.get(node)
        if proc is not None and proc.poll() is not None and node in c.expected_exits:
            # the runner leaves the exits of the node a fault watches to the nemesis
            c.procs.pop(node)
            if not self.take_refusal(node, proc.returncode):
                self.errors.append(f"node {node} exited with code {proc.returncode} while "
                                   "catching up after a disk fault, without the documented "
                                   "line; restarted")
                c.start(node)
                return False
        with self._lock:
            mine = [r for r in self._refused if r[0] == node]
            self._refused = [r for r in self._refused if r[0] != node]
        if not mine or c.running(node):
            return False
        self._recover(node, mine[-1][1], next(self._ids), None)
        return True

    def _recover_and_catch_up(self, node: int, code: int | None) -> None:
        c = self.cluster
        fid = next(self._ids)  # an id of its own, for raft.damaged-<id>
        c.expected_exits.add(node)
        try:
            self._recover(node, code, fid, None)
            self._await_caught_up(node, fid)
        except Exception as exc:  # noqa: BLE001 - reported; the run goes on
            self.errors.append(f"recovering node {node}: {exc!r}")
        finally:
            c.expected_exits.discard(node)

    def _await_start(self, node: int) -> str:
        """"serving", "exited" or "slow": how the node's last start went."""
        c = self.cluster
        banner = f"raftka node {node} serving on"
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if not c.running(node):
                return "exited"
            if banner in c.log_since_start(node):
                return "serving"
            time.sleep(0.1)
        return "slow"

    def _recover(self, node: int, code: int | None, fid: int, damage: dict | None) -> None:
        """node/README.md's recovery of a node that refused to start (exit ``code``; it is
        no longer in ``cluster.procs``): with the other nodes up, move its raft log aside
        and start it with an empty log."""
        c = self.cluster
        output = c.log_since_start(node)
        line = _damaged_store_line(output, node)
        if line is None or code != 1 or "Traceback" in output:
            tail = [ln for ln in output.splitlines() if ln.strip()][-3:]
            self.errors.append(
                f"node {node} refused to start after a disk fault without the one documented "
                f"ERROR line (exit {code}): {' | '.join(tail)[:600]}")
        down = [n for n in sorted(c.node_ns) if n != node and
                (not c.running(n) or n in c.paused)]
        if down:  # never happens while faults run one at a time; the README's precondition
            self.errors.append(f"recovering node {node} while nodes {down} are down")
        store = c.data_dir(node) / "raft"
        aside = store.with_name(f"raft.damaged-{fid}")
        store.rename(aside)
        c.start(node)
        started = self._await_start(node)
        if started != "serving":
            self.errors.append(f"node {node} did not serve within {START_WAIT_S:g}s after its "
                               f"damaged log was moved aside ({started})")
        record = {"node": node, "exit_code": code, "error_line": (line or "")[:600],
                  "moved_to": str(aside), "id": fid,
                  "when": "restart after the fault" if damage else "a later start"}
        self.refusals.append({**record, "damage": damage})
        self.history.event("info", "nemesis", "disk-refused", record)

    def _await_caught_up(self, node: int, fid: int) -> None:
        """Wait until ``node`` reports, for every partition it replicates, a high watermark
        at least its leader's now: then every record acknowledged before is on it again."""
        t0 = time.monotonic()
        targets = self._leader_high_watermarks(exclude=node)
        behind: list[str] = ["no metadata yet"]
        while time.monotonic() - t0 < CATCH_UP_WAIT_S:
            if self._recover_refused_now(node):
                # it stopped on damage found while running (or refused a restart): the
                # operator recovers it at once, and the wait starts again
                t0 = time.monotonic()
                targets = self._leader_high_watermarks(exclude=node)
                continue
            mine = self.high_watermarks(node, False)
            if mine is not None:
                behind = [f"{t}/{p} {mine.get((t, p), (-1,))[0]}<{hw}"
                          for (t, p), (hw, replicas) in sorted(targets.items())
                          if node in replicas and mine.get((t, p), (-1,))[0] < hw]
                if not behind:
                    self.history.event("info", "nemesis", "disk-caught-up",
                                       {"node": node, "id": fid,
                                        "seconds": round(time.monotonic() - t0, 3),
                                        "partitions": len(targets)})
                    return
            time.sleep(0.5)
        self.errors.append(f"node {node} did not catch up within {CATCH_UP_WAIT_S:g}s after "
                           f"disk fault {fid}: behind on {', '.join(behind[:5])}")

    def _leader_high_watermarks(self, exclude: int) -> dict[tuple[str, int], tuple]:
        """(topic, partition) -> (high watermark, replicas) as its leader reports it (the
        newest term's claim), asking every node but ``exclude``."""
        best: dict[tuple[str, int], tuple] = {}
        for n in sorted(self.cluster.node_ns):
            if n == exclude or n in self.cluster.paused:
                continue
            claims = self.high_watermarks(n, True)
            for key, (hw, replicas, term) in (claims or {}).items():
                if key not in best or term > best[key][2]:
                    best[key] = (hw, replicas, term)
        return {key: (hw, replicas) for key, (hw, replicas, _) in best.items()}

    def busy_nodes(self) -> set[int]:
        """Nodes an active fault names (killed, paused, isolated, damaged)."""
        with self._lock:
            return {n for _, detail, _ in self._active.values()
                    for n in detail.get("nodes", ())}

    def _stop_fault(self, fid: int) -> None:
        with self._lock:
            entry = self._active.pop(fid, None)
        if entry is None:
            return
        family, detail, undo = entry
        try:
            undo()
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"healing {detail['kind']}: {exc!r}")
        self.history.event("info", "nemesis", "stop",
                           {"fault": family, "kind": detail["kind"], "id": fid})

    def heal_all(self) -> None:
        """Undo every active fault, then make sure: no drops, nothing paused, every node
        serving (a node that refuses to start on a damaged store is recovered), clocks
        true."""
        with self._lock:
            active = list(self._active)
        for fid in active:
            self._stop_fault(fid)
        self._recover_refused()
        c = self.cluster
        c.heal()
        for node in sorted(c.node_ns):
            c.resume(node)
            if not c.running(node):
                c.procs.pop(node, None)
                c.start(node)
            if c.faketime:
                c.skew_clock(node, 0)
        for node in sorted(c.node_ns):  # a restart above may have met a damaged store
            if self._await_start(node) != "exited":
                continue
            code = c.procs.pop(node).returncode
            if _damaged_store_line(c.log_since_start(node), node) is not None:
                self._recover_and_catch_up(node, code)
            else:
                self.errors.append(f"node {node} exited when restarted after the faults "
                                   f"healed (exit {code}); see node-{node}.log")
                c.start(node)


def _damaged_store_line(output: str, node: int) -> str | None:
    """The one ERROR line of a node that refused to start on a damaged store (node/README.md,
    "Operations: damaged storage"), or None if ``output`` is not exactly that refusal."""
    errors = [line for line in output.splitlines() if "level=ERROR" in line]
    if len(errors) != 1:
        return None
    line = errors[0]
    wanted = ("raft log store", "aside")
    refused = f"node {node} cannot start" in line or f"node {node} cannot go on" in line
    return line if refused and all(w in line for w in wanted) else None


_stubs: dict[str, Any] = {}


def _high_watermarks(address: str, node: int,
                     leaders_only: bool) -> dict[tuple[str, int], tuple] | None:
    """(topic, partition) -> (high watermark, replicas, term) as node ``node`` at
    ``address`` knows them, for every topic (internal ones included); only the partitions
    it leads if ``leaders_only``. None if it does not answer."""
    import grpc

    from raftka.client import channel_options
    from raftka.v1 import broker_pb2, broker_pb2_grpc

    stub = _stubs.get(address)
    if stub is None:
        channel = grpc.insecure_channel(address, options=channel_options())
        stub = _stubs[address] = broker_pb2_grpc.BrokerStub(channel)
    try:
        md = stub.Metadata(broker_pb2.MetadataRequest(), timeout=2.0)
    except grpc.RpcError:
        return None
    return {(t.name, p.partition): (p.high_watermark, tuple(p.replicas), p.leader_term)
            for t in md.topics for p in t.partitions
            if not leaders_only or p.leader_id == node}
