"""Parsing of the console's form fields and rendering of record bytes (text, JSON, hex).

Every parser raises :class:`FormError` (an HTTP 400 page) with a message naming the field;
nothing here talks to the cluster.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

__all__ = [
    "DISPLAY_BYTES_MAX",
    "FORMATS",
    "FormError",
    "parse_configs",
    "parse_headers",
    "parse_int",
    "parse_partitions",
    "parse_timestamp_ms",
    "render_bytes",
]

FORMATS = ("text", "json", "hex")
DISPLAY_BYTES_MAX = 16 * 1024  # a value longer than this is shown cut, with its length


class FormError(ValueError):
    """Malformed form input: the console answers 400 with this message."""


def parse_int(value: str | None, field: str, *, minimum: int | None = None,
              maximum: int | None = None, default: int | None = None) -> int:
    text = (value or "").strip()
    if not text:
        if default is None:
            raise FormError(f"{field} is required")
        return default
    try:
        number = int(text, 10)
    except ValueError:
        raise FormError(f"{field} must be a whole number, got {text[:100]!r}") from None
    if minimum is not None and number < minimum:
        raise FormError(f"{field} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise FormError(f"{field} must be at most {maximum}, got {number}")
    return number


def parse_timestamp_ms(value: str, field: str = "timestamp") -> int:
    """Milliseconds since the epoch, or an ISO-8601 date-time (no zone: UTC), as a browser's
    ``datetime-local`` input sends it (``2026-01-31T12:00`` or with seconds)."""
    text = value.strip()
    if re.fullmatch(r"\d{1,16}", text):
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FormError(f"{field} must be milliseconds since the epoch or a date-time like "
                        f"2026-01-31T12:00:00 (UTC), got {text[:100]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        raise FormError(f"{field} must not be before 1970, got {text[:100]!r}")
    return ms


def parse_configs(text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines ignored) -> dict."""
    configs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise FormError(f"configs line {number} must be key=value, got {line[:100]!r}")
        configs[key.strip()] = value.strip()
    return configs


def parse_headers(text: str) -> list[tuple[str, bytes]]:
    """``name: value`` lines (blank lines ignored) -> headers, values as UTF-8."""
    headers: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise FormError(f"headers line {number} must be name: value, got {line[:100]!r}")
        headers.append((name.strip(), value.strip().encode()))
    return headers


def parse_partitions(text: str, field: str = "partitions") -> list[int]:
    """``0, 2, 5`` -> [0, 2, 5] (empty: [])."""
    out: list[int] = []
    for part in re.split(r"[\s,]+", text.strip()):
        if part:
            out.append(parse_int(part, field, minimum=0))
    return sorted(set(out))


def render_bytes(data: bytes | None, fmt: str) -> dict[str, Any]:
    """How a key, value or header value is shown: ``{"text": str, "note": str, "kind":
    "null"|"text"|"json"|"hex"}``. ``json`` falls back to text (with a note) when the bytes
    are not JSON, ``text`` to hex when they are not UTF-8."""
    if data is None:
        return {"kind": "null", "text": "null", "note": ""}
    note = ""
    shown = data
    if len(data) > DISPLAY_BYTES_MAX:
        shown = data[:DISPLAY_BYTES_MAX]
        note = f"first {DISPLAY_BYTES_MAX} of {len(data)} bytes"
    if fmt == "hex":
        return {"kind": "hex", "text": _hexdump(shown), "note": note}
    try:
        text = shown.decode("utf-8")
    except UnicodeDecodeError:
        if note:  # a cut may split a character: decode what is whole
            text = shown.decode("utf-8", errors="ignore")
        else:
            return {"kind": "hex", "text": _hexdump(shown), "note": "not UTF-8: shown as hex"}
    if fmt == "json":
        try:
            pretty = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            return {"kind": "text", "text": text, "note": _join(note, "not JSON: shown as text")}
        return {"kind": "json", "text": pretty[:DISPLAY_BYTES_MAX * 4], "note": ""}
    return {"kind": "text", "text": text, "note": note}


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _hexdump(data: bytes) -> str:
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start:start + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines) or "(empty)"
