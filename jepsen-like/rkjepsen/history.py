"""The history: every operation's invocation and completion, one JSON object a line.

Line shape (Jepsen's history, flattened)::

    {"index": 17, "type": "invoke", "process": 3, "f": "send", "time": 12.034,
     "value": {"key": 1, "value": "3-41"}}
    {"index": 18, "type": "ok", "process": 3, "f": "send", "time": 12.051,
     "value": {"key": 1, "value": "3-41", "offset": 907}}

- ``type``: ``invoke``, then exactly one of ``ok`` (it happened), ``fail`` (it definitely
  did not happen) or ``info`` (unknown: it may or may not have happened). An invocation
  without a completion (its process was killed) counts as ``info``.
- ``process``: an int for a client process (a crashed consumer comes back as a new
  process number), ``"nemesis"`` for faults. A process has at most one operation open.
- ``time``: seconds since the run started (CLOCK_MONOTONIC, shared by every process of
  the machine, so histories written by several processes merge by time).
- ``f`` and ``value`` by operation:

  ==============  ================================================================
  ``send``        ``{"key": partition, "value": str}``; ok adds ``"offset"``
  ``poll``        ok: ``{"records": {partition: [[offset, value], ...]},
                  "assignment": [partition, ...]}`` (assignment after the poll)
  ``commit``      ``{"offsets": {partition: next offset}}``
  ``committed``   ok: ``{"offsets": {partition: next offset}}`` read from the group
  ``final-read``  ok: ``{"key": partition, "records": [[offset, value], ...]}``
  ``crash``       info: the harness killed this process (kill -9)
  ``start`` /     nemesis: ``{"fault": name, ...details}``; a fault window runs from
  ``stop``        its start to the stop with the same ``"id"``
  ``config``      harness (first event): ``{"consumers": n, "keys": n, ...}``, the run's
                  settings; the checker reads ``consumers`` (0: no polls expected)
  ``torn-line``   harness: a line that was cut short (a writer killed mid-line), see below
  ==============  ================================================================

A torn line (not JSON) is only possible as the last line of a file, whose writer was killed
while writing it; anywhere else a bad line is an error (ValueError naming it). Reading
keeps a torn last line as a ``torn-line`` event of process ``"harness"`` (``{"file",
"line", "process"}``, the process of the file's last whole event), which the checker counts
as a problem of the history: its last event may be lost. When the run merges the
per-process files, a torn line of a consumer the harness killed (a ``crash`` event) is
explained: the event gets ``"explained"`` and is no problem.

JSON object keys are strings; :func:`load` turns partition keys back into ints.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

OUTCOMES = ("ok", "fail", "info")


class HistoryWriter:
    """Appends events to a JSON-lines file, flushed per line (a killed writer loses at
    most the line it was writing). Thread-safe. ``t0`` is the run's monotonic start."""

    def __init__(self, path: Path, t0: float, index_base: int = 0) -> None:
        self.path = path
        self.t0 = t0
        self._file: TextIO = open(path, "a", buffering=1)
        self._lock = threading.Lock()
        self._index = index_base

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 6)

    def event(self, type_: str, process: int | str, f: str, value: Any = None,
              at: float | None = None) -> dict:
        with self._lock:
            line = {"index": self._index, "type": type_, "process": process, "f": f,
                    "time": self.now() if at is None else at, "value": value}
            self._index += 1
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        return line

    def invoke(self, process: int | str, f: str, value: Any = None) -> dict:
        return self.event("invoke", process, f, value)

    def complete(self, type_: str, process: int | str, f: str, value: Any = None) -> dict:
        if type_ not in OUTCOMES:
            raise ValueError(f"completion type must be one of {OUTCOMES}, got {type_!r}")
        return self.event(type_, process, f, value)

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass(slots=True)
class Op:
    """One operation: its invocation and completion paired."""

    process: int | str
    f: str
    type: str  # ok, fail, info
    invoke_time: float
    complete_time: float | None  # None: never completed (process crashed)
    value: Any  # the completion's value, else the invocation's
    index: int  # the invocation's index
    invoke_value: Any = None
    complete_index: int | None = None
    extra: dict = field(default_factory=dict)

    def brief(self) -> dict:
        """What a report shows of this op."""
        return {"index": self.index, "process": self.process, "f": self.f,
                "type": self.type, "invoke": self.invoke_time,
                "complete": self.complete_time, "value": self.value}


TORN_LINE = "torn-line"


def read_events(path: Path) -> list[dict]:
    """Events of one history file. A torn last line (writer killed mid-write) becomes a
    ``torn-line`` event (see the module docstring); any other bad line raises ValueError
    naming it."""
    events: list[dict] = []
    lines = Path(path).read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n != len(lines):
                raise ValueError(f"{path}:{n}: not a JSON object: {e}") from None
            last = events[-1] if events else {"index": -1, "time": 0.0, "process": None}
            events.append({"index": last["index"] + 1, "type": "info", "process": "harness",
                           "f": TORN_LINE, "time": last["time"],
                           "value": {"file": Path(path).name, "line": n,
                                     "process": last["process"], "text": line[:120]}})
    return events


def merge(paths: Iterable[Path], out: Path) -> list[dict]:
    """Merge per-process history files into one, ordered by time, renumbered. A torn
    last line of a process the harness killed is marked ``explained``."""
    events = [e for p in paths if Path(p).exists() for e in read_events(p)]
    killed = {e["process"] for e in events if e["f"] == "crash"}
    for e in events:
        if e["f"] == TORN_LINE and e["value"]["process"] in killed:
            e["value"]["explained"] = f"process {e['value']['process']} was killed (kill -9)"
    events.sort(key=lambda e: (e["time"], e["index"]))
    with open(out, "w") as fh:
        for i, e in enumerate(events):
            e["index"] = i
            fh.write(json.dumps(e, separators=(",", ":")) + "\n")
    return events


def _int_keys(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k
            out[key] = _int_keys(v)
        return out
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value


def pair(events: list[dict]) -> list[Op]:
    """Pair each invocation with its process's next completion. Completions without an
    invocation (nemesis events, crash markers) become ops of their own. Invocations left
    open become ``info`` with no completion time."""
    ops: list[Op] = []
    open_ops: dict[Any, Op] = {}
    for e in sorted(events, key=lambda e: e["index"]):
        proc = e["process"]
        value = _int_keys(e.get("value"))
        if e["type"] == "invoke":
            prior = open_ops.pop(proc, None)
            if prior is not None:  # a crashed process's op; processes are sequential
                ops.append(prior)
            open_ops[proc] = Op(proc, e["f"], "info", e["time"], None, value, e["index"],
                                invoke_value=value)
            continue
        op = open_ops.pop(proc, None)
        if op is not None and op.f == e["f"]:
            op.type = e["type"]
            op.complete_time = e["time"]
            op.complete_index = e["index"]
            if value is not None:
                op.value = value
            ops.append(op)
            continue
        if op is not None:
            ops.append(op)
        ops.append(Op(proc, e["f"], e["type"], e["time"], e["time"], value, e["index"],
                      complete_index=e["index"]))
    ops.extend(open_ops.values())
    ops.sort(key=lambda o: o.index)
    return ops


def load(path: Path) -> list[Op]:
    return pair(read_events(path))
