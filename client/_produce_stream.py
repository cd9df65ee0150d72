"""How the producer's requests travel: one ``Broker.ProduceStream`` per broker, and unary
``Produce`` calls for lone batches.

**Why a bidirectional stream and not many unary calls.** Several unary calls on one HTTP/2
connection are independent RPCs: the server runs each in its own handler task, so two
batches sent in order may reach the partition in the other order. With idempotence that
is safe (the second gets OUT_OF_ORDER_SEQUENCE) but costs a retry; without it, it
reorders records. ``Broker.ProduceStream`` reads a stream's requests strictly in order
and queues each on its partition before reading the next, so pipelined batches reach the
Raft log in send order. It is also cheaper per message than a unary call. Sequence
numbers remain the safety net: order across streams (after a leader change) is never
assumed.

Rules:

1. Each request on a stream carries a correlation id (the sender's attempt id); answers
   come back tagged with it, *in the order the writes complete* (not necessarily the
   order sent), and each goes to the callback registered for its id, on the stream's
   reader thread. An answer with an ``error`` becomes the error class of the contract
   table, like a failed unary call.
2. A stream that ends, fails or is abandoned answers every request still open with a
   retriable error (``BrokerNotAvailableError``, or the abandoning error): nothing waits
   for an answer that cannot come. A request sent on a broken stream is answered so at
   once. A CANCELLED stream is retriable too: its requests may still have been written.
3. The sender abandons a stream that leaves an answer overdue (``request_timeout_ms``
   plus half again: the broker answers every request within its timeout, NO_QUORUM at
   worst), and the next request to that broker opens a new stream.
4. A unary ``Produce`` call (:func:`produce_unary`) is answered on gRPC's channel thread;
   a failed call becomes its contract error class, CANCELLED (a channel closed under it)
   the retriable ``BrokerNotAvailableError``. The sender sends one only when nothing else
   of the partition is in flight, so there is no second request to reorder against.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import grpc

from raftka.v1 import broker_pb2, broker_pb2_grpc
from raftka.v1.errors import (
    ERROR_METADATA_KEY,
    BrokerNotAvailableError,
    RaftkaError,
    error_from_rpc,
)

__all__ = ["ProduceStream", "ProduceStreams", "error_from_info", "produce_unary"]

_STREAM_CLOSE = object()

# callback(response, error): exactly one of them is None
AnswerCallback = Callable[[Any, RaftkaError | None], None]


class _StreamError:
    """An ErrorInfo from a stream answer, shaped like the grpc.RpcError that
    ``error_from_rpc`` reads (the same table of classes applies)."""

    def __init__(self, info: Any) -> None:
        self._info = info

    def code(self) -> None:
        return None

    def details(self) -> str:
        return self._info.message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((ERROR_METADATA_KEY, self._info.SerializeToString()),)


def error_from_info(info: Any, what: str) -> RaftkaError:
    """The contract's error for the ``ErrorInfo`` of a stream answer (rule 1)."""
    return error_from_rpc(_StreamError(info), what)


