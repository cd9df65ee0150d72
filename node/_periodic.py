"""Background passes of a node: a step run every few seconds for the node's whole life.

A failed pass is logged and the next one retries: background work (maintenance, moves,
balancing, transaction recovery) must never stop the node."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Awaitable, Callable


async def every(interval_s: float, step: Callable[[], Awaitable[None] | None], what: str,
                log: logging.Logger) -> None:
    """Run ``step`` (plain or coroutine function) every ``interval_s`` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - must never stop the node
            log.exception("%s failed; will retry", what)
