"""The queue workload (``run --workload queue``): share-group workers under faults.

- Producers (threads of the harness, ``workload.Producers``): unique values
  ``"<process>-<n>"`` to a random key (partition) of topic ``jepsen``, acks=all. A value
  may carry a suffix naming how the workers treat it: ``p`` is *poison* (every worker
  rejects it: it must end in the dead-letter topic, reason "rejected"), ``f`` *always
  fails* (every worker releases it: after ``ATTEMPTS`` deliveries it must end in the
  dead-letter topic, reason "attempts exhausted"); a plain value is accepted, except that a
  worker releases it now and then (``RELEASE_P``) to exercise redelivery. Some sends
  (``DELAYED_P``, any kind of value) are *delayed*: ``delay=`` or ``deliver_at=`` up to
  ``DELAY_MAX_S`` ahead; the send's history value carries its due time as
  ``"deliver_after"`` (history seconds) and an acknowledged delayed send has offset -1
  (assigned when the broker releases the record). No poll may return it before it is due
  (``delayed-early``); once released it is a record like any other.
- Workers (separate OS processes, so the harness can kill -9 them while they hold
  records): members of share group ``jepsen-share`` (``ShareConsumer``, no auto-accept,
  lock ``LOCK_MS``). Each ``poll``s, "works" a few ms (so a kill often lands while it holds
  records), then acknowledges one partition at a time (``ack``: one request, applied or
  refused whole), so each ``ack`` op's outcome is known per record. Besides the harness's
  kill -9 at random moments, each worker dies by itself (``os._exit``: no release, no
  leave, connections dropped as by kill -9) right after a poll that returned records, once
  per lifetime once ``HOLD_CRASH_AFTER_S`` have passed, writing a ``crash`` event first
  (not once the harness drains the queue: ``--drain-flag``).
- After healing, the harness waits until every delayed send is due and every acknowledged
  one is in its partition (``delayed-released`` event: the broker releases on its own, so
  the drain below must not end before), then lets the workers drain the queue (until the group's state
  says every partition is finished: nothing acquired, released or waiting for the
  dead-letter topic, the start offset at the high watermark; ``share-state`` in the
  history), stops them, and reads the topic (``final-read``) and the dead-letter topic
  (``final-read-dlq``) from the start.

History ops of this workload (besides ``send`` and ``final-read`` of the log workload):

==================  ==================================================================
``poll``            ok: ``{"records": [[key, offset, value, delivery_count], ...]}``
``ack``             ``{"key": k, "accept": [[offset, value]...], "release": [...],
                    "reject": [...]}``; ``fail``: refused whole (InvalidRecordState:
                    nothing applied), ``info``: unknown. Sent with the next poll (process
                    ``"<worker>-acks"``): ``{"partitions": [{"key", "accept", ...}, ...]}``
``share-state``     harness, after the drain: ``{"partitions": {key: {"start", "hw",
                    "acquired", "available", "dead_lettering"}}}``
``final-read-dlq``  ok: ``{"records": [[dlq_partition, dlq_offset, value, source_key,
                    source_offset, reason, delivery_count], ...]}``
==================  ==================================================================

Outcomes as in the log workload: ``ok``, ``fail`` only when the op certainly did not take
effect, ``info`` otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rkjepsen.history import HistoryWriter
from rkjepsen.workload import TOPIC

GROUP = "jepsen-share"
DLQ_TOPIC = f"{GROUP}.dlq"
LOCK_MS = 2000  # short, so the records of a killed worker come back within the run
ATTEMPTS = 5  # the group's max_delivery_attempts (the default)
POISON_P = 0.03  # share of values that are poison (rejected)
FAILING_P = 0.01  # share of values every worker releases (dead-lettered when exhausted)
RELEASE_P = 0.05  # a plain value is released (redelivered) now and then
MAX_RECORDS = 50  # per partition per poll
# A worker crashes by itself while holding records at its first poll that returns some
# after this many seconds of life (drawn per worker), on top of the harness's kill -9 at
# random moments: so every run has workers that die holding records, whose records must go
# to others. A time, not a count of polls: a loaded machine polls less often, and the
# short run in make test then saw a single such crash (it asks for two)
HOLD_CRASH_AFTER_S = (1.5, 5.0)
CRASH_EXIT = 77  # the exit code of such a crash (the harness starts a new worker)
DRAIN_TIMEOUT_S = 60.0
DLQ_HEADER = "raftka.dlq."
DELAYED_P = 0.1  # share of sends that are delayed
DELAY_MIN_S, DELAY_MAX_S = 0.05, 2.0  # short: due within the run, the drain waits for them
DELIVER_AT_P = 0.5  # of the delayed sends: deliver_at (epoch ms) rather than delay (s)


def value_suffix(rng: random.Random) -> str:
    """The suffix of the next produced value: ``p`` poison, ``f`` always fails, ``""``."""
    x = rng.random()
    if x < POISON_P:
        return "p"
    if x < POISON_P + FAILING_P:
        return "f"
    return ""


def delivery(rng: random.Random) -> dict:
    """Keyword arguments of the next send: ``{}`` (at once), ``{"delay": s}`` or
    ``{"deliver_at": epoch_ms}`` (``workload.Producers`` records the due time)."""
    if rng.random() >= DELAYED_P:
        return {}
    delay = rng.uniform(DELAY_MIN_S, DELAY_MAX_S)
    if rng.random() < DELIVER_AT_P:
        return {"deliver_at": int((time.time() + delay) * 1000)}
    return {"delay": round(delay, 3)}


def kind_of(value: str) -> str:
    """``poison``, ``failing`` or ``plain``, from the value's suffix."""
    if value.endswith("p"):
        return "poison"
    if value.endswith("f"):
        return "failing"
    return "plain"


