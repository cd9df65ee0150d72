"""An asyncio web service on raftka.aio, in the shape of a FastAPI app, runnable with the
standard library alone (FastAPI is not a Raftka dependency).

    python examples/asyncio/order_api.py --bootstrap 127.0.0.1:7001 --port 8080
    curl -X POST localhost:8080/orders -d '{"id": "o-1", "item": "book", "qty": 2}'
    curl localhost:8080/orders/o-1

- ``POST /orders`` writes the order to the ``orders`` topic (key = order id, so one
  order's events stay in one partition, in order) and answers once the write is
  acknowledged by a majority (``acks="all"``, idempotent): the user waits for "order
  placed", not for a batch timer (``linger_ms=0``).
- A consumer-group member running beside the server (``order-status`` group) reads the
  topic and keeps each order's status; ``GET /orders/{id}`` answers from it. Start a
  second instance with another ``--port``: the two split the partitions.

The same with FastAPI (what each piece below stands for)::

    @asynccontextmanager
    async def lifespan(app):                      # == Service.start / Service.stop
        app.state.producer = raftka.aio.Producer(BOOTSTRAP, linger_ms=0)
        app.state.statuses = {}
        task = asyncio.create_task(follow(app.state.statuses))
        yield
        task.cancel()
        await app.state.producer.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders")                          # == Service.place_order
    async def place(order: Order, request: Request):
        partition, offset = await request.app.state.producer.send_and_wait(
            "orders", order.json(), key=order.id)
        return {"id": order.id, "partition": partition, "offset": offset}

    @app.get("/orders/{order_id}")                # == Service.order_status
    async def status(order_id: str, request: Request): ...

Every call is awaited on the server's one event loop; the client never blocks it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging

import raftka.aio
from raftka.client import RaftkaError, TopicExistsError

TOPIC = "orders"
log = logging.getLogger("order_api")


class Service:
    """The application: what a FastAPI app's lifespan and routes would hold."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.statuses: dict[str, dict] = {}
        self.producer: raftka.aio.Producer | None = None
        self._follower: asyncio.Task | None = None

    async def start(self) -> None:
        async with raftka.aio.Admin(self.bootstrap) as admin:
            with contextlib.suppress(TopicExistsError):
                await admin.create_topic(TOPIC, partitions=3, replication_factor=3)
            await admin.wait_for_topic_ready(TOPIC, timeout=30)
        self.producer = raftka.aio.Producer(self.bootstrap, acks="all", linger_ms=0)
        self._follower = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self.producer is not None:
            await self.producer.close()

    async def place_order(self, body: dict) -> tuple[int, dict]:
        order_id = str(body.get("id") or "")
        if not order_id or not isinstance(body.get("qty", 1), int):
            return 400, {"error": "an order needs an 'id' and an integer 'qty'"}
        assert self.producer is not None
        try:
            partition, offset = await self.producer.send_and_wait(
                TOPIC, json.dumps(body).encode(), key=order_id)
        except RaftkaError as e:
            return 503, {"error": f"the order was not stored: {e}"}
        return 201, {"id": order_id, "status": "placed", "partition": partition,
                     "offset": offset}

    async def order_status(self, order_id: str) -> tuple[int, dict]:
        status = self.statuses.get(order_id)
        if status is None:
            return 404, {"error": f"no order {order_id!r} seen yet"}
        return 200, status

    async def _follow(self) -> None:
        """A group member: every order's latest state (committed after it is kept)."""
        async with raftka.aio.Consumer(self.bootstrap, self.group, [TOPIC]) as consumer:
            while True:
                records = await consumer.poll(1.0)
                for r in records:
                    order = json.loads(r.value)
                    self.statuses[order["id"]] = {**order, "status": "placed",
                                                  "partition": r.partition,
                                                  "offset": r.offset}
                if records:
                    await consumer.commit()


# ---------------------------------------------------------------------- a tiny HTTP layer
# (what FastAPI/uvicorn would be: parse a request, call a route, write JSON)


async def _handle(service: Service, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in header_lines if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        if method == "POST" and path == "/orders":
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                code, answer = 400, {"error": "the body is not JSON"}
            else:
                code, answer = (await service.place_order(payload) if isinstance(payload, dict)
                                else (400, {"error": "the body must be a JSON object"}))
        elif method == "GET" and path.startswith("/orders/"):
            code, answer = await service.order_status(path[len("/orders/"):])
        else:
            code, answer = 404, {"error": f"no route {method} {path}"}
    except (asyncio.IncompleteReadError, ValueError, UnicodeDecodeError):
        code, answer = 400, {"error": "bad request"}
    data = json.dumps(answer).encode()
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found",
              503: "Service Unavailable"}[code]
    writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


STOP_TIMEOUT_S = 10.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--group", default="order-status")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = Service(args.bootstrap, args.group)
    await service.start()
    server = await asyncio.start_server(lambda r, w: _handle(service, r, w),
                                        "127.0.0.1", args.port)
    log.info("serving on http://127.0.0.1:%d", args.port)
    try:
        async with server:
            await server.serve_forever()
    finally:
        try:  # Ctrl-C: leave the group and flush, but never hang the exit on it
            async with asyncio.timeout(STOP_TIMEOUT_S):  # (not wait_for: see raftka.aio)
                await service.stop()
        except TimeoutError:
            log.warning("stopping took over %.0f s; exiting anyway", STOP_TIMEOUT_S)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
