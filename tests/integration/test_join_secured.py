"""Joining a cluster with a peer port and authentication (issue 19), on a real secured 3-node
cluster (mutual TLS on the peer port, mTLS and password authentication, ACLs on): a node
whose peer certificate is made out to ``raftka-node-4`` joins through a member's peer port,
is registered, follows the controller log over the peer port (it answers ListNodes naming
every node) and takes a partition moved onto it; a node that asks for an id its certificate
is not made out to is refused at once with nothing registered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from raftka.client import Admin
from raftka.node._certs import issue, node_name

from tests.harness import REPO, Cluster, free_ports, wait_for
from tests.integration.test_security import Pki, _secured_cluster


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Pki]]:
    root = tmp_path_factory.mktemp("join-secured")
    pki = Pki(root)
    cluster = _secured_cluster(root, pki)
    try:
        cluster.start_all()
        yield cluster, pki
    finally:
        cluster.stop_all()


def _joiner(cluster: Cluster, pki: Pki, node_id: int, cert, name: str
            ) -> tuple[list[str], str, Path]:
    address, peer = (f"127.0.0.1:{p}" for p in free_ports(2))
    data = cluster.root / f"node-{name}"
    # a member that is not the controller leader first: it forwards the registration
    leader = cluster.controller_leader()
    order = sorted(cluster.peer_peers, key=lambda n: n == leader)  # type: ignore[attr-defined]
    members = ",".join(f"{n}={cluster.peer_peers[n]}" for n in order)  # type: ignore[attr-defined]
    cmd = [sys.executable, "-m", "raftka.node", "--id", str(node_id), "--listen", address,
           "--data-dir", str(data), "--tick-ms", str(cluster.tick_ms), "--log-level", "info",
           "--no-balancer", "--join", members,
           "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
           "--tls-ca", str(pki.ca.cert), "--tls-require-client-cert",
           "--peer-listen", peer, "--peer-tls-cert", str(cert.cert),
           "--peer-tls-key", str(cert.key), "--peer-tls-ca", str(pki.ca.cert),
           "--authentication", "mtls,password", "--super-users", "User:admin",
           "--principal-mapping-rule", "RULE:^CN=(.*?),.*$/$1/",
           "--principal-mapping-rule", "DEFAULT"]
    return cmd, address, data


def test_a_node_with_a_peer_certificate_joins_through_the_peer_port_and_no_other_id(
        secured: tuple[Cluster, Pki]) -> None:
    cluster, pki = secured
    cmd, address, data = _joiner(cluster, pki, 4, pki.nodes[4], "4")
    with open(cluster.root / "node-4.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    cluster._started.append(proc)
    cluster.procs[4] = proc
    # meanwhile (the two start together): a certificate made out to node 5 asking for id 6
    cert5 = issue(pki.ca, pki.root / "certs", "node5", node_name(5),
                  (node_name(5), "localhost"), ("127.0.0.1",))
    bad_cmd, _, bad_data = _joiner(cluster, pki, 6, cert5, "6")
    done = subprocess.run(bad_cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the peer certificate is node 5's" in done.stderr, done.stderr[-2000:]
    assert not (bad_data / "membership.json").exists()

    wait_for((data / "membership.json").exists, 60, "node 4 to join")
    with Admin(",".join(cluster.peers.values()), security=pki.security(pki.admin)) as admin:
        wait_for(lambda: {n.id: n.reachable for n in admin.list_nodes()}.get(4), 60,
                 "node 4 registered and reachable")
        assert 6 not in {n.id for n in admin.list_nodes()}
        # node 4 replays the controller log, which reaches it only over the peer port
        with Admin(address, security=pki.security(pki.admin)) as at4:
            wait_for(lambda: {n.id for n in at4.list_nodes()} == {1, 2, 3, 4}, 60,
                     "node 4's own metadata to name every node")
        admin.create_topic("onto-4", partitions=1, replication_factor=3)
        admin.wait_for_topic_ready("onto-4", 30)
        before = tuple(admin.describe_topic("onto-4").partitions[0].replicas)
        target = before[1:] + (4,)
        admin.reassign_partition("onto-4", 0, target)
        wait_for(lambda: tuple(admin.describe_topic("onto-4").partitions[0].replicas)
                 == target, 60, "the move onto node 4 (Raft over the peer port)")
