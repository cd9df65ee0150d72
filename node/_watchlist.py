"""Watch lists: the replicas a periodic pass visits, so that it does not walk every partition.

An idle node with thousands of replicas must not visit them all several times a second
(node/README.md, "Quiescence"). A pass that concerns only some replicas (share-group
maintenance, retention, transaction expiry and the settle pass) visits its own
``ReplicaWatchlist`` instead, and each replica holds one ``Listing`` per list:

- The replica lists itself when it starts to qualify (``Listing.note``, called on the
  apply path: after the first time it is a flag test, never a dict write per entry).
- A visit hands over the listed replicas that still qualify and unlists the others,
  re-arming their listing so that they list themselves again when they next qualify.
- The broker discards a replica it stops. Its listing stays set: a stopped replica never
  lists itself again. Discarding, like unlisting, checks identity, so a replica started
  since at the same topic and partition keeps its own place.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, Protocol, TypeVar


class _Replica(Protocol):
    topic: str
    partition: int


R = TypeVar("R", bound=_Replica)


class Listing(Generic[R]):
    """One replica's place on one watch list, seen from the replica."""

    __slots__ = ("replica", "watchlist", "listed")

    def __init__(self, replica: R) -> None:
        self.replica = replica
        # set by the broker when it starts the replica (none in unit tests: nothing listed)
        self.watchlist: ReplicaWatchlist[R] | None = None
        self.listed = False

    def note(self) -> None:
        """The replica qualifies: list it, unless it is listed already."""
        if not self.listed and self.watchlist is not None:
            self.listed = True
            self.watchlist.add(self)


class ReplicaWatchlist(Generic[R]):
    """The replicas listed for one periodic pass, by (topic, partition)."""

    def __init__(self) -> None:
        self._listings: dict[tuple[str, int], Listing[R]] = {}

    def add(self, listing: Listing[R]) -> None:
        """List ``listing``'s replica (``Listing.note`` calls this). Its listing may come
        before the replica is among the broker's partitions (a snapshot restored while it
        starts)."""
        replica = listing.replica
        self._listings[(replica.topic, replica.partition)] = listing

    def discard(self, replica: R) -> None:
        """Forget a stopped replica."""
        key = (replica.topic, replica.partition)
        listing = self._listings.get(key)
        if listing is not None and listing.replica is replica:
            del self._listings[key]

    def visit(self, qualifies: Callable[[R], bool] | None = None) -> Iterator[R]:
        """The listed replicas for which ``qualifies`` holds (all when None); the others
        are unlisted and their listings re-armed. It walks a copy, so the caller may await
        between replicas while others are listed or discarded."""
        for key, listing in list(self._listings.items()):
            replica = listing.replica
            if qualifies is None or qualifies(replica):
                yield replica
            elif self._listings.get(key) is listing:
                del self._listings[key]
                listing.listed = False
