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
    kafka_listen = "127.0.0.1:9092"     # Kafka-protocol listener (default: off)
    kafka_advertised = "10.0.0.1:9092"  # the address Kafka clients use (default: kafka_listen)
    kafka_peers = { 1 = "10.0.0.1:9092", 2 = "10.0.0.2:9092", 3 = "10.0.0.3:9092" }
    # every node's Kafka address, for Metadata answers (default: each peer's host with
    # this node's Kafka port)
"""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


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
    # the Kafka-protocol listener (node/_kafka/); "" = not served
    kafka_listen: str = ""
    kafka_advertised: str = ""  # what Metadata names this node as (default: kafka_listen)
    kafka_peers: dict[int, str] = field(default_factory=dict)  # every node's Kafka address

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ConfigError(f"--id must be a positive integer, got {self.node_id}")
        if self.node_id not in self.peers:
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
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks must be greater than heartbeat_ticks")
        if self.metrics_listen:
            host, sep, port = self.metrics_listen.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ConfigError(f"metrics_listen must be HOST:PORT, got "
                                  f"{self.metrics_listen!r}")
        if not self.advertise:
            self.advertise = self.peers[self.node_id]
        self._validate_kafka()

    def _validate_kafka(self) -> None:
        for name, value in (("kafka_listen", self.kafka_listen),
                            ("kafka_advertised", self.kafka_advertised),
                            *((f"kafka_peers {nid}", a) for nid, a in self.kafka_peers.items())):
            if value and not _is_host_port(value):
                raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
        if not self.kafka_listen:
            if self.kafka_advertised or self.kafka_peers:
                raise ConfigError("kafka_advertised and kafka_peers need kafka_listen")
            return
        unknown = set(self.kafka_peers) - set(self.peers)
        if unknown:
            raise ConfigError(f"kafka_peers names nodes {sorted(unknown)} that are not in "
                              "peers")
        if not self.kafka_advertised:
            self.kafka_advertised = self.kafka_peers.get(self.node_id, self.kafka_listen)
        self.kafka_peers[self.node_id] = self.kafka_advertised
        port = self.kafka_advertised.rpartition(":")[2]
        for nid, addr in self.peers.items():  # default: the peer's host, our Kafka port
            self.kafka_peers.setdefault(nid, f"{addr.rpartition(':')[0]}:{port}")


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


def load_toml(path: Path) -> NodeConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    known = {"id", "listen", "data_dir", "peers", "advertise", "tick_ms", "election_ticks",
             "heartbeat_ticks", "log_level", "offsets_compact_entries", "metrics_listen",
             "kafka_listen", "kafka_advertised", "kafka_peers"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(sorted(unknown))}")
    try:
        peers = {int(k): str(v) for k, v in dict(raw.get("peers", {})).items()}
        return NodeConfig(
            node_id=int(raw["id"]), listen=str(raw["listen"]), data_dir=Path(raw["data_dir"]),
            peers=peers, advertise=str(raw.get("advertise", "")),
            tick_ms=int(raw.get("tick_ms", 50)),
            election_ticks=int(raw.get("election_ticks", 6)),
            heartbeat_ticks=int(raw.get("heartbeat_ticks", 2)),
            log_level=str(raw.get("log_level", "warning")),
            offsets_compact_entries=int(raw.get("offsets_compact_entries", 10_000)),
            metrics_listen=str(raw.get("metrics_listen", "")),
            kafka_listen=str(raw.get("kafka_listen", "")),
            kafka_advertised=str(raw.get("kafka_advertised", "")),
            kafka_peers={int(k): str(v) for k, v in dict(raw.get("kafka_peers", {})).items()},
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
    p.add_argument("--advertise", default="", help="address others use (default: peers entry)")
    p.add_argument("--tick-ms", type=int, default=None)
    p.add_argument("--log-level", default=None, help="debug, info, warning (default), error")
    p.add_argument("--offsets-compact-entries", type=int, default=None,
                   help="compact a __consumer_offsets partition after this many entries "
                   "(default 10000)")
    p.add_argument("--metrics-listen", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics over HTTP there (GET /metrics); off by "
                   "default")
    p.add_argument("--kafka-listen", default=None, metavar="HOST:PORT",
                   help="serve the Kafka protocol there (Kafka clients' bootstrap); off by "
                   "default")
    p.add_argument("--kafka-advertised", default=None, metavar="HOST:PORT",
                   help="the address Kafka clients are told to use for this node "
                   "(default: --kafka-listen)")
    p.add_argument("--kafka-peers", default=None, metavar="ID=HOST:PORT,...",
                   help="every node's Kafka address (default: each peer's host with this "
                   "node's Kafka port)")
    args = p.parse_args(argv)
    if args.config:
        cfg = load_toml(args.config)
    else:
        missing = [f for f in ("id", "listen", "peers", "data_dir") if getattr(args, f) is None]
        if missing:
            p.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing)
                    + " (or give --config FILE)")
        cfg = NodeConfig(node_id=args.id, listen=args.listen, data_dir=args.data_dir,
                         peers=parse_peers(args.peers), advertise=args.advertise)
    if args.tick_ms is not None:
        cfg.tick_ms = args.tick_ms
    if args.log_level is not None:
        cfg.log_level = args.log_level
    if args.metrics_listen is not None:
        cfg.metrics_listen = args.metrics_listen
    if args.kafka_listen is not None:
        cfg.kafka_listen = args.kafka_listen
    if args.kafka_advertised is not None:
        cfg.kafka_advertised = args.kafka_advertised
    if args.kafka_peers is not None:
        cfg.kafka_peers = parse_peers(args.kafka_peers)
    if args.offsets_compact_entries is not None:
        cfg.offsets_compact_entries = args.offsets_compact_entries
    cfg.validate()
    return cfg
