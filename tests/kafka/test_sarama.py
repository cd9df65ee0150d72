"""Go's sarama (Debian's golang-github-shopify-sarama-dev 1.22, built in GOPATH mode like
bench/natsload): a Kafka client that shares no code with librdkafka, kafka-python or ours.
Its idempotent producer and a consumer group through the Kafka listener; what it wrote and
committed is what our gRPC client reads, and its group resumes after its commit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from raftka.client import Admin, PartitionReader, Producer
from tests.harness import REPO, Cluster

GOPATH = "/usr/share/gocode"  # where Debian's Go library packages install
SARAMA = Path(GOPATH) / "src/github.com/Shopify/sarama"


@pytest.fixture(scope="module")
def sarama_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None or not SARAMA.is_dir():
        if os.geteuid() == 0:
            pytest.fail("go or sarama is missing: make kafka-deps installs golang-go and "
                        "golang-github-shopify-sarama-dev")
        pytest.skip("go or Debian's sarama is not installed (make kafka-deps as root)")
    out = tmp_path_factory.mktemp("sarama")
    exe = out / "sarama-check"
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
               GOCACHE=str(out / "gocache"))
    built = subprocess.run(["go", "build", "-o", str(exe),
                            str(REPO / "tests/kafka/sarama/main.go")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    return exe


def _run(exe: Path, *args: str) -> list[list[str]]:
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [line.split() for line in done.stdout.splitlines() if line.strip()]


def test_sarama_idempotent_producer_and_consumer_group(kafka_cluster: Cluster,
                                                       sarama_check: Path) -> None:
    b = kafka_cluster.kafka_bootstrap
    grpc_bootstrap = ",".join(kafka_cluster.peers.values())
    kafka_cluster.create_topic("sarama-t", partitions=2)  # preferred leaders
    produced = _run(sarama_check, "produce", b, "sarama-t", "20")
    assert len(produced) == 20
    # the records as sarama wrote them, through the gRPC door
    ours = set()
    for p in (0, 1):
        want = sum(1 for row in produced if row[0] == str(p))
        with PartitionReader(grpc_bootstrap, "sarama-t", p, offset="earliest") as reader:
            records = []
            while len(records) < want:
                records.extend(reader.poll(timeout=2.0))
        ours |= {(str(p), str(r.offset), r.key.decode(), r.value.decode(),
                  ",".join(f"{k}={v.decode()}" for k, v in r.headers)) for r in records}
    assert {(p, o) for p, o, *_ in ours} == {(p, o) for p, o in produced}
    consumed = _run(sarama_check, "consume", b, "sarama-t", "sarama-g", "20")
    assert {tuple(row) for row in consumed} == ours
    with Admin(grpc_bootstrap) as admin:
        committed = admin.committed_offsets("sarama-g")
    assert sum(committed.values()) == 20
    # the group resumes after its commit: only what was produced since
    with Producer(grpc_bootstrap) as producer:
        for i in range(5):
            producer.send("sarama-t", f"late-{i}".encode(), key=f"late-{i}".encode(),
                          headers=[("via", b"grpc")]).result(30)
    resumed = _run(sarama_check, "consume", b, "sarama-t", "sarama-g", "5")
    assert sorted(row[3] for row in resumed) == [f"late-{i}" for i in range(5)]
