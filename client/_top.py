"""``raftka top``: a live terminal view of a cluster, like ``htop``, over gRPC only.

Every ``interval`` seconds it asks every node for its Metadata and DescribeCluster (in
parallel, as ``Admin.cluster_status`` does) and every consumer group for its lag, then
prints one frame:

- nodes: reachable, partitions led, replicas hosted (the merged ``cluster_status`` view);
- topics: partitions, the sum of their high watermarks (the highest any replica reports)
  and records/s: the growth of that sum since the previous frame, divided by the time
  between the two samples (records committed per second);
- groups: state, members, total lag (``Admin.describe_group``).

On a terminal each frame redraws the screen (ANSI "home" and "clear", no curses); when the
output is not a terminal frames are printed one after the other, separated by a blank
line, so the output can be logged or piped. Ctrl-C (SIGINT) ends it with exit status 0.
``iterations`` bounds the number of frames (scripts, tests).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from raftka.client._admin import Admin, merge_cluster_status
from raftka.client._types import ClusterStatus, GroupDescription
from raftka.v1.errors import RaftkaError

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
GROUPS_MAX = 20  # groups described per frame (the ones with the largest lag are shown)
CALL_TIMEOUT_S = 2.0


@dataclass
class Sample:
    """What one frame shows, as asked of the cluster at ``taken_at`` (monotonic s)."""

    taken_at: float
    wall_time: float
    status: ClusterStatus
    # topic -> (partitions, sum of high watermarks)
    topics: dict[str, tuple[int, int]]
    groups: list[GroupDescription] = field(default_factory=list)
    group_errors: int = 0


def take_sample(admin: Admin, groups_max: int = GROUPS_MAX,
                clock: Callable[[], float] = time.monotonic,
                stop: threading.Event | None = None) -> Sample:
    """One sample of the cluster; with ``stop``, gives up asking more groups once set."""
    brokers, answers = admin._node_answers(CALL_TIMEOUT_S)
    taken_at = clock()
    status = merge_cluster_status(brokers, answers)
    high: dict[tuple[str, int], int] = {}
    for meta, _ in answers.values():
        for t in meta.topics:
            for p in t.partitions:
                key = (t.name, p.partition)
                high[key] = max(high.get(key, 0), p.high_watermark)
    topics: dict[str, tuple[int, int]] = {}
    for (topic, _), hw in high.items():
        if topic.startswith("__"):
            continue  # internal (__consumer_offsets)
        count, total = topics.get(topic, (0, 0))
        topics[topic] = (count + 1, total + hw)
    sample = Sample(taken_at, time.time(), status, topics)
    try:
        listings = admin.list_groups(timeout=CALL_TIMEOUT_S)
    except RaftkaError:
        listings = []
        sample.group_errors += 1
    for listing in listings[:groups_max]:
        if stop is not None and stop.is_set():
            break
        try:
            sample.groups.append(admin.describe_group(listing.group_id,
                                                      timeout=CALL_TIMEOUT_S))
        except RaftkaError:
            sample.group_errors += 1
    return sample


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def render(sample: Sample, previous: Sample | None, bootstrap: str, interval: float) -> str:
    """One frame as text (pure)."""
    s = sample.status
    when = datetime.fromtimestamp(sample.wall_time, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    controller = f"node {s.controller_id}" if s.controller_id else "none (election?)"
    lines = [
        f"raftka top  {bootstrap}  {when} UTC  (every {interval:g} s; Ctrl-C quits)",
        f"controller: {controller}   partitions: {s.partition_count}   "
        f"under-replicated: {s.under_replicated_partitions}   leaderless: {len(s.leaderless)}",
        "",
        _table(["NODE", "ADDRESS", "UP", "LEADERS", "REPLICAS"],
               [[n.id, n.address, "yes" if n.reachable else "NO", n.leader_count,
                 n.replica_count] for n in s.nodes]),
        "",
    ]
    elapsed = sample.taken_at - previous.taken_at if previous is not None else 0.0
    rows = []
    for topic in sorted(sample.topics):
        count, total = sample.topics[topic]
        rate = "-"
        if previous is not None and topic in previous.topics and elapsed > 0:
            rate = f"{max(total - previous.topics[topic][1], 0) / elapsed:,.1f}"
        rows.append([topic, count, f"{total:,}", rate])
    lines.append(_table(["TOPIC", "PARTITIONS", "RECORDS", "RECORDS/S"], rows)
                 if rows else "no topics")
    lines.append("")
    group_rows = []
    for g in sorted(sample.groups, key=lambda g: (-(g.total_lag or 0), g.group_id)):
        lag = g.total_lag
        group_rows.append([g.group_id, g.state, len(g.members), g.coordinator_id,
                           "?" if lag is None else f"{lag:,}"])
    lines.append(_table(["GROUP", "STATE", "MEMBERS", "COORDINATOR", "LAG"], group_rows)
                 if group_rows else "no consumer groups")
    if sample.group_errors:
        lines.append(f"({sample.group_errors} group(s) did not answer)")
    return "\n".join(lines) + "\n"


def run_top(admin: Admin, out: TextIO, bootstrap: str, interval: float = 1.0,
            iterations: int | None = None, tty: bool | None = None) -> int:
    """Print frames until ``iterations`` were printed (None: until Ctrl-C). Returns 0;
    Ctrl-C ends it quietly with 0.

    Ctrl-C sets a flag rather than raising KeyboardInterrupt wherever the main thread
    happens to be: raised inside the gRPC library's blocking call machinery, it once left
    the process hanging at exit (the channel's close waited for a call it had abandoned).
    The flag is looked at between calls, each of which ends within ``CALL_TIMEOUT_S``."""
    tty = out.isatty() if tty is None else tty
    stop = threading.Event()
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    previous: Sample | None = None
    shown = 0
    next_at = time.monotonic()
    try:
        while (iterations is None or shown < iterations) and not stop.is_set():
            sample = take_sample(admin, stop=stop)
            if stop.is_set():
                break
            frame = render(sample, previous, bootstrap, interval)
            out.write((CLEAR + frame) if tty else (("\n" if shown else "") + frame))
            out.flush()
            previous = sample
            shown += 1
            if iterations is not None and shown >= iterations:
                break
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:  # not the main thread's handler (embedded use)
        pass
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
    if tty:
        out.write("\n")
    out.flush()
    return 0