def _join(bootstrap: str, stop: threading.Event, lock_ms: int):
    """A ShareConsumer, joining again until it works (a join fails under faults)."""
    from raftka.client import RaftkaError, ShareConsumer

    while not stop.is_set():
        try:
            return ShareConsumer(bootstrap, GROUP, [TOPIC], auto_accept=False,
                                 max_records=MAX_RECORDS, record_lock_duration_ms=lock_ms,
                                 max_delivery_attempts=ATTEMPTS, request_timeout_ms=3000,
                                 join_timeout_s=10.0)
        except RaftkaError as exc:
            print(f"join failed: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.5)
    return None


def worker_main(argv: list[str] | None = None) -> int:
    """One worker process: ``python -m rkjepsen.queue --process N --bootstrap ...``. Runs
    until SIGTERM (then releases what it holds and leaves) or SIGKILL (a crash)."""
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--process", type=int, required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--lock-ms", type=int, default=LOCK_MS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drain-flag", type=Path, default=None,
                   help="once this file exists the worker no longer crashes by itself")
    args = p.parse_args(argv)

    from raftka.client import InvalidRecordStateError, RaftkaError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(args.seed ^ args.process)
    h = HistoryWriter(args.history, args.t0)
    proc = args.process
    consumer = _join(args.bootstrap, stop, args.lock_ms)
    if consumer is None:
        h.close()
        return 0
    crash_at = time.monotonic() + rng.uniform(*HOLD_CRASH_AFTER_S)
    # Odd workers acknowledge partition by partition with flush() (ShareAcknowledge: each
    # ack op's outcome is known); even ones leave their acknowledgements queued for the
    # next poll, which sends them inside its ShareFetch requests (the production path):
    # one ack op of process "<worker>-acks" over every partition, ok when the poll
    # returns, info when it raises (which partition was refused is not known).
    poll_acks = proc % 2 == 0
    ack_proc = f"{proc}-acks"
    pending: list[dict] = []

    def send_pending(call) -> None:
        value = {"partitions": list(pending)}
        pending.clear()
        h.invoke(ack_proc, "ack", value)
        try:
            result = call()
        except RaftkaError as exc:
            h.complete("info", ack_proc, "ack",
                       {**value, "error": f"{type(exc).__name__}: {exc}"[:300]})
            raise
        h.complete("ok", ack_proc, "ack", value)
        return result

    try:
        while not stop.is_set():
            h.invoke(proc, "poll")
            try:
                if pending:
                    records = send_pending(lambda: consumer.poll(0.5))
                else:
                    records = consumer.poll(0.5)
            except RaftkaError as exc:
                h.complete("info", proc, "poll", {"error": f"{type(exc).__name__}: {exc}"[:300]})
                time.sleep(0.1)
                continue
            h.complete("ok", proc, "poll", {"records": [
                [r.partition, r.offset, r.value.decode(), r.delivery_count] for r in records]})
            if not records:
                continue
            if time.monotonic() >= crash_at and not (args.drain_flag
                                                     and args.drain_flag.exists()):
                # die holding the records just polled
                h.event("info", proc, "crash", {"signal": f"exit {CRASH_EXIT} while "
                                                f"holding {len(records)} records"})
                h.close()
                os._exit(CRASH_EXIT)
            time.sleep(rng.uniform(0.0, 0.02))  # the work; a kill -9 here holds records
            by_key: dict[int, list] = {}
            for r in records:
                by_key.setdefault(r.partition, []).append(r)
            for key, recs in sorted(by_key.items()):
                value: dict[str, Any] = {"key": key, "accept": [], "release": [], "reject": []}
                for r in recs:
                    v = r.value.decode()
                    kind = kind_of(v)
                    if kind == "poison":
                        consumer.reject(r, error="poison record")
                        value["reject"].append([r.offset, v])
                    elif kind == "failing" or rng.random() < RELEASE_P:
                        consumer.release(r, error="failed, try again")
                        value["release"].append([r.offset, v])
                    else:
                        consumer.accept(r)
                        value["accept"].append([r.offset, v])
                if poll_acks:
                    pending.append(value)
                    continue
                h.invoke(proc, "ack", value)
                try:
                    consumer.flush()
                    h.complete("ok", proc, "ack", value)
                except InvalidRecordStateError as exc:  # refused whole: nothing applied
                    h.complete("fail", proc, "ack", {**value, "error": str(exc)[:300]})
                except RaftkaError as exc:
                    h.complete("info", proc, "ack",
                               {**value, "error": f"{type(exc).__name__}: {exc}"[:300]})
        if pending:  # queued acknowledgements go now, recorded, not silently by close()
            try:
                send_pending(consumer.flush)
            except RaftkaError:
                pass
    finally:
        try:
            consumer.close(timeout_s=3)
        finally:
            h.close()
    return 0


