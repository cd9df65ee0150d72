"""The topic configs a node knows: names, defaults, allowed values, docs. The one place.

A topic stores only the configs set on it (``TopicMeta.configs``: normalized values, no
defaults); a config not set there has the default below (``effective_configs``). This is
Kafka's model: DescribeConfigs reports a config's source as the topic (set on it) or the
default, and IncrementalAlterConfigs' DELETE makes a config fall back to its default.

Values are strings on the wire and in the controller log; ``normalize_configs`` turns each
into its canonical form (integers without leading zeros, ``cleanup.policy`` as a sorted
list, ratios as Python's shortest float repr), so that equal settings are equal bytes on
every node. Everything here is a pure function of its arguments (the controller's
determinism rules, ``_controller_state.py``).
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

INT64_MAX: Final = 2**63 - 1

_INTEGER = re.compile(r"-?[0-9]{1,19}")
_DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?|\.[0-9]{1,20}")
_CLEANUP_POLICIES: Final = ("compact", "delete")


class ConfigSpec(NamedTuple):
    default: str  # normalized
    allowed: str  # what a value may be, as the error message says it
    doc: str
    normalize: Callable[[str], str | None]  # the canonical value, or None if not allowed


def _integer(minimum: int, maximum: int) -> tuple[str, Callable[[str], str | None]]:
    def normalize(value: str) -> str | None:
        if not _INTEGER.fullmatch(value):
            return None
        number = int(value)
        return str(number) if minimum <= number <= maximum else None
    return f"an integer from {minimum} to {maximum}", normalize


def _ratio(value: str) -> str | None:
    if not _DECIMAL.fullmatch(value):
        return None
    number = float(value)
    return repr(number) if math.isfinite(number) and 0.0 <= number <= 1.0 else None


def _cleanup_policy(value: str) -> str | None:
    parts = [p.strip() for p in value.split(",")]
    if not parts or any(p not in _CLEANUP_POLICIES for p in parts):
        return None
    return ",".join(sorted(set(parts)))


def _boolean(value: str) -> str | None:
    lowered = value.strip().lower()
    return lowered if lowered in ("true", "false") else None


def _spec(default: str, rule: tuple[str, Callable[[str], str | None]], doc: str) -> ConfigSpec:
    allowed, normalize = rule
    if normalize(default) != default:
        raise ValueError(f"default {default!r} is not normalized")  # a bug in this table
    return ConfigSpec(default, allowed, doc, normalize)


TOPIC_CONFIGS: Final[Mapping[str, ConfigSpec]] = types.MappingProxyType({
    "cleanup.policy": _spec(
        "delete",
        ("delete, compact or compact,delete", _cleanup_policy),
        "delete: drop old segments by retention.ms/retention.bytes; compact: keep at least "
        "the latest record of every key; compact,delete: both"),
    "delete.retention.ms": _spec(
        "86400000", _integer(0, INT64_MAX),
        "how long compaction keeps a tombstone (a record with a null value), in ms"),
    "max.delivery.delay.ms": _spec(
        "604800000", _integer(0, INT64_MAX),
        "the furthest ahead a producer may set a record's delivery time (delayed "
        "delivery), in ms (default 7 days); 0: no delayed records"),
    "max.message.bytes": _spec(
        "1048576", _integer(1, 64 * 1024 * 1024),
        "the largest record batch the topic accepts, in bytes"),
    "min.cleanable.dirty.ratio": _spec(
        "0.5", ("a number from 0 to 1", _ratio),
        "compaction starts once this share of the log (by bytes) is not yet compacted"),
    "min.compaction.lag.ms": _spec(
        "0", _integer(0, INT64_MAX),
        "a record stays uncompacted at least this long after it was appended, in ms"),
    "retention.bytes": _spec(
        "-1", _integer(-1, INT64_MAX),
        "delete the oldest records once a partition holds more bytes than this; -1: no limit"),
    "retention.share.groups": _spec(
        "false", ("true or false", _boolean),
        "true: a queue topic; records that every share group reading the topic has "
        "finished (accepted or dead-lettered) are deleted, on top of retention.ms and "
        "retention.bytes; records of a partition no share group has read yet are kept"),
    "retention.ms": _spec(
        "604800000", _integer(-1, INT64_MAX),
        "delete records older than this, in ms (default 7 days); -1: no time limit"),
})
"""Every topic config a node knows, by name."""

DEFAULT_CONFIGS: Final[Mapping[str, str]] = types.MappingProxyType(
    {name: spec.default for name, spec in sorted(TOPIC_CONFIGS.items())})


def config_error(name: str, value: str) -> tuple[str | None, str]:
    """``(normalized value, "")``, or ``(None, reason)`` naming the config and what it allows."""
    spec = TOPIC_CONFIGS.get(name)
    if spec is None:
        return None, unknown_config(name)
    normalized = spec.normalize(value)
    if normalized is None:
        return None, f"invalid value {value[:100]!r} for {name!r}: must be {spec.allowed}"
    return normalized, ""


def unknown_config(name: str) -> str:
    return (f"unknown topic config {name[:100]!r}; known configs: "
            f"{', '.join(sorted(TOPIC_CONFIGS))}")


def normalize_configs(configs: Mapping[str, str]) -> tuple[dict[str, str] | None, str]:
    """The configs set on a topic, normalized (no defaults filled).

    Returns ``(configs, "")``, or ``(None, reason)`` naming the bad key and what it allows.
    Keys are checked in sorted order so the reported key is the same on every node.
    """
    result: dict[str, str] = {}
    for key in sorted(configs):
        normalized, reason = config_error(key, configs[key])
        if normalized is None:
            return None, reason
        result[key] = normalized
    return result, ""


def effective_configs(configs: Mapping[str, str]) -> dict[str, str]:
    """Every known config: the ones set (``configs``, normalized), defaults for the rest."""
    return {name: configs.get(name, default) for name, default in DEFAULT_CONFIGS.items()}


__all__ = [
    "ConfigSpec",
    "DEFAULT_CONFIGS",
    "TOPIC_CONFIGS",
    "config_error",
    "effective_configs",
    "normalize_configs",
    "unknown_config",
]
