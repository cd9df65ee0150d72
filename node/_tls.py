"""TLS of a node: the client port, the peer port and the node's outgoing peer channels.

Two independent settings, as etcd has (``node/_config.py`` names the keys):

- client port (``listen``): ``tls_cert``/``tls_key`` (the node's certificate), ``tls_ca``
  (the CA bundle client certificates are checked against) and ``tls_require_client_cert``
  (refuse a client without a certificate from that CA at the handshake). Without
  ``tls_cert`` the port is plain text.
- peer port (``peer_listen``, every node's at ``peer_peers``): ``peer_tls_cert``,
  ``peer_tls_key``, ``peer_tls_ca``. Always mutual TLS: a peer must present a certificate
  from ``peer_tls_ca`` (refused at the handshake otherwise) whose DNS names (or common
  name) contain the name of a configured node (``peer_name_template``, default
  ``raftka-node-{id}``): only cluster members get in (:meth:`PeerIdentity.node_of`), and a
  Raft batch is accepted only from the node the certificate names. Outgoing peer
  channels present this node's peer certificate and check the target's against the name of
  the node they dial, so a node never talks Raft to an impostor either.

Raft traffic and forwarded controller writes use the peer port when there is one; without
it they use the client port with its settings (plain text or TLS; the node's own
certificate as its client certificate when clients must present one).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("raftka.node")

PEER_NAME_TEMPLATE_DEFAULT = "raftka-node-{id}"


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class TlsFiles:
    """One side's certificate settings, the files already read (PEM bytes)."""

    cert: bytes
    key: bytes
    ca: bytes | None  # None: the system's roots (client side) / no client certs (server)

    @classmethod
    def load(cls, cert: str, key: str, ca: str, what: str) -> TlsFiles:
        if not cert or not key:
            raise ValueError(f"{what}: give both a certificate and its key")
        return cls(read_file(cert, f"{what} certificate"), read_file(key, f"{what} key"),
                   read_file(ca, f"{what} CA bundle") if ca else None)

    def server_credentials(self, require_client_cert: bool) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca,
            require_client_auth=require_client_cert)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


class PeerIdentity:
    """Which configured node a peer certificate belongs to."""

    def __init__(self, node_ids: list[int], template: str) -> None:
        self.template = template
        self._by_name = {template.format(id=n): n for n in node_ids}

    def name_of(self, node_id: int) -> str:
        return self.template.format(id=node_id)

    def node_of(self, auth_context: dict) -> int:
        """The node the verified peer certificate names, or 0 if it names none."""
        names = [n.decode("utf-8", "replace") for key in (
            "x509_subject_alternative_name", "x509_common_name")
            for n in auth_context.get(key, ())]
        for name in names:
            node = self._by_name.get(name)
            if node:
                return node
        return 0


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_plain_text(what: str, address: str) -> None:
    """The loud warning of a node serving plain text beyond loopback."""
    if is_loopback(address):
        return
    bar = "!" * 78
    log.warning("\n%s\n!! INSECURE: %s on %s is PLAIN TEXT (no TLS): anyone on the network can "
                "read and\n!! write every topic and every record sent. Configure TLS (see "
                "README, Security).\n%s", bar, what, address, bar)
