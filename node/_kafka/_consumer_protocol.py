"""KIP-848's consumer group protocol (ConsumerGroupHeartbeat) for Kafka clients: the very
groups our gRPC consumers use, so a Kafka consumer with ``group.protocol=consumer`` and our
own consumers can be members of one group (the broker assigns; ``_coordinator.py``).

Mapping, request by request, onto ``GroupCoordinatorService.Heartbeat``:

1. The coordinator chooses member ids, as in version 0; a version 1 client's own id is
   not kept: the answer names the id the coordinator chose, which clients adopt.
2. Member epoch 0 joins (a member that rejoins under an id the group still has leaves
   first); -1 (and -2, a static member's leave: static membership is not supported)
   leaves.
3. Topic ids: the assignment names topics by id (the topic's id in our metadata, which
   Metadata v10+ reports); owned partitions sent by id are translated back to names.
4. Acknowledgement: in our groups a heartbeat carrying the member's current epoch
   acknowledges the assignment sent with that epoch, revocations included (rule 3). A
   Kafka client reports what it still owns in ``topic_partitions`` (null: unchanged since
   its last heartbeat), so a heartbeat whose owned partitions are not all in the current
   assignment is passed on with the previous epoch: it acknowledges nothing until the
   client has let go of the revoked partitions.
5. ``server_assignor`` "uniform" is our "sticky"; "range" is ours; any other is refused by
   the group (INVALID_REQUEST); null keeps the group's.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode as K

from raftka.v1 import group_pb2

from .._broker import Broker
from .._errors import BrokerError
from .._group_service import GroupCoordinatorService
from ._errors import kafka_code

_ASSIGNORS = {"uniform": "sticky", "range": "range"}
OWNED_MEMBERS_MAX = 100_000


class ConsumerProtocol:
    def __init__(self, broker: Broker, groups: GroupCoordinatorService) -> None:
        self.broker = broker
        self.groups = groups
        self._owned: dict[tuple[str, str], frozenset[tuple[str, int]]] = {}  # rule 4

    async def heartbeat(self, request, version, ctx, header) -> dict:
        state = self.broker.controller.state
        key = (request.group_id, request.member_id)
        owned = None
        if request.topic_partitions is not None:
            names = {uuid.UUID(t.topic_id): t.name for t in state.topics_sorted()}
            owned = frozenset((names[tp.topic_id], p) for tp in request.topic_partitions
                              if tp.topic_id in names for p in tp.partitions)
            if request.member_id:
                if len(self._owned) >= OWNED_MEMBERS_MAX:
                    self._owned.clear()  # bounded; a member re-sends it on a full heartbeat
                self._owned[key] = owned
        elif request.member_id:
            owned = self._owned.get(key)
        epoch = request.member_epoch
        if epoch == -2:
            epoch = -1
        if epoch > 0 and owned is not None:
            epoch = self._acknowledging_epoch(request.group_id, request.member_id, epoch,
                                              owned)
        member_id = request.member_id
        if epoch == 0:  # rule 1: a join; the coordinator chooses the id
            await self._leave_if_member(request.group_id, member_id, ctx)
            member_id = ""
        assignor = ""
        if request.server_assignor is not None:
            assignor = _ASSIGNORS.get(request.server_assignor, request.server_assignor)
        pb = group_pb2.GroupHeartbeatRequest(
            group_id=request.group_id, member_id=member_id, member_epoch=epoch,
            topics=list(request.subscribed_topic_names or ()),
            rebalance_timeout_ms=max(int(request.rebalance_timeout.total_seconds() * 1000), 0),
            assignor=assignor, client_id=header.client_id or "")
        try:
            answer = await GroupCoordinatorService.Heartbeat.__wrapped__(self.groups, pb, ctx)
        except BrokerError as exc:
            return {"error_code": kafka_code(exc.code), "error_message": exc.message,
                    "member_id": request.member_id or None, "member_epoch": -1,
                    "heartbeat_interval": 0, "assignment": None}
        if epoch < 0:
            self._owned.pop(key, None)
            return {"error_code": K.none, "member_id": request.member_id,
                    "member_epoch": epoch, "heartbeat_interval": 0, "assignment": None}
        ids = {t.name: t.topic_id for t in state.topics_sorted()}
        assignment: list[dict[str, Any]] = [
            {"topic_id": ids[tp.topic], "partitions": list(tp.partitions)}
            for tp in answer.assignment if tp.topic in ids]
        return {"error_code": K.none, "member_id": answer.member_id,
                "member_epoch": answer.member_epoch,
                "heartbeat_interval": answer.heartbeat_interval_ms,
                "assignment": {"topic_partitions": assignment}}

    async def _leave_if_member(self, group_id: str, member_id: str, ctx) -> None:
        """A client that rejoins (epoch 0) under the id it had leaves first, so its old
        membership does not hold partitions until its session times out."""
        if not member_id:
            return
        try:
            replica = self.groups._replica(group_id)
            c = self.groups._existing(group_id, replica)
            if c is None or member_id not in c.group.members:
                return
            await GroupCoordinatorService.Heartbeat.__wrapped__(
                self.groups, group_pb2.GroupHeartbeatRequest(
                    group_id=group_id, member_id=member_id, member_epoch=-1), ctx)
        except BrokerError:
            return  # the join itself will say what is wrong

    def _acknowledging_epoch(self, group_id: str, member_id: str, epoch: int,
                             owned: frozenset[tuple[str, int]]) -> int:
        """Rule 4: ``epoch`` if the member owns nothing outside its current assignment,
        else one less (acknowledges nothing)."""
        try:
            replica = self.groups._replica(group_id)
        except BrokerError:
            return epoch  # the heartbeat itself will say what is wrong
        c = self.groups._existing(group_id, replica)
        member = c.group.members.get(member_id) if c is not None else None
        if member is None or member.epoch != epoch or owned <= member.sent:
            return epoch
        return epoch - 1
