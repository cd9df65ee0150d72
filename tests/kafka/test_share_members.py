"""The Kafka listener's table of share-group members (node/_kafka/_share.py MemberTable):
bounded, and full it forgets only the member heard from least recently (a full table used
to be dropped whole, making every member of every group rejoin at once)."""

from __future__ import annotations

from raftka.node._kafka._share import MemberTable


def test_a_full_table_forgets_the_member_heard_from_least_recently():
    table = MemberTable(limit=3)
    for member in ("a", "b", "c"):
        table.put(("g", member), ([member], (), 1))
    table.put(("g", "a"), (["a"], (), 2))  # a heartbeats again: now the most recent
    table.put(("g", "d"), (["d"], (), 1))  # over the limit: b goes, nobody else
    assert len(table) == 3
    assert table.get(("g", "b")) is None
    assert table.get(("g", "a")) == (["a"], (), 2)
    assert table.get(("g", "c")) is not None and table.get(("g", "d")) is not None


def test_a_member_that_leaves_is_removed_and_removing_an_unknown_one_is_harmless():
    table = MemberTable(limit=2)
    table.put(("g", "a"), ([], (), 1))
    table.pop(("g", "a"))
    table.pop(("g", "never"))
    assert len(table) == 0 and table.get(("g", "a")) is None
