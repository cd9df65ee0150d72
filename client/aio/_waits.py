"""Waiting with a timeout without losing a cancellation.

``asyncio.wait_for`` on Python 3.11 can swallow the cancellation of the task awaiting it
when the awaited event is set in the same loop iteration (CPython gh-86296, fixed in 3.12
by rebuilding it on ``asyncio.timeout``): a cancelled ``poll`` then went on polling, and an
application whose shutdown cancels its consumer task hung (the asyncio example did, once,
in a clean-clone run). ``asyncio.timeout`` tells its own cancellation from the caller's.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable

__all__ = ["wait_event", "wait_until"]


async def wait_until(awaitable: Awaitable[object], timeout: float | None) -> bool:
    """Await ``awaitable`` for at most ``timeout`` seconds (None: no limit); whether it
    finished in time. A cancellation of the caller always propagates."""
    try:
        async with asyncio.timeout(timeout):
            await awaitable
    except TimeoutError:
        return False
    return True


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """``event.wait()`` for at most ``timeout`` seconds; whether it was set."""
    return await wait_until(event.wait(), timeout)
