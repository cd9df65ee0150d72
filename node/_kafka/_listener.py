"""The Kafka listener: an asyncio TCP server on the node's own event loop.

One connection, rules:

1. A request is a 4-byte size and that many bytes (at most ``REQUEST_SIZE_MAX``, Kafka's
   ``socket.request.max.bytes`` default). A bigger or negative size, a frame that does not
   decode as its API version's schema, or an API or version this node does not serve
   closes the connection after one log line (what Kafka's broker does); ApiVersions at a
   version this node does not know is answered with UNSUPPORTED_VERSION and the versions
   it serves (KIP-511), so the client can retry with one it knows.
2. Requests are handled concurrently, answers are written in request order (Kafka clients
   pipeline requests and match answers by order as well as by correlation id). A Produce
   request queues its batches on their partitions before the next request of the
   connection is read, so an idempotent producer's pipelined batches reach the log in the
   order it sent them.
3. At most ``IN_FLIGHT_MAX`` requests of one connection are unanswered; reading waits
   beyond that (back-pressure on the socket). A connection idle for ``IDLE_TIMEOUT_S``
   (Kafka's ``connections.max.idle.ms``), or whose request does not arrive whole within
   ``FRAME_TIMEOUT_S`` of its size, is closed.
4. An unexpected exception in a handler is logged with its traceback and closes that
   connection; the node keeps serving. A client that goes away ends its connection's
   tasks.
5. Security (``_security.py``): TLS when the node has a certificate; a connection that is
   not authenticated may send only ApiVersions and the SASL APIs (anything else closes
   it after one log line), and a failed SASL exchange closes it after its answer. A
   connection over a quota is muted (no request read) until its throttle time passed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import time

from .._broker import Broker
from ._apis import KafkaApis
from ._codec import MalformedRequest, encode_response, fixed_header, parse_request
from ._security import PRE_AUTH_APIS, Connection, ListenerSecurity

log = logging.getLogger("raftka.kafka")

REQUEST_SIZE_MAX = 100 << 20
IN_FLIGHT_MAX = 100
IDLE_TIMEOUT_S = 600.0  # Kafka's connections.max.idle.ms default
FRAME_TIMEOUT_S = 60.0  # a request whose size arrived must arrive whole within this
# The stream reader's buffer: the socket is read in pieces up to this size before the
# request handler runs (asyncio's default, 64 KiB, made a 1 MB produce request take ~16
# trips through a busy event loop before it could be handled).
READ_BUFFER_BYTES = 4 << 20
ANSWER_DRAIN_S = 35.0  # after the client closed its side: the longest long poll, and some
_SIZE = struct.Struct(">i")


class KafkaListener:
    """Serves the Kafka protocol on ``broker.config.kafka_listen``."""

    def __init__(self, broker: Broker, apis: KafkaApis,
                 tls: ssl.SSLContext | None = None) -> None:
        self._broker = broker
        self._apis = apis
        self._tls = tls
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        host, _, port = self._broker.config.kafka_listen.rpartition(":")
        self._server = await asyncio.start_server(
            self._accept, host.strip("[]"), int(port), reuse_address=True,
            limit=READ_BUFFER_BYTES, ssl=self._tls,
            ssl_handshake_timeout=FRAME_TIMEOUT_S if self._tls is not None else None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        peer_name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        ssl_object = writer.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            auth = Connection(self._apis.listener_security, host, cert)
            await auth.start()
            await _Connection(self._apis, reader, writer, peer_name, auth).run()
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()


class _Connection:
    def __init__(self, apis: KafkaApis, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str, auth: Connection) -> None:
        self.apis = apis
        self.auth = auth
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.answers: asyncio.Queue[tuple[asyncio.Future, type, int, str] | None] = \
            asyncio.Queue()
        self.slots = asyncio.Semaphore(IN_FLIGHT_MAX)

    async def run(self) -> None:
        writing = asyncio.ensure_future(self._write_answers())
        try:
            await self._read_requests(writing)
        except asyncio.CancelledError:  # the node stops: drop what is unanswered
            writing.cancel()
            self._abandon()
            raise
        if not writing.done():
            self.answers.put_nowait(None)  # the client closed: write what is answered
            try:
                await asyncio.wait_for(asyncio.shield(writing), ANSWER_DRAIN_S)
            except asyncio.TimeoutError:
                writing.cancel()
                self._abandon()

    async def _read_requests(self, writing: asyncio.Future) -> None:
        reader = self.reader
        auth = self.auth
        while not writing.done():
            muted_s = auth.muted_until - time.monotonic()
            if muted_s > 0:  # over a quota: rule 5
                await asyncio.sleep(muted_s)
            try:
                # asyncio.timeout, not wait_for: wait_for wraps each read in a task of its
                # own (2-3x the cost of the read of a buffered frame, twice per request)
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    size_bytes = await reader.readexactly(4)
            except TimeoutError:
                log.info("kafka client %s: idle for %.0f s; closing the connection", self.peer,
                         IDLE_TIMEOUT_S)
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            (size,) = _SIZE.unpack(size_bytes)
            if not 0 <= size <= REQUEST_SIZE_MAX:
                log.warning("kafka client %s: request size %d is outside 0..%d; closing the "
                            "connection", self.peer, size, REQUEST_SIZE_MAX)
                return
            try:
                async with asyncio.timeout(FRAME_TIMEOUT_S):
                    frame = await reader.readexactly(size)
            except TimeoutError:
                log.warning("kafka client %s: a %d-byte request did not arrive within %.0f s; "
                            "closing the connection", self.peer, size, FRAME_TIMEOUT_S)
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            await self.slots.acquire()
            if auth.raw:  # a bare SASL token (SaslHandshake v0): the client sends it once
                # it has the handshake's answer, and waits for this one before going on
                self.answers.put_nowait((asyncio.ensure_future(auth.raw_token(frame)), None,
                                         0, "SASL token"))
                continue
            if auth.failed or not self._dispatch(frame):
                return

    def _dispatch(self, frame: bytes) -> bool:
        """Start handling one request; False closes the connection (rule 1)."""
        try:
            api_key, version, correlation_id = fixed_header(frame)
        except MalformedRequest as exc:
            log.warning("kafka client %s: %s; closing the connection", self.peer, exc)
            return False
        apis = self.apis
        if not self.auth.authenticated and api_key not in PRE_AUTH_APIS:
            log.warning("kafka client %s: API key %d before authentication (SASL or a "
                        "client certificate); closing the connection", self.peer, api_key)
            return False
        if not apis.supports(api_key, version):
            answer = apis.unsupported_api_versions(api_key, version)
            if answer is None:
                log.warning("kafka client %s: API key %d version %d is not served here "
                            "(see ApiVersions); closing the connection", self.peer, api_key,
                            version)
                return False
            future = asyncio.get_running_loop().create_future()
            future.set_result(answer[1])
            self.answers.put_nowait((future, answer[0], correlation_id, "ApiVersions"))
            return True
        try:
            header, request, response_cls = parse_request(frame, api_key, version)
        except MalformedRequest as exc:
            log.warning("kafka client %s: API key %d version %d request does not decode "
                        "(%s); closing the connection", self.peer, api_key, version, exc)
            return False
        name = type(request).__name__
        task = asyncio.ensure_future(apis.handle(api_key, version, header, request, self.peer,
                                                 self.auth, len(frame)))
        self.answers.put_nowait((task, response_cls, correlation_id, name))
        return True

    async def _write_answers(self) -> None:
        writer = self.writer
        while True:
            item = await self.answers.get()
            if item is None:
                return
            future, response_cls, correlation_id, name = item
            try:
                values = await future
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - rule 4
                log.exception("kafka client %s: %s failed; closing the connection",
                              self.peer, name)
                self._abandon()
                writer.close()
                return
            finally:
                self.slots.release()
            if values is None:  # Produce with acks=0: no answer
                continue
            try:
                if response_cls is None:  # a bare SASL token
                    writer.writelines((_SIZE.pack(len(values)), values))
                else:
                    writer.writelines(encode_response(response_cls, correlation_id, values))
                if writer.transport.get_write_buffer_size() > (1 << 20):
                    await writer.drain()
            except ConnectionError:
                self._abandon()
                return
            except Exception:  # noqa: BLE001 - an answer that does not encode is a bug
                log.exception("kafka client %s: the %s answer does not encode; closing the "
                              "connection", self.peer, name)
                self._abandon()
                writer.close()
                return
            if self.auth.failed:  # rule 5: the SASL failure is answered, then closed
                log.info("kafka client %s: authentication failed; closing the connection",
                         self.peer)
                await writer.drain()
                self._abandon()
                writer.close()
                return

    def _abandon(self) -> None:
        while not self.answers.empty():
            item = self.answers.get_nowait()
            if item is not None:
                item[0].cancel()
