"""Messages exchanged between replicas of one Raft group.

One flat message type (as in etcd's ``raftpb.Message``) so that a transport can encode any
of them with one schema. Which fields mean what, per type:

=================  ===============================================================
type               fields used
=================  ===============================================================
PRE_VOTE / VOTE    term (the term campaigned for), log_term/index (candidate's last
                   entry), context (``CAMPAIGN_TRANSFER`` when forced by TimeoutNow)
*_VOTE_RESP        term, reject
APP                term, log_term/index (entry preceding ``entries``), entries, commit
APP_RESP           term, index (last index now matching, or the rejected index),
                   reject, reject_hint (follower's guess of its match),
                   log_term (term at reject_hint, for the conflict-term skip)
HEARTBEAT          term, commit (min of follower's match and leader's commit), context
HEARTBEAT_RESP     term, context (echoed; used by ReadIndex); reject + reject_hint (our last
                   index) when our log ends below what the leader knows we held
                   (store lost; `_raft` rule 12)
SNAP               term, snapshot
TIMEOUT_NOW        term
READ_INDEX         context (forwarded from a follower to the leader)
READ_INDEX_RESP    index (the read index), context
TRANSFER_LEADER    index (the node id that should become leader; forwarded to leader)
QUIESCE            term, index/log_term (leader's last entry), commit; no answer when
                   the follower's log holds that entry, else a HEARTBEAT_RESP
=================  ===============================================================

QUIESCE (see ``raft._raft``, "Quiescence") is a heartbeat that also says: every replica
holds my whole log and I will stop heartbeating until something happens; stop your
election timer too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ._types import Entry, Snapshot

CAMPAIGN_TRANSFER = b"transfer"


class MsgType(enum.IntEnum):
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APP = 5
    APP_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11
    READ_INDEX_RESP = 12
    TRANSFER_LEADER = 13
    QUIESCE = 14


@dataclass(slots=True)
class Message:
    type: MsgType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""

    def __repr__(self) -> str:  # compact, for failing-seed traces
        extra = f" entries={len(self.entries)}" if self.entries else ""
        if self.snapshot is not None:
            extra += f" snap@{self.snapshot.meta.index}"
        return (
            f"<{self.type.name} {self.frm}->{self.to} t{self.term} lt{self.log_term} "
            f"i{self.index} c{self.commit}{' REJ' if self.reject else ''} "
            f"hint{self.reject_hint}{extra}>"
        )

