"""``python -m bench.kafka_listener``: the Kafka listener against our own gRPC client, side
by side in one run (issue 18: "confluent-kafka producer (acks=all, lz4, linger 5 ms) into
one partition and consumer from a 1M backlog, through the Kafka listener: at least 80% of
what our own client reaches through gRPC in the same run").

One fresh 3-node cluster (tests/harness.py, real node processes, every node with
``--kafka-listen``), then, alternating which door goes first each round (the log grows and
RocksDB compacts as the run goes on: whatever runs later is slower):

- produce: ``--seconds`` of 100-byte records into one partition, acks=all, lz4: through
  gRPC with our Producer (``send_many`` of 1,000 records, ``linger_ms=5``, the bench's w1
  settings); through Kafka with confluent-kafka (librdkafka; ``linger.ms=5``,
  ``compression.type=lz4``, ``enable.idempotence=true``, batches of up to 1 MiB like our
  client's (``batch.num.messages`` raised so the bytes bound), ``produce()`` per record, as a
  Kafka application sends, delivery reports for failures only); and again with
  confluent-kafka's ``produce_batch`` of 1,000 records a call (the counterpart of our
  ``send_many``: it takes the Python call per record out of the comparison); records
  acknowledged per second;
- consume: a ``--backlog``-record partition (written once, before the rounds) read from the
  beginning to its end: through gRPC with our PartitionReader; through Kafka with a
  confluent-kafka Consumer assigned the partition (no group: the read path alone);
  records per second, and the CPU seconds the reading process spent per million records
  (``client_cpu_s``: our reader's own decoding against librdkafka's threads plus the
  Python ``Message`` per record);
- consume raw: the same backlog read through each door without decoding a record, what
  the listener itself serves: unary gRPC ``Fetch`` calls, and Kafka ``Fetch`` v12
  requests on one socket (encoded and parsed with ``kio``, as the listener does; records
  counted from the batch headers), both 8 MiB per request from the partition leader, the
  backlog read 10 times over (once is only a few requests). If these two match, the
  difference of the consume rows is the clients'.

``--nats`` adds the NATS JetStream rows of the same run (the issue's "NATS comparison rows
for both"): after the Raftka rounds, and with its cluster stopped, 3 nats-server processes
(``bench/_nats.py``, as ``make bench`` runs them: R3 streams, fsync before the ack) and the
Go client do the same two things, w1's and w4's shapes: ``--seconds`` of 100-byte publishes
to one stream, and a ``--backlog``-message stream read to its end, once a round; the table
then gives each door's rate against NATS's. Needs the bench extra (``make bench`` installs
it, or ``pip install -e '.[test,bench]'``) and Debian's Go.

Prints a table and the Kafka/gRPC ratios; ``--json FILE`` writes them. ``--cpu`` adds, for
each produce run, where the work went: CPU seconds per million records of the partition
leader, of the followers (together; both less their CPU when idle) and of the bench process
(the client), and, from the leader's metrics, records per produce request and per WAL sync.
Needs only the test extras: ``.venv/bin/python -m bench.kafka_listener``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import statistics
import struct
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer as KafkaProducer, TopicPartition

from bench._common import stored_records
from raftka import Admin, PartitionReader, Producer
from tests.harness import Cluster

VALUE = (b'{"order":12345,"customer":"c-0042","items":[1,2,3],"total":99.5,'
         b'"currency":"EUR","note":"abcdefghij"}')[:100].ljust(100, b" ")


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric(url: str, name: str) -> float:
    """The sum of every sample of counter ``name`` on a node's metrics page."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def idle_cpu(cluster: Cluster, seconds: float = 3.0) -> dict[int, float]:
    """CPU seconds per second each node spends with no client traffic (ticks, pings,
    metrics, maintenance): ``CpuAccount`` takes it off a run's figures, which otherwise
    grow as the run's rate falls."""
    pids = {nid: proc.pid for nid, proc in cluster.procs.items()}
    before = {nid: _cpu_s(pid) for nid, pid in pids.items()}
    time.sleep(seconds)
    return {nid: (_cpu_s(pid) - before[nid]) / seconds for nid, pid in pids.items()}


