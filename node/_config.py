"""Node configuration: command-line flags or a TOML file with the same fields.

TOML example::

    id = 1
    listen = "127.0.0.1:7001"
    data_dir = "/var/lib/raftka/1"
    peers = { 1 = "127.0.0.1:7001", 2 = "127.0.0.1:7002", 3 = "127.0.0.1:7003" }
    # optional
    advertise = "10.0.0.1:7001"   # address clients and peers use (default: listen)
    tick_ms = 50
    election_ticks = 6
    heartbeat_ticks = 2
    log_level = "warning"
    metrics_listen = "127.0.0.1:9301"   # Prometheus metrics over HTTP (default: off)
    rack = "eu-west-1a"                 # where this node runs (follower fetching; default: none)
    balancer = true                     # run the automatic balancer when leading the controller
    balance_delay_s = 30.0              # an imbalance lasts this long before the first move

    # Security (README, Security; node/_tls.py, _auth.py, _authz.py)
    tls_cert = "node1.pem"              # client port TLS (default: plain text)
    tls_key = "node1-key.pem"
    tls_ca = "ca.pem"                   # CA bundle for client certificates
    tls_require_client_cert = true      # refuse clients without one at the handshake
    peer_listen = "10.0.0.1:8001"       # Raft and forwarded calls: mutual TLS, members only
    peer_peers = { 1 = "10.0.0.1:8001", 2 = "10.0.0.2:8001", 3 = "10.0.0.3:8001" }
    peer_tls_cert = "node1.pem"
    peer_tls_key = "node1-key.pem"
    peer_tls_ca = "ca.pem"
    peer_name_template = "raftka-node-{id}"   # the name a member's certificate carries
    authentication = ["mtls", "password"]     # default: none (everyone is User:ANONYMOUS)
    allow_anonymous = false             # default: true without authentication
    authorization = true                # ACLs enforced; default: on with authentication
    super_users = ["User:admin"]
    principal_mapping_rules = ["RULE:^CN=(.*?),.*$/$1/", "DEFAULT"]
    kafka_listen = "127.0.0.1:9092"     # Kafka-protocol listener (default: off)
    kafka_advertised = "10.0.0.1:9092"  # the address Kafka clients use (default: kafka_listen)
    kafka_peers = { 1 = "10.0.0.1:9092", 2 = "10.0.0.2:9092", 3 = "10.0.0.3:9092" }
    # every node's Kafka address, for Metadata answers (default: each peer's host with
    # this node's Kafka port)
    # The Kafka listener uses the client port's TLS files (tls_cert, tls_key, tls_ca) and
    # its authentication, ACLs and quotas (node/_kafka/_security.py):
    kafka_ssl_client_auth = "requested" # Kafka's ssl.client.auth: required, requested or
    # none (default: required with tls_require_client_cert, else requested with tls_ca)

Joining a running cluster (instead of ``peers``; ``id`` optional: the controller picks one)::

    join = ["10.0.0.1:7001", "10.0.0.2:7001"]   # any members; tried in turn

With a peer port (``peer_listen``: mutual TLS, required by authentication), ``join`` names
members' *peer ports* with their ids, ``["1=10.0.0.1:7101"]``, and ``id`` is required: the
node dials a member's peer port with its own peer certificate, which must be made out to
``peer_name_template`` of that id (it is its proof of membership), and checks the member's.

The node asks a member to register it (``_join.py``) and writes what it learned to
``<data_dir>/membership.json``; from then on it starts from that file, without ``join``
(a ``join`` given again is ignored once the file exists).
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


RACK_LENGTH_MAX = 64
MEMBERSHIP_FILE = "membership.json"


class ConfigError(ValueError):
    """The node cannot start with this configuration; the message says what to fix."""


@dataclass
class NodeConfig:
    node_id: int
    listen: str
    data_dir: Path
    peers: dict[int, str] = field(default_factory=dict)
    advertise: str = ""
    tick_ms: int = 50
    election_ticks: int = 6
    heartbeat_ticks: int = 2
    log_level: str = "warning"
    # host:port of the Prometheus metrics endpoint (node/_metrics.py); "" = not served
    metrics_listen: str = ""
    shutdown_transfer_s: float = 3.0
    # __consumer_offsets partitions snapshot their offsets and drop older entries once this
    # many entries have been applied past their first index (bounds restart replay).
    offsets_compact_entries: int = 10_000
    # The rack (zone, room) this node runs in, shown in Metadata; readers with
    # read_from="nearest" prefer a replica in their own rack. "" = none declared.
    rack: str = ""
    # The automatic balancer (node/_balancer.py) runs on this node while it leads the
    # controller; it makes its first move once an imbalance has lasted balance_delay_s
    # (a node that restarts or a topic being created is not an imbalance to act on at once).
    balancer: bool = True
    balance_delay_s: float = 30.0
    # A partition leader aborts a transaction still open on its partition this long after
    # its first batch (Kafka's transaction.max.timeout.ms): the backstop against a
    # transaction nobody ends, which would hold the last stable offset back for ever.
    transaction_max_timeout_ms: int = 900_000
    # The most partitions one transaction may touch (AddPartitionsToTxn refuses more).
    transaction_max_partitions: int = 1000
    # security (see the module docstring)
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_require_client_cert: bool = False
    peer_listen: str = ""
    peer_peers: dict[int, str] = field(default_factory=dict)
    peer_tls_cert: str = ""
    peer_tls_key: str = ""
    peer_tls_ca: str = ""
    peer_name_template: str = "raftka-node-{id}"
    authentication: list[str] = field(default_factory=list)
    allow_anonymous: bool | None = None  # None: true unless authentication is configured
    authorization: bool | None = None  # None: on when authentication is configured
    super_users: list[str] = field(default_factory=list)
    principal_mapping_rules: list[str] = field(default_factory=lambda: ["DEFAULT"])

    @property
    def secured(self) -> bool:
        """Whether calls are authenticated or authorized (the interceptor runs)."""
        return bool(self.authentication) or bool(self.authorization)

    def _validate_security(self) -> None:
        if (self.tls_key or self.tls_ca or self.tls_require_client_cert) and not self.tls_cert:
            raise ConfigError("tls_key, tls_ca and tls_require_client_cert need tls_cert")
        if self.tls_require_client_cert and not self.tls_ca:
            raise ConfigError("tls_require_client_cert needs tls_ca (the CA that signs "
                              "client certificates)")
        if self.peer_listen:
            if not (self.peer_tls_cert and self.peer_tls_key and self.peer_tls_ca):
                raise ConfigError("peer_listen is mutual TLS: give peer_tls_cert, "
                                  "peer_tls_key and peer_tls_ca")
            missing = sorted(set(self.peers) - set(self.peer_peers))
            if missing or set(self.peer_peers) != set(self.peers):
                raise ConfigError("peer_peers must give the peer address of every node in "
                                  f"peers ({format_peers(self.peers)}); missing {missing}")
            if "{id}" not in self.peer_name_template:
                raise ConfigError("peer_name_template must contain {id}")
        elif self.peer_tls_cert or self.peer_tls_key or self.peer_tls_ca or self.peer_peers:
            raise ConfigError("peer TLS settings need peer_listen (the peer port)")
        unknown = sorted(set(self.authentication) - {"mtls", "password"})
        if unknown:
            raise ConfigError(f"authentication mechanisms are mtls and password, not "
                              f"{', '.join(unknown)}")
        if "mtls" in self.authentication and not self.tls_require_client_cert:
            # grpcio's TLS either does not ask for a client certificate or requires one
            raise ConfigError("mtls authentication needs tls_require_client_cert (and "
                              "tls_ca): the node only sees certificates it requires")
        if "password" in self.authentication and not self.tls_cert:
            raise ConfigError("password authentication needs TLS on the client port "
                              "(tls_cert, tls_key): passwords must not travel in plain text")
        if self.authorization is None:
            self.authorization = bool(self.authentication)
        if self.allow_anonymous is None:
            self.allow_anonymous = not self.authentication
        if self.secured and not self.peer_listen:
            raise ConfigError("authentication and authorization need the peer port "
                              "(peer_listen, peer_peers and peer TLS): Raft and forwarded "
                              "calls between nodes must not share the client port")
        for user in self.super_users:
            if not user.startswith("User:") or len(user) < 6:
                raise ConfigError(f"super user {user!r} must be User:<name>")
        from ._auth import PrincipalMapper  # the rules' syntax; imports cryptography
        from ._tls import client_tls, peer_tls
        try:
            PrincipalMapper(self.principal_mapping_rules)
            client_tls(self)
            peer_tls(self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    # the Kafka-protocol listener (node/_kafka/); "" = not served
    kafka_listen: str = ""
    kafka_advertised: str = ""  # what Metadata names this node as (default: kafka_listen)
    kafka_peers: dict[int, str] = field(default_factory=dict)  # every node's Kafka address
    # Kafka's ssl.client.auth on the Kafka listener: "required", "requested" or "none"
    # ("" = required with tls_require_client_cert, else requested when tls_ca is given)
    kafka_ssl_client_auth: str = ""
    # members to ask to join through (``_join.py``); [] for a node listed in --peers or one
    # that joined before (its membership file says so)
    join: list[str] = field(default_factory=list)
    # the nodes the cluster started with (its first nodes' --peers); () = sorted(peers)
    initial_node_ids: tuple[int, ...] = ()

    @property
    def join_pending(self) -> bool:
        """Whether this node must still ask a member to join (no membership file yet)."""
        return bool(self.join) and not self.peers

    @property
    def joined(self) -> bool:
        """Whether this node joined a running cluster (it is not one of the first nodes)."""
        return bool(self.initial_node_ids) and self.node_id not in self.initial_node_ids

    def membership_path(self) -> Path:
        return self.data_dir / MEMBERSHIP_FILE

    def _load_membership(self) -> None:
        path = self.membership_path()
        try:
            raw = json.loads(path.read_text())
            node_id = int(raw["node_id"])
            peers = {int(k): str(v) for k, v in dict(raw["peers"]).items()}
            kafka_peers = {int(k): str(v) for k, v in dict(raw.get("kafka_peers", {})).items()}
            initial = tuple(sorted(int(n) for n in raw["initial_node_ids"]))
            peer_peers = {int(k): str(v) for k, v in dict(raw.get("peer_peers", {})).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"cannot read {path} (written when this node joined): {exc}; "
                              "restore it, or wipe the data directory and join again") from None
        if self.node_id and self.node_id != node_id:
            raise ConfigError(f"--id {self.node_id} differs from the id this node joined "
                              f"with, {node_id} ({path}); drop --id or use {node_id}")
        self.node_id = node_id
        self.peers = peers
        self.initial_node_ids = initial
        if self.peer_listen:  # what it was told when it joined (nodes joined since: learned)
            for nid, addr in peer_peers.items():
                self.peer_peers.setdefault(nid, addr)
        if self.kafka_listen:  # without a Kafka listener, nobody asks for them
            for nid, addr in kafka_peers.items():
                if nid != node_id:
                    self.kafka_peers.setdefault(nid, addr)

    def joined_as(self, node_id: int, peers: dict[int, str], kafka_peers: dict[int, str],
                  initial_node_ids: tuple[int, ...],
                  peer_peers: dict[int, str] | None = None) -> None:
        """Take what the join answer said, and persist it (fsynced) before anything else
        runs: a restart then starts from it without ``join``."""
        self.node_id = node_id
        self.peers = dict(peers)
        self.peers[node_id] = self.advertise
        if self.peer_listen:
            self.peer_peers = {n: a for n, a in (peer_peers or {}).items() if a}
            self.peer_peers[node_id] = self.peer_listen
            missing = sorted(set(self.peers) - set(self.peer_peers))
            if missing:
                raise ConfigError(f"the join answer gave no peer port for node(s) {missing}: "
                                  "every member of a cluster with a peer port needs one")
        self.initial_node_ids = tuple(sorted(initial_node_ids))
        if self.kafka_listen:
            for nid, addr in kafka_peers.items():
                if addr and nid != node_id:
                    self.kafka_peers.setdefault(nid, addr)
            self._fill_kafka_peers()
        body = json.dumps({"node_id": node_id, "initial_node_ids": list(self.initial_node_ids),
                           "peers": {str(k): v for k, v in sorted(self.peers.items())},
                           "kafka_peers": {str(k): v for k, v in sorted(kafka_peers.items())
                                           if v and k != node_id},
                           "peer_peers": {str(k): v for k, v in sorted(self.peer_peers.items())}},
                          indent=1)
        path = self.membership_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _validate_join(self) -> None:
        if self.node_id < 0:
            raise ConfigError(f"--id must be a positive integer, got {self.node_id}")
        for entry in self.join:
            member_id, addr = split_join_entry(entry)
            if member_id < 0 or not _is_host_port(addr):
                raise ConfigError(f"--join takes HOST:PORT (or ID=HOST:PORT) of running "
                                  f"members, got {entry!r}")
            if self.peer_listen and not member_id:
                raise ConfigError(f"with a peer port, --join names members' peer ports with "
                                  f"their ids, ID=HOST:PORT (the member's certificate is "
                                  f"checked against its id), got {entry!r}")
        if self.peer_listen and self.node_id <= 0:
            raise ConfigError("with a peer port, a joining node needs --id: its peer "
                              "certificate, made out to that id, is its proof of membership")
        if not self.advertise:
            self.advertise = self.listen

    def validate(self) -> None:
        if self.join and self.peers:
            raise ConfigError("--join and --peers exclude each other: a node either is one of "
                              "the cluster's first nodes (--peers) or joins a running one")
        if not self.peers and self.membership_path().exists():
            self._load_membership()  # joined before: a join given again is not needed
        if self.join_pending:
            self._validate_join()
        elif self.node_id <= 0:
            raise ConfigError(f"--id must be a positive integer, got {self.node_id}")
        elif self.node_id not in self.peers:
            raise ConfigError(
                f"--peers must include this node ({self.node_id}=host:port); got "
                f"{format_peers(self.peers) or 'nothing'}"
            )
        for nid, addr in self.peers.items():
            if nid <= 0 or ":" not in addr:
                raise ConfigError(f"bad peer {nid}={addr!r}: expected id=host:port, id > 0")
        if not 10 <= self.tick_ms <= 10_000:
            raise ConfigError("tick_ms must be within 10..10000")
        if self.offsets_compact_entries < 1:
            raise ConfigError("offsets_compact_entries must be at least 1")
        if not 1000 <= self.transaction_max_timeout_ms <= 86_400_000:
            raise ConfigError("transaction_max_timeout_ms must be within 1000..86400000")
        if not 1 <= self.transaction_max_partitions <= 100_000:
            raise ConfigError("transaction_max_partitions must be within 1..100000")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks must be greater than heartbeat_ticks")
        if self.metrics_listen:
            host, sep, port = self.metrics_listen.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ConfigError(f"metrics_listen must be HOST:PORT, got "
                                  f"{self.metrics_listen!r}")
        if not self.advertise:
            self.advertise = self.peers.get(self.node_id, self.listen)
        if not 0 <= self.balance_delay_s <= 86_400:
            raise ConfigError(f"balance_delay_s must be from 0 to 86400 seconds, got "
                              f"{self.balance_delay_s}")
        if len(self.rack) > RACK_LENGTH_MAX or not self.rack.isprintable() \
                or self.rack != self.rack.strip():
            raise ConfigError(f"rack must be printable, without surrounding spaces and at "
                              f"most {RACK_LENGTH_MAX} characters, got {self.rack!r}")
        self._validate_security()
        self._validate_kafka()

    def _validate_kafka(self) -> None:
        for name, value in (("kafka_listen", self.kafka_listen),
                            ("kafka_advertised", self.kafka_advertised),
                            *((f"kafka_peers {nid}", a) for nid, a in self.kafka_peers.items())):
            if value and not _is_host_port(value):
                raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
        if not self.kafka_listen:
            if self.kafka_advertised or self.kafka_peers or self.kafka_ssl_client_auth:
                raise ConfigError("kafka_advertised, kafka_peers and kafka_ssl_client_auth "
                                  "need kafka_listen")
            return
        if self.join_pending:
            if not self.kafka_advertised:
                self.kafka_advertised = self.kafka_listen
            return  # the rest once the join answer named the nodes (joined_as)
        if not self.kafka_ssl_client_auth:
            self.kafka_ssl_client_auth = "required" if self.tls_require_client_cert else \
                "requested" if self.tls_ca else "none"
        if self.kafka_ssl_client_auth not in ("required", "requested", "none"):
            raise ConfigError("kafka_ssl_client_auth must be required, requested or none, "
                              f"got {self.kafka_ssl_client_auth!r}")
        if self.kafka_ssl_client_auth != "none" and not self.tls_ca:
            raise ConfigError("kafka_ssl_client_auth required or requested needs tls_cert and "
                              "tls_ca (the CA that signs client certificates)")
        if self.secured and "password" not in self.authentication and \
                "mtls" in self.authentication and self.kafka_ssl_client_auth == "none":
            raise ConfigError("the Kafka listener would authenticate nobody: mtls "
                              "authentication needs kafka_ssl_client_auth required or "
                              "requested (or add password authentication: SASL)")
        unknown = set(self.kafka_peers) - set(self.peers)
        if unknown and not self.initial_node_ids:
            raise ConfigError(f"kafka_peers names nodes {sorted(unknown)} that are not in "
                              "peers")
        if not self.kafka_advertised:
            self.kafka_advertised = self.kafka_peers.get(self.node_id, self.kafka_listen)
        self._fill_kafka_peers()

    def _fill_kafka_peers(self) -> None:
        self.kafka_peers[self.node_id] = self.kafka_advertised
        port = self.kafka_advertised.rpartition(":")[2]
        for nid, addr in self.peers.items():  # default: the peer's host, our Kafka port
            self.kafka_peers.setdefault(nid, f"{addr.rpartition(':')[0]}:{port}")


def split_join_entry(entry: str) -> tuple[int, str]:
    """``"ID=HOST:PORT"`` -> (id, address); ``"HOST:PORT"`` -> (0, address); -1 for a
    malformed id."""
    head, sep, addr = entry.partition("=")
    if not sep:
        return 0, entry
    head = head.strip()
    return (int(head) if head.isdigit() and int(head) > 0 else -1), addr.strip()


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def parse_peers(text: str) -> dict[int, str]:
    peers: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        nid, sep, addr = part.partition("=")
        if not sep or not nid.strip().isdigit() or not addr.strip():
            raise ConfigError(f"bad --peers item {part!r}: expected id=host:port")
        peers[int(nid)] = addr.strip()
    return peers


def format_peers(peers: dict[int, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(peers.items()))


_SECURITY_KEYS = ("tls_cert", "tls_key", "tls_ca", "tls_require_client_cert", "peer_listen",
                  "peer_peers", "peer_tls_cert", "peer_tls_key", "peer_tls_ca",
                  "peer_name_template", "authentication", "allow_anonymous", "authorization",
                  "super_users", "principal_mapping_rules")


def _security_from_toml(raw: dict) -> dict:
    out: dict = {}
    for key in ("tls_cert", "tls_key", "tls_ca", "peer_listen", "peer_tls_cert",
                "peer_tls_key", "peer_tls_ca", "peer_name_template"):
        if key in raw:
            out[key] = str(raw[key])
    for key in ("tls_require_client_cert", "allow_anonymous", "authorization"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise ValueError(f"{key} must be true or false")
            out[key] = raw[key]
    for key in ("authentication", "super_users", "principal_mapping_rules"):
        if key in raw:
            if not isinstance(raw[key], list) or not all(isinstance(v, str) for v in raw[key]):
                raise ValueError(f"{key} must be a list of strings")
            out[key] = list(raw[key])
    if "peer_peers" in raw:
        out["peer_peers"] = {int(k): str(v) for k, v in dict(raw["peer_peers"]).items()}
    return out


def load_toml(path: Path) -> NodeConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    known = {"id", "listen", "data_dir", "peers", "advertise", "tick_ms", "election_ticks",
             "heartbeat_ticks", "log_level", "offsets_compact_entries", "metrics_listen", "rack",
             "balancer", "balance_delay_s",
             "transaction_max_timeout_ms", "transaction_max_partitions",
             *_SECURITY_KEYS, "kafka_listen", "kafka_advertised", "kafka_peers",
             "kafka_ssl_client_auth", "join"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(sorted(unknown))}")
    try:
        peers = {int(k): str(v) for k, v in dict(raw.get("peers", {})).items()}
        return NodeConfig(
            node_id=int(raw.get("id", 0) if "join" in raw else raw["id"]),
            listen=str(raw["listen"]), data_dir=Path(raw["data_dir"]),
            peers=peers, advertise=str(raw.get("advertise", "")),
            tick_ms=int(raw.get("tick_ms", 50)),
            election_ticks=int(raw.get("election_ticks", 6)),
            heartbeat_ticks=int(raw.get("heartbeat_ticks", 2)),
            log_level=str(raw.get("log_level", "warning")),
            offsets_compact_entries=int(raw.get("offsets_compact_entries", 10_000)),
            transaction_max_timeout_ms=int(raw.get("transaction_max_timeout_ms", 900_000)),
            transaction_max_partitions=int(raw.get("transaction_max_partitions", 1000)),
            metrics_listen=str(raw.get("metrics_listen", "")),
            rack=str(raw.get("rack", "")),
            balancer=bool(raw.get("balancer", True)),
            balance_delay_s=float(raw.get("balance_delay_s", 30.0)),
            **_security_from_toml(raw),
            kafka_listen=str(raw.get("kafka_listen", "")),
            kafka_advertised=str(raw.get("kafka_advertised", "")),
            kafka_peers={int(k): str(v) for k, v in dict(raw.get("kafka_peers", {})).items()},
            join=[str(a) for a in raw.get("join", [])],
            kafka_ssl_client_auth=str(raw.get("kafka_ssl_client_auth", "")),
        )
    except KeyError as exc:
        raise ConfigError(f"{path} is missing required key {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def from_args(argv: list[str] | None = None) -> NodeConfig:
    p = argparse.ArgumentParser(prog="raftka node", description="Run one Raftka node.")
    p.add_argument("--config", type=Path, help="TOML file with the fields below")
    p.add_argument("--id", type=int, help="this node's id (> 0)")
    p.add_argument("--listen", help="host:port to serve clients and peers on")
    p.add_argument("--peers", help="every node of the cluster: 1=host:port,2=host:port,...")
    p.add_argument("--data-dir", type=Path, help="where this node keeps its data")
    p.add_argument("--join", default=None, metavar="[ID=]HOST:PORT,...",
                   help="join a running cluster through any of these members (instead of "
                   "--peers; --id optional: the controller picks one); a restart needs no "
                   "--join. With --peer-listen: the members' peer ports with their ids, "
                   "ID=HOST:PORT, and --id is required (the peer certificate made out to "
                   "it is the proof of membership)")
    p.add_argument("--advertise", default="", help="address others use (default: peers entry)")
    p.add_argument("--tick-ms", type=int, default=None)
    p.add_argument("--log-level", default=None, help="debug, info, warning (default), error")
    p.add_argument("--offsets-compact-entries", type=int, default=None,
                   help="compact a __consumer_offsets partition after this many entries "
                   "(default 10000)")
    p.add_argument("--transaction-max-timeout-ms", type=int, default=None,
                   help="a partition leader aborts a transaction still open this long after "
                   "its first batch (default 900000, Kafka's transaction.max.timeout.ms)")
    p.add_argument("--transaction-max-partitions", type=int, default=None,
                   help="the most partitions one transaction may touch (default 1000)")
    p.add_argument("--metrics-listen", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics over HTTP there (GET /metrics); off by "
                   "default")
    p.add_argument("--balancer", action=argparse.BooleanOptionalAction, default=None,
                   help="run the automatic balancer while this node leads the controller "
                   "(default: on)")
    p.add_argument("--balance-delay-s", type=float, default=None,
                   help="how long an imbalance lasts before the balancer moves (default 30)")
    p.add_argument("--rack", default=None, help="the rack (zone) this node runs in, for "
                   "consumers that read from the nearest replica (default: none)")
    s = p.add_argument_group("security (README, Security)")
    s.add_argument("--tls-cert", help="client port: this node's certificate (PEM); plain "
                   "text without it")
    s.add_argument("--tls-key", help="client port: the certificate's key")
    s.add_argument("--tls-ca", help="client port: CA bundle client certificates must chain to")
    s.add_argument("--tls-require-client-cert", action="store_true", default=None,
                   help="refuse clients without a certificate from --tls-ca")
    s.add_argument("--peer-listen", help="host:port of the peer port (Raft, forwarded "
                   "calls; mutual TLS with cluster members only)")
    s.add_argument("--peer-peers", help="every node's peer port: 1=host:port,2=...")
    s.add_argument("--peer-tls-cert")
    s.add_argument("--peer-tls-key")
    s.add_argument("--peer-tls-ca")
    s.add_argument("--peer-name-template", help="name in a member's certificate (default "
                   "raftka-node-{id})")
    s.add_argument("--authentication", help="comma-separated: mtls, password")
    s.add_argument("--allow-anonymous", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--authorization", action=argparse.BooleanOptionalAction, default=None,
                   help="enforce ACLs (default: on with --authentication)")
    s.add_argument("--super-users", help="comma-separated principals, e.g. User:admin")
    s.add_argument("--principal-mapping-rule", action="append", default=None,
                   help="repeatable: RULE:<regex>/<replacement>/[L|U] or DEFAULT, in order")
    p.add_argument("--kafka-listen", default=None, metavar="HOST:PORT",
                   help="serve the Kafka protocol there (Kafka clients' bootstrap); off by "
                   "default")
    p.add_argument("--kafka-advertised", default=None, metavar="HOST:PORT",
                   help="the address Kafka clients are told to use for this node "
                   "(default: --kafka-listen)")
    p.add_argument("--kafka-peers", default=None, metavar="ID=HOST:PORT,...",
                   help="every node's Kafka address (default: each peer's host with this "
                   "node's Kafka port)")
    p.add_argument("--kafka-ssl-client-auth", default=None,
                   choices=("required", "requested", "none"),
                   help="Kafka's ssl.client.auth on the Kafka listener, which uses the client "
                   "port's TLS files (default: required with --tls-require-client-cert, else "
                   "requested with --tls-ca)")
    args = p.parse_args(argv)
    if args.config:
        cfg = load_toml(args.config)
    else:
        required = ("id", "listen", "peers", "data_dir")
        if args.join is not None or (args.data_dir is not None and args.peers is None and (
                args.data_dir / MEMBERSHIP_FILE).exists()):
            required = ("listen", "data_dir")  # joining, or joined before
        missing = [f for f in required if getattr(args, f) is None]
        if missing:
            p.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing)
                    + " (or give --config FILE)")
        cfg = NodeConfig(node_id=args.id or 0, listen=args.listen, data_dir=args.data_dir,
                         peers=parse_peers(args.peers) if args.peers else {},
                         advertise=args.advertise,
                         join=[a.strip() for a in (args.join or "").split(",") if a.strip()])
    if args.tick_ms is not None:
        cfg.tick_ms = args.tick_ms
    if args.log_level is not None:
        cfg.log_level = args.log_level
    if args.metrics_listen is not None:
        cfg.metrics_listen = args.metrics_listen
    if args.rack is not None:
        cfg.rack = args.rack
    if args.balancer is not None:
        cfg.balancer = args.balancer
    if args.balance_delay_s is not None:
        cfg.balance_delay_s = args.balance_delay_s
    if args.kafka_listen is not None:
        cfg.kafka_listen = args.kafka_listen
    if args.kafka_advertised is not None:
        cfg.kafka_advertised = args.kafka_advertised
    if args.kafka_peers is not None:
        cfg.kafka_peers = parse_peers(args.kafka_peers)
    if args.kafka_ssl_client_auth is not None:
        cfg.kafka_ssl_client_auth = args.kafka_ssl_client_auth
    if args.offsets_compact_entries is not None:
        cfg.offsets_compact_entries = args.offsets_compact_entries
    if args.transaction_max_timeout_ms is not None:
        cfg.transaction_max_timeout_ms = args.transaction_max_timeout_ms
    if args.transaction_max_partitions is not None:
        cfg.transaction_max_partitions = args.transaction_max_partitions
    for key in ("tls_cert", "tls_key", "tls_ca", "tls_require_client_cert", "peer_listen",
                "peer_tls_cert", "peer_tls_key", "peer_tls_ca", "peer_name_template",
                "allow_anonymous", "authorization"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if args.peer_peers is not None:
        cfg.peer_peers = parse_peers(args.peer_peers)
    if args.authentication is not None:
        cfg.authentication = [m.strip() for m in args.authentication.split(",") if m.strip()]
    if args.super_users is not None:
        cfg.super_users = [u.strip() for u in args.super_users.split(",") if u.strip()]
    if args.principal_mapping_rule is not None:
        cfg.principal_mapping_rules = args.principal_mapping_rule
    cfg.validate()
    return cfg
