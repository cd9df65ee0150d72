"""The Kafka listener of a secured cluster (TLS, mTLS and SASL, ACLs, quotas), driven by
librdkafka (confluent-kafka) and Debian's kcat: the same users, ACLs and quotas as the
gRPC door, since both read them from the controller state.

One cluster for the module: nodes with TLS on both ports, ``mtls,password``
authentication, ``User:admin`` a super user, and the Kafka listener asking for (not
requiring) client certificates, so SASL clients need none."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from raftka.client import Acl, Admin, ClientSecurity
from raftka.node._certs import Issued, issue, make_ca, node_name
from tests.harness import Cluster, free_ports, wait_for
from tests.kafka._clients import consume, quiet

PASSWORD = "alice-secret"


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = make_ca(root / "ca")
        self.nodes = {i: issue(self.ca, root / "certs", f"node{i}", node_name(i),
                               (node_name(i), "localhost"), ("127.0.0.1",)) for i in (1, 2, 3)}
        self.admin = issue(self.ca, root / "certs", "admin", "admin")
        self.carol = issue(self.ca, root / "certs", "carol", "carol")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Pki]]:
    root = tmp_path_factory.mktemp("kafka-secured")
    pki = Pki(root)
    peer_peers: dict[int, str] = {}

    def node_args(node_id: int) -> list[str]:
        cert = pki.nodes[node_id]
        return ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                "--tls-ca", str(pki.ca.cert), "--tls-require-client-cert",
                "--peer-listen", peer_peers[node_id],
                "--peer-peers", ",".join(f"{k}={v}" for k, v in sorted(peer_peers.items())),
                "--peer-tls-cert", str(cert.cert), "--peer-tls-key", str(cert.key),
                "--peer-tls-ca", str(pki.ca.cert),
                "--authentication", "mtls,password", "--super-users", "User:admin",
                "--principal-mapping-rule", "RULE:^CN=(.*?),.*$/$1/",
                "--kafka-ssl-client-auth", "requested"]

    creds = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), pki.admin.key.read_bytes(),
                                         pki.admin.cert.read_bytes())
    (root / "data").mkdir()
    cluster = Cluster(root / "data", 3, node_args=node_args, channel_credentials=creds,
                      kafka=True)
    taken = set(cluster.peers.values()) | set(cluster.kafka.values())
    while not peer_peers:
        ports = [f"127.0.0.1:{p}" for p in free_ports(3)]
        if not taken & set(ports):
            peer_peers.update({i + 1: ports[i] for i in range(3)})
    try:
        cluster.start_all()
        security = ClientSecurity(ca=str(pki.ca.cert), cert=str(pki.admin.cert),
                                  key=str(pki.admin.key))
        with Admin(",".join(cluster.peers.values()), security=security) as admin:
            for topic in ("granted", "secret"):
                admin.create_topic(topic, partitions=1, replication_factor=3)
                admin.wait_for_topic_ready(topic, 20)
            admin.create_user("alice", PASSWORD)
            admin.create_acls([Acl("User:alice", "WRITE", "TOPIC", "granted"),
                               Acl("User:alice", "READ", "TOPIC", "granted"),
                               Acl("User:alice", "READ", "GROUP", "g-", "PREFIXED"),
                               Acl("User:carol", "DESCRIBE", "TOPIC", "granted")])
            wait_for(lambda: _listed_everywhere(cluster, pki), 20, "user and ACLs on every node")
        yield cluster, pki
    finally:
        cluster.stop_all()


def _listed_everywhere(cluster: Cluster, pki: Pki) -> bool:
    """Every node's Kafka listener lets alice in and shows her 'granted' (users and ACLs
    reach the other nodes moments after the one that took them)."""
    for node in sorted(cluster.kafka):
        admin = AdminClient(quiet({**_sasl(pki, "SCRAM-SHA-256"),
                                   "bootstrap.servers": cluster.kafka[node]}))
        try:
            topics = admin.list_topics(timeout=5).topics
        except KafkaException:
            return False
        if "granted" not in topics or topics["granted"].error is not None:
            return False
    return True


def _sasl(pki: Pki, mechanism: str, password: str = PASSWORD) -> dict:
    return {"security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism,
            "sasl.username": "alice", "sasl.password": password,
            "ssl.ca.location": str(pki.ca.cert),
            "ssl.endpoint.identification.algorithm": "none"}


def _mtls(pki: Pki, cert: Issued) -> dict:
    return {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca.cert),
            "ssl.certificate.location": str(cert.cert), "ssl.key.location": str(cert.key),
            "ssl.endpoint.identification.algorithm": "none"}


def _high_watermark(cluster: Cluster, pki: Pki, topic: str) -> int:
    consumer = Consumer(quiet({**_mtls(pki, pki.admin), "bootstrap.servers":
                               cluster.kafka_bootstrap, "group.id": "hw-probe"}))
    try:
        from confluent_kafka import TopicPartition
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_scram_producer_writes_where_allowed_and_gets_topic_authorization_failed_elsewhere(
        secured: tuple[Cluster, Pki]) -> None:
    cluster, pki = secured
    results: dict[str, KafkaError | None] = {}
    producer = Producer(quiet({**_sasl(pki, "SCRAM-SHA-256"),
                               "bootstrap.servers": cluster.kafka_bootstrap,
                               "enable.idempotence": False, "acks": "all",
                               "message.send.max.retries": 0}))
    for topic in ("granted", "secret"):
        producer.produce(topic, b"v-" + topic.encode(), key=b"k",
                         on_delivery=lambda err, msg: results.__setitem__(msg.topic(), err))
    assert producer.flush(30) == 0
    assert results["granted"] is None, results["granted"]
    assert results["secret"] is not None
    assert results["secret"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _high_watermark(cluster, pki, "secret") == 0  # nothing written

    consumer = Consumer(quiet({**_sasl(pki, "SCRAM-SHA-256"),
                               "bootstrap.servers": cluster.kafka_bootstrap,
                               "group.id": "g-scram", "auto.offset.reset": "earliest"}))
    try:
        consumer.subscribe(["granted"])
        [message] = consume(consumer, 1)
        assert (message.key(), message.value()) == (b"k", b"v-granted")
        consumer.commit(message, asynchronous=False)
    finally:
        consumer.close()


def test_scram_sha512_producer_writes_with_the_keys_stored_when_the_user_was_created(
        secured: tuple[Cluster, Pki]) -> None:
    """alice was created through the gRPC door: her SHA-512 keys were stored with her
    SHA-256 ones, so librdkafka's SCRAM-SHA-512 exchange proves her password."""
    cluster, pki = secured
    producer = Producer(quiet({**_sasl(pki, "SCRAM-SHA-512"),
                               "bootstrap.servers": cluster.kafka_bootstrap}))
    delivered: list = []
    producer.produce("granted", b"v-512", key=b"k512",
                     on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(20) == 0
    assert delivered == [None]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_wrong_password_fails_authentication(secured: tuple[Cluster, Pki],
                                               mechanism: str) -> None:
    cluster, pki = secured
    errors: list[KafkaError] = []
    admin = AdminClient({**_sasl(pki, mechanism, "wrong"), "log_level": 0,
                         "bootstrap.servers": cluster.kafka[1], "error_cb": errors.append})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)

    def refused() -> bool:
        admin.poll(0.1)  # serves error_cb
        return any(e.code() == KafkaError._AUTHENTICATION for e in errors)
    wait_for(refused, 10, "an authentication error")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_kcat_with_sasl_lists_only_the_topics_it_may_describe(
        secured: tuple[Cluster, Pki], kcat: str, mechanism: str) -> None:
    """Debian's kcat (librdkafka 2.0.2) too: it sends its client nonce twice in SCRAM's
    final message, which Kafka's broker accepts and so does ours."""
    cluster, pki = secured
    out = subprocess.run(
        [kcat, "-b", cluster.kafka[2], "-L", "-m", "10", "-J",
         "-X", "security.protocol=SASL_SSL", "-X", f"sasl.mechanisms={mechanism}",
         "-X", "sasl.username=alice", "-X", f"sasl.password={PASSWORD}",
         "-X", f"ssl.ca.location={pki.ca.cert}",
         "-X", "ssl.endpoint.identification.algorithm=none"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert '"topic":"granted"' in out.stdout.replace(" ", "")
    assert "secret" not in out.stdout


def test_a_client_certificate_is_the_principal_and_the_acl_apis_manage_the_same_acls(
        secured: tuple[Cluster, Pki]) -> None:
    cluster, pki = secured
    carol = AdminClient(quiet({**_mtls(pki, pki.carol),
                               "bootstrap.servers": cluster.kafka_bootstrap}))
    topics = carol.list_topics(timeout=10).topics
    assert set(topics) == {"granted"}  # User:carol from her certificate: DESCRIBE only
    with pytest.raises(KafkaException) as denied:  # ALTER on the cluster is needed
        [future] = carol.create_acls([AclBinding(
            ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "User:carol", "*",
            AclOperation.READ, AclPermissionType.ALLOW)]).values()
        future.result(timeout=20)
    assert denied.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    admin = AdminClient(quiet({**_mtls(pki, pki.admin),
                               "bootstrap.servers": cluster.kafka_bootstrap}))
    binding = AclBinding(ResourceType.TOPIC, "secret", ResourcePatternType.LITERAL,
                         "User:carol", "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    for future in admin.create_acls([binding]).values():
        future.result(timeout=20)
    wait_for(lambda: set(carol.list_topics(timeout=10).topics) == {"granted", "secret"}, 20,
             "carol to see 'secret'")
    described = admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, "User:carol", None,
        AclOperation.ANY, AclPermissionType.ANY)).result(timeout=20)
    assert {(b.name, b.operation) for b in described} == {
        ("granted", AclOperation.DESCRIBE), ("secret", AclOperation.DESCRIBE)}
    [deleted] = admin.delete_acls([AclBindingFilter(
        ResourceType.TOPIC, "secret", ResourcePatternType.LITERAL, "User:carol", None,
        AclOperation.ANY, AclPermissionType.ANY)]).values()
    assert [b.name for b in deleted.result(timeout=20)] == ["secret"]
    wait_for(lambda: set(carol.list_topics(timeout=10).topics) == {"granted"}, 20,
             "carol no longer to see 'secret'")


def test_a_producer_over_its_quota_is_throttled(secured: tuple[Cluster, Pki]) -> None:
    cluster, pki = secured
    security = ClientSecurity(ca=str(pki.ca.cert), cert=str(pki.admin.cert),
                              key=str(pki.admin.key))
    with Admin(",".join(cluster.peers.values()), security=security) as admin:
        admin.set_quota("User:alice", produce_bytes_per_s=20_000)
    throttled: list[int] = []
    producer = Producer(quiet({**_sasl(pki, "SCRAM-SHA-256"),
                               "bootstrap.servers": cluster.kafka_bootstrap,
                               "linger.ms": 5, "batch.size": 16_384,
                               "throttle_cb": lambda event: throttled.append(
                                   event.throttle_time)}))
    try:
        started = time.monotonic()
        deadline = started + 20
        while not throttled and time.monotonic() < deadline:
            producer.produce("granted", b"x" * 10_000)
            producer.poll(0.05)
        producer.flush(20)
        assert throttled and max(throttled) > 0
    finally:
        with Admin(",".join(cluster.peers.values()), security=security) as admin:
            admin.set_quota("User:alice")


def test_every_served_api_has_an_authorization_rule() -> None:
    """The listener refuses an API without a rule (fail closed); this keeps a new API from
    being served without its checks."""
    from raftka.node._kafka._apis import SASL_APIS, SHARE_APIS, SUPPORTED, TXN_APIS
    from raftka.node._kafka._security import APIS

    assert set(SUPPORTED) | set(SASL_APIS) | set(TXN_APIS) | set(SHARE_APIS) <= set(APIS)


def test_an_unauthenticated_connection_may_only_ask_api_versions_and_sasl(
        secured: tuple[Cluster, Pki]) -> None:
    """TLS without a certificate or SASL: ApiVersions is answered (and advertises the SASL
    APIs), a Metadata request closes the connection."""
    import socket
    import ssl

    from tests.kafka.test_wire import _answer, _read_frame, _request

    cluster, pki = secured
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.check_hostname = False
    host, port = cluster.kafka[1].rsplit(":", 1)
    with context.wrap_socket(socket.create_connection((host, int(port)), timeout=10)) as s:
        s.sendall(_request(18, 3, 1, {"client_software_name": "t",
                                      "client_software_version": "1"}))
        _, body = _answer(_read_frame(s), 18, 3)
        assert {17, 36} <= {k.api_key for k in body.api_keys}
        s.sendall(_request(3, 12, 2, {"topics": None}))
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            _read_frame(s)


def test_share_groups_go_through_the_same_acls(secured: tuple[Cluster, Pki]) -> None:
    """KIP-932 over SASL: alice may READ groups ``g-*`` and topic 'granted', so her share
    consumer in ``g-share`` gets its records; in a group she may not read, the heartbeat is
    refused with GROUP_AUTHORIZATION_FAILED and nothing is delivered."""
    from confluent_kafka import ShareConsumer

    cluster, pki = secured
    producer = Producer(quiet({**_sasl(pki, "SCRAM-SHA-256"),
                               "bootstrap.servers": cluster.kafka_bootstrap}))
    producer.produce("granted", b"v-share")
    assert producer.flush(20) == 0
    allowed = ShareConsumer(quiet({**_sasl(pki, "SCRAM-SHA-256"), "group.id": "g-share",
                                   "bootstrap.servers": cluster.kafka_bootstrap}))
    try:
        allowed.subscribe(["granted"])
        deadline = time.monotonic() + 60
        got: list = []
        problems: list = []
        while not got and time.monotonic() < deadline:
            for m in allowed.poll(1.0) or []:
                (got if m.error() is None else problems).append(m)
        assert got and all(m.topic() == "granted" for m in got), \
            [m.error() for m in problems]
    finally:
        allowed.close()
    refused = ShareConsumer(quiet({**_sasl(pki, "SCRAM-SHA-256"), "group.id": "h-share",
                                   "bootstrap.servers": cluster.kafka_bootstrap}))
    try:
        refused.subscribe(["granted"])
        errors: list = []
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            try:
                for m in refused.poll(1.0) or []:
                    assert m.error() is not None, "a record delivered to a denied group"
                    errors.append(m.error())
            except KafkaException as exc:
                errors.append(exc.args[0])
        assert errors and errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, errors
    finally:
        refused.close()
