"""Security against real secured clusters, certificates made at test time (node/_certs.py):
TLS handshakes refused without a good client certificate, peer traffic for members only,
users and ACLs through the controller log, PERMISSION_DENIED per RPC family with nothing
written, prefixed and deny rules, changes on every node and after a full restart."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from raftka.client import (
    Acl,
    Admin,
    AuthenticationFailedError,
    ClientSecurity,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    PartitionReader,
    Producer,
    TopicAuthorizationFailedError,
)
from raftka.node._certs import Issued, issue, make_ca, node_name
from raftka.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, group_pb2, group_pb2_grpc
from raftka.v1.recordbatch import BatchBuilder

from tests.harness import Cluster, error_info, free_ports, wait_for


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = make_ca(root / "ca")
        self.other_ca = make_ca(root / "other-ca", name="some other CA")
        self.nodes = {i: issue(self.ca, root / "certs", f"node{i}", node_name(i),
                               (node_name(i), "localhost"), ("127.0.0.1",)) for i in (1, 2, 3, 4)}
        self.admin = self.client("admin")
        self.alice = self.client("alice")
        # grpcio servers either require client certificates or never ask for one: with
        # mtls on, password users present some certificate too (the password wins)
        self.generic = self.client("generic-client")

    def client(self, name: str, ca: Issued | None = None, **kw) -> Issued:
        return issue(ca or self.ca, self.root / "certs", f"{name}-{id(ca)}", name, **kw)

    def security(self, cert: Issued | None = None, **kw) -> ClientSecurity:
        cert = cert or self.generic
        return ClientSecurity(ca=str(self.ca.cert), cert=str(cert.cert), key=str(cert.key), **kw)


def _peer_addresses(cluster: Cluster) -> dict[int, str]:
    """Free peer ports for every node, distinct from the client ports the harness picked."""
    taken = set(cluster.peers.values())
    while True:
        ports = [f"127.0.0.1:{p}" for p in free_ports(len(cluster.peers))]
        if not taken & set(ports):
            return {i + 1: ports[i] for i in range(len(ports))}


def _secured_cluster(tmp_path: Path, pki: Pki, size: int = 3,
                     node_certs: dict[int, Issued] | None = None) -> Cluster:
    certs = node_certs or pki.nodes
    peer_peers: dict[int, str] = {}

    def node_args(node_id: int) -> list[str]:
        cert = certs[node_id]
        return ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                "--tls-ca", str(pki.ca.cert), "--tls-require-client-cert",
                "--peer-listen", peer_peers[node_id],
                "--peer-peers", ",".join(f"{k}={v}" for k, v in sorted(peer_peers.items())),
                "--peer-tls-cert", str(cert.cert), "--peer-tls-key", str(cert.key),
                "--peer-tls-ca", str(cert.ca),
                "--authentication", "mtls,password", "--super-users", "User:admin",
                "--principal-mapping-rule", "RULE:^CN=(.*?),.*$/$1/",
                "--principal-mapping-rule", "DEFAULT"]

    creds = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), pki.admin.key.read_bytes(),
                                         pki.admin.cert.read_bytes())
    (tmp_path / "data").mkdir(exist_ok=True)
    cluster = Cluster(tmp_path / "data", size, node_args=node_args, channel_credentials=creds)
    peer_peers.update(_peer_addresses(cluster))
    cluster.peer_peers = peer_peers  # type: ignore[attr-defined]
    return cluster


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Pki]]:
    root = tmp_path_factory.mktemp("secured")
    pki = Pki(root)
    cluster = _secured_cluster(root, pki)
    try:
        cluster.start_all()
        with Admin(",".join(cluster.peers.values()), security=pki.security(pki.admin)) as admin:
            admin.create_topic("orders", partitions=1, replication_factor=3)
            admin.create_topic("app.events", partitions=1, replication_factor=3)
            admin.create_topic("secret", partitions=1, replication_factor=3)
            admin.wait_for_topic_ready("orders", 20)
            admin.wait_for_topic_ready("secret", 20)
            admin.create_user("bob", "bob-secret")
        _wait_everywhere(cluster, pki, users=["bob"])
        yield cluster, pki
    finally:
        cluster.stop_all()


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _call(cluster: Cluster, creds: grpc.ChannelCredentials, fn, node: int = 1):
    with grpc.secure_channel(cluster.peers[node], creds) as channel:
        return fn(channel)


def _admin_creds(pki: Pki) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), pki.admin.key.read_bytes(),
                                        pki.admin.cert.read_bytes())


def _wait_everywhere(cluster: Cluster, pki: Pki, acls=(), users=()) -> None:
    """Until every node has applied these ACLs and users (a change is answered once the
    node that took it applied it; the others follow within a moment)."""
    from raftka.v1 import security_pb2, security_pb2_grpc

    def applied() -> bool:
        for node in cluster.live():
            def ask(ch):
                stub = security_pb2_grpc.SecurityStub(ch)
                return (stub.ListAcls(security_pb2.ListAclsRequest(), timeout=5),
                        stub.ListUsers(security_pb2.ListUsersRequest(), timeout=5))
            try:
                listed, listed_users = _call(cluster, _admin_creds(pki), ask, node)
            except grpc.RpcError:  # not up yet
                return False
            if not set(acls) <= {Acl.from_pb(a) for a in listed.acls}:
                return False
            if not set(users) <= {u.name for u in listed_users.users}:
                return False
        return True
    wait_for(applied, 30, "the change on every node")


def _list_topics(channel: grpc.Channel):
    return admin_pb2_grpc.AdminStub(channel).ListTopics(admin_pb2.ListTopicsRequest(), timeout=5)


# ------------------------------------------------------------------ TLS handshakes
def test_handshake_refuses_no_cert_other_ca_and_expired(secured) -> None:
    cluster, pki = secured
    ca = pki.ca.cert.read_bytes()
    other = pki.client("mallory", ca=pki.other_ca)
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = pki.client("late", not_before=now - datetime.timedelta(days=10),
                         not_after=now - datetime.timedelta(days=1))
    refused = {
        "plain text": grpc.insecure_channel,
        "no client certificate": None,
        "certificate of another CA": grpc.ssl_channel_credentials(
            ca, other.key.read_bytes(), other.cert.read_bytes()),
        "expired certificate": grpc.ssl_channel_credentials(
            ca, expired.key.read_bytes(), expired.cert.read_bytes()),
    }
    for what, creds in refused.items():
        if creds is grpc.insecure_channel:
            channel = grpc.insecure_channel(cluster.peers[1])
        elif creds is None:
            channel = grpc.secure_channel(cluster.peers[1], grpc.ssl_channel_credentials(ca))
        else:
            channel = grpc.secure_channel(cluster.peers[1], creds)
        with channel:
            with pytest.raises(grpc.RpcError) as info:
                _list_topics(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, what
    # the good certificate gets through the same way
    good = grpc.ssl_channel_credentials(ca, pki.alice.key.read_bytes(),
                                        pki.alice.cert.read_bytes())
    assert _call(cluster, good, _list_topics).names == []  # alice may describe nothing yet


def test_peer_port_refuses_client_certificates(secured) -> None:
    """The peer port is for members: a valid client certificate of the same CA that names
    no node is refused (UNAUTHENTICATED), also for a forwarded-looking call."""
    cluster, pki = secured
    creds = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), pki.admin.key.read_bytes(),
                                         pki.admin.cert.read_bytes())
    address = cluster.peer_peers[1]  # type: ignore[attr-defined]
    with grpc.secure_channel(address, creds, options=[
            ("grpc.ssl_target_name_override", node_name(1))]) as channel:
        with pytest.raises(grpc.RpcError) as info:
            admin_pb2_grpc.AdminStub(channel).DeleteTopic(
                admin_pb2.DeleteTopicRequest(name="orders"), timeout=5, metadata=(
                    ("raftka-forwarded-by", "2"), ("raftka-forwarded-principal", "User:admin")))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_node_with_a_foreign_certificate_cannot_join(tmp_path: Path) -> None:
    """Node 3 has a certificate from another CA: nodes 1 and 2 refuse its Raft traffic and
    it never learns the metadata; the two members work on."""
    pki = Pki(tmp_path)
    certs = dict(pki.nodes)
    foreign_ca = make_ca(tmp_path / "foreign")
    certs[3] = issue(foreign_ca, tmp_path / "foreign", "node3", node_name(3),
                     (node_name(3), "localhost"), ("127.0.0.1",))
    cluster = _secured_cluster(tmp_path, pki, node_certs=certs)
    try:
        for nid in (1, 2, 3):
            cluster.start(nid)
        wait_for(lambda: cluster.controller_leader() in (1, 2), 30, "a controller leader")
        with Admin(f"{cluster.peers[1]},{cluster.peers[2]}",
                   security=pki.security(pki.admin)) as admin:
            admin.create_topic("t", partitions=1, replication_factor=2)
        log3 = tmp_path / "data" / "node-3.log"
        wait_for(lambda: "Tls handshake failed" in log3.read_text(errors="replace"), 30,
                 "node 3's connections to its peers failing at the TLS handshake")
        # node 3 itself is up (its client port answers) but has never heard a member
        foreign = grpc.ssl_channel_credentials(foreign_ca.cert.read_bytes(),
                                               pki.admin.key.read_bytes(),
                                               pki.admin.cert.read_bytes())
        refusal = wait_for(lambda: _metadata_refusal(cluster, foreign, 3), 30,
                           "node 3 answering")
        assert refusal.code() == grpc.StatusCode.UNAVAILABLE, refusal
        assert "has not caught up with the cluster metadata" in refusal.details(), refusal
    finally:
        cluster.stop_all()


def _metadata_refusal(cluster: Cluster, creds: grpc.ChannelCredentials, node: int):
    """The error a node's Metadata answers with, or None while it does not answer at all
    (a node that never heard a member has no metadata to give: it refuses, retriably)."""
    try:
        md = _call(cluster, creds, lambda ch: broker_stub(ch).Metadata(
            broker_pb2.MetadataRequest(), timeout=3), node)
    except grpc.RpcError as e:
        return e if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED and \
            "has not caught up" in (e.details() or "") else None
    raise AssertionError(f"node 3 answered Metadata without ever hearing a member: {md}")


# ------------------------------------------------------------------ authentication
def test_passwords_and_certificates_give_principals(secured) -> None:
    cluster, pki = secured
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap, security=pki.security(username="bob", password="bob-secret")) as a:
        assert a.whoami() == "User:bob"
    with Admin(bootstrap, security=pki.security(pki.alice)) as a:
        assert a.whoami() == "User:alice"
    with Admin(bootstrap, security=pki.security(username="bob", password="wrong"),
               default_timeout=3) as a:
        with pytest.raises(AuthenticationFailedError):
            a.whoami()
    # users are stored hashed: the list shows no secret
    with Admin(bootstrap, security=pki.security(pki.admin)) as a:
        users = a.list_users()
    assert [(u.name, u.mechanism) for u in users] == [("bob", "SCRAM-SHA-256")]


# ------------------------------------------------------------------ authorization
def _builder_batch(value: bytes) -> bytes:
    builder = BatchBuilder(max_bytes=1 << 20)
    builder.append(None, value, (), 1)
    return builder.build()


def _code(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    info = error_info(exc)
    from raftka.v1 import errors_pb2
    return exc.code(), errors_pb2.ErrorCode.Name(info.code) if info else ""


def test_each_rpc_family_is_denied_without_rights_and_writes_nothing(secured) -> None:
    cluster, pki = secured
    carol = pki.client("carol")
    creds = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), carol.key.read_bytes(),
                                         carol.cert.read_bytes())
    leader = cluster.wait_leader("orders", 0)
    before = cluster.values("orders", 0)
    calls = {
        "produce": (lambda ch: broker_stub(ch).Produce(broker_pb2.ProduceRequest(
            topic="orders", partition=0, record_batches=_builder_batch(b"x")), timeout=5),
            "TOPIC_AUTHORIZATION_FAILED"),
        "fetch": (lambda ch: broker_stub(ch).Fetch(broker_pb2.FetchRequest(
            topic="orders", partition=0, offset=0), timeout=5), "TOPIC_AUTHORIZATION_FAILED"),
        "metadata of a named topic": (lambda ch: broker_stub(ch).Metadata(
            broker_pb2.MetadataRequest(topics=["orders"]), timeout=5),
            "TOPIC_AUTHORIZATION_FAILED"),
        "create topic": (lambda ch: admin_pb2_grpc.AdminStub(ch).CreateTopic(
            admin_pb2.CreateTopicRequest(name="carols"), timeout=5),
            "TOPIC_AUTHORIZATION_FAILED"),
        "delete topic": (lambda ch: admin_pb2_grpc.AdminStub(ch).DeleteTopic(
            admin_pb2.DeleteTopicRequest(name="orders"), timeout=5),
            "TOPIC_AUTHORIZATION_FAILED"),
        "describe cluster": (lambda ch: admin_pb2_grpc.AdminStub(ch).DescribeCluster(
            admin_pb2.DescribeClusterRequest(), timeout=5), "CLUSTER_AUTHORIZATION_FAILED"),
        "commit offsets": (lambda ch: group_pb2_grpc.GroupCoordinatorStub(ch).CommitOffsets(
            group_pb2.OffsetCommitRequest(group_id="g", offsets=[group_pb2.OffsetCommitEntry(
                topic="orders", partition=0, offset=1)]), timeout=5),
            "GROUP_AUTHORIZATION_FAILED"),
        "delete group": (lambda ch: group_pb2_grpc.GroupCoordinatorStub(ch).DeleteGroup(
            group_pb2.DeleteGroupRequest(group_id="g"), timeout=5),
            "GROUP_AUTHORIZATION_FAILED"),
        "create ACLs": (lambda ch: __import__("raftka.v1.security_pb2_grpc").v1
                        .security_pb2_grpc.SecurityStub(ch).CreateAcls(
                            __import__("raftka.v1.security_pb2").v1.security_pb2
                            .CreateAclsRequest(acls=[Acl("User:carol", "ALL", "TOPIC", "*")
                                                     .to_pb()]), timeout=5),
                        "CLUSTER_AUTHORIZATION_FAILED"),
    }
    for what, (fn, reason) in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            _call(cluster, creds, fn, node=leader)
        assert _code(info.value) == (grpc.StatusCode.PERMISSION_DENIED, reason), what
        assert "User:carol" in info.value.details(), what
    assert cluster.values("orders", 0) == before  # nothing was written
    md = _call(cluster, creds, lambda ch: broker_stub(ch).Metadata(
        broker_pb2.MetadataRequest(), timeout=5))
    assert [t.name for t in md.topics] == []  # carol may describe no topic
    with Admin(_bootstrap(cluster), security=pki.security(pki.admin)) as admin:
        assert "carols" not in admin.list_topics()
        assert admin.list_acls(principal="User:carol") == []


def broker_stub(channel: grpc.Channel):
    from raftka.v1 import broker_pb2_grpc
    return broker_pb2_grpc.BrokerStub(channel)


def test_prefixed_allow_and_deny_rules_with_the_client(secured) -> None:
    cluster, pki = secured
    bootstrap = _bootstrap(cluster)
    dave = pki.client("dave")
    acls = [Acl("User:dave", "WRITE", "TOPIC", "app.", "PREFIXED"),
            Acl("User:dave", "READ", "TOPIC", "app.", "PREFIXED"),
            Acl("User:dave", "ALL", "TOPIC", "secret"),
            Acl("User:dave", "WRITE", "TOPIC", "secret", permission="DENY")]
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.create_acls(acls)
    _wait_everywhere(cluster, pki, acls)
    security = pki.security(dave)
    with Producer(bootstrap, security=security, delivery_timeout_ms=5000) as producer:
        partition, offset = producer.send("app.events", b"ok").result(10)
        assert offset >= 0
        with pytest.raises(TopicAuthorizationFailedError) as info:
            producer.send("secret", b"no").result(10)  # ALL allows, DENY WRITE wins
        assert "WRITE TOPIC 'secret'" in str(info.value)
        # the refusal was one answer on the produce stream: the producer goes on
        assert producer.send("app.events", b"after").result(10)[1] > offset
        # no ACL at all, not even DESCRIBE: absent from dave's metadata, and asked for by
        # name the node says why
        with pytest.raises(TopicAuthorizationFailedError) as info:
            producer.send("orders", b"no").result(15)
        assert "DESCRIBE TOPIC 'orders'" in str(info.value)
    with PartitionReader(bootstrap, "app.events", 0, security=security) as reader:
        values = wait_for(lambda: [r.value for r in reader.poll(timeout=1.0)], 10, "records")
    assert b"ok" in values
    with Admin(bootstrap, security=security) as admin:
        assert admin.list_topics() == ["app.events", "secret"]  # describable ones only
    assert cluster.values("secret", 0) == []


def test_acl_and_user_changes_reach_every_node_and_survive_kill_and_restart(secured) -> None:
    """Made while a minority is killed (-9): the node that comes back enforces them too;
    then every node stops and starts again and still does."""
    cluster, pki = secured
    bootstrap = _bootstrap(cluster)
    cluster.kill(3)
    with Admin(f"{cluster.peers[1]},{cluster.peers[2]}",
               security=pki.security(pki.admin)) as admin:
        admin.create_user("erin", "erin-pw")
        admin.create_acls([Acl("User:erin", "DESCRIBE", "TOPIC", "orders")])
    cluster.start(3)

    erin = pki.security(username="erin", password="erin-pw")

    def erin_sees_orders_everywhere() -> bool:
        for node in cluster.peers:  # each node itself, not whichever a client picks
            with erin.channel(cluster.peers[node], []) as channel:
                try:
                    if _list_topics(channel).names != ["orders"]:
                        return False
                except grpc.RpcError:  # not up yet, or not applied: UNAUTHENTICATED
                    return False
        return True

    wait_for(erin_sees_orders_everywhere, 30, "erin's ACL on every node, node 3 included")
    for node in list(cluster.live()):
        cluster.terminate(node)
    cluster.start_all()
    wait_for(erin_sees_orders_everywhere, 30, "erin's ACL after a full restart")
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.delete_user("erin")

    def refused_everywhere() -> bool:
        for node in cluster.peers:
            with erin.channel(cluster.peers[node], []) as channel:
                try:
                    _list_topics(channel)
                    return False
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                        return False
        return True
    wait_for(refused_everywhere, 10, "erin refused by every node after her deletion")


def test_group_calls_need_read_on_group_and_topic(secured) -> None:
    cluster, pki = secured
    bootstrap = _bootstrap(cluster)
    frank = pki.client("frank")
    first = [Acl("User:frank", "READ", "TOPIC", "orders")]
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.create_acls(first)
    _wait_everywhere(cluster, pki, first)
    with Admin(bootstrap, security=pki.security(frank), default_timeout=5) as admin:
        with pytest.raises(GroupAuthorizationFailedError):
            admin.reset_group_offsets("frank-group", topic="orders", to="earliest")
    second = [Acl("User:frank", "READ", "GROUP", "frank-", "PREFIXED"),
              Acl("User:frank", "DESCRIBE", "GROUP", "frank-", "PREFIXED")]
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.create_acls(second)
    _wait_everywhere(cluster, pki, second)
    with Admin(bootstrap, security=pki.security(frank), default_timeout=10) as admin:
        admin.reset_group_offsets("frank-group", topic="orders", to="earliest")
        with pytest.raises(ClusterAuthorizationFailedError):
            admin.create_acls([Acl("User:frank", "ALL", "TOPIC", "*")])


def test_tls_and_a_peer_port_without_authentication_forward_controller_writes(
        tmp_path: Path) -> None:
    """`raftka dev --tls`'s setup: TLS clients without certificates, mutual TLS between
    nodes on the peer port, no authentication: a follower forwards a topic creation to
    the leader over the peer port (as User:ANONYMOUS, which may do anything here)."""
    pki = Pki(tmp_path)
    peers: dict[int, str] = {}

    def node_args(node_id: int) -> list[str]:
        cert = pki.nodes[node_id]
        return ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                "--peer-listen", peers[node_id],
                "--peer-peers", ",".join(f"{k}={v}" for k, v in sorted(peers.items())), "--peer-tls-cert", str(cert.cert),
                "--peer-tls-key", str(cert.key), "--peer-tls-ca", str(pki.ca.cert)]

    (tmp_path / "data").mkdir()
    cluster = Cluster(tmp_path / "data", 3, node_args=node_args,
                      channel_credentials=grpc.ssl_channel_credentials(pki.ca.cert.read_bytes()))
    peers.update(_peer_addresses(cluster))
    try:
        cluster.start_all()
        follower = next(n for n in cluster.peers if n != cluster.controller_leader())
        with grpc.secure_channel(cluster.peers[follower], grpc.ssl_channel_credentials(
                pki.ca.cert.read_bytes())) as channel:
            created = admin_pb2_grpc.AdminStub(channel).CreateTopic(
                admin_pb2.CreateTopicRequest(name="fwd", partitions=1, replication_factor=3),
                timeout=10)
        assert created.topic.name == "fwd"
    finally:
        cluster.stop_all()


def test_tls_without_authentication_encrypts_client_and_raft_traffic(tmp_path: Path) -> None:
    """TLS on the client port only (no client certificates, no peer port): clients need
    the CA, not a certificate; Raft between the nodes runs over the same TLS port (the
    nodes check each other against tls_ca), and plain text is refused."""
    pki = Pki(tmp_path)

    def node_args(node_id: int) -> list[str]:
        cert = pki.nodes[node_id]
        return ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                "--tls-ca", str(pki.ca.cert)]

    (tmp_path / "data").mkdir()
    cluster = Cluster(tmp_path / "data", 3, node_args=node_args,
                      channel_credentials=grpc.ssl_channel_credentials(pki.ca.cert.read_bytes()))
    try:
        cluster.start_all()
        security = ClientSecurity(ca=str(pki.ca.cert))
        with Admin(_bootstrap(cluster), security=security) as admin:
            admin.create_topic("t", partitions=1, replication_factor=3)
            admin.wait_for_topic_ready("t", 20)
            assert admin.whoami() == "User:ANONYMOUS"
        with Producer(_bootstrap(cluster), security=security) as producer:
            # acks=all: committed by a majority, so replicated over the TLS Raft streams
            producer.send("t", b"over tls").result(10)
        with grpc.insecure_channel(cluster.peers[1]) as channel:
            with pytest.raises(grpc.RpcError) as info:
                _list_topics(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        cluster.stop_all()


def test_controller_writes_at_a_follower_are_forwarded_with_the_callers_principal(
        secured) -> None:
    """A follower forwards a controller write to the leader over the peer port with the
    caller's principal, and the leader authorizes that principal again: what the caller
    may do is what happens, whichever node it asked."""
    cluster, pki = secured
    leader = cluster.controller_leader()
    follower = next(n for n in cluster.live() if n != leader)
    gina = pki.client("gina")
    creds = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), gina.key.read_bytes(),
                                         gina.cert.read_bytes())
    allowed = [Acl("User:gina", "CREATE", "TOPIC", "gina.", "PREFIXED")]
    with Admin(_bootstrap(cluster), security=pki.security(pki.admin)) as admin:
        admin.create_acls(allowed)
    _wait_everywhere(cluster, pki, allowed)

    def create(name: str):
        return _call(cluster, creds, lambda ch: admin_pb2_grpc.AdminStub(ch).CreateTopic(
            admin_pb2.CreateTopicRequest(name=name, partitions=1, replication_factor=3),
            timeout=10), node=follower)

    assert create("gina.one").topic.name == "gina.one"
    with pytest.raises(grpc.RpcError) as info:
        create("other")
    assert _code(info.value) == (grpc.StatusCode.PERMISSION_DENIED,
                                 "TOPIC_AUTHORIZATION_FAILED")
    with Admin(_bootstrap(cluster), security=pki.security(pki.admin)) as admin:
        names = admin.list_topics()
    assert "gina.one" in names and "other" not in names
    logs = "".join((cluster.root / f"node-{n}.log").read_text(errors="replace")
                   for n in cluster.peers)
    assert "principal=User:gina" in logs  # the denial's audit line names gina


def test_quota_throttles_produce_and_fetch_without_refusing(secured) -> None:
    """Over its quota a principal is held back, never refused: every write lands, the
    unary answers say how long they were held (throttle_time_ms), and the producer's
    records take at least as long as the quota allows."""
    cluster, pki = secured
    bootstrap = _bootstrap(cluster)
    hank = pki.client("hank")
    grants = [Acl("User:hank", "WRITE", "TOPIC", "hank"), Acl("User:hank", "READ", "TOPIC",
                                                               "hank")]
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.create_topic("hank", partitions=1, replication_factor=3)
        admin.wait_for_topic_ready("hank", 20)
        admin.create_acls(grants)
        admin.set_quota("User:hank", produce_bytes_per_s=4_000, fetch_bytes_per_s=4_000)
        assert ("User:hank", 4_000, 4_000, 0) in admin.list_quotas()
    _wait_everywhere(cluster, pki, grants)
    wait_for(lambda: all(_quota_on(cluster, pki, n) for n in cluster.live()), 10,
             "the quota on every node")
    creds = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), hank.key.read_bytes(),
                                         hank.cert.read_bytes())
    leader = cluster.wait_preferred_leader("hank", 0)  # settled: it will not move
    throttled = []
    for i in range(3):  # 8 kB (incompressible) each, twice the 1 s burst: every one is held
        resp = _call(cluster, creds, lambda ch: broker_stub(ch).Produce(
            broker_pb2.ProduceRequest(topic="hank", partition=0,
                                      record_batches=_builder_batch(os.urandom(8_000))),
            timeout=30), node=leader)
        assert resp.base_offset == i  # written, not refused
        throttled.append(resp.throttle_time_ms)
    assert all(ms > 0 for ms in throttled), throttled
    fetched = _call(cluster, creds, lambda ch: broker_stub(ch).Fetch(
        broker_pb2.FetchRequest(topic="hank", partition=0, offset=0), timeout=30), node=leader)
    assert fetched.next_offset == 3 and fetched.throttle_time_ms > 0
    stream = _call(cluster, creds, lambda ch: next(iter(broker_stub(ch).FetchStream(
        broker_pb2.FetchRequest(topic="hank", partition=0, offset=0), timeout=30))),
        node=leader)
    assert stream.next_offset == 3 and stream.throttle_time_ms > 0  # held, then sent
    requests = [broker_pb2.ProduceStreamRequest(correlation_id=i, request=broker_pb2.ProduceRequest(
        topic="hank", partition=0, record_batches=_builder_batch(os.urandom(8_000))))
        for i in range(2)]
    answers = _call(cluster, creds, lambda ch: list(broker_stub(ch).ProduceStream(
        iter(requests), timeout=30)), node=leader)
    assert [a.response.base_offset for a in answers] == [3, 4]
    assert all(a.response.throttle_time_ms > 0 for a in answers), answers
    # the client's produce stream: held back by flow control, all delivered
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.set_quota("User:hank", produce_bytes_per_s=20_000)
    wait_for(lambda: all(_quota_on(cluster, pki, n, 20_000) for n in cluster.live()), 10,
             "the new quota on every node")
    import time
    started = time.monotonic()
    with Producer(bootstrap, security=pki.security(hank), delivery_timeout_ms=60_000) as p:
        futures = [p.send("hank", os.urandom(1_000), partition=0) for _ in range(80)]
        offsets = [f.result(60)[1] for f in futures]
    elapsed = time.monotonic() - started
    assert len(set(offsets)) == 80
    # 80 kB at 20 kB/s with a 20 kB burst cannot take less than 3 s (the bound the
    # node's holding guarantees; how much longer depends on the machine)
    assert elapsed >= 2.5, elapsed
    # a request-rate quota: every call counts, whatever its size
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.set_quota("User:hank", requests_per_s=5)
        # read-your-writes holds on the node that took the write; list may ask another
        wait_for(lambda: ("User:hank", 0, 0, 5) in admin.list_quotas(), 10,
                 "the request quota listed")
    wait_for(lambda: all(_quota_on(cluster, pki, n, 0) for n in cluster.live()), 10,
             "the request quota on every node")
    started = time.monotonic()
    held = []
    for _ in range(15):
        fetched = _call(cluster, creds, lambda ch: broker_stub(ch).Fetch(
            broker_pb2.FetchRequest(topic="hank", partition=0, offset=0, max_bytes=1),
            timeout=30), node=leader)
        held.append(fetched.throttle_time_ms)
    elapsed = time.monotonic() - started
    # 15 requests at 5/s with a burst of 5 cannot take less than 2 s
    assert elapsed >= 1.8, elapsed
    assert held[0] == 0 and held[-1] > 0, held


def _quota_on(cluster: Cluster, pki: Pki, node: int, produce: int = 4_000) -> bool:
    from raftka.v1 import security_pb2, security_pb2_grpc
    try:
        listed = _call(cluster, _admin_creds(pki), lambda ch: security_pb2_grpc.SecurityStub(
            ch).ListQuotas(security_pb2.ListQuotasRequest(), timeout=5), node)
    except grpc.RpcError:
        return False
    return any(q.entity == "User:hank" and q.produce_bytes_per_s == produce
               for q in listed.quotas)


def test_asyncio_client_uses_the_same_security(secured) -> None:
    """raftka.aio's clients take the same ClientSecurity (TLS, certificate, password)."""
    import asyncio

    from raftka import aio

    cluster, pki = secured

    async def scenario() -> tuple[str, str, list[str]]:
        async with aio.Admin(_bootstrap(cluster), security=pki.security(pki.admin)) as admin:
            as_admin = await admin.whoami()
            names = await admin.list_topics()
        async with aio.Admin(_bootstrap(cluster), security=pki.security(
                username="bob", password="bob-secret"), default_timeout=10) as admin:
            as_bob = await admin.whoami()
        return as_admin, as_bob, names

    as_admin, as_bob, names = asyncio.run(scenario())
    assert (as_admin, as_bob) == ("User:admin", "User:bob") and "orders" in names


