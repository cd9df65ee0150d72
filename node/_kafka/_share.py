"""KIP-932's share-group APIs for Kafka clients (ShareGroupHeartbeat, ShareGroupDescribe,
ShareFetch, ShareAcknowledge), mapped onto the node's share groups (``_share_service.py``:
the same groups, records, locks, delivery counts and dead-letter topic as the gRPC
``Share`` service; a Kafka share consumer and our ShareConsumer can share one group).

Mapping, request by request:

1. ShareGroupHeartbeat -> ``Share.ShareGroupHeartbeat`` (the client's own member id, as
   ours; ``subscribed_topic_names`` null keeps the member's last subscription; member
   epoch -1 leaves). Every member is assigned every partition of its topics (our share
   groups' rule, and Kafka's simple assignor's result for a lone member). The member
   epoch is this listener's count of the member's assignment changes (1 on join): our
   groups have no epochs, and nothing is fenced by it.
2. ShareFetch: a share session per (group, member) on this node (KIP-932): epoch 0 opens
   one with the request's partitions (replacing an older one), a later request must carry
   the session's next epoch (INVALID_SHARE_SESSION_EPOCH otherwise; SHARE_SESSION_NOT_FOUND
   without a session), adds its partitions and drops ``forgotten_topics_data``; -1 closes
   it (acknowledgements only). Acknowledgements are applied first (as ShareAcknowledge
   does, per partition: an error is that partition's ``acknowledge_error_code``), then
   every session partition this node leads is fetched (``Share.ShareFetch`` with no wait);
   while none acquired anything the fetch repeats, waiting on the one partition's data
   when there is one, else in ``POLL_S`` steps, until ``max_wait``. A partition led
   elsewhere answers NOT_LEADER_OR_FOLLOWER with its leader in ``node_endpoints``.
3. ShareAcknowledge -> ``Share.ShareAcknowledge`` per partition (session epoch -1 also
   releases what the member still holds and closes the session). Acknowledge types:
   1 ACCEPT, 2 RELEASE, 3 REJECT (to the group's dead-letter topic), 0 GAP (no record
   there: accepted); 4 RENEW (ShareFetch v2) is not served: INVALID_REQUEST.
4. ShareGroupDescribe -> ``Share.DescribeShareGroup``.

Topics are named by id (the id Metadata reports). Authorization: READ on the group for
every API but ShareGroupDescribe (DESCRIBE), and READ on each topic (a denied topic's
partitions answer TOPIC_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Any

from kio.schema.errors import ErrorCode as K

from raftka.v1 import share_pb2

from .._broker import Broker
from .._errors import BrokerError, Code
from .._share_service import ShareService
from ._errors import kafka_code

SESSIONS_MAX = 10_000  # share sessions on one node (SHARE_SESSION_LIMIT_REACHED beyond)
SESSION_PARTITIONS_MAX = 10_000
POLL_S = 0.1  # the re-fetch step while several session partitions are empty
FETCH_WAIT_MS_MAX = 30_000
MAX_RECORDS_MAX = 10_000
_ACK_TYPES = {0: share_pb2.ACCEPT, 1: share_pb2.ACCEPT, 2: share_pb2.RELEASE,
              3: share_pb2.REJECT}


class _Session:
    __slots__ = ("epoch", "partitions", "used")

    def __init__(self) -> None:
        self.epoch = 1  # the epoch the next request must carry
        self.partitions: set[tuple[str, int]] = set()
        self.used = time.monotonic()


def _err(exc: BrokerError) -> tuple[K, str]:
    return kafka_code(exc.code), exc.message


def _ranges(batches) -> list[share_pb2.AcknowledgeRange]:
    """Kafka acknowledgement batches (one type for the range, or one per offset) as our
    ranges, runs of one type merged. Raises BrokerError for an unknown type."""
    out: list[share_pb2.AcknowledgeRange] = []
    for b in batches:
        types = list(b.acknowledge_types)
        count = b.last_offset - b.first_offset + 1
        if count <= 0 or len(types) not in (1, count):
            raise BrokerError(Code.INVALID_REQUEST, f"acknowledgement batch {b.first_offset}.."
                              f"{b.last_offset} has {len(types)} types; give 1 or one per "
                              "offset")
        for t in set(types):
            if t not in _ACK_TYPES:
                raise BrokerError(Code.INVALID_REQUEST, f"acknowledge type {t} is not served "
                                  "(0 gap, 1 accept, 2 release, 3 reject)")
        if len(types) == 1:
            out.append(share_pb2.AcknowledgeRange(first_offset=b.first_offset,
                                                  last_offset=b.last_offset,
                                                  type=_ACK_TYPES[types[0]]))
            continue
        run_start = b.first_offset
        for i in range(1, count + 1):  # one type per offset: runs of one type
            if i == count or _ACK_TYPES[types[i]] != _ACK_TYPES[types[i - 1]]:
                out.append(share_pb2.AcknowledgeRange(
                    first_offset=run_start, last_offset=b.first_offset + i - 1,
                    type=_ACK_TYPES[types[i - 1]]))
                run_start = b.first_offset + i
    return out


class MemberTable:
    """(group, member) -> (subscription, assignment, epoch) of rule 1, at most ``limit``
    entries: beyond it the member heard from least recently is forgotten, and rejoins with
    its subscription at its next heartbeat (as after a coordinator move). Dropping the
    whole table instead made every member of every group rejoin at once."""

    def __init__(self, limit: int = SESSIONS_MAX) -> None:
        self.limit = limit
        self._table: OrderedDict[tuple[str, str], tuple[list[str], Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def get(self, key: tuple[str, str]) -> tuple[list[str], Any, int] | None:
        return self._table.get(key)

    def put(self, key: tuple[str, str], value: tuple[list[str], Any, int]) -> None:
        self._table[key] = value
        self._table.move_to_end(key)
        while len(self._table) > self.limit:
            self._table.popitem(last=False)

    def pop(self, key: tuple[str, str]) -> None:
        self._table.pop(key, None)


class KafkaShareGroups:
    def __init__(self, broker: Broker, shares: ShareService) -> None:
        self.broker = broker
        self.shares = shares
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._members = MemberTable()
        self._maps_of: object = None  # the controller state the topic maps were built from
        self._maps_version = -1
        self._maps: tuple[dict[str, uuid.UUID], dict[uuid.UUID, str]] = ({}, {})

    # ------------------------------------------------------------------ topics by id
    def _topic_maps(self) -> tuple[dict[str, uuid.UUID], dict[uuid.UUID, str]]:
        """Topic names to ids and back, built again only when the controller state changed
        (every heartbeat and fetch asks; walking every topic each time cost O(topics))."""
        state = self.broker.controller.state
        if self._maps_of is not state or self._maps_version != state.version:
            ids = {t.name: uuid.UUID(t.topic_id) for t in state.topics_sorted()}
            self._maps = (ids, {topic_id: name for name, topic_id in ids.items()})
            self._maps_of, self._maps_version = state, state.version
        return self._maps

    def _ids(self) -> dict[str, uuid.UUID]:
        return self._topic_maps()[0]

    def _names(self) -> dict[uuid.UUID, str]:
        return self._topic_maps()[1]

    # ------------------------------------------------------------------ heartbeat
    async def heartbeat(self, request, version, ctx, header) -> dict:
        key = (request.group_id, request.member_id)
        known = self._members.get(key)
        topics = list(request.subscribed_topic_names) \
            if request.subscribed_topic_names is not None else (known[0] if known else [])
        leave = request.member_epoch == -1
        base = {"member_id": request.member_id or None, "heartbeat_interval": 0}
        if not leave and request.member_epoch > 0 and known is None and \
                request.subscribed_topic_names is None:
            # this node does not know the member (it restarted, or the coordinator moved):
            # the client rejoins with its full subscription
            return {**base, "error_code": K.unknown_member_id, "member_epoch": -1,
                    "error_message": "this coordinator does not know the member; rejoin"}
        pb = share_pb2.ShareGroupHeartbeatRequest(
            group_id=request.group_id, member_id=request.member_id, topics=topics,
            leave=leave, client_id=header.client_id or "")
        try:
            answer = await ShareService.ShareGroupHeartbeat.__wrapped__(self.shares, pb, ctx)
        except BrokerError as exc:
            code, message = _err(exc)
            return {**base, "error_code": code, "error_message": message, "member_epoch": -1}
        if leave:
            self._members.pop(key)
            return {**base, "error_code": K.none, "member_epoch": -1}
        ids = self._ids()
        assignment = sorted((ids[tp.topic], tuple(tp.partitions)) for tp in answer.assignment
                            if tp.topic in ids)
        epoch = 1 if known is None else known[2] + (known[1] != assignment)
        self._members.put(key, (topics, assignment, epoch))
        return {"error_code": K.none, "member_id": request.member_id, "member_epoch": epoch,
                "heartbeat_interval": answer.heartbeat_interval_ms,
                "assignment": {"topic_partitions": [
                    {"topic_id": tid, "partitions": list(ps)} for tid, ps in assignment]}}

    # ------------------------------------------------------------------ describe
    async def describe(self, request, version, ctx, header) -> dict:
        groups = []
        ids = self._ids()
        for group_id in request.group_ids:
            if not ctx.allowed("DESCRIBE", "GROUP", group_id):
                ctx.denied("DESCRIBE", "GROUP", group_id, "ShareGroupDescribe")
                groups.append({"group_id": group_id, "error_code": K.group_authorization_failed,
                               "members": []})
                continue
            try:
                answer = await ShareService.DescribeShareGroup.__wrapped__(
                    self.shares, share_pb2.DescribeShareGroupRequest(group_id=group_id), ctx)
            except BrokerError as exc:
                code, message = _err(exc)
                groups.append({"group_id": group_id, "error_code": code,
                               "error_message": message, "members": []})
                continue
            members = []
            for m in answer.members:
                known = self._members.get((group_id, m.member_id))
                members.append({
                    "member_id": m.member_id, "member_epoch": known[2] if known else 1,
                    "client_id": m.client_id, "client_host": m.host,
                    "subscribed_topic_names": list(m.topics),
                    "assignment": {"topic_partitions": [
                        {"topic_id": ids[t], "topic_name": t,
                         "partitions": list(range(len(meta.partitions)))}
                        for t in m.topics if t in ids
                        and (meta := self.broker.controller.state.topic(t)) is not None]}})
            groups.append({"group_id": group_id, "error_code": K.none,
                           "group_state": "Stable" if members else "Empty",
                           "group_epoch": 1, "assignment_epoch": 1,
                           "assignor_name": "simple", "members": members})
        return {"groups": groups}

    # ------------------------------------------------------------------ sessions
    def _session(self, request, partitions: list[tuple[str, int]]
                 ) -> tuple[_Session | None, K, str]:
        key = (request.group_id or "", request.member_id or "")
        epoch = request.share_session_epoch
        self._expire_sessions()
        if epoch == 0:
            if len(self._sessions) >= SESSIONS_MAX and key not in self._sessions:
                return None, K.share_session_limit_reached, \
                    f"this node holds {SESSIONS_MAX} share sessions"
            session = self._sessions[key] = _Session()
        else:
            session = self._sessions.get(key)
            if session is None:
                return None, K.share_session_not_found, "no share session for this member " \
                    "on this node; open one with epoch 0"
            if epoch != -1 and epoch != session.epoch:
                return None, K.invalid_share_session_epoch, f"share session epoch {epoch}, " \
                    f"expected {session.epoch}"
            if epoch == -1:
                self._sessions.pop(key, None)
            else:
                session.epoch = session.epoch + 1 if session.epoch < 2**31 - 1 else 1
        session.used = time.monotonic()
        session.partitions.update(partitions)
        if len(session.partitions) > SESSION_PARTITIONS_MAX:
            self._sessions.pop(key, None)
            return None, K.invalid_request, f"a share session holds at most " \
                f"{SESSION_PARTITIONS_MAX} partitions"
        return session, K.none, ""

    def _expire_sessions(self) -> None:
        idle = time.monotonic() - 120.0  # a member that stopped fetching: its locks expire
        for key in [k for k, s in self._sessions.items() if s.used < idle]:
            del self._sessions[key]

    # ------------------------------------------------------------------ fetch / ack
    def _leader_endpoint(self, topic: str, partition: int) -> tuple[int, dict | None]:
        state = self.broker.controller.state
        meta = state.topic(topic)
        if meta is None or partition >= len(meta.partitions):
            return -1, None
        leader = self.broker.leader_of(meta, meta.partitions[partition])
        address = self.broker.config.kafka_peers.get(leader) if leader else None
        if not address:
            return leader or -1, None
        host, _, port = address.rpartition(":")
        return leader, {"node_id": leader, "host": host.strip("[]"), "port": int(port)}

    def _held(self, group_id: str, member_id: str) -> set[tuple[str, int]]:
        """The partitions of the member's share session (before a close pops it)."""
        session = self._sessions.get((group_id, member_id))
        return set(session.partitions) if session is not None else set()

    async def _acknowledge_all(self, group_id: str, member_id: str, acking: dict,
                               held: set[tuple[str, int]], closing: bool,
                               ctx) -> dict[tuple[str, int], tuple[K, str]]:
        """The acknowledgements of ``acking`` ((topic, partition) -> the request's entry);
        closing the session (epoch -1, in ShareFetch or ShareAcknowledge, as Kafka) also
        releases what the member holds in every partition of it (``held``). The outcome
        per partition of ``acking``."""
        keys = sorted(set(acking) | (held if closing else set()))
        results = await asyncio.gather(*(
            self._acknowledge(group_id, member_id, name, index,
                              acking[(name, index)].acknowledgement_batches
                              if (name, index) in acking else (), closing, ctx)
            for name, index in keys))
        return {k: r for k, r in zip(keys, results) if k in acking}

    async def _acknowledge(self, group_id: str, member_id: str, topic: str, partition: int,
                           batches, leave: bool, ctx) -> tuple[K, str]:
        try:
            ranges = _ranges(batches)
            if ranges or leave:
                await ShareService.ShareAcknowledge.__wrapped__(
                    self.shares, share_pb2.ShareAcknowledgeRequest(
                        group_id=group_id, member_id=member_id, topic=topic,
                        partition=partition, ranges=ranges, leave=leave), ctx)
        except BrokerError as exc:
            return _err(exc)
        return K.none, ""

    async def _fetch_one(self, group_id: str, member_id: str, topic: str, partition: int,
                         max_records: int, wait_ms: int, ctx) -> dict:
        try:
            answer = await ShareService.ShareFetch.__wrapped__(
                self.shares, share_pb2.ShareFetchRequest(
                    group_id=group_id, member_id=member_id, topic=topic, partition=partition,
                    max_records=max_records, max_wait_ms=wait_ms), ctx)
        except BrokerError as exc:
            code, message = _err(exc)
            return {"error_code": code, "error_message": message}
        return {"error_code": K.none, "records": answer.record_batches or None,
                "acquired_records": [{"first_offset": a.first_offset,
                                      "last_offset": a.last_offset,
                                      "delivery_count": a.delivery_count}
                                     for a in answer.acquired]}

    def _checked_partitions(self, topics, ctx, api: str
                            ) -> tuple[dict[tuple[str, int], Any], dict[tuple[str, int], dict]]:
        """(name, partition) -> the request's partition entry; and the answers of those
        refused before any work (unknown topic id, denied topic)."""
        names = self._names()
        wanted: dict[tuple[str, int], Any] = {}
        refused: dict[tuple[str, int], dict] = {}
        for t in topics:
            name = names.get(t.topic_id)
            for p in t.partitions:
                index = p.partition_index
                if name is None:
                    refused[(str(t.topic_id), index)] = {
                        "topic_id": t.topic_id, "error_code": K.unknown_topic_id,
                        "error_message": f"no topic has id {t.topic_id}"}
                elif ctx.security is not None and \
                        (code := ctx.denied("READ", "TOPIC", name, api)) is not None:
                    refused[(name, index)] = {"topic_id": t.topic_id, "error_code": code,
                                              "error_message": f"not authorized to READ "
                                              f"topic {name!r}"}
                else:
                    wanted[(name, index)] = p
        return wanted, refused

    async def fetch(self, request, version, ctx, header) -> dict:
        group_id, member_id = request.group_id or "", request.member_id or ""
        wanted, refused = self._checked_partitions(request.topics, ctx, "ShareFetch")
        if request.share_session_epoch == 0 and any(
                p.acknowledgement_batches for t in request.topics for p in t.partitions):
            return {"error_code": K.invalid_request, "error_message": "a ShareFetch that "
                    "opens a share session (epoch 0) carries no acknowledgements",
                    "responses": []}
        held = self._held(group_id, member_id)
        session, code, message = self._session(request, list(wanted))
        if session is None:
            return {"error_code": code, "error_message": message, "responses": []}
        names = self._names()
        for t in request.forgotten_topics_data:
            name = names.get(t.topic_id)
            session.partitions.difference_update((name, p) for p in t.partitions)
        acking = {k: p for k, p in wanted.items() if p.acknowledgement_batches}
        ack_errors = await self._acknowledge_all(group_id, member_id, acking, held,
                                                 request.share_session_epoch == -1, ctx)
        out: dict[tuple[str, int], dict] = {}
        endpoints: dict[int, dict] = {}
        local: list[tuple[str, int]] = []
        fetching = session.partitions if request.share_session_epoch != -1 else set()
        for name, index in sorted(fetching | set(ack_errors)):
            leader, endpoint = self._leader_endpoint(name, index)
            if leader == self.broker.node_id and (name, index) in fetching:
                local.append((name, index))
                continue
            entry: dict = {"error_code": K.none}
            if (name, index) in fetching:
                entry = {"error_code": K.not_leader_or_follower, "error_message":
                         f"{name}/{index} is led by node {leader}",
                         "current_leader": {"leader_id": leader, "leader_epoch": -1}}
                if endpoint is not None:
                    endpoints[leader] = endpoint
            out[(name, index)] = entry
        max_records = min(max(request.max_records, 1), MAX_RECORDS_MAX)
        wait_ms = min(max(int(request.max_wait.total_seconds() * 1000), 0), FETCH_WAIT_MS_MAX)
        deadline = time.monotonic() + wait_ms / 1000
        while local:
            remaining_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            single_wait = remaining_ms if len(local) == 1 else 0
            got = await asyncio.gather(*(
                self._fetch_one(group_id, member_id, name, index, max_records, single_wait,
                                ctx) for name, index in local))
            done = any(g["error_code"] != K.none or g.get("acquired_records") for g in got)
            if done or remaining_ms <= 0 or single_wait:
                out.update(zip(local, got))
                break
            await asyncio.sleep(min(POLL_S, remaining_ms / 1000))
        here = {"leader_id": self.broker.node_id, "leader_epoch": -1}
        for entry in out.values():
            entry.setdefault("current_leader", here)
        for key, (code, message) in ack_errors.items():
            entry = out.setdefault(key, {"error_code": K.none, "current_leader": here})
            entry["acknowledge_error_code"] = int(code)
            entry["acknowledge_error_message"] = message or None
        ids = self._ids()
        return {"error_code": K.none,
                "acquisition_lock_timeout": await self._lock_ms(group_id),
                "responses": self._by_topic(out, refused, ids, "partition_index"),
                "node_endpoints": list(endpoints.values())}

    async def _lock_ms(self, group_id: str) -> int:
        try:
            return (await self.shares._config(group_id))["lock_ms"]
        except (BrokerError, KeyError):
            return 0

    @staticmethod
    def _by_topic(out: dict, refused: dict, ids: dict, index_key: str) -> list[dict]:
        topics: dict[Any, list[dict]] = {}
        for (name, index), entry in sorted(out.items()):
            topics.setdefault(ids.get(name), []).append({index_key: index, **entry})
        for (_, index), entry in refused.items():
            entry = dict(entry)
            topics.setdefault(entry.pop("topic_id"), []).append({index_key: index, **entry})
        return [{"topic_id": tid, "partitions": ps} for tid, ps in topics.items()
                if tid is not None]

    async def acknowledge(self, request, version, ctx, header) -> dict:
        group_id, member_id = request.group_id or "", request.member_id or ""
        wanted, refused = self._checked_partitions(request.topics, ctx, "ShareAcknowledge")
        if request.share_session_epoch == 0:
            return {"error_code": K.invalid_share_session_epoch, "error_message":
                    "ShareAcknowledge needs an open share session (epoch 0 opens one in "
                    "ShareFetch)", "responses": []}
        held = self._held(group_id, member_id)
        session, code, message = self._session(request, [])
        if session is None and code != K.none:
            return {"error_code": code, "error_message": message, "responses": []}
        results = await self._acknowledge_all(group_id, member_id, wanted, held,
                                              request.share_session_epoch == -1, ctx)
        out = {k: {"error_code": c, "error_message": m or None} for k, (c, m) in results.items()}
        return {"error_code": K.none,
                "responses": self._by_topic(out, refused, self._ids(), "partition_index"),
                "node_endpoints": []}