# ------------------------------------------------------------------------- harness side

def share_state(bootstrap: str) -> dict[int, dict] | None:
    """The group's state per partition of the topic (None: not available now)."""
    from raftka.client import RaftkaError, describe_share_group

    try:
        d = describe_share_group(bootstrap, GROUP, timeout_s=5.0)
    except RaftkaError:
        return None
    return {s.partition: {"start": s.start_offset, "hw": s.high_watermark,
                          "acquired": s.acquired, "available": s.available,
                          "dead_lettering": s.dead_lettering}
            for s in d.partitions if s.topic == TOPIC}


def wait_delayed_released(bootstrap: str, history: HistoryWriter,
                          acked: list[tuple[int, str, float]], last_due: float,
                          timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
    """Wait (bounded) until every delayed send tried is due (``last_due``, history s) and
    every acknowledged one (``acked``: key, value, due) is in its partition; records a
    ``delayed-released`` event. The share state cannot tell a drained queue from one whose
    delayed records are still to come; after this, only delayed sends of unknown outcome
    could still appear, and they are due already (released in time order, within a tick)."""
    from raftka.client import PartitionReader, RaftkaError

    deadline = time.monotonic() + timeout_s
    wait = last_due - history.now()
    if wait > 0:
        time.sleep(min(wait, timeout_s))
    missing: dict[int, set[str]] = {}
    for key, value, _ in acked:
        missing.setdefault(key, set()).add(value)
    for key, values in sorted(missing.items()):
        try:
            with PartitionReader(bootstrap, TOPIC, key, "earliest") as reader:
                while values and time.monotonic() < deadline:
                    for r in reader.poll(timeout=0.5):
                        values.discard((r.value or b"").decode())
        except RaftkaError as exc:
            print(f"delayed records of key {key} not read: {exc}", file=sys.stderr)
    left = sum(len(v) for v in missing.values())
    history.event("info", "harness", "delayed-released",
                  {"acked": len(acked), "missing": left, "last_due": last_due})
    return left == 0


def drained(state: dict[int, dict] | None, keys: int) -> bool:
    """Every partition finished: nothing held, waiting or on its way to the dead-letter
    topic, and the start offset at the high watermark."""
    return state is not None and len(state) == keys and all(
        s["start"] >= s["hw"] and not s["acquired"] and not s["available"]
        and not s["dead_lettering"] for s in state.values())


def drain(bootstrap: str, history: HistoryWriter, keys: int,
          timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
    """Wait (bounded) until the workers finished every record; write the last state seen
    as the ``share-state`` op. Returns whether the queue drained."""
    deadline = time.monotonic() + timeout_s
    history.invoke("harness", "share-state")
    state = None
    while time.monotonic() < deadline:
        state = share_state(bootstrap) or state
        if drained(state, keys):
            break
        time.sleep(0.3)
    if state is None:
        history.complete("info", "harness", "share-state", {"error": "no answer"})
        return False
    history.complete("ok", "harness", "share-state", {"partitions": state})
    return drained(state, keys)


def final_read_dlq(bootstrap: str, history: HistoryWriter,
                   timeout_s: float = 60.0) -> bool | None:
    """Read the whole dead-letter topic (absent: nothing was dead-lettered) into one
    ``final-read-dlq`` op. Returns True when read to its end, False when it does not
    exist, None when it could not be read."""
    from raftka.client import Admin, PartitionReader

    history.invoke("final", "final-read-dlq")
    out: list[list] = []
    try:
        with Admin(bootstrap, request_timeout_ms=3000) as admin:
            if DLQ_TOPIC not in admin.list_topics():
                history.complete("ok", "final", "final-read-dlq", {"records": []})
                return False
            admin.wait_for_topic_ready(DLQ_TOPIC, timeout=timeout_s)
            partitions = len(admin.describe_topic(DLQ_TOPIC).partitions)
        deadline = time.monotonic() + timeout_s
        for dp in range(partitions):
            with PartitionReader(bootstrap, DLQ_TOPIC, dp, "earliest") as reader:
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{DLQ_TOPIC} not read to its end in "
                                           f"{timeout_s:g}s")
                    batch = reader.poll(timeout=1.0)
                    for r in batch:
                        h = {k[len(DLQ_HEADER):]: (v or b"").decode()
                             for k, v in r.headers if k.startswith(DLQ_HEADER)}
                        out.append([dp, r.offset, (r.value or b"").decode(),
                                    int(h.get("partition", -1)), int(h.get("offset", -1)),
                                    h.get("reason", ""), int(h.get("delivery.count") or 0)])
                    if not batch and reader.at_end:
                        break
    except Exception as exc:  # noqa: BLE001 - an unread DLQ is a problem of the history
        history.complete("info", "final", "final-read-dlq",
                         {"error": f"{type(exc).__name__}: {exc}"[:300]})
        return None
    history.complete("ok", "final", "final-read-dlq", {"records": out})
    return True


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(worker_main())
