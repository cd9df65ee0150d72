"""Data-safety checks shared by the integration tests and the jepsen-like harness.

Two claims, each checked exactly (never by counts or sets standing in for contents):

1. ``assert_log_matches_acks``: a partition's log holds every acknowledged record, once,
   in the order it was sent, at the offset its acknowledgement named; nothing that was
   never sent; a record whose acknowledgement is unknown (sent, but the answer was lost)
   at most once, in its place in the send order.
2. ``check_replicas``: every replica of a partition holds the same records at the
   same offsets, over ``[log start, high watermark)``, compared with the broker's
   ``raftka.v1.Debug/ReplicaDigest`` (CRC-32C of the raw batches per offset range, any
   replica answers for itself). Followers apply what the leader committed a moment later,
   so it first waits (bounded) until every replica reports the same high watermark; a
   digest mismatch after that is final (committed entries never change) and is narrowed
   down to the first offset where the replicas differ.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from raftka.v1 import broker_pb2, broker_pb2_grpc, debug_pb2, debug_pb2_grpc, errors_pb2

SHOWN_MAX = 5  # problems of one kind quoted in a failure message


# ---------------------------------------------------------------------------- acknowledgements

def assert_log_matches_acks(log: Sequence[tuple[int, bytes]], sent: Sequence[bytes],
                            acked: Mapping[bytes, int | None] | Iterable[bytes] | None = None,
                            *, where: str = "the partition") -> None:
    """``log``: ``(offset, value)`` of every record read from one partition, in offset
    order (from the log start). ``sent``: every value sent to it, in send order (values are
    unique). ``acked``: the acknowledged values, mapped to the offset their acknowledgement
    named (None: offset not known); by default every value of ``sent``. Raises
    AssertionError naming every kind of violation found."""
    if len(set(sent)) != len(sent):
        raise ValueError("the values sent must be unique to be checked exactly")
    if acked is None:
        acked = dict.fromkeys(sent)
    elif not isinstance(acked, Mapping):
        acked = dict.fromkeys(acked)
    position = {v: i for i, v in enumerate(sent)}
    if not set(acked) <= set(position):
        raise ValueError("acknowledged values must be among the values sent")
    problems: list[str] = []

    offsets = [o for o, _ in log]
    gaps = [(a, b) for a, b in zip(offsets, offsets[1:]) if b != a + 1]
    if gaps:
        problems.append(f"offsets not contiguous (a gap or a step back): {gaps[:SHOWN_MAX]}")
    seen: dict[bytes, int] = {}
    duplicates, foreign = [], []
    for offset, value in log:
        if value in seen:
            duplicates.append((value, seen[value], offset))
        else:
            seen[value] = offset
        if value not in position:
            foreign.append((offset, value))
    if duplicates:
        problems.append(f"{len(duplicates)} record(s) written more than once "
                        f"(value, first offset, again at): {duplicates[:SHOWN_MAX]}")
    if foreign:
        problems.append(f"{len(foreign)} record(s) never sent: {foreign[:SHOWN_MAX]}")
    missing = [v for v in acked if v not in seen]
    if missing:
        problems.append(f"{len(missing)} acknowledged record(s) missing (lost): "
                        f"{missing[:SHOWN_MAX]}")
    moved = [(v, o, seen[v]) for v, o in acked.items() if o is not None and v in seen
             and seen[v] != o]
    if moved:
        problems.append(f"{len(moved)} record(s) not at their acknowledged offset "
                        f"(value, acknowledged, found): {moved[:SHOWN_MAX]}")
    order = [position[v] for _, v in log if v in position]
    reordered = [(sent[a], sent[b]) for a, b in zip(order, order[1:]) if b <= a]
    if reordered:
        problems.append(f"records out of send order (earlier found after later): "
                        f"{[(b, a) for a, b in reordered[:SHOWN_MAX]]}")
    if problems:
        raise AssertionError(f"{where} does not hold exactly the acknowledged records "
                             f"({len(log)} read, {len(acked)} acknowledged, {len(sent)} "
                             "sent):\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------- replicas

class _Unsettled(Exception):
    """Not comparable yet (a replica unreachable, behind, or its log start moved)."""


@dataclass(frozen=True)
class ReplicaCheck:
    """The outcome of comparing one partition's replicas. ``problem`` is empty when they
    agree. ``settled`` is False when nothing could be compared within the time allowed (a
    replica unreachable, not running the partition, or short of the others' high
    watermark): a liveness problem, not proof of a divergence."""

    topic: str
    partition: int
    problem: str = ""
    settled: bool = True


def check_replicas(addresses: Mapping[int, str], topic: str, partition: int,
                   timeout: float = 30.0, rpc_timeout: float = 5.0) -> ReplicaCheck:
    """Compare the replicas of ``topic``/``partition`` on the nodes in ``addresses``
    (node id -> host:port: the nodes that are up; replicas elsewhere are not consulted).
    Waits up to ``timeout`` seconds for them to reach the same high watermark; a
    disagreement names the partition, the offset range, the first differing offset and
    what each replica holds there."""
    channels = {nid: grpc.insecure_channel(addr, options=[
        ("grpc.max_receive_message_length", 64 << 20)]) for nid, addr in addresses.items()}
    try:
        debug = {nid: debug_pb2_grpc.DebugStub(ch) for nid, ch in channels.items()}
        deadline = time.monotonic() + timeout
        while True:
            try:
                problem = _compare(channels, debug, topic, partition, rpc_timeout)
                return ReplicaCheck(topic, partition, problem or "")
            except _Unsettled as exc:
                if time.monotonic() >= deadline:
                    return ReplicaCheck(topic, partition, f"{topic}/{partition}: replicas "
                                        f"did not settle within {timeout:.0f}s: {exc}",
                                        settled=False)
            time.sleep(0.1)
    finally:
        for ch in channels.values():
            ch.close()


def check_topic_replicas(addresses: Mapping[int, str], topic: str,
                         timeout: float = 60.0) -> list[ReplicaCheck]:
    """``check_replicas`` for every partition of ``topic`` (their number from Metadata),
    within ``timeout`` for all of them (each gets what is left, at least 2 s); returns the
    partitions whose replicas disagree or did not settle."""
    deadline = time.monotonic() + timeout
    count = 0
    for address in addresses.values():
        with grpc.insecure_channel(address) as channel:
            try:
                md = broker_pb2_grpc.BrokerStub(channel).Metadata(
                    broker_pb2.MetadataRequest(topics=[topic]), timeout=5)
            except grpc.RpcError:
                continue
        if md.topics:
            count = len(md.topics[0].partitions)
            break
    else:
        return [ReplicaCheck(topic, -1, f"{topic}: no node of {sorted(addresses)} answered "
                             "Metadata", settled=False)]
    checks = [check_replicas(addresses, topic, partition,
                             max(2.0, deadline - time.monotonic()))
              for partition in range(count)]
    return [c for c in checks if c.problem]


def _compare(channels, debug, topic: str, partition: int, rpc_timeout: float) -> str | None:
    replicas = [nid for nid in _replicas(channels, topic, partition, rpc_timeout)
                if nid in debug]
    if not replicas:
        raise _Unsettled(f"none of nodes {sorted(debug)} holds a replica")
    positions = {nid: _ask(debug[nid], nid, debug_pb2.ReplicaDigestRequest(
        topic=topic, partition=partition, positions_only=True), rpc_timeout)
        for nid in replicas}
    marks = {nid: p.high_watermark for nid, p in positions.items()}
    if len(set(marks.values())) > 1:
        raise _Unsettled("high watermarks differ: " + _positions(positions))
    hw = next(iter(marks.values()))
    start = max(p.log_start_offset for p in positions.values())
    if start >= hw:
        return None
    step = max(1, -(-(hw - start) // 256))
    ranges = {nid: _ranges(debug[nid], nid, topic, partition, start, hw, step, rpc_timeout)
              for nid in replicas}
    # Every call's ranges start at a multiple of ``step`` from ``start`` (a call ends at a
    # range bound and the next starts there), so ranges are matched by their start.
    by_start = {nid: {r[0]: r for r in rs} for nid, rs in ranges.items()}
    for lo in sorted(set().union(*by_start.values())):
        held = {n: by_start[n].get(lo) for n in replicas}
        if len(set(held.values())) == 1:
            continue
        hi = max(r[1] for r in held.values() if r is not None)
        offset = _first_difference(debug, replicas, topic, partition, lo, hi, rpc_timeout)
        return (f"{topic}/{partition}: replicas disagree over offsets [{lo}, {hi})"
                + (f", first at offset {offset}" if offset is not None else "")
                + f" (compared [{start}, {hw}) at high watermark {hw}): "
                + "; ".join(f"node {n}: " + (_describe(r) if r is not None else "no such range")
                            for n, r in held.items())
                + "; positions: " + _positions(positions))
    return None


def _replicas(channels, topic: str, partition: int, rpc_timeout: float) -> list[int]:
    for nid, ch in channels.items():
        try:
            md = broker_pb2_grpc.BrokerStub(ch).Metadata(
                broker_pb2.MetadataRequest(topics=[topic]), timeout=rpc_timeout)
        except grpc.RpcError:
            continue
        if md.topics and len(md.topics[0].partitions) > partition:
            return list(md.topics[0].partitions[partition].replicas)
    raise _Unsettled(f"no node of {sorted(channels)} answered Metadata for {topic}")


def _ask(stub, nid: int, request, rpc_timeout: float):
    try:
        return stub.ReplicaDigest(request, timeout=rpc_timeout)
    except grpc.RpcError as exc:
        code = _error_code(exc)
        raise _Unsettled(f"node {nid}: {exc.code().name} "
                         f"{errors_pb2.ErrorCode.Name(code) if code else ''} "
                         f"{exc.details()}") from None


def _error_code(exc: grpc.RpcError) -> int:
    for key, value in exc.trailing_metadata() or ():
        if key == "raftka-error-bin":
            return errors_pb2.ErrorInfo.FromString(value).code
    return 0


def _ranges(stub, nid: int, topic: str, partition: int, start: int, end: int, step: int,
            rpc_timeout: float) -> list[tuple]:
    out: list[tuple] = []
    offset = start
    while offset < end:
        r = _ask(stub, nid, debug_pb2.ReplicaDigestRequest(
            topic=topic, partition=partition, from_offset=offset, to_offset=end,
            range_offsets=step), rpc_timeout)
        if r.high_watermark < end:
            raise _Unsettled(f"node {nid}: high watermark went back to {r.high_watermark}")
        # Ranges are [start + k * step, ...) for every call: continue from a range bound.
        out += [(g.start_offset, g.end_offset, g.crc32c, g.batches, g.records, g.bytes)
                for g in r.ranges]
        if r.next_offset <= offset:
            raise AssertionError(f"node {nid}: ReplicaDigest made no progress at {offset}")
        offset = r.next_offset
    return out


def _first_difference(debug, replicas, topic, partition, lo, hi, rpc_timeout) -> int | None:
    """The first offset (a batch's base) where the replicas' ranges of one offset differ."""
    per_offset = {n: {g[0]: g for g in _ranges(debug[n], n, topic, partition, lo, hi, 1,
                                               rpc_timeout)} for n in replicas}
    for offset in range(lo, hi):
        if len({per_offset[n].get(offset) for n in replicas}) > 1:
            return offset
    return None


def _describe(r: tuple) -> str:
    return f"crc32c {r[2]:08x}, {r[3]} batches, {r[4]} records, {r[5]} bytes"


def _positions(positions: Mapping[int, debug_pb2.ReplicaDigestResponse]) -> str:
    return ", ".join(f"node {n} ({'leader' if p.leader else 'follower'}, term {p.term}): log "
                     f"start {p.log_start_offset}, hw {p.high_watermark}, last offset "
                     f"{p.last_offset}" for n, p in sorted(positions.items()))