class CpuAccount:
    """Where a produce run's work went (``--cpu``): CPU seconds of the leader, the followers
    (each less its ``idle`` rate over the run) and this process, and the leader's produce
    requests and WAL syncs, over the run."""

    def __init__(self, cluster: Cluster, leader: int, idle: dict[int, float]) -> None:
        self.cluster, self.leader, self.idle = cluster, leader, idle
        self.pids = {nid: proc.pid for nid, proc in cluster.procs.items()}

    def _sample(self) -> tuple[dict[int, float], float, float, float, float]:
        url = self.cluster.metrics_url(self.leader)
        return ({nid: _cpu_s(pid) for nid, pid in self.pids.items()},
                time.process_time(), _metric(url, "raftka_produce_requests_total"),
                _metric(url, "raftka_wal_syncs_total"), _metric(url, "raftka_produce_bytes_total"))

    def __enter__(self) -> CpuAccount:
        self.before = self._sample()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.after = self._sample()
        self.elapsed = time.monotonic() - self.started

    def per_million(self, records: int) -> dict:
        (n0, c0, r0, s0, b0), (n1, c1, r1, s1, b1) = self.before, self.after
        scale = 1e6 / max(records, 1)
        busy = {n: n1[n] - n0[n] - self.idle.get(n, 0.0) * self.elapsed for n in n1}
        leader = busy[self.leader]
        followers = sum(v for n, v in busy.items() if n != self.leader)
        return {"leader_cpu_s": round(leader * scale, 3),
                "followers_cpu_s": round(followers * scale, 3),
                "client_cpu_s": round((c1 - c0) * scale, 3),
                "records_per_request": round(records / max(r1 - r0, 1)),
                "records_per_sync": round(records / max(s1 - s0, 1)),
                "bytes_per_record": round((b1 - b0) / max(records, 1), 1)}


def grpc_produce(bootstrap: str, topic: str, seconds: float) -> dict:
    chunk = [VALUE] * 1000
    with Producer(bootstrap, acks="all", linger_ms=5, batch_size=1000 * 1024) as producer:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            producer.send_many(topic, chunk, partition=0)
        producer.flush(60)
        elapsed = time.perf_counter() - start
        sent = producer.statistics()["records_sent"]
    return {"rate": round(sent / elapsed), "records": sent}


