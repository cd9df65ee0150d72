"""A share group's dead letters: list, show and replay the records of its dead-letter topic
(``raftka dlq list|show|replay GROUP``).

A dead-lettered record keeps its key, value and headers and carries ``raftka.dlq.*``
headers naming its source topic, partition and offset, the group, its delivery count, the
reason and the member's last error text (node/README.md, "Share groups").

Replay sends a dead letter back to its source topic (same key, value and original
headers, plus ``raftka.dlq.replayed-from`` = ``<dead-letter topic>/<partition>/<offset>``),
acks=all, and then marks it replayed by appending a *marker* to the dead-letter partition:
a record without value whose header ``raftka.dlq.replayed`` names the offset it marks.
Listing skips markers and, unless asked, the records they mark. Replay is at-least-once:
a crash between the two writes leaves the record unmarked, and replaying it again sends
it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

from raftka.client._security import ClientSecurity
from raftka.client._producer import Producer
from raftka.client._reader import TopicReader
from raftka.client._share import describe_share_group

__all__ = ["DeadLetter", "list_dead_letters", "replay_dead_letters"]

PREFIX = "raftka.dlq."
REPLAYED = PREFIX + "replayed"
REPLAYED_FROM = PREFIX + "replayed-from"


class DeadLetter(NamedTuple):
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int
    source_offset: int
    group: str
    delivery_count: int
    reason: str  # "rejected" or "attempts exhausted"
    error: str  # the member's last error text
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]  # the original headers
    timestamp_ms: int
    replayed: bool


def _text(headers: dict, name: str) -> str:
    value = headers.get(PREFIX + name)
    return value.decode("utf-8", "replace") if value else ""


def _int(headers: dict, name: str) -> int:
    try:
        return int(_text(headers, name))
    except ValueError:
        return -1


def dead_letter_topic(bootstrap: str | Iterable[str], group_id: str,
                      timeout_s: float = 30.0, security: ClientSecurity | None = None) -> str:
    return describe_share_group(bootstrap, group_id, timeout_s,
                                security=security).dead_letter_topic


def list_dead_letters(bootstrap: str | Iterable[str], group_id: str, *,
                      include_replayed: bool = False,
                      timeout_s: float = 30.0,
                      security: ClientSecurity | None = None) -> list[DeadLetter]:
    """Every dead letter of the group, in (partition, offset) order (read from the start
    of its dead-letter topic to its end); replayed ones only with ``include_replayed``.
    Raises UnknownGroupError, UnknownTopicError (nothing was dead-lettered yet: the topic
    is created on first use), RaftkaError."""
    topic = dead_letter_topic(bootstrap, group_id, timeout_s, security)
    records = []
    deadline = time.monotonic() + timeout_s
    with TopicReader(bootstrap, topic, offset="earliest",
                     metadata_timeout=min(timeout_s, 5.0), security=security) as reader:
        while time.monotonic() < deadline:
            batch = reader.poll(0.2)
            records.extend(batch)
            if not batch and reader.at_end:
                break
    replayed: set[tuple[int, int]] = set()
    letters = []
    for r in records:
        headers = dict(r.headers)
        marks = headers.get(REPLAYED)
        if marks is not None:
            try:
                replayed.add((r.partition, int(marks)))
            except ValueError:
                pass
            continue
        letters.append(r)
    out = []
    for r in sorted(letters, key=lambda r: (r.partition, r.offset)):
        headers = dict(r.headers)
        done = (r.partition, r.offset) in replayed
        if done and not include_replayed:
            continue
        out.append(DeadLetter(
            topic, r.partition, r.offset, _text(headers, "topic"), _int(headers, "partition"),
            _int(headers, "offset"), _text(headers, "group"), _int(headers, "delivery.count"),
            _text(headers, "reason"), _text(headers, "error"), r.key, r.value,
            tuple((k, v) for k, v in r.headers if not k.startswith(PREFIX)),
            r.timestamp_ms, done))
    return out


def replay_dead_letters(bootstrap: str | Iterable[str], letters: Iterable[DeadLetter],
                        timeout_s: float = 30.0, security: ClientSecurity | None = None
                        ) -> list[tuple[DeadLetter, int, int]]:
    """Send each dead letter back to its source topic and partition, then mark it
    replayed (see the module docstring); returns ``(letter, partition, offset)`` of
    each new copy. Raises RaftkaError (the letters before the failing one are done)."""
    done = []
    with Producer(bootstrap, delivery_timeout_ms=int(timeout_s * 1000),
                  security=security) as producer:
        for letter in letters:
            if letter.replayed:
                continue
            headers = list(letter.headers) + [
                (REPLAYED_FROM, f"{letter.dlq_topic}/{letter.dlq_partition}/"
                                f"{letter.dlq_offset}".encode())]
            partition, offset = producer.send(
                letter.source_topic, letter.value, key=letter.key, headers=headers,
                partition=letter.source_partition).result(timeout=timeout_s)
            producer.send(letter.dlq_topic, None, key=letter.key,
                          headers=[(REPLAYED, str(letter.dlq_offset).encode())],
                          partition=letter.dlq_partition).result(timeout=timeout_s)
            done.append((letter, partition, offset))
    return done
