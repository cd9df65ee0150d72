"""The transactional checker: anomalies of a ``txn`` history (``txn_workload`` for its
shape). Pure: a list of ops in, a report out. ``checker.check`` hands a history here when
its ``config`` event says ``"workload": "txn"``.

Every value names its transaction (``"<txn>.<i>"``). A transaction's outcome:

- *committed*: its ``txn`` op is ``ok``;
- *aborted*: ``fail``, or it was meant to abort (``"intent": "abort"``: it never sent a
  commit, whatever its completion says);
- *never asked to commit*: no ``commit-start`` (its producer died before calling
  commit_transaction) and not ``ok``: it cannot have committed either;
- *unknown*: the commit was asked for and did not answer (``info``). Inferred from reads:
  committed if any read_committed read returned one of its values; otherwise not committed
  when every one of its keys was read to its end at the end (it may have been lost, which
  no history can tell from an abort); else it stays unknown.

A *read* is what a read_committed consumer returned: a reader's ``poll``, the records a
consume-transform-produce transaction consumed (``read``, as of its invocation) and the
``final-read`` after healing. ``final-read-raw`` (read_uncommitted) and the offsets of
committed sends complete the picture of the log for offsets and duplicates.

Classes (each anomaly lists the ops involved):

``aborted-read``
    A read returned a value of an aborted transaction.
``uncommitted-read``
    A read returned a value of a transaction that never asked to commit, or returned it
    before its transaction asked to commit (the read completed before ``commit-start``).
``lost-write``
    A committed transaction none of whose values the final read found (its keys read to
    their end), or a value a reader skipped: the reader returned a later offset of the key
    without ever returning this committed value, and saw nothing of its transaction.
``duplicate``
    One value at two offsets (or keys).
``inconsistent-offsets``
    One offset of a key with two values (reads, raw reads and committed sends).
``non-atomic``
    The final read holds some but not all values of a committed transaction; or a reader
    saw part of a committed transaction and read past the offset of another of its values
    without returning it.
``aborted-offsets``
    The group's committed offset of a key (read by a ctp producer or at the end) is one
    that only aborted transactions (or none at all) sent with send_offsets_to_transaction.
``offsets-regression``
    The group's final committed offset of a key is below one a committed transaction sent.
``unknown-value``
    A read returned a value that no transaction of the history sent.
``G0`` / ``G1c``
    A cycle in the dependency graph of committed transactions (Jepsen's Kafka checker,
    adapted to what Kafka promises: concurrent transactions may interleave their writes,
    so two transactions writing the same two keys in opposite orders is no anomaly). Each
    transaction T has points s(T) (its first append), a(T, k) (its append to key k) and
    c(T) (its commit decision), with s(T) <= a(T, k) <= c(T); and edges ``ww`` a(X, k) <
    a(Y, k) when Y's value follows X's in key k's log, ``wr`` c(X) < s(Y) when a
    consume-transform-produce Y consumed X's value before its first send, ``po`` c(X) <
    s(Y) when one producer process committed X before it began Y. A cycle among these
    points cannot happen in any execution: it is reported, as G1c when it has a ``wr``
    edge (circular information flow), else as G0 (a write cycle).

Problems of the history (each makes the verdict invalid): ``no-committed-txns``,
``no-aborted-txns``, ``no-reads`` (no read_committed poll returned a record),
``no-final-read`` (a key not read to its end), ``torn-history-line``.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

from rkjepsen.history import TORN_LINE, Op

CLASSES = (
    "aborted-read",
    "uncommitted-read",
    "lost-write",
    "duplicate",
    "inconsistent-offsets",
    "non-atomic",
    "aborted-offsets",
    "offsets-regression",
    "unknown-value",
    "G0",
    "G1c",
)
HISTORY_PROBLEMS = (
    "no-committed-txns",
    "no-aborted-txns",
    "no-reads",
    "no-final-read",
    "torn-history-line",
)

COMMITTED, ABORTED, NEVER, UNKNOWN = "committed", "aborted", "never-asked", "unknown"


def txn_of(value: str) -> str:
    return value.rpartition(".")[0]


class Txn:
    __slots__ = ("name", "op", "intent", "sends", "read", "offsets", "commit_start",
                 "status", "inferred", "offset_of")

    def __init__(self, op: Op) -> None:
        v = op.invoke_value or {}
        self.op = op
        self.name: str = v["txn"]
        self.intent: str = v.get("intent", "commit")
        self.sends: list[tuple[str, str]] = [(k, val) for k, val in v.get("sends") or []]
        self.read: list[tuple[str, int, str]] = [(k, int(o), val)
                                                 for k, o, val in v.get("read") or []]
        self.offsets: list[tuple[str, int]] = [(k, int(o)) for k, o in v.get("offsets") or []]
        self.commit_start: float | None = None
        self.status = UNKNOWN
        self.inferred = False
        self.offset_of: dict[str, int] = {}  # key -> offset of its value (acks, reads)
        if op.type == "ok":
            for k, _, off in (op.value or {}).get("sends") or []:
                self.offset_of[k] = int(off)

    def brief(self) -> dict:
        return self.op.brief()


def check(ops: list[Op]):
    from rkjepsen.checker import Report

    report = Report.for_classes(CLASSES, HISTORY_PROBLEMS)
    txns: dict[str, Txn] = {}
    for o in ops:
        if o.f == "txn":
            t = Txn(o)
            txns[t.name] = t
    for o in ops:
        if o.f == "commit-start" and isinstance(o.value, dict):
            t = txns.get(o.value.get("txn"))
            if t is not None:
                t.commit_start = o.invoke_time

    # reads (read_committed), each (key, offset, value, time it completed, op)
    reads: list[tuple[str, int, str, float, Op]] = []
    reader_polls: dict[Any, list[Op]] = defaultdict(list)
    final: dict[str, list[tuple[int, str]]] = {}
    raw: dict[str, list[tuple[int, str]]] = {}
    final_ops: dict[str, Op] = {}
    for o in ops:
        if o.type != "ok":
            continue
        if o.f == "poll":
            reader_polls[o.process].append(o)
            for k, off, val in (o.value or {}).get("records") or []:
                reads.append((k, int(off), val, o.complete_time, o))
        elif o.f == "final-read":
            key = o.value["key"]
            final[key] = [(int(off), val) for off, val in o.value.get("records") or []]
            final_ops[key] = o
            reads += [(key, off, val, o.complete_time, o) for off, val in final[key]]
        elif o.f == "final-read-raw":
            raw[o.value["key"]] = [(int(off), val) for off, val in
                                   o.value.get("records") or []]
    for t in txns.values():
        for k, off, val in t.read:
            reads.append((k, off, val, t.op.invoke_time, t.op))

    # where each value is: reads, raw reads, committed sends
    places: dict[str, set[tuple[str, int]]] = defaultdict(set)
    at: dict[tuple[str, int], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for k, off, val, _, o in reads:
        places[val].add((k, off))
        at[(k, off)][val].append(o)
    for k, recs in raw.items():
        for off, val in recs:
            places[val].add((k, off))
            at[(k, off)][val].append(final_ops.get(k) or "final-read-raw")
    for t in txns.values():
        if t.op.type == "ok":
            for k, off in t.offset_of.items():
                val = dict(t.sends).get(k)
                if val is not None:
                    places[val].add((k, off))
                    at[(k, off)][val].append(t.op)
    for val, where in places.items():
        if len(where) > 1:
            report.add("duplicate", value=val, places=sorted(map(list, where)),
                       ops=[txns[txn_of(val)].brief()] if txn_of(val) in txns else [])
    for (k, off), vals in at.items():
        if len(vals) > 1:
            report.add("inconsistent-offsets", key=k, offset=off, values=sorted(vals),
                       ops=[o.brief() for os_ in vals.values() for o in os_
                            if isinstance(o, Op)][:4])
    # offsets of every txn value, from every place it was seen
    for val, where in places.items():
        t = txns.get(txn_of(val))
        if t is not None and len(where) == 1:
            k, off = next(iter(where))
            t.offset_of.setdefault(k, off)

    # outcomes
    read_values = {val for _, _, val, _, _ in reads}
    final_values = {val for recs in final.values() for _, val in recs}
    for t in txns.values():
        if t.op.type == "ok":
            t.status = COMMITTED
        elif t.intent == "abort" or t.op.type == "fail":
            t.status = ABORTED
        elif t.commit_start is None:
            t.status = NEVER
        else:
            t.inferred = True
            if any(val in read_values for _, val in t.sends):
                t.status = COMMITTED
            elif all(k in final for k, _ in t.sends):
                t.status = ABORTED  # not visible at the end: not committed (or lost)
            else:
                t.status = UNKNOWN

    # aborted and uncommitted reads, unknown values
    for k, off, val, when, o in reads:
        t = txns.get(txn_of(val))
        if t is None:
            report.add("unknown-value", key=k, offset=off, value=val, ops=[o.brief()])
        elif t.status == ABORTED and not t.inferred:
            report.add("aborted-read", key=k, offset=off, value=val,
                       why=("aborted on purpose" if t.intent == "abort" else
                            "its transaction failed before asking to commit"),
                       ops=[t.brief(), o.brief()])
        elif t.status == NEVER:
            report.add("uncommitted-read", key=k, offset=off, value=val,
                       why="its transaction never asked to commit", ops=[t.brief(), o.brief()])
        elif t.commit_start is not None and when is not None and when < t.commit_start:
            report.add("uncommitted-read", key=k, offset=off, value=val,
                       why="read before its transaction asked to commit",
                       read_at=when, commit_start=t.commit_start, ops=[t.brief(), o.brief()])

    # lost writes and non-atomic final reads
    committed = [t for t in txns.values() if t.status == COMMITTED]
    for t in committed:
        keys = [k for k, _ in t.sends if k in final]
        if not keys:
            continue
        found = [k for k, val in t.sends if k in final and val in final_values]
        if not found:
            report.add("lost-write", txn=t.name, why="committed, not in the final read",
                       inferred=t.inferred, sends=[list(s) for s in t.sends], ops=[t.brief()])
        elif len(found) < len(keys):
            report.add("non-atomic", txn=t.name, why="the final read holds part of it",
                       found=found, missing=[k for k in keys if k not in found],
                       ops=[t.brief(), *(final_ops[k].brief() for k in keys
                                         if k not in found)][:4])

    # readers that read past a committed value without returning it
    by_txn_values = {t.name: dict((k, val) for k, val in t.sends) for t in committed}
    for proc, polls in reader_polls.items():
        seen: set[str] = set()
        top: dict[str, int] = {}
        for o in polls:
            for k, off, val in (o.value or {}).get("records") or []:
                seen.add(val)
                top[k] = max(top.get(k, -1), int(off))
        for t in committed:
            passed = [k for k, val in by_txn_values[t.name].items()
                      if k in t.offset_of and top.get(k, -1) > t.offset_of[k]]
            if not passed:
                continue
            saw = [k for k, val in by_txn_values[t.name].items() if val in seen]
            skipped = [k for k in passed if by_txn_values[t.name][k] not in seen]
            if not skipped:
                continue
            cls = "non-atomic" if saw else "lost-write"
            report.add(cls, txn=t.name, reader=proc,
                       why="a reader read past its offset on "
                       f"{skipped} without returning it" + (f", yet saw it on {saw}"
                                                             if saw else ""),
                       offsets={k: t.offset_of[k] for k in skipped},
                       reader_top={k: top[k] for k in skipped}, ops=[t.brief()])

    _check_offsets(ops, txns, report)
    _check_cycles(txns, committed, final, raw, report)

    stats = _stats(ops, txns, reads, final, reader_polls)
    report.stats = stats
    if not stats["txns_committed"]:
        report.add_problem("no-committed-txns", txns=stats["by_f"].get("txn", {}))
    if not stats["txns_aborted"]:
        report.add_problem("no-aborted-txns", txns=stats["by_f"].get("txn", {}))
    if not stats["polled_records"]:
        report.add_problem("no-reads", polls=stats["by_f"].get("poll", {}))
    config = next((o.value for o in ops if o.process == "harness" and o.f == "config"
                   and isinstance(o.value, dict)), {})
    expected = set(config.get("keys") or []) | {k for t in committed for k, _ in t.sends}
    for key in sorted(expected - set(final)):
        report.add_problem("no-final-read", key=key)
    for o in ops:
        if o.f == TORN_LINE and not (o.value or {}).get("explained"):
            report.add_problem("torn-history-line", **o.value)
    return report


def _check_offsets(ops: list[Op], txns: dict[str, Txn], report) -> None:
    """Group offsets committed through transactions: visible iff the transaction commits."""
    senders: dict[tuple[str, int], list[Txn]] = defaultdict(list)
    for t in txns.values():
        for k, off in t.offsets:
            senders[(k, off)].append(t)
    for o in ops:
        if o.type != "ok" or o.f not in ("committed", "group-offsets"):
            continue
        for k, off in (o.value or {}).get("offsets") or []:
            if off is None:
                continue
            by = senders.get((k, int(off)), [])
            if not by:
                report.add("aborted-offsets", key=k, offset=int(off),
                           why="no transaction sent this offset", ops=[o.brief()])
            elif all(t.status in (ABORTED, NEVER) and not t.inferred for t in by):
                report.add("aborted-offsets", key=k, offset=int(off),
                           why="only aborted transactions sent this offset",
                           ops=[o.brief(), *(t.brief() for t in by[:3])])
    last = next((o for o in reversed(ops) if o.f == "group-offsets" and o.type == "ok"), None)
    if last is None:
        return
    final_off = {k: int(off) for k, off in last.value.get("offsets") or [] if off is not None}
    for t in txns.values():
        if t.op.type != "ok":
            continue
        for k, off in t.offsets:
            if final_off.get(k, -1) < off:
                report.add("offsets-regression", key=k, committed_by_txn=off,
                           final=final_off.get(k), ops=[t.brief(), last.brief()])


def _check_cycles(txns, committed: list[Txn], final, raw, report) -> None:
    """G0 / G1c: cycles among the points of committed transactions (module docstring)."""
    names = {t.name for t in committed}
    edges: dict[tuple, list[tuple[tuple, str]]] = defaultdict(list)
    for t in committed:
        for k, _ in t.sends:
            edges[("s", t.name)].append((("a", t.name, k), "intra"))
            edges[("a", t.name, k)].append((("c", t.name), "intra"))
    # ww: consecutive committed values of a key (final read, else committed sends)
    per_key: dict[str, dict[int, str]] = defaultdict(dict)
    for t in committed:
        for k, val in t.sends:
            if k in t.offset_of:
                per_key[k][t.offset_of[k]] = t.name
    for k, by_off in per_key.items():
        order = [by_off[o] for o in sorted(by_off)]
        for x, y in zip(order, order[1:]):
            if x != y:
                edges[("a", x, k)].append((("a", y, k), "ww"))
    # wr: a ctp transaction consumed a value of another one
    for t in committed:
        for _, _, val in t.read:
            x = txn_of(val)
            if x in names and x != t.name:
                edges[("c", x)].append((("s", t.name), "wr"))
    # po: one process's consecutive committed transactions
    by_proc: dict[Any, list[Txn]] = defaultdict(list)
    for t in committed:
        by_proc[t.op.process].append(t)
    for ts in by_proc.values():
        ts.sort(key=lambda t: t.op.index)
        for x, y in zip(ts, ts[1:]):
            edges[("c", x.name)].append((("s", y.name), "po"))
    for scc in _sccs(edges):
        cycle = _cycle_in(scc, edges)
        kinds = [kind for _, _, kind in cycle]
        path = [[a[1], kind, b[1]] for a, b, kind in cycle if kind != "intra"]
        involved = list(dict.fromkeys(a[1] for a, _, _ in cycle))
        report.add("G1c" if "wr" in kinds else "G0", cycle=path,
                   ops=[txns[n].brief() for n in involved[:6]])


def _sccs(edges: dict[tuple, list[tuple[tuple, str]]]) -> list[set]:
    """Strongly connected components with more than one node (iterative Tarjan)."""
    index: dict[tuple, int] = {}
    low: dict[tuple, int] = {}
    on_stack: set = set()
    stack: list = []
    out: list[set] = []
    counter = 0
    nodes = set(edges) | {b for bs in edges.values() for b, _ in bs}
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = edges.get(node, [])
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i][0]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _cycle_in(scc: set, edges) -> list[tuple[tuple, tuple, str]]:
    """One cycle through the component (breadth-first from a node back to it)."""
    start = min(scc, key=repr)
    prev: dict[tuple, tuple[tuple, str]] = {}
    queue = deque([start])
    while queue and start not in prev:
        node = queue.popleft()
        for b, kind in edges.get(node, []):
            if b not in scc or b in prev:
                continue
            prev[b] = (node, kind)
            if b == start:
                break
            queue.append(b)
    path = []
    node = start
    while True:
        a, kind = prev[node]
        path.append((a, node, kind))
        node = a
        if node == start:
            break
    return path[::-1]


def _stats(ops, txns: dict[str, Txn], reads, final, reader_polls) -> dict:
    out: dict[str, Any] = {"workload": "txn", "ops": 0, "by_f": {}}
    for o in ops:
        if o.process in ("nemesis", "harness", "final") or o.f in ("crash", "commit-start"):
            continue
        out["ops"] += 1
        d = out["by_f"].setdefault(o.f, {"ok": 0, "fail": 0, "info": 0})
        d[o.type] = d.get(o.type, 0) + 1
    ts = list(txns.values())
    out["txns"] = len(ts)
    out["txns_committed"] = sum(t.status == COMMITTED and not t.inferred for t in ts)
    out["txns_aborted"] = sum(t.status == ABORTED and not t.inferred for t in ts)
    out["txns_never_asked_to_commit"] = sum(t.status == NEVER for t in ts)
    out["txns_indeterminate"] = sum(t.inferred for t in ts)
    out["txns_indeterminate_committed"] = sum(t.inferred and t.status == COMMITTED for t in ts)
    out["txns_indeterminate_not_committed"] = sum(t.inferred and t.status == ABORTED
                                                  for t in ts)
    out["txns_ctp_committed"] = sum(t.status == COMMITTED and bool(t.offsets) for t in ts)
    # producers killed (kill -9) in the middle of a transaction: it never completed
    out["txns_killed"] = sum(t.op.complete_time is None for t in ts)
    out["txns_killed_committing"] = sum(t.op.complete_time is None
                                        and t.commit_start is not None for t in ts)
    out["acked_sends"] = sum(len(t.sends) for t in ts if t.op.type == "ok")
    out["polled_records"] = sum(len((o.value or {}).get("records") or [])
                                for polls in reader_polls.values() for o in polls)
    out["ctp_consumed_records"] = sum(len(t.read) for t in ts)
    out["final_read_keys"] = sorted(final)
    out["final_read_records"] = sum(len(r) for r in final.values())
    # the nemesis' leader faults name a target: the keys, then __transaction_state's
    # partitions (txn_workload.leader_finder): faults on transaction coordinators
    config = next((o.value for o in ops if o.process == "harness" and o.f == "config"
                   and isinstance(o.value, dict)), {})
    n_keys = len(config.get("keys") or [])
    out["coordinator_faults"] = sum(
        1 for o in ops if o.process == "nemesis" and o.f == "start"
        and isinstance(o.value, dict) and isinstance(o.value.get("key"), int)
        and n_keys and o.value["key"] >= n_keys)
    return out