def kafka_produce(bootstrap: str, topic: str, seconds: float, batch: bool = False) -> dict:
    """``batch``: ``produce_batch`` of 1,000 records per call (confluent-kafka's batch API,
    the counterpart of our client's ``send_many``) instead of ``produce()`` per record."""
    producer = KafkaProducer({"bootstrap.servers": bootstrap, "acks": "all",
                              "linger.ms": 5, "compression.type": "lz4",
                              # the same batch bound as our client's (1 MiB); librdkafka's
                              # default also caps a batch at 10,000 records, which with
                              # idempotence's 5 requests in flight caps one partition at
                              # ~330k records/s here (measured; 580k/s without the cap)
                              "batch.size": 1000 * 1024, "batch.num.messages": 100_000,
                              "enable.idempotence": True, "log_level": 3,
                              # a delivery callback only for failures: a Python call per
                              # acknowledged record would measure the client, not the door
                              "delivery.report.only.error": True,
                              "queue.buffering.max.messages": 1_000_000})
    failed = [0]

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failed[0] += 1

    sent = 0
    start = time.perf_counter()
    while batch and time.perf_counter() - start < seconds:
        # fresh dicts: produce_batch marks a message it could not queue with "_error"
        chunk = [{"value": VALUE} for _ in range(1000)]
        try:
            taken = producer.produce_batch(topic, chunk, partition=0, on_delivery=on_delivery)
        except BufferError:
            taken = 0
        sent += taken  # a full queue takes part of the chunk: the rest are not counted
        producer.poll(0 if taken == len(chunk) else 0.01)
    while not batch and time.perf_counter() - start < seconds:
        for _ in range(1000):
            try:
                producer.produce(topic, VALUE, partition=0, on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - start
    acked = sent - left - failed[0]
    return {"rate": round(acked / elapsed), "records": acked, "failed": failed[0]}


RAW_FETCH_BYTES = 8 << 20  # per request, both doors' raw rows (librdkafka's partition max)
RAW_PASSES = 10  # the raw rows read the backlog this many times (one pass is a few requests)


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _consumed(read: int, started: float, cpu_started: float) -> dict:
    elapsed = time.perf_counter() - started
    cpu = _process_cpu_s() - cpu_started
    return {"rate": round(read / elapsed), "records": read,
            "client_cpu_s": round(cpu / read * 1e6, 3)}


def grpc_consume(bootstrap: str, topic: str, count: int) -> dict:
    cpu = _process_cpu_s()
    start = time.perf_counter()
    read = 0
    with PartitionReader(bootstrap, topic, 0, offset="earliest") as reader:
        while read < count:
            read += len(reader.poll(timeout=5.0))
    return _consumed(read, start, cpu)


def grpc_consume_raw(address: str, topic: str, count: int) -> dict:
    """Unary gRPC Fetch calls to the leader, records counted from the batch headers."""
    import grpc  # noqa: PLC0415

    from raftka.v1 import broker_pb2, broker_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        cpu = _process_cpu_s()
        start = time.perf_counter()
        read = offset = 0
        while read < count * RAW_PASSES:
            if offset >= count:
                offset = 0
            answer = stub.Fetch(broker_pb2.FetchRequest(
                topic=topic, partition=0, offset=offset, max_bytes=RAW_FETCH_BYTES),
                timeout=10)
            read += stored_records(answer.record_batches)[0]
            offset = answer.next_offset
        return _consumed(read, start, cpu)


def kafka_consume_raw(address: str, topic: str, count: int) -> dict:
    """Kafka Fetch v12 requests to the leader's listener on one socket, one at a time
    (kio encodes the request and parses the answer, the records field stays bytes);
    records counted from the batch headers, the next offset from the last batch's."""
    from kio.index import load_request_schema, load_response_schema  # noqa: PLC0415
    from kio.serial import entity_reader, entity_writer  # noqa: PLC0415

    from raftka.node._kafka._codec import build  # noqa: PLC0415

    request_cls, response_cls = load_request_schema(1, 12), load_response_schema(1, 12)
    write_header = entity_writer(request_cls.__header_schema__)
    write_body = entity_writer(request_cls)
    read_header = entity_reader(response_cls.__header_schema__)
    read_body = entity_reader(response_cls)

    def request(correlation_id: int, offset: int) -> bytes:
        buf = io.BytesIO()
        write_header(buf, build(request_cls.__header_schema__, {
            "request_api_key": 1, "request_api_version": 12,
            "correlation_id": correlation_id, "client_id": "bench-raw"}))
        write_body(buf, build(request_cls, {
            "replica_id": -1, "max_wait_ms": 500, "min_bytes": 1,
            "max_bytes": RAW_FETCH_BYTES, "isolation_level": 0, "session_id": 0,
            "session_epoch": -1, "topics": [{"topic": topic, "partitions": [{
                "partition": 0, "fetch_offset": offset, "log_start_offset": -1,
                "partition_max_bytes": RAW_FETCH_BYTES}]}], "forgotten_topics_data": []}))
        data = buf.getvalue()
        return struct.pack(">i", len(data)) + data

    def frame(sock: socket.socket) -> bytes:
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size:
            n = sock.recv_into(view[got:], size - got)
            if not n:
                raise ConnectionError("the listener closed the connection")
            got += n
        return bytes(data)

    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        cpu = _process_cpu_s()
        start = time.perf_counter()
        read = offset = correlation_id = 0
        while read < count * RAW_PASSES:
            if offset >= count:
                offset = 0
            correlation_id += 1
            sock.sendall(request(correlation_id, offset))
            data = frame(sock)
            _, used = read_header(data, 0)
            body, _ = read_body(data, used)
            answer = body.responses[0].partitions[0]
            if answer.error_code.value:
                raise RuntimeError(f"Kafka Fetch error {answer.error_code.name}")
            records, end = stored_records(answer.records or b"")
            read += records
            offset = end if end >= 0 else offset
        return _consumed(read, start, cpu)


def kafka_consume(bootstrap: str, topic: str, count: int) -> dict:
    cpu = _process_cpu_s()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-unused",
                         "enable.auto.commit": False, "log_level": 3,
                         "fetch.max.bytes": 32 << 20, "max.partition.fetch.bytes": 8 << 20})
    consumer.assign([TopicPartition(topic, 0, 0)])
    start = time.perf_counter()
    read = 0
    try:
        while read < count:
            messages = consumer.consume(10_000, timeout=5.0)
            for m in messages:
                if m.error() is not None:
                    raise RuntimeError(str(m.error()))
            read += len(messages)
    finally:
        consumer.close()
    return _consumed(read, start, cpu)


