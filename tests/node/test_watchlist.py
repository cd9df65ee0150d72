"""The node's watch lists (``_watchlist.py``): listing once, unlisting with re-arming, and
discarding a stopped replica without touching its successor."""

from __future__ import annotations

from types import SimpleNamespace

from raftka.node._watchlist import Listing, ReplicaWatchlist


def _replica(topic: str = "t", partition: int = 0) -> SimpleNamespace:
    replica = SimpleNamespace(topic=topic, partition=partition, qualifies=True)
    replica.listing = Listing(replica)
    return replica


def _listed(watchlist: ReplicaWatchlist) -> list:
    return list(watchlist.visit())


def test_a_replica_lists_itself_once_and_again_after_a_visit_unlisted_it() -> None:
    watchlist: ReplicaWatchlist = ReplicaWatchlist()
    a, b = _replica("t", 0), _replica("t", 1)
    a.listing.note()  # not wired to a list yet (a unit test's replica): nothing happens
    assert not a.listing.listed
    for replica in (a, b):
        replica.listing.watchlist = watchlist
        replica.listing.note()
        replica.listing.note()
    assert _listed(watchlist) == [a, b]
    b.qualifies = False
    assert list(watchlist.visit(lambda r: r.qualifies)) == [a]
    assert _listed(watchlist) == [a] and not b.listing.listed and a.listing.listed
    b.qualifies = True
    b.listing.note()  # re-armed: lists itself again
    assert _listed(watchlist) == [a, b]


def test_discarding_a_stopped_replica_spares_its_successor_and_does_not_re_arm() -> None:
    watchlist: ReplicaWatchlist = ReplicaWatchlist()
    old, new = _replica(), _replica()
    old.listing.watchlist = new.listing.watchlist = watchlist
    old.listing.note()
    new.listing.note()  # started again at the same topic and partition
    watchlist.discard(old)
    assert _listed(watchlist) == [new]
    watchlist.discard(new)
    assert _listed(watchlist) == []
    new.listing.note()  # a stopped replica never lists itself again
    assert _listed(watchlist) == []


def test_a_visit_tolerates_changes_between_replicas() -> None:
    """Retention awaits between replicas: meanwhile one may be stopped and another
    started at its place, which a later unlisting must leave listed."""
    watchlist: ReplicaWatchlist = ReplicaWatchlist()
    a, b = _replica("t", 0), _replica("t", 1)
    for replica in (a, b):
        replica.listing.watchlist = watchlist
        replica.listing.note()
    b.qualifies = False
    successor = _replica("t", 1)
    successor.listing.watchlist = watchlist
    visit = watchlist.visit(lambda r: r.qualifies)
    assert next(visit) is a
    watchlist.discard(b)
    successor.listing.note()
    assert list(visit) == []  # b is gone: not unlisted from under its successor
    assert _listed(watchlist) == [a, successor] and successor.listing.listed
