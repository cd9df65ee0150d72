"""The replicated state machine each simulated replica applies committed entries to.

It is deliberately trivial -- an append-only list of the NORMAL entry payloads it applied,
each with its log index -- so that any disagreement between replicas is visible.

Snapshot data layout (no pickle), all integers big-endian::

    u32 count | count * (u64 index | u32 length | length bytes payload)

Empty payloads (a new leader's no-op entry) and CONF entries advance ``applied_index`` but
are not stored: the configuration lives in the snapshot's metadata, not in its data.
"""

from __future__ import annotations

import bisect
import struct

from raftka.raft import Entry, EntryKind, Snapshot

_COUNT = struct.Struct(">I")
_ITEM = struct.Struct(">QI")


class ListStateMachine:
    """applied_index: never decreases within one incarnation (the checker enforces it);
    entries: (index, payload) in strictly increasing index order."""

    __slots__ = ("applied_index", "entries", "_index_of")

    def __init__(self) -> None:
        self.applied_index = 0
        self.entries: list[tuple[int, bytes]] = []
        self._index_of: dict[bytes, int] = {}  # payload -> first index it was applied at

    def apply(self, entry: Entry) -> None:
        self.applied_index = entry.index
        if entry.kind == EntryKind.NORMAL and entry.data:
            self.entries.append((entry.index, entry.data))
            self._index_of.setdefault(entry.data, entry.index)

    def payloads(self) -> list[bytes]:
        return [data for _, data in self.entries]

    def index_of(self, payload: bytes) -> int | None:
        return self._index_of.get(payload)

    def snapshot_data(self, upto: int | None = None) -> bytes:
        """The encoded state as of index ``upto`` (default: everything applied)."""
        entries = self.entries
        if upto is not None and entries and entries[-1][0] > upto:
            entries = entries[: bisect.bisect_right(entries, upto, key=_index_of_item)]
        parts = [_COUNT.pack(len(entries))]
        for index, data in entries:
            parts.append(_ITEM.pack(index, len(data)))
            parts.append(data)
        return b"".join(parts)

    @classmethod
    def restore(cls, snapshot: Snapshot) -> ListStateMachine:
        """The state machine as of ``snapshot`` (an empty one for the empty snapshot)."""
        sm = cls()
        sm.applied_index = snapshot.meta.index
        sm.entries = decode_entries(snapshot.data)
        for index, data in sm.entries:
            sm._index_of.setdefault(data, index)
        return sm


def _index_of_item(item: tuple[int, bytes]) -> int:
    return item[0]


def decode_entries(data: bytes) -> list[tuple[int, bytes]]:
    if not data:
        return []
    (count,) = _COUNT.unpack_from(data, 0)
    pos = _COUNT.size
    entries: list[tuple[int, bytes]] = []
    for _ in range(count):
        index, length = _ITEM.unpack_from(data, pos)
        pos += _ITEM.size
        entries.append((index, data[pos : pos + length]))
        pos += length
    if pos != len(data):
        raise ValueError(f"state machine snapshot has {len(data) - pos} trailing bytes")
    return entries
