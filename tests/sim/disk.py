"""A simulated node's disk: the ``HostStorage`` the host driver writes through.

Each group's log is a ``MemoryStorage`` holding every *completed* write, synced or not:
that is what the node reads, as RocksDB serves an unsynced write to readers once it is
written. What survives a crash is less:

- ``write(items)`` (no sync; the driver uses it when only commit indexes moved) is done at
  once, but until a later sync completes a crash loses it: the disk keeps the image of
  what was durable before it and puts it back on ``crash()``;
- ``begin_sync(items)`` only records the write; the cluster schedules its completion after
  a simulated disk latency, and ``complete()`` then applies it, making it and every
  unsynced write before it durable. A crash before that loses it whole (one atomic batch,
  as RocksDB's WriteBatch), and the driver never hears of it.

``complete()`` reports every write that became durable, in order, with the hard state that
was durable before it, for the checker's mirror of durable logs; ``durable_hard_state()``
is what the checker compares outgoing messages with.
"""

from __future__ import annotations

from typing import Callable, Sequence

from raftka.raft import HardState, MemoryStorage
from raftka.raft.host import SaveItem

DurableWrite = tuple[int, HardState, SaveItem]  # (group id, durable hard state before, item)


class _Image:
    """What was durable of one group before its first unsynced write since the last sync:
    the hard state, and the log too if an unsynced write touched it (only a buggy driver
    writes entries without a sync)."""

    __slots__ = ("hard_state", "log")

    def __init__(self, store: MemoryStorage) -> None:
        self.hard_state = store.hard_state()
        self.log: tuple | None = None

    def keep_log(self, store: MemoryStorage) -> None:
        if self.log is None:
            self.log = (store._snapshot, list(store._entries), list(store._conf))

    def put_back(self, store: MemoryStorage) -> None:
        store._hard_state = self.hard_state
        if self.log is not None:
            store._snapshot, entries, conf = self.log
            store._entries, store._conf = list(entries), list(conf)


class SimDisk:
    """``HostStorage`` of one simulated node; survives its crashes."""

    __slots__ = ("stores", "_durable_hs", "_unsynced", "_unsynced_items", "_in_flight",
                 "token", "_on_begin", "_on_write")

    def __init__(self, on_begin: Callable[[int, list[SaveItem]], None],
                 on_write: Callable[[list[SaveItem]], None]) -> None:
        """``on_begin(token, items)``: a synced write began; call ``complete()`` when it is
        due if ``token`` is still current (a crash changes it). ``on_write(items)``: an
        unsynced write was done (for the trace)."""
        self.stores: dict[int, MemoryStorage] = {}
        self._durable_hs: dict[int, HardState] = {}
        self._unsynced: dict[int, _Image] = {}
        self._unsynced_items: list[SaveItem] = []
        self._in_flight: list[SaveItem] | None = None
        self.token = 0
        self._on_begin = on_begin
        self._on_write = on_write

    def add_group(self, group_id: int, store: MemoryStorage) -> None:
        self.stores[group_id] = store
        self._durable_hs[group_id] = store.hard_state()

    @property
    def syncing(self) -> bool:
        return self._in_flight is not None

    def durable_hard_state(self, group_id: int) -> HardState:
        return self._durable_hs[group_id]

    # -- HostStorage ---------------------------------------------------------------------
    def write(self, items: Sequence[SaveItem]) -> None:
        stores = self.stores
        for item in items:
            group_id, hard_state, entries, snapshot = item
            store = stores[group_id]
            image = self._unsynced.get(group_id)
            if image is None:
                image = self._unsynced[group_id] = _Image(store)
            if entries or (snapshot is not None and not snapshot.is_empty):
                image.keep_log(store)
            store.save(hard_state, entries, snapshot)
            self._unsynced_items.append(item)
        self._on_write(list(items))

    def begin_sync(self, items: Sequence[SaveItem]) -> None:
        if self._in_flight is not None:
            raise AssertionError("a synced write began while another was in flight")
        self._in_flight = list(items)
        self.token += 1
        self._on_begin(self.token, self._in_flight)

    # -- the simulated device ----------------------------------------------------------------
    def complete(self) -> list[DurableWrite]:
        """The synced write in flight reached the platter: apply it. Returns every write
        that became durable (earlier unsynced ones first), with the durable hard state
        before each."""
        items, self._in_flight = self._in_flight, None
        if items is None:
            raise AssertionError("complete() without a synced write in flight")
        stores = self.stores
        for group_id, hard_state, entries, snapshot in items:
            stores[group_id].save(hard_state, entries, snapshot)
        durable: list[DurableWrite] = []
        durable_hs = self._durable_hs
        for item in self._unsynced_items + items:
            group_id, hard_state = item[0], item[1]
            old = durable_hs[group_id]
            durable.append((group_id, old, item))
            if hard_state is not None:
                durable_hs[group_id] = hard_state
        self._unsynced.clear()
        self._unsynced_items = []
        return durable

    def crash(self) -> bool:
        """Lose what was not synced. Returns whether a synced write was in flight."""
        lost = self._in_flight is not None
        self._in_flight = None
        self.token += 1
        for group_id, image in self._unsynced.items():
            image.put_back(self.stores[group_id])
        self._unsynced.clear()
        self._unsynced_items = []
        return lost