def test_share_groups_need_read_on_group_and_topic(secured) -> None:
    """A share consumer (issue: share groups) goes through the same checks: READ on the
    group and the topic; with them it gets every record, asking the group's coordinator
    across nodes over the peer port as itself."""
    from raftka.client import ShareConsumer

    cluster, pki = secured
    bootstrap = _bootstrap(cluster)
    ivy = pki.client("ivy")
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.create_topic("jobs", partitions=3, replication_factor=3)
        admin.wait_for_topic_ready("jobs", 20)
    with Producer(bootstrap, security=pki.security(pki.admin)) as producer:
        for i in range(30):
            producer.send("jobs", f"job-{i}".encode(), partition=i % 3)
        producer.flush(30)
    def join() -> None:
        with ShareConsumer(bootstrap, "ivy-workers", ["jobs"], security=pki.security(ivy),
                           join_timeout_s=5) as consumer:
            consumer.poll(1.0)

    with pytest.raises(TopicAuthorizationFailedError):
        join()  # not even DESCRIBE on the topic
    topic_grant = [Acl("User:ivy", "READ", "TOPIC", "jobs")]
    group_grant = [Acl("User:ivy", "READ", "GROUP", "ivy-", "PREFIXED")]
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.create_acls(topic_grant)
    _wait_everywhere(cluster, pki, topic_grant)
    with pytest.raises(GroupAuthorizationFailedError):
        join()
    with Admin(bootstrap, security=pki.security(pki.admin)) as admin:
        admin.create_acls(group_grant)
    _wait_everywhere(cluster, pki, group_grant)
    seen: set[bytes] = set()
    with ShareConsumer(bootstrap, "ivy-workers", ["jobs"], security=pki.security(ivy)) as c:
        def all_seen() -> bool:
            for r in c.poll(0.5):
                seen.add(r.value)
            return len(seen) == 30
        wait_for(all_seen, 30, "every job delivered to ivy's share consumer")


