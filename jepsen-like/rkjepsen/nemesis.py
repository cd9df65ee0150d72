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
            bits in a random WAL or SST file); restart at stop. A node must then
            either repair itself or refuse to start; a refusal is recorded
            (``disk-refused``) and the harness restores the exact pre-damage copy
            of the data (as if the disk had been replaced from a snapshot taken
            at the kill), so the run goes on. Serving damaged data shows up in the
            checker.
==========  =====================================================================

The schedule (families, kinds, node choices that do not depend on who leads, hold times)
comes from ``random.Random(seed)``; choices that name "the leader" depend on the run.
"""

from __future__ import annotations

import itertools
import random
import shutil
import threading
import time
from typing import Any, Callable

from rkjepsen.history import HistoryWriter
from rkjepsen.netcluster import NetCluster

FAMILIES = ("partition", "kill", "pause", "clock", "disk")
KINDS = {
    "partition": ("halves", "isolate-one", "isolate-leader", "bridge", "one-way"),
    "kill": ("one", "minority", "leader"),
    "pause": ("one", "leader"),
    "clock": ("skew-one",),
    "disk": ("truncate-wal", "flip-bits"),
}
REFUSAL_WAIT_S = 8.0  # a node that exits this soon after a disk fault refused to start


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
                 keys: int) -> None:
        self.cluster = cluster
        self.history = history
        self.families = families
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.leader_of = leader_of  # key -> node id leading it now (0: unknown)
        self.keys = keys
        self._ids = itertools.count(1)
        self._active: dict[int, tuple[str, dict, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.refusals: list[dict] = []  # disk faults a node detected by refusing to start

    # ------------------------------------------------------------------ schedule

    def start(self) -> None:
        if not self.families:
            return
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self.heal_all()

    def _run(self) -> None:
        self._stop.wait(self.interval_s / 2)  # let the workload warm up
        while not self._stop.is_set():
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
            data = c.data_dir(victim)
            backup = c.workdir / f"disk-backup-{victim}"
            shutil.rmtree(backup, ignore_errors=True)
            shutil.copytree(data, backup)
            detail.update(nodes=[victim], damage=self._damage(kind, data))

            def undo(victim=victim, backup=backup, detail=detail):
                self._restart_after_damage(victim, backup, detail)
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

    def _restart_after_damage(self, victim: int, backup, detail: dict) -> None:
        c = self.cluster
        c.expected_exits.add(victim)
        try:
            c.procs.pop(victim, None)
            c.start(victim)
            deadline = time.monotonic() + REFUSAL_WAIT_S
            while time.monotonic() < deadline and c.running(victim):
                time.sleep(0.1)
            if c.running(victim):
                self.history.event("info", "nemesis", "disk-accepted",
                                   {"node": victim, "id": detail["id"],
                                    "damage": detail["damage"]})
                return
            code = c.procs[victim].returncode
            log = (c.workdir / f"node-{victim}.log").read_text(errors="replace")
            tail = [line for line in log.splitlines() if line.strip()][-3:]
            self.refusals.append({"node": victim, "code": code, "log": tail,
                                  "damage": detail["damage"]})
            self.history.event("info", "nemesis", "disk-refused",
                               {"node": victim, "exit_code": code, "log_tail": tail,
                                "id": detail["id"]})
            data = c.data_dir(victim)
            c.procs.pop(victim, None)
            shutil.rmtree(data)
            shutil.copytree(backup, data)
            c.start(victim)
        finally:
            shutil.rmtree(backup, ignore_errors=True)
            c.expected_exits.discard(victim)

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
        running, clocks true."""
        with self._lock:
            active = list(self._active)
        for fid in active:
            self._stop_fault(fid)
        c = self.cluster
        c.heal()
        for node in sorted(c.node_ns):
            c.resume(node)
            if not c.running(node):
                c.procs.pop(node, None)
                c.start(node)
            if c.faketime:
                c.skew_clock(node, 0)
