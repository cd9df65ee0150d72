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
import re
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
        prefix, _, suffix = template.partition("{id}")
        self._any_id = re.compile(re.escape(prefix) + r"([1-9][0-9]{0,9})" + re.escape(suffix))

    def name_of(self, node_id: int) -> str:
        return self.template.format(id=node_id)

    def add(self, node_id: int) -> None:
        """A node registered in the metadata (it joined) is a member from now on."""
        self._by_name[self.template.format(id=node_id)] = node_id

    def claimed_id(self, auth_context: dict) -> int:
        """The node id a verified peer certificate is made out to, member or not (0: its
        names fit no ``{id}`` of the template): a joining node's proof of who it is."""
        for key in ("x509_subject_alternative_name", "x509_common_name"):
            for raw in auth_context.get(key, ()):
                match = self._any_id.fullmatch(raw.decode("utf-8", "replace"))
                if match:
                    return int(match.group(1))
        return 0

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


class PeerChannels:
    """How this node dials another: the address (peer port if any) and the credentials."""

    def __init__(self, addresses: dict[int, str], credentials: grpc.ChannelCredentials | None,
                 identity: PeerIdentity | None) -> None:
        self.addresses = addresses
        self._credentials = credentials
        self.identity = identity  # set with a peer port: the target's name is checked

    def open(self, node_id: int, options: list) -> grpc.aio.Channel:
        address = self.addresses[node_id]
        if self._credentials is None:
            return grpc.aio.insecure_channel(address, options=options)
        if self.identity is not None:
            options = [*options, ("grpc.ssl_target_name_override",
                                  self.identity.name_of(node_id))]
        return grpc.aio.secure_channel(address, self._credentials, options=options)


def client_tls(config) -> TlsFiles | None:
    """The client port's TLS files (None: plain text). Raises ValueError."""
    if not config.tls_cert:
        return None
    return TlsFiles.load(config.tls_cert, config.tls_key, config.tls_ca, "client-port TLS")


def peer_tls(config) -> TlsFiles | None:
    """The peer port's TLS files (None: no peer port). Raises ValueError."""
    if not config.peer_listen:
        return None
    return TlsFiles.load(config.peer_tls_cert, config.peer_tls_key, config.peer_tls_ca,
                         "peer TLS")


def peer_identity(config) -> PeerIdentity | None:
    if not config.peer_listen:
        return None
    return PeerIdentity(sorted(config.peers), config.peer_name_template)


def peer_channels(config) -> PeerChannels:
    """Raft traffic and forwarded calls: to the peer port with the peer certificate when
    there is one, else to the client port (with TLS if it has TLS; the node's certificate
    as client certificate)."""
    peer = peer_tls(config)
    if peer is not None:
        return PeerChannels(dict(config.peer_peers), peer.channel_credentials(),
                            peer_identity(config))
    client = client_tls(config)
    if client is not None:
        ca = client.ca
        if ca is None:
            log.warning("TLS without a peer port and without tls_ca: nodes check each "
                        "other's certificates against the system's roots; give tls_ca if "
                        "the nodes' CA is private")
        return PeerChannels(dict(config.peers), grpc.ssl_channel_credentials(
            ca, client.key, client.cert), None)
    return PeerChannels(dict(config.peers), None, None)