def test_transactions_need_transactional_id_write_topic_write_and_group_read(
        secured) -> None:
    """Transactions under ACLs (Kafka's rules): WRITE on the TRANSACTIONAL_ID, WRITE on each
    topic written, READ on the group and its topics for offsets sent in the transaction.
    Without the id's WRITE: TRANSACTIONAL_ID_AUTHORIZATION_FAILED and nothing written; a
    topic without WRITE fails its records and the transaction can only be aborted."""
    from raftka.client import (
        InvalidTxnStateError,
        TopicPartition,
        TransactionalIdAuthorizationFailedError,
        TransactionalIdNotFoundError,
    )

    cluster, pki = secured
    bootstrap = _bootstrap(cluster)
    tina = pki.security(pki.client("tina"))
    admin_security = pki.security(pki.admin)
    with Admin(bootstrap, security=admin_security) as admin:
        for topic in ("tina-out", "tina-in"):
            admin.create_topic(topic, partitions=1, replication_factor=3)
            admin.wait_for_topic_ready(topic, 20)
    topics = [Acl("User:tina", "WRITE", "TOPIC", "tina-out"),
              Acl("User:tina", "READ", "TOPIC", "tina-in"),
              Acl("User:tina", "READ", "GROUP", "tina-etl")]
    with Admin(bootstrap, security=admin_security) as admin:
        admin.create_acls(topics)
    _wait_everywhere(cluster, pki, topics)
    with Producer(bootstrap, security=tina, transactional_id="tina-1") as producer:
        with pytest.raises(TransactionalIdAuthorizationFailedError, match="tina-1"):
            producer.init_transactions(timeout=20)
    with Admin(bootstrap, security=admin_security) as admin:
        with pytest.raises(TransactionalIdNotFoundError):
            admin.describe_transaction("tina-1")  # the refusal registered nothing
    grant = [Acl("User:tina", "WRITE", "TRANSACTIONAL_ID", "tina-", "PREFIXED")]
    with Admin(bootstrap, security=admin_security) as admin:
        admin.create_acls(grant)
    _wait_everywhere(cluster, pki, grant)
    with Producer(bootstrap, security=tina, transactional_id="tina-1") as producer:
        producer.init_transactions(timeout=20)
        producer.begin_transaction()
        producer.send("tina-out", b"granted", partition=0)
        producer.send_offsets_to_transaction({("tina-in", 0): 3}, "tina-etl")
        producer.commit_transaction(timeout=20)
        # a topic tina may not write: its records fail, only an abort ends the transaction
        producer.begin_transaction()
        producer.send("tina-out", b"aborted", partition=0)
        refused = producer.send("secret", b"never", partition=0)
        with pytest.raises(TopicAuthorizationFailedError):
            refused.result(20)
        with pytest.raises(InvalidTxnStateError):
            producer.commit_transaction(timeout=20)
        producer.abort_transaction(timeout=20)
    with Admin(bootstrap, security=admin_security) as admin:
        assert admin.committed_offsets("tina-etl", [("tina-in", 0)]) == {
            TopicPartition("tina-in", 0): 3}
        # the abort reopened the next transaction (its state is ongoing): the marker
        # shows in the partition, whose stable offset reaches its end
        def marked() -> bool:
            offsets = admin.list_offsets("tina-out", 0)
            return offsets.last_stable_offset == offsets.high_watermark
        wait_for(marked, 30, "the abort's markers")
    readers = {}
    for level in ("read_committed", "read_uncommitted"):
        with PartitionReader(bootstrap, "tina-out", 0, security=admin_security,
                             isolation_level=level) as reader:
            got: list[bytes] = []
            wait_for(lambda: got.extend(r.value for r in reader.poll(0.5)) or reader.at_end
                     and (level == "read_uncommitted" or len(got) >= 1), 30, level)
            readers[level] = got
    assert readers["read_committed"] == [b"granted"]
    assert readers["read_uncommitted"] == [b"granted", b"aborted"]
    with PartitionReader(bootstrap, "secret", 0, security=admin_security) as reader:
        assert b"never" not in [r.value for r in reader.poll(2.0)]


