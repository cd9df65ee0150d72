"""Node configuration from flags and TOML: what is accepted and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftka.node._config import ConfigError, from_args, load_toml, parse_peers

PEERS = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"


def test_flags() -> None:
    cfg = from_args(["--id", "2", "--listen", "0.0.0.0:7002", "--peers", PEERS,
                     "--data-dir", "/tmp/d"])
    assert cfg.node_id == 2 and cfg.peers[3] == "127.0.0.1:7003"
    assert cfg.advertise == "127.0.0.1:7002"  # defaults to this node's peers entry


def test_toml_has_the_same_fields(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('id = 1\nlisten = "127.0.0.1:7001"\ndata_dir = "/tmp/x"\n'
                    'peers = { 1 = "127.0.0.1:7001", 2 = "127.0.0.1:7002" }\ntick_ms = 20\n')
    cfg = from_args(["--config", str(path)])
    assert (cfg.node_id, cfg.tick_ms, sorted(cfg.peers)) == (1, 20, [1, 2])


@pytest.mark.parametrize("text,fragment", [
    ('id = 1\nlisten = "a:1"\ndata_dir = "d"\n', "--peers must include this node"),
    ('id = 1\nlisten = "a:1"\n', "missing required key"),
    ('id = 1\nlisten = "a:1"\ndata_dir = "d"\npeers = {1 = "a:1"}\ncolour = 1\n', "unknown keys"),
    ("id = = 1", "cannot read config file"),
])
def test_bad_toml_says_what_to_fix(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_toml(path).validate()


@pytest.mark.parametrize("text", ["1:127.0.0.1:7001", "x=127.0.0.1:1", "1="])
def test_bad_peers(text: str) -> None:
    with pytest.raises(ConfigError, match="expected id=host:port"):
        parse_peers(text)


def test_metrics_listen_is_off_by_default_and_set_by_flag_or_toml(tmp_path: Path) -> None:
    base = ["--id", "1", "--listen", "127.0.0.1:7001", "--peers", PEERS, "--data-dir", "/tmp/d"]
    assert from_args(base).metrics_listen == ""
    assert from_args(base + ["--metrics-listen", "127.0.0.1:9301"]).metrics_listen \
        == "127.0.0.1:9301"
    path = tmp_path / "node.toml"
    path.write_text('id = 1\nlisten = "127.0.0.1:7001"\ndata_dir = "/tmp/x"\n'
                    'peers = { 1 = "127.0.0.1:7001" }\nmetrics_listen = "0.0.0.0:9301"\n')
    assert from_args(["--config", str(path)]).metrics_listen == "0.0.0.0:9301"
    with pytest.raises(ConfigError, match="metrics_listen must be HOST:PORT"):
        from_args(base + ["--metrics-listen", "9301"])


# ------------------------------------------------------------------ security settings
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):
    from raftka.node._certs import issue, make_ca, node_name
    root = tmp_path_factory.mktemp("certs")
    ca = make_ca(root)
    return ca, issue(ca, root, "node1", node_name(1), (node_name(1),), ("127.0.0.1",))


def _secured_args(ca, node, *extra: str) -> list[str]:
    return ["--id", "1", "--listen", "127.0.0.1:7001", "--peers", "1=127.0.0.1:7001",
            "--data-dir", "/tmp/d", "--tls-cert", str(node.cert), "--tls-key", str(node.key),
            "--tls-ca", str(ca.cert), "--peer-listen", "127.0.0.1:8001",
            "--peer-peers", "1=127.0.0.1:8001", "--peer-tls-cert", str(node.cert),
            "--peer-tls-key", str(node.key), "--peer-tls-ca", str(ca.cert), *extra]


def test_security_flags_and_their_defaults(certs) -> None:
    ca, node = certs
    cfg = from_args(_secured_args(ca, node, "--tls-require-client-cert", "--authentication",
                                  "mtls,password", "--super-users", "User:admin",
                                  "--principal-mapping-rule", "RULE:^CN=(.*?),.*$/$1/L"))
    assert cfg.authentication == ["mtls", "password"] and cfg.secured
    assert cfg.authorization is True and cfg.allow_anonymous is False  # implied
    assert cfg.principal_mapping_rules == ["RULE:^CN=(.*?),.*$/$1/L"]
    plain = from_args(["--id", "1", "--listen", "0.0.0.0:7001", "--peers", "1=1.2.3.4:7001",
                       "--data-dir", "/tmp/d"])
    assert not plain.secured and plain.allow_anonymous is True


def test_security_keys_in_toml(tmp_path: Path, certs) -> None:
    ca, node = certs
    path = tmp_path / "node.toml"
    path.write_text(
        'id = 1\nlisten = "127.0.0.1:7001"\ndata_dir = "/tmp/x"\n'
        'peers = { 1 = "127.0.0.1:7001" }\n'
        f'tls_cert = "{node.cert}"\ntls_key = "{node.key}"\ntls_ca = "{ca.cert}"\n'
        'tls_require_client_cert = true\npeer_listen = "127.0.0.1:8001"\n'
        'peer_peers = { 1 = "127.0.0.1:8001" }\n'
        f'peer_tls_cert = "{node.cert}"\npeer_tls_key = "{node.key}"\n'
        f'peer_tls_ca = "{ca.cert}"\nauthentication = ["mtls"]\n'
        'super_users = ["User:admin"]\nallow_anonymous = false\n'
        'principal_mapping_rules = ["RULE:^CN=(.*?),.*$/$1/", "DEFAULT"]\n')
    cfg = from_args(["--config", str(path)])
    assert cfg.peer_peers == {1: "127.0.0.1:8001"} and cfg.super_users == ["User:admin"]


@pytest.mark.parametrize("extra,fragment", [
    (["--authentication", "kerberos"], "mechanisms are mtls and password"),
    (["--authentication", "mtls"], "needs tls_require_client_cert"),
    (["--super-users", "admin"], "must be User:<name>"),
    (["--principal-mapping-rule", "RULE:(/x"], "bad principal mapping rule"),
    (["--peer-peers", "1=127.0.0.1:8001,2=127.0.0.1:8002"], "peer_peers must give"),
    (["--peer-name-template", "node"], "must contain {id}"),
])
def test_bad_security_settings_say_what_to_fix(certs, extra, fragment) -> None:
    ca, node = certs
    with pytest.raises(ConfigError, match=fragment):
        from_args(_secured_args(ca, node, *extra))


@pytest.mark.parametrize("args,fragment", [
    (["--authentication", "password"], "need the peer port|needs TLS on the client port"),
    (["--tls-require-client-cert"], "need tls_cert"),
    (["--peer-tls-cert", "x.pem"], "need peer_listen"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"], "cannot read"),
])
def test_security_needs_its_prerequisites(args, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        from_args(["--id", "1", "--listen", "127.0.0.1:7001", "--peers", "1=127.0.0.1:7001",
                   "--data-dir", "/tmp/d", *args])


def test_plain_text_beyond_loopback_is_a_loud_warning(caplog) -> None:
    from raftka.node._tls import warn_plain_text
    with caplog.at_level("WARNING", logger="raftka.node"):
        warn_plain_text("the client port", "127.0.0.1:7001")
        assert not caplog.records
        warn_plain_text("the client port", "0.0.0.0:7001")
    assert "INSECURE" in caplog.text and "0.0.0.0:7001" in caplog.text
def test_kafka_listener_is_off_by_default_and_set_by_flags_or_toml(tmp_path: Path) -> None:
    base = ["--id", "1", "--listen", "127.0.0.1:7001", "--data-dir", str(tmp_path),
            "--peers", "1=10.0.0.1:7001,2=10.0.0.2:7001"]
    off = from_args(base)
    assert (off.kafka_listen, off.kafka_advertised, off.kafka_peers) == ("", "", {})
    on = from_args(base + ["--kafka-listen", "0.0.0.0:9092", "--kafka-advertised",
                           "kafka-1.example:9092"])
    assert on.kafka_advertised == "kafka-1.example:9092"
    # every node's Kafka address: this node's advertised one, the others by default the
    # peer's host with this node's Kafka port
    assert on.kafka_peers == {1: "kafka-1.example:9092", 2: "10.0.0.2:9092"}
    assert from_args(base + ["--kafka-listen", "127.0.0.1:9092", "--kafka-peers",
                             "2=k2:19092"]).kafka_peers == {1: "127.0.0.1:9092", 2: "k2:19092"}
    path = tmp_path / "node.toml"
    path.write_text('id = 1\nlisten = "127.0.0.1:7001"\ndata_dir = "/tmp/x"\n'
                    'peers = { 1 = "127.0.0.1:7001", 2 = "127.0.0.1:7002" }\n'
                    'kafka_listen = "127.0.0.1:9092"\n'
                    'kafka_peers = { 2 = "127.0.0.1:9093" }\n')
    cfg = from_args(["--config", str(path)])
    assert (cfg.kafka_listen, cfg.kafka_advertised) == ("127.0.0.1:9092", "127.0.0.1:9092")
    assert cfg.kafka_peers == {1: "127.0.0.1:9092", 2: "127.0.0.1:9093"}


@pytest.mark.parametrize("flags, fragment", [
    (["--kafka-listen", "9092"], "kafka_listen must be HOST:PORT"),
    (["--kafka-listen", "h:9092", "--kafka-advertised", "h:x"], "kafka_advertised must be"),
    (["--kafka-advertised", "h:9092"], "need kafka_listen"),
    (["--kafka-listen", "h:9092", "--kafka-peers", "7=h:1"], "not in peers"),
])
def test_bad_kafka_settings_say_what_to_fix(tmp_path: Path, flags: list[str],
                                            fragment: str) -> None:
    base = ["--id", "1", "--listen", "127.0.0.1:7001", "--data-dir", str(tmp_path),
            "--peers", "1=127.0.0.1:7001"]
    with pytest.raises(ConfigError, match=fragment):
        from_args(base + flags)


def test_the_kafka_listener_of_a_secured_node_takes_client_auth_from_the_client_port(
        certs) -> None:
    """The listener uses the client port's TLS files; Kafka's ssl.client.auth follows
    tls_require_client_cert unless kafka_ssl_client_auth says otherwise."""
    ca, node = certs
    cfg = from_args(_secured_args(ca, node, "--tls-require-client-cert", "--authentication",
                                  "mtls,password", "--kafka-listen", "127.0.0.1:9092"))
    assert cfg.kafka_ssl_client_auth == "required"
    cfg = from_args(_secured_args(ca, node, "--authentication", "password", "--kafka-listen",
                                  "127.0.0.1:9092", "--kafka-ssl-client-auth", "none"))
    assert cfg.kafka_ssl_client_auth == "none"
    with pytest.raises(ConfigError, match="authenticate nobody"):
        from_args(_secured_args(ca, node, "--tls-require-client-cert", "--authentication",
                                "mtls", "--kafka-listen", "127.0.0.1:9092",
                                "--kafka-ssl-client-auth", "none"))
