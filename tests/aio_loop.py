"""Run a coroutine under asyncio's debug mode and fail if any callback held the loop.

asyncio's debug mode logs "Executing <callback> took N seconds" (logger ``asyncio``,
WARNING) for every callback or task step longer than ``loop.slow_callback_duration``.
:func:`run_unblocked` sets that to ``SLOW_CALLBACK_S`` and raises if such a line was
logged: the test fails when the client blocks the event loop (a blocking gRPC call, a
``time.sleep``, a lock wait). Checked to work by tests/client/test_aio_units.py, which
blocks on purpose and expects the failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Long enough that a loaded 2-core machine does not trip it with scheduling noise
# (callbacks of the client take well under a millisecond), short enough that any
# blocking network call or sleep does.
SLOW_CALLBACK_S = 0.1


class LoopBlocked(AssertionError):
    pass


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.slow: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.slow.append(message)


def run_unblocked(main: Callable[[], Awaitable[T]],
                  slow_callback_s: float = SLOW_CALLBACK_S) -> T:
    """``asyncio.run(main())`` in debug mode; raises :class:`LoopBlocked` listing every
    callback that ran longer than ``slow_callback_s``."""
    capture = _Capture()
    logger = logging.getLogger("asyncio")
    logger.addHandler(capture)

    async def wrapped() -> Any:
        asyncio.get_running_loop().slow_callback_duration = slow_callback_s
        return await main()

    try:
        result = asyncio.run(wrapped(), debug=True)
    finally:
        logger.removeHandler(capture)
    if capture.slow:
        raise LoopBlocked("the event loop was blocked:\n" + "\n".join(capture.slow))
    return result