def test_the_console_signs_users_in_and_shows_only_what_they_may_see(secured) -> None:
    """raftka console --login: every page asks to sign in; then each call is the user's
    own (a password login over the console's TLS settings), so the nodes' ACLs decide what
    the pages show and allow. Flask's test client against the real secured cluster."""
    from raftka.client.console import close_app, create_app

    cluster, pki = secured
    acls = [Acl("User:viewer", "DESCRIBE", "TOPIC", "orders")]
    with Admin(_bootstrap(cluster), security=pki.security(pki.admin)) as admin:
        admin.create_user("viewer", "viewer-pass", replace=True)
        admin.create_acls(acls)
    _wait_everywhere(cluster, pki, acls=acls, users=["viewer"])
    app = create_app(_bootstrap(cluster), security=pki.security(), login=True,
                     start_sampler=False)
    try:
        web = app.test_client()
        page = web.get("/topics")
        assert page.status_code == 302 and "/login" in page.location
        assert web.get("/api/overview").status_code == 401
        assert web.post("/login", data={"username": "viewer",
                                        "password": "wrong"}).status_code == 401
        page = web.post("/login?next=/topics", data={"username": "viewer",
                                                     "password": "viewer-pass"})
        assert page.status_code == 302 and page.location.endswith("/topics")
        listing = web.get("/topics").get_data(as_text=True)
        assert 'id="topic-orders"' in listing and "secret" not in listing
        assert "User:viewer" in listing  # who is signed in
        assert web.get("/topics/secret").status_code == 403
        created = web.post("/topics", data={"name": "viewer-made", "partitions": "1"})
        assert created.status_code == 403  # no right to create topics: nothing written
        with Admin(_bootstrap(cluster), security=pki.security(pki.admin)) as admin:
            assert "viewer-made" not in {t.name for t in admin.describe_topics()}
        assert web.get("/api/throughput").get_json()["series"].keys() <= {"orders"}
        web.post("/logout")
        assert web.get("/topics").status_code == 302
    finally:
        close_app(app)
