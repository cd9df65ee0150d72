"""Raftka's side: a fresh 3-node cluster (tests/harness.py: real ``python -m raftka.node``
processes on loopback) driven only through the public client API (``client``: Admin,
Producer, PartitionReader, TopicReader)."""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from raftka.client import (
    Acl, Admin, ClientSecurity, PartitionReader, Producer, RaftkaError, TopicReader,
)
from bench._common import (
    Bounded,
    Settings,
    Ticker,
    bar,
    idle_usage,
    pace,
    percentiles_ms,
    stored_records,
    value_of,
)
from tests.harness import Cluster

SEND_MANY_CHUNK = 1000  # records per send_many call in the bulk producer
PRODUCER_BULK = {"linger_ms": 5, "batch_size": 1000 * 1024}  # < max.message.bytes (1 MiB)
PRODUCER_LATENCY = {"linger_ms": 0}
READER_MAX_BYTES = 4 << 20
SCALE_SETTLE_S = 150.0  # bound on waiting for every partition of w7 to elect a leader
_WORDS = (b"alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
          b"november oscar papa quebec romeo sierra tango uniform victor whiskey").split()


def distinct_values(size: int, count: int = SEND_MANY_CHUNK) -> list[bytes]:
    """``count`` different JSON-like values of exactly ``size`` bytes (ids, amounts, a random
    token and words vary), so the producer's lz4 sees realistic data: one value repeated
    would compress tens of times and flatter Raftka (NATS does not compress)."""
    rng = random.Random(size)
    out = []
    for i in range(count):
        head = (b'{"order": %d, "sku": "%s", "qty": %d, "price": %d, "note": "'
                % (rng.randrange(10**8), rng.randbytes(6).hex().encode(), rng.randrange(1, 9),
                   rng.randrange(100, 99_999)))
        words = b" ".join(rng.choice(_WORDS) for _ in range(size // 5))
        out.append((head + words)[: size - 2] + b'"}')
    return out


class RaftkaSystem(Bounded):
    name = "Raftka"

    def __init__(self, settings: Settings, work_dir: Path, secured: bool = False) -> None:
        self.settings = settings
        self.work_dir = work_dir
        self.secured = secured
        self.cluster: Cluster | None = None
        self._topics = 0
        # secured: the producer/reader principal's and the admin's (a super user) settings
        self.security: ClientSecurity | None = None
        self.admin_security: ClientSecurity | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="raftka-", dir=self.work_dir))
        if not self.secured:
            self.cluster = Cluster(root, 3)
            self.cluster.start_all()
            with Admin(self.bootstrap, security=self.admin_security) as admin:
                admin.wait_for_brokers(30)
            return
        # like `raftka dev --auth`: TLS with client certificates on the client port, mutual
        # TLS between nodes, mtls+password authentication, ACLs; the bench's clients are an
        # ordinary principal with rights on the bench's topics and groups only
        from tests.integration.test_security import Pki, _secured_cluster  # noqa: PLC0415
        pki = Pki(root)
        self.cluster = _secured_cluster(root, pki)
        self.cluster.start_all()
        self.admin_security = pki.security(pki.admin)
        self.security = pki.security(pki.client("bench"))
        with Admin(self.bootstrap, security=self.admin_security) as admin:
            admin.wait_for_brokers(30)
            admin.create_acls([Acl("User:bench", op, kind, "bench-", "PREFIXED")
                               for op, kind in (("WRITE", "TOPIC"), ("READ", "TOPIC"),
                                                ("DESCRIBE", "TOPIC"), ("READ", "GROUP"))])

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop_all()
            shutil.rmtree(self.cluster.root, ignore_errors=True)
            self.cluster = None

    @property
    def bootstrap(self) -> list[str]:
        assert self.cluster is not None
        return list(self.cluster.peers.values())

    def describe(self) -> dict[str, str]:
        return {"server": "raftka (this commit), python -m raftka.node x3, tick 50 ms",
                "settings": "3 nodes on loopback; topics replication factor 3; acks=all "
                            "(a majority fsynced: RocksDB WAL flush_wal(sync) before ack)",
                "clients": f"raftka.Producer, defaults (acks=all, idempotent, lz4, batches "
                           f"in flight per partition) with {PRODUCER_BULK}: send_many of "
                           f"{SEND_MANY_CHUNK} records per call, and one send() per record; "
                           f"latency runs {PRODUCER_LATENCY} at 1,000/s, and w1's settings "
                           f"with what is due sent once per ms at 50% of w1's maximum "
                           f"(latency from when a record was due); PartitionReader max_bytes "
                           f"{READER_MAX_BYTES}; throughput and backlog records cycle "
                           f"through {SEND_MANY_CHUNK} distinct JSON-like values (lz4 "
                           f"ratio ~2.2), latency records are one fixed value"}

    def new_topic(self, partitions: int = 1) -> str:
        self._topics += 1
        name = f"bench-{self._topics}"
        with Admin(self.bootstrap, security=self.admin_security) as admin:
            admin.create_topic(name, partitions=partitions, replication_factor=3)
            admin.wait_for_topic_ready(name, timeout=60)
        assert self.cluster is not None
        for p in range(partitions):  # start from the settled, balanced leadership
            self.cluster.wait_preferred_leader(name, p)
        return name

    # ------------------------------------------------------------ workloads
    def produce(self, client: str, size: int, partitions: int) -> dict:
        """client 'bulk': send_many of SEND_MANY_CHUNK records per call, round-robin over
        partitions; 'send': one send() per record (sticky partitioning)."""
        topic = self.new_topic(partitions)
        chunk = distinct_values(size)
        secs = self.settings.produce_s
        with Producer(self.bootstrap, acks="all", security=self.security, **PRODUCER_BULK) as producer:
            stats = producer.statistics
            with Ticker(bar(f"Raftka {client} produce {size}B x{partitions}", None),
                        lambda: stats()["records_sent"]):
                start = time.perf_counter()
                if client == "bulk":
                    p = 0
                    while time.perf_counter() - start < secs:
                        self.check_deadline("Raftka produce")
                        producer.send_many(topic, chunk, partition=p)
                        p = (p + 1) % partitions
                else:
                    send = producer.send
                    while time.perf_counter() - start < secs:
                        self.check_deadline("Raftka produce")
                        for value in chunk:
                            send(topic, value)
                producer.flush(self.left_s())
                elapsed = time.perf_counter() - start
            s = stats()
        return {"rate": round(s["records_sent"] / elapsed), "acked": s["records_sent"],
                "failed": s["records_failed"], "seconds": round(elapsed, 3),
                "requests": s["requests"],
                "retries": s["retries"]}  # > 0: a leader change (or a refused batch) in the run

    def latency(self, rate: float, bulk: bool = False) -> dict:
        """Send-to-ack latency at ``rate``, paced, one send() per due record (send_many of
        the due ones when behind), counted from when each was due. ``bulk``: w1's producer
        settings (PRODUCER_BULK) and what is due sent once per millisecond, for the rate at
        50% of w1's maximum, which neither linger_ms=0 requests nor one Python call per record
        can carry."""
        topic = self.new_topic(1)
        value = value_of(100)
        secs = self.settings.latency_s
        samples: list[float] = []
        config = PRODUCER_BULK if bulk else PRODUCER_LATENCY
        with Producer(self.bootstrap, acks="all", security=self.security, **config) as producer:
            producer.send(topic, value, partition=0).result(10)  # warm the connection

            def send(n: int, t0: float) -> None:
                if n == 1:
                    fut: Future = producer.send(topic, value, partition=0)
                else:  # behind schedule: the due records go together
                    fut = producer.send_many(topic, [value] * n, partition=0)
                fut.add_done_callback(
                    lambda f: samples.extend([time.perf_counter() - t0] * n)
                    if f.exception() is None else None)
            with Ticker(bar(f"Raftka latency @{rate:,.0f}/s", rate * secs), lambda: len(samples)):
                sent, elapsed = pace(rate, secs, send, tick_s=0.001 if bulk else 0.0)
                producer.flush(self.left_s())
            retries = producer.statistics()["retries"]  # > 0: a leader change in the run
        return {**percentiles_ms(samples), "rate": round(sent / elapsed), "retries": retries}

    def latency_aio(self, rate: float) -> dict:
        """w3 at ``rate`` with the asyncio client (``raftka.aio.Producer``, ``linger_ms=0``)
        on its own event loop (asyncio's): one ``await send()`` per due record, the due
        ones in one ``send_many`` when behind. Latency counts from the ``send`` call: the
        loop's timers wake the pacer up to ~1 ms late (their resolution), which is the
        pacer's lateness, not the client's."""
        import asyncio

        import raftka.aio

        topic = self.new_topic(1)
        value = value_of(100)
        secs = self.settings.latency_s
        samples: list[float] = []

        def record(n: int, t0: float):
            return lambda f: (samples.extend([time.perf_counter() - t0] * n)
                              if f.exception() is None else None)

        async def run() -> tuple[int, float]:
            async with raftka.aio.Producer(self.bootstrap, acks="all", security=self.security,
                                           **PRODUCER_LATENCY) as producer:
                await (await producer.send(topic, value, partition=0))  # warm the connection
                total, done = int(rate * secs), 0
                start = time.perf_counter()
                while done < total:
                    now = time.perf_counter()
                    due = min(total, int((now - start) * rate) + 1)
                    if due <= done:
                        await asyncio.sleep(start + done / rate - now)
                        continue
                    n = due - done
                    fut = await (producer.send(topic, value, partition=0) if n == 1 else
                                 producer.send_many(topic, [value] * n, partition=0))
                    fut.add_done_callback(record(n, now))
                    done = due
                elapsed = time.perf_counter() - start
                await producer.flush(self.left_s())
            return done, elapsed

        with Ticker(bar(f"Raftka aio latency @{rate:,.0f}/s", rate * secs),
                    lambda: len(samples)):
            sent, elapsed = asyncio.run(run())
        return {**percentiles_ms(samples), "rate": round(sent / elapsed)}

    def latency_raw(self, rate: float) -> dict:
        """The server's part of w3: unary Produce RPCs of one pre-built single-record batch
        (acks=all, not idempotent) straight to the leader through the public gRPC API
        (``raftka.v1``), one in flight, paced like ``latency``. No producer threads."""
        import grpc

        from raftka.v1 import broker_pb2, broker_pb2_grpc
        from raftka.v1.recordbatch import build_batch

        topic = self.new_topic(1)
        assert self.cluster is not None
        leader = self.cluster.wait_leader(topic, 0)
        batch = build_batch([(None, value_of(100))], compression="none")
        request = broker_pb2.ProduceRequest(topic=topic, partition=0, acks=broker_pb2.ACKS_ALL,
                                            record_batches=batch)
        secs = self.settings.latency_s
        samples: list[float] = []
        leader_changes = [0]
        peers = self.cluster.peers
        channels = {nid: grpc.insecure_channel(addr) for nid, addr in peers.items()}
        stubs = {nid: broker_pb2_grpc.BrokerStub(ch).Produce for nid, ch in channels.items()}
        current = [leader]

        def produce() -> None:
            """One call to the leader; a leader change (NOT_LEADER names the new one, or
            the old one is unreachable) is followed and counted, the retry timed in."""
            for _ in range(50):
                try:
                    stubs[current[0]](request, timeout=10)
                    return
                except grpc.RpcError:
                    leader_changes[0] += 1
                    time.sleep(0.01)
                    current[0] = self.cluster.partition_leader(topic, 0) or current[0]
            raise RuntimeError(f"no leader of {topic}/0 accepted a Produce in 50 tries")

        try:
            produce()
            start = time.perf_counter()
            stop_at = start + secs * 1.5  # one in flight may not keep up: bound the run

            def send(n: int, _due: float) -> None:
                for _ in range(n):
                    if time.perf_counter() > stop_at:
                        return
                    t0 = time.perf_counter()
                    produce()
                    samples.append(time.perf_counter() - t0)
            with Ticker(bar(f"Raftka raw Produce RPC @{rate:,.0f}/s", rate * secs),
                        lambda: len(samples)):
                pace(rate, secs, send)
                elapsed = time.perf_counter() - start
        finally:
            for ch in channels.values():
                ch.close()
        return {**percentiles_ms(samples), "rate": round(len(samples) / elapsed),
                "leader_changes_followed": leader_changes[0]}

    def fill(self, records: int) -> str:
        topic = self.new_topic(1)
        chunk = distinct_values(100)
        with Producer(self.bootstrap, acks="all", security=self.security, **PRODUCER_BULK) as producer:
            with Ticker(bar(f"Raftka fill {records:,} x 100B", records),
                        lambda: producer.statistics()["records_sent"]):
                left = records
                while left > 0:
                    self.check_deadline(f"Raftka fill of {records:,} records")
                    producer.send_many(topic, chunk[:left], partition=0)
                    left -= len(chunk)
                producer.flush(self.left_s())
        return topic

    def consume(self, topic: str, records: int) -> dict:
        got = [0]
        cap = self.settings.consume_cap_s
        with PartitionReader(self.bootstrap, topic, 0, "earliest", security=self.security,
                             max_bytes=READER_MAX_BYTES) as reader:
            with Ticker(bar("Raftka PartitionReader consume backlog", records),
                        lambda: got[0]):
                start = time.perf_counter()
                while got[0] < records and time.perf_counter() - start < cap:
                    got[0] += len(reader.poll(timeout=1.0))
                elapsed = time.perf_counter() - start
        return {"rate": round(got[0] / elapsed), "count": got[0], "seconds": round(elapsed, 3),
                "capped": got[0] < records}

    def consume_batches(self, topic: str, records: int) -> dict:
        """The same backlog through ``PartitionReader.poll_batches``: whole batches as
        columns (values, keys, offsets lists), no object per record."""
        got = [0]
        cap = self.settings.consume_cap_s
        with PartitionReader(self.bootstrap, topic, 0, "earliest", security=self.security,
                             max_bytes=READER_MAX_BYTES) as reader:
            if not hasattr(reader, "poll_batches"):
                return {"error": "PartitionReader.poll_batches not available in this version"}
            with Ticker(bar("Raftka PartitionReader.poll_batches consume backlog", records),
                        lambda: got[0]):
                start = time.perf_counter()
                while got[0] < records and time.perf_counter() - start < cap:
                    for batch in reader.poll_batches(timeout=1.0):
                        got[0] += len(batch.values)
                elapsed = time.perf_counter() - start
        return {"rate": round(got[0] / elapsed), "count": got[0], "seconds": round(elapsed, 3),
                "capped": got[0] < records}

    def consume_group(self, topic: str, records: int) -> dict:
        """The same backlog through a consumer group member (``client.Consumer``), timed
        from its creation: the group join is included (``first_record_s`` says how long
        the first record took)."""
        try:
            from raftka.client import Consumer
        except ImportError:
            return {"error": "client.Consumer not available in this version"}
        got = [0]
        cap = self.settings.consume_cap_s
        first_s = None
        with Ticker(bar("Raftka Consumer (group) consume backlog", records), lambda: got[0]):
            start = time.perf_counter()
            consumer = Consumer(self.bootstrap, f"bench-{topic}", [topic], security=self.security,
                                auto_offset_reset="earliest", max_poll_records=1000,
                                fetch_max_bytes=READER_MAX_BYTES)
            try:
                while got[0] < records and time.perf_counter() - start < cap:
                    got[0] += len(consumer.poll(1.0))
                    if got[0] and first_s is None:
                        first_s = time.perf_counter() - start
                elapsed = time.perf_counter() - start
            finally:
                consumer.close()
        return {"rate": round(got[0] / elapsed), "count": got[0], "seconds": round(elapsed, 3),
                "first_record_s": round(first_s or 0, 3), "capped": got[0] < records}

    def consume_raw(self, topic: str, records: int) -> dict:
        """What the broker serves: Fetch RPCs of 4 MiB through the public gRPC API
        (``raftka.v1``), batches counted from their headers, records not decoded. Not a
        like-for-like consumer: it shows the server's side of w4."""
        from raftka.v1 import broker_pb2, broker_pb2_grpc
        import grpc

        assert self.cluster is not None
        leader = self.cluster.wait_leader(topic, 0)
        got = [0]
        with grpc.insecure_channel(self.cluster.peers[leader], options=[
                ("grpc.max_receive_message_length", 64 << 20)]) as channel:
            stub = broker_pb2_grpc.BrokerStub(channel)
            with Ticker(bar("Raftka raw Fetch RPC (no decoding)", records), lambda: got[0]):
                start = time.perf_counter()
                offset = 0
                while got[0] < records:
                    self.check_deadline("Raftka raw Fetch")
                    r = stub.Fetch(broker_pb2.FetchRequest(
                        topic=topic, partition=0, offset=offset, max_bytes=READER_MAX_BYTES),
                        timeout=10)
                    got[0] += stored_records(r.record_batches)[0]
                    offset = r.next_offset
                elapsed = time.perf_counter() - start
        return {"rate": round(got[0] / elapsed), "count": got[0], "seconds": round(elapsed, 3)}

    def e2e(self, rate: float) -> dict:
        """A producer thread paced at ``rate`` writes its monotonic clock into each value;
        a TopicReader on another thread records delivery time minus that stamp."""
        topic = self.new_topic(1)
        secs = self.settings.e2e_s
        total = int(rate * secs)
        pad = value_of(100)[8:]
        samples: list[float] = []
        stop = threading.Event()

        def consume() -> None:
            with TopicReader(self.bootstrap, topic, offset="earliest") as reader:
                while not stop.is_set() and len(samples) < total:
                    for r in reader.poll(timeout=0.2):
                        samples.append(time.monotonic_ns() / 1e9
                                       - int.from_bytes(r.value[:8], "big") / 1e9)
        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        time.sleep(0.5)  # the reader has resolved its position and is long-polling
        with Producer(self.bootstrap, acks="all", security=self.security, **PRODUCER_LATENCY) as producer:
            def send(n: int, _due: float) -> None:
                for _ in range(n):
                    producer.send(topic, time.monotonic_ns().to_bytes(8, "big") + pad,
                                  partition=0)
            with Ticker(bar(f"Raftka end-to-end @{rate:,.0f}/s", total), lambda: len(samples)):
                sent, elapsed = pace(rate, secs, send)
                producer.flush(self.left_s())
                deadline = time.monotonic() + 10
                while len(samples) < total and time.monotonic() < deadline:
                    time.sleep(0.01)
        stop.set()
        consumer.join(5)
        return {**percentiles_ms(samples), "rate": round(sent / elapsed)}

    # ------------------------------------------------------------ failover
    def failover(self) -> dict:
        cluster = self.cluster
        assert cluster is not None
        topic = self.new_topic(1)
        value = value_of(100)
        windows: list[float] = []
        progress = bar("Raftka failover (kill -9 leader)", self.settings.failover_trials,
                       unit="trial")
        for _ in range(self.settings.failover_trials):
            self.check_deadline("Raftka failover")
            leader = cluster.wait_preferred_leader(topic, 0, timeout=30)
            with Producer(list(cluster.peers.values()), acks="all", linger_ms=0,
                          retry_backoff_ms=10, retry_backoff_max_ms=50,
                          request_timeout_ms=1000, delivery_timeout_ms=60_000) as producer:
                producer.send(topic, value, partition=0).result(10)
                killed_at = time.perf_counter()
                cluster.kill(leader)
                producer.send(topic, value, partition=0).result(60)
                windows.append(time.perf_counter() - killed_at)
            cluster.start(leader)
            cluster.wait_preferred_leader(topic, 0, timeout=60)
            progress.update(1)
        progress.close()
        return {"median_s": round(statistics.median(windows), 3),
                "max_s": round(max(windows), 3), "trials_s": [round(w, 3) for w in windows]}

    # ------------------------------------------------------------ scale
    def scale(self) -> dict:
        cluster = self.cluster
        assert cluster is not None
        count = self.settings.scale_partitions
        t0 = time.perf_counter()
        progress = bar(f"Raftka create {count} partitions (RF 3)", count, unit="part")
        leaderless = count
        with Admin(self.bootstrap, request_timeout_ms=20_000,
                   security=self.admin_security) as admin:
            admin.create_topic("idle", partitions=count, replication_factor=3, timeout=300)
            deadline = time.monotonic() + SCALE_SETTLE_S
            while time.monotonic() < deadline:
                try:
                    status = admin.cluster_status(timeout=20)
                except RaftkaError:
                    continue  # nodes too busy to answer in time: ask again
                leaderless = sum(1 for tp in status.leaderless if tp.topic == "idle")
                if status.partition_count < count:  # not every node knows the topic yet
                    leaderless = max(leaderless, count - status.partition_count)
                progress.n = count - leaderless
                progress.refresh()
                if not leaderless:
                    break
                time.sleep(1.0)
            if not leaderless:  # every leader answers a fetch (1,000 probes)
                admin.wait_for_topic_ready("idle", timeout=max(deadline - time.monotonic(), 30))
        progress.close()
        created_s = time.perf_counter() - t0
        time.sleep(5)  # let leadership settle (preferred-leader hand-backs) before sampling
        pids = [p.pid for p in cluster.procs.values()]
        before = self._leader_terms("idle")
        usage = idle_usage(pids, self.settings.scale_idle_s,
                           bar(f"Raftka idle with {count} partitions",
                               self.settings.scale_idle_s, unit="s"))
        after = self._leader_terms("idle")
        changed = sum(1 for p, lt in after.items() if before.get(p) != lt)
        return {**usage, "partitions": count, "create_s": round(created_s, 1),
                "leaderless_at_start": leaderless,
                "leader_changes_while_idle": changed if before and after else None}

    def _leader_terms(self, topic: str) -> dict[int, tuple[int, int]]:
        """(leader, term) of every partition, from one node's metadata; {} if none
        answered."""
        try:
            with Admin(self.bootstrap, request_timeout_ms=20_000,
                       security=self.admin_security) as admin:
                [desc] = admin.describe_topics([topic], timeout=20)
        except (RaftkaError, ValueError):
            return {}
        return {p.partition: (p.leader_id, p.leader_term) for p in desc.partitions}
