"""The controller's canonical JSON: the one encoding of its commands and its snapshots.

Writing (``canonical_json``): keys sorted, no whitespace, ASCII only (other characters as
``\\uXXXX`` escapes), no NaN or infinities. Equal values give equal bytes on every node,
which the controller's determinism rules rely on (``_controller_state.py``).

Reading (``strict_json``): UTF-8, and stricter than ``json.loads``: a duplicate key in an
object, a float (``1.0``, ``1e3``) or a NaN/Infinity constant raises ``StrictJsonError``, as
do malformed JSON, invalid UTF-8 and nesting deep enough to exhaust the recursion limit
(``DisallowedJson``, a subclass, for JSON that parses but uses what is not allowed). The
callers turn it into their own error (an ``INVALID_REQUEST`` command result, a
``ValueError`` for a snapshot).
"""

from __future__ import annotations

import json
from typing import Any


class StrictJsonError(ValueError):
    """The bytes are not strict JSON (the message says why)."""


class DisallowedJson(StrictJsonError):
    """Well-formed JSON with a duplicate key, a float or a NaN/Infinity constant."""


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of ``value`` (dicts, lists, str, int, bool, None)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def strict_json(data: bytes | bytearray | memoryview) -> Any:
    """The value ``data`` encodes; raises StrictJsonError if it is not strict JSON."""
    try:
        return json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
        )
    except StrictJsonError:
        raise
    except (ValueError, RecursionError, TypeError) as error:  # bad UTF-8, JSONDecodeError
        raise StrictJsonError(str(error)) from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DisallowedJson(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_float(text: str) -> Any:
    raise DisallowedJson(f"floats are not allowed (got {text})")


def _reject_constant(text: str) -> Any:
    raise DisallowedJson(f"{text} is not allowed")
