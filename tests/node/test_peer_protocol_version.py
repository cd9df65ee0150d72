"""The peer protocol's version field (node/_transport.py, README "Rolling restart and
upgrade"): a node takes Raft traffic of its own version and of the previous one (0: a node
from before the field) and refuses any other with a clear error and one warning per peer.

A real ``RaftPeerService`` on a real gRPC server on loopback; the "peer" is a raw stream."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from raftka.node._transport import (
    PROTOCOL_VERSION, PROTOCOL_VERSIONS_ACCEPTED, RaftPeerService, encode_batch,
)
from raftka.raft import Message, MsgType
from raftka.v1 import raft_pb2, raft_pb2_grpc

from tests.harness import error_info


def _heartbeat_batch(version: int) -> raft_pb2.RaftBatch:
    batch = encode_batch(2, 1, [(7, Message(MsgType.HEARTBEAT, 1, 2, term=3, commit=4))])
    batch.protocol_version = version
    return batch


async def _serve_and_send(batches: list[raft_pb2.RaftBatch], streams: int = 1,
                          entry_formats: dict[int, int] | None = None):
    """Start node 1's peer service, send ``batches`` on each of ``streams`` streams (one
    after the other, as a reconnecting peer does) from node 2; returns (what was delivered,
    the last stream's summary or its error). ``entry_formats``: the service's record of
    its peers' hellos (node 2 is a member)."""
    delivered: list[tuple[int, int]] = []
    service = RaftPeerService(1, lambda items, frm: delivered.extend((frm, g) for g, _ in items),
                              {1: "", 2: ""}, entry_formats)
    server = grpc.aio.server()
    raft_pb2_grpc.add_RaftPeerServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = raft_pb2_grpc.RaftPeerStub(channel)

            async def requests():
                for b in batches:
                    yield b
            for _ in range(streams):
                try:
                    outcome = await stub.Stream(requests(), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    outcome = exc
        return delivered, outcome
    finally:
        await server.stop(None)


def test_the_current_and_the_previous_version_are_both_accepted() -> None:
    assert PROTOCOL_VERSION in PROTOCOL_VERSIONS_ACCEPTED
    assert PROTOCOL_VERSION - 1 in PROTOCOL_VERSIONS_ACCEPTED
    assert encode_batch(1, 2, []).protocol_version == PROTOCOL_VERSION
    delivered, outcome = asyncio.run(_serve_and_send(
        [_heartbeat_batch(PROTOCOL_VERSION), _heartbeat_batch(PROTOCOL_VERSION - 1)]))
    assert isinstance(outcome, raft_pb2.RaftStreamSummary), outcome
    assert outcome.batches == 2
    assert delivered == [(2, 7), (2, 7)]


@pytest.mark.parametrize("version", [PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 40])
def test_a_peer_of_an_unsupported_version_is_refused_with_a_clear_error_logged_once(
        version: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="raftka.transport")
    delivered, outcome = asyncio.run(_serve_and_send([_heartbeat_batch(version)] * 3,
                                                     streams=3))
    assert delivered == []  # nothing of it reached the Raft groups
    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
    assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(outcome)
    assert info is not None and info.code == 10  # INVALID_REQUEST
    assert f"unsupported peer protocol version {version} from node 2" in outcome.details()
    assert f"speaks version {PROTOCOL_VERSION}" in outcome.details()
    warnings = [r.getMessage() for r in caplog.records if "refusing raft traffic" in
                r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"version {version} from node 2" in warnings[0]


def test_a_peers_hello_tells_which_log_entries_it_reads() -> None:
    """``NodeHello.entry_format`` (node/_produce_coalescer.py rule 5): kept per peer from
    its last hello; a node from before the field sends none and counts as 0, and a field
    it does not know changes nothing for an older receiver (protobuf skips it)."""
    formats: dict[int, int] = {}
    new = _heartbeat_batch(PROTOCOL_VERSION)
    new.hello.CopyFrom(raft_pb2.NodeHello(rack="r1", entry_format=2))
    asyncio.run(_serve_and_send([new], entry_formats=formats))
    assert formats == {2: 2}
    old = _heartbeat_batch(PROTOCOL_VERSION)
    old.hello.CopyFrom(raft_pb2.NodeHello(rack="r1"))  # restarted on an older release
    delivered, _ = asyncio.run(_serve_and_send([old], entry_formats=formats))
    assert formats == {2: 0} and delivered == [(2, 7)]
