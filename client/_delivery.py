"""Delayed delivery on the client: a record's delivery time from ``deliver_at`` or ``delay``.

The producers (threaded and asyncio) turn either into one absolute time in ms since the
Unix epoch (``ProduceRequest.deliver_at_ms``), so the broker only compares it with its
clock; records with a delivery time travel in batches of their own (``_accumulator.py``
rule 6), idempotent like any batch, and never in a transaction.
"""

from __future__ import annotations

import datetime as _dt
import re
import time

__all__ = ["delivery_time_ms", "parse_delay"]

DeliverAt = _dt.datetime | int | float
Delay = _dt.timedelta | int | float


def delivery_time_ms(deliver_at: DeliverAt | None, delay: Delay | None,
                     now_s: float | None = None) -> int:
    """The delivery time in ms since the epoch, or 0 for "at once". ``deliver_at``: an
    aware ``datetime`` (a naive one is local time, as ``datetime.timestamp`` reads it) or
    epoch ms; ``delay``: seconds or a ``timedelta``. Raises ValueError (both given, a
    negative delay or time) or TypeError."""
    if deliver_at is not None and delay is not None:
        raise ValueError("give deliver_at or delay, not both")
    if delay is not None:
        if isinstance(delay, _dt.timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            seconds = float(delay)
        else:
            raise TypeError(f"delay must be seconds or a timedelta, not {type(delay).__name__}")
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"delay {delay!r} is negative; a record cannot be delivered "
                             "before it is sent")
        if seconds == 0:
            return 0
        now = time.time() if now_s is None else now_s
        return int((now + seconds) * 1000)
    if deliver_at is None:
        return 0
    if isinstance(deliver_at, _dt.datetime):
        ms = int(deliver_at.timestamp() * 1000)
    elif isinstance(deliver_at, (int, float)) and not isinstance(deliver_at, bool):
        ms = int(deliver_at)
    else:
        raise TypeError("deliver_at must be a datetime or epoch milliseconds, not "
                        f"{type(deliver_at).__name__}")
    if ms < 0:
        raise ValueError(f"deliver_at {deliver_at!r} is before 1970; give a datetime or "
                         "milliseconds since the Unix epoch")
    return ms


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_delay(text: str) -> float:
    """``30s``, ``500ms``, ``5m``, ``2h``, ``1d`` or plain seconds -> seconds (the CLI's
    ``--delay``). Raises ValueError."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"delay {text!r} is not a duration: use e.g. 30s, 500ms, 5m, 2h, "
                         "1d (negative delays are not allowed)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]

