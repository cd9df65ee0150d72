"""Harness pieces that need no root: the privilege check, nemesis parsing, the shapes of the
partitions the nemesis cuts (against a fake cluster), and history pairing/merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkjepsen import checker, history, netcluster
from rkjepsen.nemesis import Nemesis, parse_nemeses


def test_refuses_without_root_naming_what_is_missing(monkeypatch):
    monkeypatch.setattr(netcluster.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(netcluster.shutil, "which", lambda tool: None)
    with pytest.raises(netcluster.HarnessError) as e:
        netcluster.check_privileges()
    msg = str(e.value)
    assert "root" in msg and "iproute2" in msg and "nftables" in msg


def test_parse_nemeses():
    assert parse_nemeses("partition, kill,pause") == ["partition", "kill", "pause"]
    assert parse_nemeses("none") == []
    with pytest.raises(ValueError, match="unknown nemesis netem"):
        parse_nemeses("partition,netem")


class FakeCluster:
    def __init__(self, size: int) -> None:
        self.node_ns = {i: f"n{i}" for i in range(1, size + 1)}
        self.drops: list[set[tuple[int, int]]] = []
        self.faketime = False

    def set_drops(self, links):
        self.drops.append(set(links))

    def heal(self):
        self.drops.append(set())


class NullHistory:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def event(self, *args):
        self.events.append(args)


def _nemesis(size: int, seed: int = 1, leader: int = 0) -> tuple[Nemesis, FakeCluster]:
    c = FakeCluster(size)
    return Nemesis(c, NullHistory(), ["partition"], 1.0, seed, lambda key: leader, 4), c


def _reach(links: set[tuple[int, int]], nodes: list[int]) -> dict[int, set[int]]:
    return {a: {b for b in nodes if b != a and (a, b) not in links} for a in nodes}


@pytest.mark.parametrize("size", [3, 5])
def test_bridge_partition_two_majorities_share_one_node(size):
    for seed in range(5):
        nem, c = _nemesis(size, seed)
        fid = nem._start_fault("partition", "bridge")
        links = c.drops[-1]
        reach = _reach(links, sorted(c.node_ns))
        bridge = [n for n, r in reach.items() if len(r) == size - 1]
        assert len(bridge) == 1  # the bridge hears everyone
        others = [n for n in reach if n != bridge[0]]
        assert all(len(reach[n]) + 1 == (size + 1) // 2 for n in others)  # majority with it
        nem._stop_fault(fid)
        assert c.drops[-1] == set()


@pytest.mark.parametrize("size", [3, 5])
def test_halves_cut_a_minority_from_a_majority(size):
    nem, c = _nemesis(size, 3)
    nem._start_fault("partition", "halves")
    reach = _reach(c.drops[-1], sorted(c.node_ns))
    sides = sorted({frozenset(r | {n}) for n, r in reach.items()}, key=len)
    assert len(sides) == 2 and len(sides[0]) < len(sides[1])
    assert len(sides[0]) + len(sides[1]) == size


def test_isolate_leader_cuts_the_leader_off_both_ways():
    nem, c = _nemesis(5, leader=4)
    nem._start_fault("partition", "isolate-leader")
    assert c.drops[-1] == {(4, o) for o in (1, 2, 3, 5)} | {(o, 4) for o in (1, 2, 3, 5)}


def test_one_way_drops_only_traffic_towards_the_victim():
    nem, c = _nemesis(3, seed=2)
    nem._start_fault("partition", "one-way")
    links = c.drops[-1]
    victims = {b for _, b in links}
    assert len(victims) == 1 and len(links) == 2
    assert all(b in victims and a not in victims for a, b in links)


def test_the_schedule_is_reproducible_from_the_seed():
    def schedule(seed):
        nem, c = _nemesis(5, seed)
        out = []
        for _ in range(6):
            kind = nem.rng.choice(["halves", "isolate-one", "bridge", "one-way"])
            nem._start_fault("partition", kind)
            out.append((kind, frozenset(c.drops[-1])))
        return out

    assert schedule(11) == schedule(11)
    assert schedule(11) != schedule(12)


@pytest.mark.parametrize("killed", [True, False])
def test_merge_orders_by_time_and_pairs_per_process(tmp_path: Path, killed: bool):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    wa = history.HistoryWriter(a, t0=0.0)
    wa.event("invoke", 1, "send", {"key": 0, "value": "1-0"}, at=1.0)
    wa.event("ok", 1, "send", {"key": 0, "value": "1-0", "offset": 0}, at=3.0)
    if killed:
        wa.event("info", 7, "crash", {"signal": "SIGKILL"}, at=4.0)
    wa.close()
    wb = history.HistoryWriter(b, t0=0.0)
    wb.event("invoke", 7, "poll", None, at=2.0)
    wb.close()
    b.write_text(b.read_text() + '{"index": 9, "ty')  # cut mid-line
    events = history.merge([a, b], tmp_path / "h.jsonl")
    assert [(e["time"], e["f"]) for e in events][:4] == [
        (1.0, "send"), (2.0, "poll"), (2.0, "torn-line"), (3.0, "send")]
    torn = events[2]["value"]
    assert (torn["file"], torn["line"], torn["process"]) == ("b.jsonl", 2, 7)
    # a consumer the harness killed may leave a torn line; any other one is a problem
    assert ("explained" in torn) is killed
    ops = history.load(tmp_path / "h.jsonl")
    send = next(o for o in ops if o.f == "send")
    poll = next(o for o in ops if o.f == "poll")
    assert send.type == "ok" and send.value["offset"] == 0 and send.complete_time == 3.0
    assert poll.type == "info" and poll.complete_time is None
    assert all(json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines())
    assert checker.check(ops).problem_counts["torn-history-line"] == (0 if killed else 1)
