"""Controller writes at any node: a node that is not the controller leader forwards the call
to the leader and answers with the leader's answer (Kafka's KIP-590), so a client in any
language needs no redirect loop.

Rules:

- Only calls that write the controller log are forwarded (CreateTopic, DeleteTopic,
  AddPartitions; InitProducerId when this node has no reserved producer ids left). Reads
  (ListTopics, DescribeTopic, DescribeCluster, Metadata) are answered from the metadata
  this node applied.
- A forwarded call carries the request metadata ``raftka-forwarded-by: <node id>``. A node
  never forwards a call it received forwarded: it answers it itself (NOT_LEADER if it is
  not the leader), so two nodes that each believe the other leads cannot bounce a call.
- The target is the leader this node knows, or the one a NOT_LEADER answer named. Retried
  after a backoff (50 ms, doubling up to 500 ms) while the call's time lasts (the client's
  deadline, at most the admin timeout): NOT_LEADER and LEADER_NOT_AVAILABLE (nothing was
  written; the leader moved or no leader is elected yet) and a leader that could not be
  reached (gRPC UNAVAILABLE without error details: it is down or cut off, so a new leader
  will be elected). When the time is up, the last of these errors is the answer (a
  NOT_LEADER names the leader, so a client that follows redirects still can).
- With a peer port (``_tls.py``) the call goes there, over mutual TLS, and carries the
  principal and host of the original caller (``raftka-forwarded-principal``/``-host``),
  which the leader trusts from a cluster member only and authorizes again (``_authz.py``).
- Every other answer of the leader, success or error (TOPIC_EXISTS, NO_QUORUM, ...), is
  passed through unchanged: status, message and error details.
- A forwarded call that times out is NO_QUORUM: the change may still apply, as with a
  local proposal that did not commit in time.
- A call whose repetition is harmless (``retry_if_leader_moves``: InitProducerId, whose
  unused ids are skipped, never reused) does not wait on a leader that stopped answering:
  once this node applies another leader (the old one was paused or cut off and the rest
  elected a new one), the call in flight is dropped and sent to the new leader. Other writes
  keep waiting for their answer: sending them again could apply them twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

import grpc

from raftka.v1.errors import error_details

from ._authz import CALLER, FORWARDED_HOST_KEY, FORWARDED_PRINCIPAL_KEY
from ._broker import Broker
from ._errors import BrokerError, Code

log = logging.getLogger("raftka.forwarding")

FORWARDED_BY_KEY = "raftka-forwarded-by"
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 0.5
LEADER_WATCH_S = 0.05  # how often a call in flight looks whether the controller leader moved
_RETRIED = frozenset({Code.NOT_LEADER, Code.LEADER_NOT_AVAILABLE})
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

T = TypeVar("T")
Remote = Callable[[grpc.aio.Channel, float, tuple[tuple[str, str], ...]], Awaitable[T]]


class ControllerForwarder:
    """Runs a controller write here when this node leads the controller, else at the
    leader over a channel kept per peer (closed by :meth:`close`)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._channels: dict[int, grpc.aio.Channel] = {}

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(ch.close() for ch in channels.values()), return_exceptions=True)

    async def call(self, context: grpc.aio.ServicerContext | None, what: str, timeout_s: float,
                   local: Callable[[float], Awaitable[T]], remote: Remote,
                   retry_if_leader_moves: bool = False) -> T:
        """``local(timeout_s)`` if this node leads the controller (or the call was
        forwarded to it), else ``remote(channel, timeout_s, metadata)`` at the leader,
        following leader changes as the module docstring says. Raises BrokerError.
        ``context`` None: a call of this node's own (``_reassignment.py``), not a client's.
        ``retry_if_leader_moves``: the call may be repeated (module docstring)."""
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining() if context is not None else None
        deadline = loop.time() + (timeout_s if remaining is None else min(timeout_s, remaining))
        if context is not None and _forwarded_by(context):
            return await local(max(deadline - loop.time(), 0.001))
        broker = self._broker
        hint = 0  # a leader named by the last NOT_LEADER answer
        backoff = BACKOFF_FIRST_S
        while True:
            leader = hint or broker.controller.leader_id()
            budget = max(deadline - loop.time(), 0.001)
            try:
                if leader == 0 or leader == broker.node_id:
                    return await local(budget)  # no leader known: NOT_LEADER, retried
                if retry_if_leader_moves:
                    return await self._remote_while_leader(leader, what, budget, remote)
                return await self._remote(leader, what, budget, remote)
            except BrokerError as exc:
                if exc.code not in _RETRIED:
                    raise
                last = exc
                hint = exc.leader_id if exc.leader_id != leader else 0
            if deadline - loop.time() <= backoff:
                if last.leader_id and not last.leader_address:
                    last.leader_address = broker.address_of(last.leader_id)
                raise last
            log.info("%s: %s; retrying in %.2fs", what, last.message, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def channel(self, node_id: int) -> grpc.aio.Channel:
        """The channel kept to node ``node_id`` (opened on first use); raises BrokerError
        if it is not a known peer."""
        broker = self._broker
        if not broker.peer_channels.addresses.get(node_id):
            raise BrokerError(Code.LEADER_NOT_AVAILABLE,
                              f"node {node_id} is not in this node's peer list",
                              retriable=True)
        channel = self._channels.get(node_id)
        if channel is None:
            channel = self._channels[node_id] = broker.peer_channels.open(
                node_id, CHANNEL_OPTIONS)
        return channel

    async def _remote_while_leader(self, leader: int, what: str, timeout_s: float,
                                   remote: Remote[T]) -> T:
        """:meth:`_remote`, dropped with NOT_LEADER (retried at once) when this node
        applies a different controller leader while the call is in flight."""
        controller = self._broker.controller
        call = asyncio.ensure_future(self._remote(leader, what, timeout_s, remote))
        try:
            while True:
                done, _ = await asyncio.wait((call,), timeout=LEADER_WATCH_S)
                if done:
                    return call.result()
                now_leading = controller.leader_id()
                if now_leading not in (0, leader):
                    raise BrokerError(
                        Code.NOT_LEADER, f"{what}: node {leader} stopped answering and node "
                        f"{now_leading} now leads the controller", retriable=True,
                        leader_id=now_leading)
        finally:
            call.cancel()

    async def _remote(self, leader: int, what: str, timeout_s: float, remote: Remote[T]) -> T:
        broker = self._broker
        address = broker.peer_channels.addresses.get(leader, "")
        if not address:
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"the controller leader, node {leader}, "
                              "is not in this node's peer list", retriable=True)
        channel = self._channels.get(leader)
        if channel is None:
            channel = self._channels[leader] = broker.peer_channels.open(
                leader, CHANNEL_OPTIONS)
        metadata = forwarded_metadata(broker.node_id)
        try:
            return await remote(channel, timeout_s, metadata)
        except grpc.aio.AioRpcError as exc:
            details = error_details(exc.trailing_metadata())
            if details is not None and details.code:
                raise BrokerError(details.code, details.message, details.retriable,
                                  details.leader_id, details.leader_address,
                                  details.metadata) from None
            status = exc.code()
            if status == grpc.StatusCode.UNAVAILABLE:
                raise BrokerError(
                    Code.LEADER_NOT_AVAILABLE,
                    f"{what}: the controller leader, node {leader} at {address}, cannot be "
                    f"reached ({exc.details()})", retriable=True) from None
            if status == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise BrokerError(
                    Code.NO_QUORUM,
                    f"{what}: the controller leader, node {leader} at {address}, did not "
                    f"answer within {timeout_s:.1f}s; the change may still apply",
                    retriable=True) from None
            log.warning("%s forwarded to node %d failed: %s %s", what, leader, status,
                        exc.details())
            raise BrokerError(
                Code.INTERNAL_ERROR,
                f"{what}: forwarding to the controller leader, node {leader} at {address}, "
                f"failed with {status.name if status else 'no status'}: {exc.details()}",
            ) from None


def forwarded_metadata(node_id: int) -> tuple[tuple[str, str], ...]:
    """The metadata of a call this node makes to another on behalf of its caller: who
    forwards it and, when known, the caller's principal and host (``_authz.py``)."""
    metadata: tuple[tuple[str, str], ...] = ((FORWARDED_BY_KEY, str(node_id)),)
    caller = CALLER.get()
    if caller is not None:
        metadata += ((FORWARDED_PRINCIPAL_KEY, caller.principal),
                     (FORWARDED_HOST_KEY, caller.host))
    return metadata


def _forwarded_by(context: grpc.aio.ServicerContext) -> int:
    for key, value in context.invocation_metadata() or ():
        if key == FORWARDED_BY_KEY:
            try:
                return int(value)
            except ValueError:
                return -1  # forwarded, by someone unknown: still never forward it again
    return 0
