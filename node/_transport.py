"""Raft traffic between nodes over gRPC: one long-lived client stream per peer.

Outgoing: ``PeerTransport.send(group_id, msg)`` queues a message for its peer; a sender task
per peer drains the queue into ``RaftBatch``es (every group's messages, one protobuf per
flush), with heartbeats and their answers packed as columns. If the peer is down the
stream is re-opened with backoff and queued messages beyond a bound are dropped (Raft
retransmits; losing messages is always safe, reordering too). Appends and snapshots to a
partition's learner may first wait for the catch-up pace (``hold``, ``_catchup_pacer.py``),
which hands them back through ``send_now``.

Incoming: the ``RaftPeer.Stream`` handler decodes each batch and hands the messages, and
the sending node's id, to the ``deliver`` callback given at construction, on the event loop.

Node-level liveness: every batch is a sign of life of its sender. ``PeerTransport.tick()``
(called by the host every tick) makes each sender write an empty ``RaftBatch`` (a ping) to
its peer if nothing else went to that peer since the previous tick, so a peer hears from us
at least once per tick even when every group is quiesced: one ping per node pair, not one
heartbeat per group.

Versions: every batch carries the sender's ``PROTOCOL_VERSION``. A node accepts batches of
``PROTOCOL_VERSIONS_ACCEPTED`` (its own version and the previous one: 0 is a node from before
the field, which sends none), so nodes of two consecutive releases form one cluster during a
rolling upgrade. Any other version ends the stream with INVALID_REQUEST naming both versions;
the receiver logs a warning once per peer and version, the sender once per refusal reason
(it keeps reconnecting with backoff: the peer may be upgraded meanwhile).
Version history: 0 = no field; 1 = ``RaftBatch.protocol_version`` (the messages are those of
version 0). ``RaftBatch.hello`` (the sender's rack and the log entry format it reads, first
batch of a stream) is optional and ignored by nodes that do not know it, and so are fields
added to it, so they need no new version: the receiver keeps each peer's last
``entry_format`` (``peer_entry_formats``; ``_produce_coalescer.py`` rule 5).

Asyncio tasks owned here: one ``_sender`` per peer (owns that peer's queue and channel).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

import grpc

from raftka.v1 import raft_pb2, raft_pb2_grpc
from raftka.raft import ConfState, Entry, EntryKind, Message, MsgType, Snapshot, SnapshotMeta

from ._authz import CALLER
from ._errors import BrokerError, Code, abort_with

log = logging.getLogger("raftka.transport")

# Channel settings from jepsen-like/README.md ("Fault injection on this kind of
# machine"): fast keepalive and reconnect backoff so that a healed partition is usable
# again in well under a second.
PEER_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
]

PROTOCOL_VERSION = 1
PROTOCOL_VERSIONS_ACCEPTED = range(PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1)

QUEUE_MESSAGES_MAX = 20_000
RACK_LENGTH_MAX = 64  # a peer's rack is cut there (node/_config.py refuses longer ones)
BATCH_MESSAGES_MAX = 2_000


# ----------------------------------------------------------------------- codec
def message_to_proto(group_id: int, m: Message) -> raft_pb2.RaftMessage:
    pm = raft_pb2.RaftMessage(
        group_id=group_id, type=int(m.type), to=m.to, term=m.term, log_term=m.log_term,
        index=m.index, commit=m.commit, reject=m.reject, reject_hint=m.reject_hint,
        context=m.context,
    )
    if m.entries:
        pm.entries.extend(
            raft_pb2.RaftEntry(term=e.term, index=e.index, kind=e.kind, data=e.data)
            for e in m.entries
        )
    if m.snapshot is not None:
        meta = m.snapshot.meta
        pm.snapshot.CopyFrom(raft_pb2.RaftSnapshot(
            index=meta.index, term=meta.term, voters=sorted(meta.conf_state.voters),
            learners=sorted(meta.conf_state.learners), data=m.snapshot.data,
        ))
    return pm


_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)


class MalformedPeerBatch(ValueError):
    """A peer's batch names no message type, entry kind or node the core knows: refused
    whole (the stream ends with INVALID_REQUEST), nothing of it delivered."""


def message_from_proto(pm: raft_pb2.RaftMessage, frm: int) -> Message:
    try:
        kind = MsgType(pm.type)
    except ValueError:
        raise MalformedPeerBatch(f"message type {pm.type} of group {pm.group_id} is not a "
                                 "Raft message type this node knows") from None
    for e in pm.entries:
        if e.kind not in _ENTRY_KINDS:
            raise MalformedPeerBatch(f"entry {e.index} of group {pm.group_id} has kind "
                                     f"{e.kind}, not one this node knows")
    snapshot = None
    if pm.HasField("snapshot"):
        s = pm.snapshot
        conf = ConfState(frozenset(s.voters), frozenset(s.learners))
        snapshot = Snapshot(SnapshotMeta(s.index, s.term, conf), s.data)
    return Message(
        kind, pm.to, frm, term=pm.term, log_term=pm.log_term, index=pm.index,
        entries=[Entry(e.term, e.index, e.kind, e.data) for e in pm.entries],
        commit=pm.commit, reject=pm.reject, reject_hint=pm.reject_hint, snapshot=snapshot,
        context=pm.context,
    )


def encode_batch(frm: int, to: int, items: Iterable[tuple[int, Message]]) -> raft_pb2.RaftBatch:
    batch = raft_pb2.RaftBatch(from_node=frm, to_node=to, protocol_version=PROTOCOL_VERSION)
    hb, hbr = batch.heartbeats, batch.heartbeat_responses
    for group_id, m in items:
        if m.type == MsgType.HEARTBEAT and not m.context:
            hb.group_id.append(group_id)
            hb.term.append(m.term)
            hb.commit.append(m.commit)
        # Coalesced heartbeats carry only group, term (and commit): anything else a heartbeat
        # or its answer says (a ReadIndex context, the rejection of Raft core rule 12 with
        # the follower's last index) goes as a whole message.
        elif m.type == MsgType.HEARTBEAT_RESP and not m.context and not m.reject:
            hbr.group_id.append(group_id)
            hbr.term.append(m.term)
        else:
            batch.messages.append(message_to_proto(group_id, m))
    return batch


def decode_batch(batch: raft_pb2.RaftBatch) -> list[tuple[int, Message]]:
    """The batch's messages by group. Raises MalformedPeerBatch for what no node of this
    version sends (tests/fuzz feeds it arbitrary bytes)."""
    frm, to = batch.from_node, batch.to_node
    if frm <= 0 or to <= 0:
        raise MalformedPeerBatch(f"a raft batch from node {frm} to node {to}: node ids are "
                                 "positive")
    out = [(pm.group_id, message_from_proto(pm, frm)) for pm in batch.messages]
    hb = batch.heartbeats
    for gid, term, commit in zip(hb.group_id, hb.term, hb.commit):
        out.append((gid, Message(MsgType.HEARTBEAT, to, frm, term=term, commit=commit)))
    hbr = batch.heartbeat_responses
    for gid, term in zip(hbr.group_id, hbr.term):
        out.append((gid, Message(MsgType.HEARTBEAT_RESP, to, frm, term=term)))
    return out


# ----------------------------------------------------------------------- sending
class _Peer:
    def __init__(self, node_id: int, address: str) -> None:
        self.node_id = node_id
        self.address = address
        self.queue: list[tuple[int, Message]] = []
        self.wakeup = asyncio.Event()
        self.connected = False
        self.dropped = 0
        self.task: asyncio.Task | None = None
        self.sent_since_tick = False  # a batch went out since the last tick()
        self.ping_due = False
        self.refused = ""  # why the peer refused our version, once logged


class PeerTransport:
    def __init__(
        self,
        node_id: int,
        peers: dict[int, str],
        on_unreachable: Callable[[int], None],
        open_channel: Callable[[int, list], grpc.aio.Channel] | None = None,
    ) -> None:
        """``peers``: node id -> the address its Raft traffic goes to; ``open_channel(node_id,
        options)`` opens a channel there (TLS: ``_tls.PeerChannels``), plain text if None."""
        self.node_id = node_id
        self._open_channel = open_channel
        self._peers = {pid: _Peer(pid, addr) for pid, addr in peers.items() if pid != node_id}
        self._on_unreachable = on_unreachable
        self._closed = False
        self._started = False
        # (group id, message) -> whether the catch-up pacer took it (it sends it later
        # through ``send_now``: _catchup_pacer.py). None: everything goes at once.
        self.hold: Callable[[int, Message], bool] | None = None
        # sent as the first batch of every stream (this node's rack: RaftBatch.hello)
        self.hello: raft_pb2.NodeHello | None = None

    def start(self) -> None:
        self._started = True
        for peer in self._peers.values():
            self._start_sender(peer)

    def _start_sender(self, peer: _Peer) -> None:
        peer.task = asyncio.get_running_loop().create_task(
            self._sender(peer), name=f"raft-sender-{peer.node_id}")

    def add_peer(self, node_id: int, address: str) -> bool:
        """Send to node ``node_id`` at ``address`` from now on (a node that joined the
        cluster); its sender starts at once if the transport runs. A known peer's address
        is updated (its next connection uses it). Whether the peer is new."""
        if node_id == self.node_id:
            return False
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.address = address
            return False
        peer = self._peers[node_id] = _Peer(node_id, address)
        if self._started and not self._closed:
            self._start_sender(peer)
        return True

    def remove_peer(self, node_id: int) -> bool:
        """Stop sending to node ``node_id`` (removed from the cluster): its sender ends and
        its queue is dropped; messages to it are ignored from now on. Whether it was a
        peer."""
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return False
        if peer.task is not None:
            peer.task.cancel()  # its channel closes in the sender's finally
        peer.queue = []
        return True

    async def close(self) -> None:
        self._closed = True
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        for p in self._peers.values():
            p.wakeup.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def peer_ids(self) -> list[int]:
        return list(self._peers)

    def tick(self) -> None:
        """Ping every peer that got nothing since the previous call (node-level liveness;
        the host driver calls this every ``ping_ticks`` ticks)."""
        for peer in self._peers.values():
            if peer.sent_since_tick:
                peer.sent_since_tick = False
            elif peer.connected:
                peer.ping_due = True
                peer.wakeup.set()

    def is_reachable(self, node_id: int) -> bool:
        peer = self._peers.get(node_id)
        return node_id == self.node_id or (peer is not None and peer.connected)

    def send(self, group_id: int, m: Message) -> None:
        if self.hold is not None and self.hold(group_id, m):
            return
        self.send_now(group_id, m)

    def send_now(self, group_id: int, m: Message) -> None:
        """``send`` without the catch-up pacer (what it releases)."""
        peer = self._peers.get(m.to)
        if peer is None:
            return  # not a node we know: nothing to do (configs name only known nodes)
        if len(peer.queue) >= QUEUE_MESSAGES_MAX:
            peer.dropped += 1  # bounded: Raft recovers lost messages by retransmission
            return
        peer.queue.append((group_id, m))
        peer.wakeup.set()

    async def _sender(self, peer: _Peer) -> None:
        backoff = 0.05
        while not self._closed:
            channel = (self._open_channel(peer.node_id, PEER_CHANNEL_OPTIONS)
                       if self._open_channel is not None else
                       grpc.aio.insecure_channel(peer.address, options=PEER_CHANNEL_OPTIONS))
            stub = raft_pb2_grpc.RaftPeerStub(channel)
            try:
                call = stub.Stream()
                # before the hello: its write is where a TLS handshake failure shows, and
                # only a stream marked connected has its failure logged
                peer.connected = True
                if self.hello is not None:
                    await call.write(raft_pb2.RaftBatch(from_node=self.node_id,
                                                        to_node=peer.node_id, hello=self.hello,
                                                        protocol_version=PROTOCOL_VERSION))
                while not self._closed:
                    if not peer.queue:
                        if peer.ping_due:
                            peer.ping_due = False
                            await call.write(raft_pb2.RaftBatch(
                                from_node=self.node_id, to_node=peer.node_id,
                                protocol_version=PROTOCOL_VERSION))
                            continue
                        peer.wakeup.clear()
                        await peer.wakeup.wait()
                        continue
                    items = peer.queue[:BATCH_MESSAGES_MAX]
                    del peer.queue[:BATCH_MESSAGES_MAX]
                    peer.sent_since_tick = True
                    peer.ping_due = False
                    await call.write(encode_batch(self.node_id, peer.node_id, items))
                    backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any stream failure means: reconnect
                if peer.connected:
                    reason = _short(exc)
                    if isinstance(exc, asyncio.InvalidStateError):  # the call ended first
                        reason = f"{(await call.code()).name}: {await call.details()}"
                    if _VERSION_REFUSAL in reason:
                        # will not heal until one side is upgraded: say it loudly, once
                        if reason != peer.refused:
                            peer.refused = reason
                            log.warning("peer %d at %s refuses this node: %s", peer.node_id,
                                        peer.address, reason)
                    else:
                        # a TLS failure will not heal by itself: say so louder than a peer down
                        level = (logging.WARNING if "handshake" in reason.lower()
                                 else logging.INFO)
                        log.log(level, "peer %d at %s unreachable: %s", peer.node_id,
                                peer.address, reason)
                peer.connected = False
                unsent = peer.queue
                peer.queue = []
                if unsent:
                    self._on_unreachable(peer.node_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
            finally:
                await channel.close(grace=None)


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------- receiving
_VERSION_REFUSAL = "unsupported peer protocol version"
_REFUSALS_LOGGED_MAX = 1024  # (peer, version) pairs warned about; the ids come off the wire


class RaftPeerService(raft_pb2_grpc.RaftPeerServicer):
    def __init__(self, node_id: int,
                 deliver_many: Callable[[list[tuple[int, Message]], int], None],
                 racks: dict[int, str] | None = None,
                 peer_entry_formats: dict[int, int] | None = None):
        """``racks``: node id -> rack of every cluster member, updated from the peers'
        hellos (Metadata shows them); ids not in it are not recorded.
        ``peer_entry_formats``: node id -> the ``entry_format`` of its last hello (ids of
        members only, like ``racks``)."""
        self._node_id = node_id
        self._deliver_many = deliver_many
        self._refusals_logged: set[tuple[int, int]] = set()  # (peer, version): bounded by peers
        self._racks = racks if racks is not None else {}
        self._entry_formats = peer_entry_formats if peer_entry_formats is not None else {}

    async def _refuse_version(self, context, batch: raft_pb2.RaftBatch) -> None:
        version = batch.protocol_version
        message = (f"{_VERSION_REFUSAL} {version} from node {batch.from_node}: node "
                   f"{self._node_id} speaks version {PROTOCOL_VERSION} and accepts "
                   f"{PROTOCOL_VERSIONS_ACCEPTED.start}-{PROTOCOL_VERSIONS_ACCEPTED.stop - 1}; "
                   "upgrade one release at a time (README, Rolling restart and upgrade)")
        if ((batch.from_node, version) not in self._refusals_logged
                and len(self._refusals_logged) < _REFUSALS_LOGGED_MAX):
            self._refusals_logged.add((batch.from_node, version))
            log.warning("refusing raft traffic: %s", message)
        await abort_with(context, BrokerError(Code.INVALID_REQUEST, message))

    async def Stream(self, request_iterator, context):  # noqa: N802 - gRPC naming
        count = 0
        try:
            async for batch in request_iterator:
                caller = CALLER.get()
                if caller is not None and caller.peer_node and caller.peer_node != batch.from_node:
                    await abort_with(context, BrokerError(
                        Code.AUTHENTICATION_FAILED,
                        f"raft batch from node {batch.from_node} came with the certificate "
                        f"of node {caller.peer_node}"))
                if batch.to_node != self._node_id:
                    await abort_with(context, BrokerError(
                        Code.INVALID_REQUEST,
                        f"raft batch for node {batch.to_node} reached node {self._node_id}: "
                        "the peer list of the sender is wrong"))
                if batch.protocol_version not in PROTOCOL_VERSIONS_ACCEPTED:
                    await self._refuse_version(context, batch)
                count += 1
                if batch.HasField("hello") and batch.from_node in self._racks:
                    self._racks[batch.from_node] = batch.hello.rack[:RACK_LENGTH_MAX]
                    self._entry_formats[batch.from_node] = batch.hello.entry_format
                try:
                    messages = decode_batch(batch)
                except MalformedPeerBatch as exc:
                    await abort_with(context, BrokerError(
                        Code.INVALID_REQUEST, f"raft batch from node {batch.from_node}: {exc}; "
                        "is the peer a Raftka node of a compatible version?"))
                self._deliver_many(messages, batch.from_node)
        except asyncio.CancelledError:
            pass  # server shutdown: the peer reconnects to whoever serves next
        return raft_pb2.RaftStreamSummary(batches=count)
