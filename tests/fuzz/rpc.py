"""The ``rpc`` fuzz target: every unary RPC of the public contract against a live node.

A one-node cluster runs in this process (its own thread and event loop), so atheris's
coverage of the node's code guides the fuzzer. Each input picks an RPC and fills its
request field by field from the input's bytes (a structure-aware generator driven by the
protobuf descriptors, so that requests get past parsing into the handlers: topic names
that exist, valid record batches, small waits). A node may refuse anything, but an answer
of INTERNAL or UNKNOWN (a handler's bug), a dead node (UNAVAILABLE) or a call that
outlives its deadline is a finding."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time

import atheris
import grpc
from google.protobuf.descriptor import FieldDescriptor

from raftka.node._config import from_args
from raftka.node._server import serve
from raftka.v1 import admin_pb2, broker_pb2, debug_pb2, group_pb2, security_pb2, share_pb2, txn_pb2
from raftka.v1.recordbatch import Record, build_batch

_MODULES = (broker_pb2, admin_pb2, group_pb2, share_pb2, security_pb2, debug_pb2, txn_pb2)
_NAMES = ("t", "t", "", "nope", "__consumer_offsets", "g", "x" * 300, "bad/name", "ü")
_DEADLINE_S = 5.0
_INTERNAL = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# legitimate answers too (a produce whose timeout_ms is 1 ms is UNAVAILABLE: not committed
# in time), a finding only if the node no longer answers its health check
_MAYBE_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _methods() -> list[tuple[str, type, type]]:
    out = []
    for module in _MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                if m.client_streaming or m.server_streaming:
                    continue
                out.append((f"/{service.full_name}/{m.name}",
                            getattr(module, m.input_type.name),
                            getattr(module, m.output_type.name)))
    return out


class _Filler:
    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp

    def fill(self, msg, depth: int = 0) -> None:
        for field in msg.DESCRIPTOR.fields:
            if not self.fdp.ConsumeBool():
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                key_f, value_f = (field.message_type.fields_by_name[n] for n in ("key", "value"))
                for _ in range(self.fdp.ConsumeIntInRange(0, 3)):
                    key = self.scalar(key_f)
                    if value_f.type == FieldDescriptor.TYPE_MESSAGE:
                        if depth < 3:
                            self.fill(getattr(msg, field.name)[key], depth + 1)
                    else:
                        getattr(msg, field.name)[key] = self.scalar(value_f)
            elif field.is_repeated:
                for _ in range(self.fdp.ConsumeIntInRange(0, 3)):
                    if field.type == FieldDescriptor.TYPE_MESSAGE:
                        if depth < 3:
                            self.fill(getattr(msg, field.name).add(), depth + 1)
                    else:
                        getattr(msg, field.name).append(self.scalar(field))
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth < 3:
                    self.fill(getattr(msg, field.name), depth + 1)
            else:
                setattr(msg, field.name, self.scalar(field))

    def scalar(self, field):
        fdp, t, name = self.fdp, field.type, field.name
        if t == FieldDescriptor.TYPE_STRING:
            return _NAMES[fdp.ConsumeIntInRange(0, len(_NAMES) - 1)] if fdp.ConsumeBool() \
                else fdp.ConsumeUnicodeNoSurrogates(12)
        if t == FieldDescriptor.TYPE_BYTES:
            if fdp.ConsumeBool():  # a valid batch, to reach what follows the checks
                return build_batch([Record(fdp.ConsumeBytes(4) or None, fdp.ConsumeBytes(16))
                                    for _ in range(fdp.ConsumeIntInRange(1, 3))],
                                   compression="none")
            return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 96))
        if t == FieldDescriptor.TYPE_BOOL:
            return fdp.ConsumeBool()
        if t == FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return values[fdp.ConsumeIntInRange(0, len(values) - 1)] if fdp.ConsumeBool() \
                else fdp.ConsumeIntInRange(-2, 40)
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return fdp.ConsumeFloat()
        signed = t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64,
                       FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
                       FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64)
        bits = 64 if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
                           FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED64,
                           FieldDescriptor.TYPE_SFIXED64) else 32
        if name.endswith("_ms") or name.endswith("_s") or "timeout" in name:
            return fdp.ConsumeIntInRange(-1 if signed else 0, 200)  # waits stay short
        choice = fdp.ConsumeIntInRange(0, 3)
        if choice == 0:
            return fdp.ConsumeIntInRange(-1 if signed else 0, 8)
        lo = -(1 << (bits - 1)) if signed else 0
        hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        if choice == 1:
            return (lo, hi, 0, -1 if signed else 1)[fdp.ConsumeIntInRange(0, 3)]
        return fdp.ConsumeIntInRange(lo, hi)


class LiveNode:
    """A one-node cluster in a thread of this process, with topic ``t`` (2 partitions)."""

    def __init__(self) -> None:
        import socket

        self._dir = tempfile.TemporaryDirectory(prefix="raftka-fuzz-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        config = from_args(["--id", "1", "--listen", self.address, "--peers",
                            f"1={self.address}", "--data-dir", self._dir.name,
                            "--tick-ms", "50", "--log-level", "error"])
        self._thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self._thread.start()
        self.channel = grpc.insecure_channel(self.address)
        self._wait_ready()

    def alive(self) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5)
        except grpc.RpcError:
            return False
        return True

    @staticmethod
    def _run(config) -> None:
        loop = asyncio.new_event_loop()
        loop.add_signal_handler = lambda *args, **kwargs: None  # not the main thread
        loop.run_until_complete(serve(config))

    def _wait_ready(self) -> None:
        create = self.channel.unary_unary(
            "/raftka.v1.Admin/CreateTopic",
            request_serializer=admin_pb2.CreateTopicRequest.SerializeToString,
            response_deserializer=admin_pb2.CreateTopicResponse.FromString)
        deadline = time.monotonic() + 60
        while True:
            try:
                create(admin_pb2.CreateTopicRequest(name="t", partitions=2,
                                                    replication_factor=1), timeout=5)
                break
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the fuzzed node did not start: {e}") from None
                time.sleep(0.2)
        time.sleep(1.0)  # the partitions elect their (only) replica


_node: LiveNode | None = None
_calls: list = []


def rpc(data: bytes) -> None:
    global _node
    if _node is None:
        _node = LiveNode()
        for path, req_cls, resp_cls in _methods():
            _calls.append((path, req_cls, _node.channel.unary_unary(
                path, request_serializer=req_cls.SerializeToString,
                response_deserializer=resp_cls.FromString)))
    fdp = atheris.FuzzedDataProvider(data)
    path, req_cls, call = _calls[fdp.ConsumeIntInRange(0, len(_calls) - 1)]
    request = req_cls()
    _Filler(fdp).fill(request)
    try:
        call(request, timeout=_DEADLINE_S)
    except grpc.RpcError as e:
        code = e.code()
        if code in _INTERNAL or (code in _MAYBE_DOWN and not _node.alive()):
            raise AssertionError(f"{path} answered {code.name}: {e.details()}\n"
                                 f"request: {request}") from None
