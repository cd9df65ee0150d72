"""Waiting with a timeout without losing a cancellation.

``asyncio.wait_for`` on Python 3.11 can swallow the cancellation of the task awaiting it
when the awaited event is set in the same loop iteration (CPython gh-86296, fixed in 3.12
by rebuilding it on ``asyncio.timeout``): a cancelled ``poll`` then went on polling, and an
application whose shutdown cancels its consumer task hung (the asyncio example did, once,
in a clean-clone run). ``asyncio.timeout`` tells its own cancellation from the caller's.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")

__all__ = ["cancellation_kept", "wait_event", "wait_until"]


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


async def cancellation_kept(awaitable: Awaitable[T]) -> T:
    """``await awaitable``, raising CancelledError if the calling task was cancelled while
    it waited, even when the awaitable swallowed that cancellation and finished. A grpc.aio
    call does: awaiting it awaits an inner task that catches CancelledError, and when the
    answer arrives in the same iteration as the cancel, it returns the answer (or a
    CANCELLED/other RpcError) and the caller's cancellation is gone (a cancelled consumer
    task went on polling; the asyncio example's Ctrl-C hung in CI). Task.cancel() counts
    every request in ``cancelling()`` before handing it to the awaited task, so a count
    that grew while nothing raised is a lost cancellation."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        result = await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError() from None  # the error is the lost cancel's echo
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError()
    return result