def nats_rows(results: dict[str, list[dict]], work: Path, seconds: float, backlog: int,
              rounds: int) -> None:
    """NATS JetStream's produce and consume rates, a run of each per round."""
    from bench._common import Settings  # noqa: PLC0415 - the bench extra, only with --nats
    from bench._nats import NatsSystem  # noqa: PLC0415

    system = NatsSystem(Settings(produce_s=seconds, backlog_records=backlog), work)
    system.start()
    try:
        if backlog:
            system.fill(backlog)
        for _ in range(rounds):
            results["produce nats go"].append(system.produce("go", 100, 1))
            if backlog:
                results["consume nats go"].append(system.consume("go", backlog))
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_listener",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each produce run")
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--nats", action="store_true",
                        help="also NATS JetStream's rows (Go client), for the ratios to NATS")
    parser.add_argument("--cpu", action="store_true",
                        help="per produce run: CPU s per million records of the leader, the "
                        "followers and the client; records per request and per WAL sync")
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {"produce grpc": [], "produce kafka": [],
                                      "produce kafka batch": [],
                                      "consume grpc": [], "consume kafka": [],
                                      "consume grpc raw": [], "consume kafka raw": [],
                                      "produce nats go": [], "consume nats go": []}
    with tempfile.TemporaryDirectory(prefix="raftka-kafka-bench-") as root:
        cluster = Cluster(Path(root), 3, kafka=True, metrics=args.cpu)
        try:
            cluster.start_all()
            grpc_bootstrap = ",".join(cluster.peers.values())
            kafka_bootstrap = cluster.kafka_bootstrap
            topics = [f"p-{i}" for i in range(args.rounds * 2)] + \
                [f"b-{i}" for i in range(args.rounds)] + ["backlog"]
            with Admin(grpc_bootstrap) as admin:
                for name in topics:
                    admin.create_topic(name, partitions=1, replication_factor=3)
                for name in topics:
                    admin.wait_for_topic_ready(name, timeout=120)
            leaders = {name: cluster.wait_preferred_leader(name, 0) for name in topics}
            idle = idle_cpu(cluster) if args.cpu else {}

            def produce_run(row: str, produce, bootstrap: str, topic: str, **kw) -> None:
                if not args.cpu:
                    results[row].append(produce(bootstrap, topic, args.seconds, **kw))
                    return
                with CpuAccount(cluster, leaders[topic], idle) as account:
                    result = produce(bootstrap, topic, args.seconds, **kw)
                results[row].append({**result, **account.per_million(result["records"])})

            with Producer(grpc_bootstrap, acks="all", linger_ms=5,
                          batch_size=1000 * 1024) as producer:
                for _ in range(args.backlog // 1000):
                    producer.send_many("backlog", [VALUE] * 1000, partition=0)
                producer.flush(300)
            backlog = args.backlog // 1000 * 1000
            produce_topics = [t for t in topics if t.startswith("p-")]
            batch_topics = [t for t in topics if t.startswith("b-")]
            for round_number in range(args.rounds):
                doors = ("grpc", "kafka") if round_number % 2 == 0 else ("kafka", "grpc")
                for door in doors:
                    topic = produce_topics.pop()
                    if door == "grpc":
                        produce_run("produce grpc", grpc_produce, grpc_bootstrap, topic)
                        if backlog:
                            results["consume grpc"].append(
                                grpc_consume(grpc_bootstrap, "backlog", backlog))
                            results["consume grpc raw"].append(grpc_consume_raw(
                                cluster.peers[leaders["backlog"]], "backlog", backlog))
                    else:
                        produce_run("produce kafka", kafka_produce, kafka_bootstrap, topic)
                        produce_run("produce kafka batch", kafka_produce, kafka_bootstrap,
                                    batch_topics.pop(), batch=True)
                        if backlog:
                            results["consume kafka"].append(
                                kafka_consume(kafka_bootstrap, "backlog", backlog))
                            results["consume kafka raw"].append(kafka_consume_raw(
                                cluster.kafka[leaders["backlog"]], "backlog", backlog))
        finally:
            cluster.stop_all()
        if args.nats:
            nats_rows(results, Path(root), args.seconds, backlog, args.rounds)
    results = {k: v for k, v in results.items() if v}
    summary = {k: statistics.median(r["rate"] for r in v) for k, v in results.items()}
    print(f"{args.rounds} rounds; produce {args.seconds:g} s per run (100-byte records, "
          f"acks=all, lz4, linger 5 ms, one partition); consume a {backlog:,}-record backlog")
    print(f"{'run':<20}{'records/s (median)':>20}{'runs':>40}")
    for key, value in summary.items():
        runs = ", ".join(f"{r['rate']:,}" for r in results[key])
        print(f"{key:<20}{value:>20,.0f}{runs:>40}")
    if args.cpu:
        print(f"idle node CPU (s/s): {', '.join(f'{v:.3f}' for v in idle.values())}")
        print("per produce run: CPU s per million records (leader / followers / client; "
              "nodes less their idle CPU), "
              "records per request, records per WAL sync (leader), stored bytes per record")
        for key in ("produce grpc", "produce kafka", "produce kafka batch"):
            for r in results[key]:
                print(f"{key:<20}{r['leader_cpu_s']:>8.2f} /{r['followers_cpu_s']:>6.2f} /"
                      f"{r['client_cpu_s']:>6.2f}{r['records_per_request']:>10,}"
                      f"{r['records_per_sync']:>10,}{r['bytes_per_record']:>8}")
    ratios = {"produce": summary["produce kafka"] / summary["produce grpc"],
              "produce batch": summary["produce kafka batch"] / summary["produce grpc"]}
    if "consume grpc" in summary:
        ratios["consume"] = summary["consume kafka"] / summary["consume grpc"]
        ratios["consume raw"] = summary["consume kafka raw"] / summary["consume grpc raw"]
        cpu = {key: statistics.median(r["client_cpu_s"] for r in results[key])
               for key in ("consume grpc", "consume kafka", "consume grpc raw",
                           "consume kafka raw")}
        print("consume, CPU s of the reading process per million records (median): "
              + ", ".join(f"{key.removeprefix('consume ')} {value:.2f}"
                          for key, value in cpu.items()))
    print(f"Kafka listener / gRPC: produce {ratios['produce']:.2f} (produce_batch "
          f"{ratios['produce batch']:.2f}), consume "
          f"{ratios.get('consume', float('nan')):.2f} (the issue's target: at least 0.80), "
          f"consume raw (what each door serves, no decoding) "
          f"{ratios.get('consume raw', float('nan')):.2f}")
    if args.nats:
        to_nats = {f"{key} / nats": summary[key] / summary[f"{kind} nats go"]
                   for key in summary for kind in ("produce", "consume")
                   if key.startswith(kind) and "nats" not in key}
        ratios.update(to_nats)
        print("against NATS JetStream (Go client): " + ", ".join(
            f"{key.removesuffix(' / nats')} {value:.2f}x" for key, value in to_nats.items()))
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": results, "median": summary,
                                         "ratio": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