class ProduceStream:
    """One ``Broker.ProduceStream`` to one broker, shared by every partition it leads.

    The thread holding a partition calls ``send``; gRPC consumes the request queue in its
    own thread; a reader thread matches answers to callbacks by correlation id (rule 1)
    and fails the open ones when the stream ends (rule 2)."""

    def __init__(self, stub: broker_pb2_grpc.BrokerStub, address: str) -> None:
        self.address = address
        self.broken = False
        self._lock = threading.Lock()
        self._callbacks: dict[int, AnswerCallback] = {}
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call = stub.ProduceStream(iter(self._requests.get, _STREAM_CLOSE))
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"raftka-producer-stream-{address}")
        self._reader.start()

    def has(self, correlation_id: int) -> bool:
        with self._lock:
            return correlation_id in self._callbacks

    def send(self, correlation_id: int, request: broker_pb2.ProduceRequest,
             callback: AnswerCallback) -> None:
        with self._lock:
            if not self.broken:
                self._callbacks[correlation_id] = callback
                self._requests.put(broker_pb2.ProduceStreamRequest(
                    correlation_id=correlation_id, request=request))
                return
        err = BrokerNotAvailableError(f"ProduceStream to {self.address} has ended")
        callback(None, err)

    def abandon(self, error: RaftkaError) -> None:
        self._call.cancel()
        self._fail_all(error)

    def _read(self) -> None:
        error: RaftkaError
        try:
            for answer in self._call:
                with self._lock:
                    callback = self._callbacks.pop(answer.correlation_id, None)
                if callback is None:
                    continue
                if answer.HasField("error"):
                    callback(None, error_from_info(
                        answer.error, f"Produce at {self.address}"))
                else:
                    callback(answer.response, None)
            error = BrokerNotAvailableError(f"ProduceStream to {self.address} ended")
        except grpc.RpcError as e:
            error = error_from_rpc(e, f"ProduceStream to {self.address}")
            if not error.retriable:  # e.g. CANCELLED: the answer may still come; retry
                error = BrokerNotAvailableError(str(error))
        except Exception as e:  # noqa: BLE001
            error = BrokerNotAvailableError(f"ProduceStream to {self.address}: {e!r}")
        self._fail_all(error)

    def _fail_all(self, error: RaftkaError) -> None:
        with self._lock:
            self.broken = True
            callbacks, self._callbacks = self._callbacks, {}
        self._requests.put(_STREAM_CLOSE)
        for callback in callbacks.values():
            callback(None, error)


class ProduceStreams:
    """The producer's streams, one per broker address, opened on first use; a broken one
    is replaced by the next :meth:`get`. Thread-safe."""

    def __init__(self, stub_for: Callable[[str], broker_pb2_grpc.BrokerStub]) -> None:
        self._stub_for = stub_for
        self._lock = threading.Lock()  # the producer takes it after its own, never before
        self._streams: dict[str, ProduceStream] = {}

    def get(self, address: str) -> ProduceStream:
        """The open stream to ``address`` (raises RaftkaError when the client is closed)."""
        with self._lock:
            stream = self._streams.get(address)
            if stream is None or stream.broken:
                stream = self._streams[address] = ProduceStream(self._stub_for(address),
                                                                address)
            return stream

    def address_of(self, correlation_id: int) -> str:
        """The broker whose stream carries the request ``correlation_id`` ("" if none)."""
        with self._lock:
            streams = list(self._streams.items())
        for address, stream in streams:
            if stream.has(correlation_id):
                return address
        return ""

    def abandon(self, address: str, error: RaftkaError) -> None:
        """Rule 3: give up the stream to ``address``; its open requests get ``error``."""
        with self._lock:
            stream = self._streams.pop(address, None)
        if stream is not None:
            stream.abandon(error)

    def close(self, error: RaftkaError) -> None:
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            stream.abandon(error)


def produce_unary(stub: broker_pb2_grpc.BrokerStub, address: str,
                  request: broker_pb2.ProduceRequest, timeout_s: float,
                  callback: AnswerCallback) -> None:
    """Rule 4: send ``request`` as one unary ``Produce``; ``callback(response, error)``
    runs on gRPC's channel thread (or here, when the call ended at once). Raises
    ValueError when the channel is closed."""
    call = stub.Produce.future(request, timeout=timeout_s)
    call.add_done_callback(lambda c: _unary_answer(c, address, callback))


def _unary_answer(call: Any, address: str, callback: AnswerCallback) -> None:
    try:
        response = call.result()
    except grpc.RpcError as e:
        error = error_from_rpc(e, f"Produce to {address}")
        if not error.retriable and e.code() == grpc.StatusCode.CANCELLED:
            error = BrokerNotAvailableError(str(error))  # e.g. a channel closed under it
        callback(None, error)
    except Exception as e:  # noqa: BLE001 - e.g. CancelledError
        callback(None, BrokerNotAvailableError(f"Produce to {address}: {e!r}"))
    else:
        callback(response, None)
