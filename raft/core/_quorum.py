"""Majority quorum arithmetic over one voter set (one-server-at-a-time membership).

Every function is pure. An empty voter set never wins and commits nothing.
"""

from __future__ import annotations

import enum
from typing import Iterable, Mapping


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(voter_count: int) -> int:
    return voter_count // 2 + 1


def committed_index(voters: Iterable[int], match: Mapping[int, int]) -> int:
    """The highest index durable on a majority of ``voters`` (0 if there are none)."""
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not indexes:
        return 0
    return indexes[majority(len(indexes)) - 1]


def vote_result(voters: frozenset[int], votes: Mapping[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.LOST
    granted = rejected = 0
    for v in voters:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: frozenset[int], active: Iterable[int]) -> bool:
    if not voters:
        return False
    return len(voters.intersection(active)) >= majority(len(voters))
