"""Numbers for people: byte sizes as the CLI and the web console show them."""

from __future__ import annotations

__all__ = ["human_bytes"]

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB" (powers of 1024, as ``du -h``); below 1 KiB in bytes: "512 B"."""
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
