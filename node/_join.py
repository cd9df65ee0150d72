"""Joining a running cluster (``raftka node --join HOST:PORT ...``, issue 19).

Before the broker starts, a node with ``join`` and no membership file asks the members it
was given, in turn, to register it (``Admin.JoinCluster``; any member forwards it to the
controller leader, which commits a ``register_node`` command). The answer names its id (the
one asked for, or one the controller picked), every node's addresses and the cluster's first
nodes; ``NodeConfig.joined_as`` writes them to ``<data_dir>/membership.json`` (fsynced)
before the node starts, so a restart needs no ``--join``.

Security: without TLS the call is plain text. With a peer port (``peer_listen``, mutual TLS)
``join`` names members' peer ports with their ids (``1=10.0.0.1:7101``): the node dials them
with its own peer certificate, which must be made out to its id (``peer_name_template``),
and checks each member's certificate against that member's id, as peers do. The member's
peer port lets a JoinCluster in from a certificate of the peer CA that names a node that is
no member yet, and only for that node id (``_authz.py``, ``JOINER``): the peer CA signs
certificates for the cluster's machines only, so holding one is the proof. No user
principal or ACL is involved (the member forwards the registration as its own call). With
TLS on the client port and no peer port, the node dials the client ports with TLS, its own
certificate as client certificate (as its peer channels will).

Retries: a member that cannot be reached, or a retriable refusal (no controller leader yet,
no quorum), moves on to the next member after a backoff, until ``JOIN_TIMEOUT_S``. A
definite refusal (an id in use, a bad address) ends the attempt at once with the
controller's message: nothing was registered.

After the start the node has no replica of the controller group (an empty configuration);
the controller leader adds it as a learner (etcd's learner-first member add) and catches
it up with the log or a snapshot (``_reassignment.py``); it votes only if the voter
replacement logic promotes it.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from raftka.v1 import admin_pb2, admin_pb2_grpc
from raftka.v1.errors import error_details

from ._config import ConfigError, NodeConfig, split_join_entry
from ._tls import client_tls, peer_tls

log = logging.getLogger("raftka.join")

JOIN_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 10.0
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 2.0


class JoinRefused(ConfigError):
    """The cluster refused this node (the message is the controller's) or never answered."""


async def join(config: NodeConfig, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """Register this node through ``config.join`` and take the answer into ``config``
    (persisted). Raises JoinRefused."""
    request = admin_pb2.JoinClusterRequest(
        node_id=config.node_id, address=config.advertise, peer_address=config.peer_listen,
        kafka_address=config.kafka_advertised if config.kafka_listen else "",
        rack=config.rack)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff = BACKOFF_FIRST_S
    last = "no member answered"
    while True:
        for entry in config.join:
            member_id, member = split_join_entry(entry)
            budget = min(CALL_TIMEOUT_S, deadline - loop.time())
            if budget <= 0:
                raise JoinRefused(f"could not join the cluster through {', '.join(config.join)} "
                                  f"within {timeout_s:.0f}s: {last}")
            async with _channel(config, member_id, member) as channel:
                try:
                    answer = await admin_pb2_grpc.AdminStub(channel).JoinCluster(
                        request, timeout=budget)
                except grpc.aio.AioRpcError as exc:
                    details = error_details(exc.trailing_metadata())
                    if details is not None and details.code and not details.retriable:
                        raise JoinRefused(f"the cluster refused this node: {details.message}"
                                          ) from None
                    last = f"{member}: {exc.code().name}: {exc.details()}"
                    log.info("join through %s failed: %s; retrying", member, last)
                    continue
            _take(config, answer)
            log.warning("joined the cluster as node %d through %s", answer.node_id, member)
            return
        await asyncio.sleep(min(backoff, max(deadline - loop.time(), 0)))
        backoff = min(backoff * 2, BACKOFF_MAX_S)


def _channel(config: NodeConfig, member_id: int, member: str) -> grpc.aio.Channel:
    """A channel to a member, secured as this node's peer channels will be (docstring)."""
    try:
        peer = peer_tls(config)
        client = client_tls(config)
    except ValueError as exc:
        raise JoinRefused(str(exc)) from None
    if peer is not None:
        return grpc.aio.secure_channel(member, peer.channel_credentials(), options=[
            ("grpc.ssl_target_name_override",
             config.peer_name_template.format(id=member_id))])
    if client is not None:
        return grpc.aio.secure_channel(member, grpc.ssl_channel_credentials(
            client.ca, client.key, client.cert))
    return grpc.aio.insecure_channel(member)


def _take(config: NodeConfig, answer: admin_pb2.JoinClusterResponse) -> None:
    if answer.node_id <= 0 or not answer.initial_node_ids:
        raise JoinRefused(f"the join answer is incomplete (node id {answer.node_id}, first "
                          f"nodes {list(answer.initial_node_ids)}): is the member a Raftka "
                          "node of this release?")
    peers = {n.id: n.address for n in answer.nodes if n.id != answer.node_id and n.address}
    kafka = {n.id: n.kafka_address for n in answer.nodes if n.kafka_address}
    peer_ports = {n.id: n.peer_address for n in answer.nodes
                  if n.id != answer.node_id and n.peer_address}
    config.joined_as(answer.node_id, peers, kafka, tuple(answer.initial_node_ids),
                     peer_ports)
