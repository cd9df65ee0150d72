"""Joining with a peer port (issue 19): what the config demands (an --id, members' peer
ports named with their ids) and how a peer certificate names the node it is made out to."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftka.node._config import ConfigError, from_args, split_join_entry
from raftka.node._tls import PeerIdentity


def _args(tmp_path: Path, *extra: str) -> list[str]:
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    return ["--listen", "127.0.0.1:7004", "--data-dir", str(tmp_path / "d"),
            "--peer-listen", "127.0.0.1:7104", "--peer-tls-cert", str(tmp_path / "c.pem"),
            "--peer-tls-key", str(tmp_path / "k.pem"), "--peer-tls-ca",
            str(tmp_path / "ca.pem"), *extra]


@pytest.mark.parametrize("extra, words", [
    (("--id", "4", "--join", "127.0.0.1:7101"), "ID=HOST:PORT"),
    (("--join", "1=127.0.0.1:7101"), "needs --id"),
    (("--id", "4", "--join", "x=127.0.0.1:7101"), "ID=HOST:PORT"),
])
def test_a_join_with_a_peer_port_needs_an_id_and_members_named_by_id(
        tmp_path: Path, extra: tuple[str, ...], words: str) -> None:
    with pytest.raises((ConfigError, SystemExit)) as caught:
        config = from_args(_args(tmp_path, *extra))
        config.validate()
    assert words in str(caught.value)


def test_join_entries_with_and_without_ids() -> None:
    assert split_join_entry("10.0.0.1:7001") == (0, "10.0.0.1:7001")
    assert split_join_entry("3=10.0.0.1:7101") == (3, "10.0.0.1:7101")
    assert split_join_entry("0=h:1")[0] == -1 and split_join_entry("a=h:1")[0] == -1


def test_a_peer_certificate_claims_the_id_of_its_name_and_members_are_added() -> None:
    identity = PeerIdentity([1, 2, 3], "raftka-node-{id}")
    cert = {"x509_subject_alternative_name": [b"localhost", b"raftka-node-4"]}
    assert identity.node_of(cert) == 0  # not a member yet
    assert identity.claimed_id(cert) == 4
    assert identity.claimed_id({"x509_common_name": [b"raftka-node-4x"]}) == 0
    assert identity.claimed_id({"x509_common_name": [b"raftka-node-04"]}) == 0
    identity.add(4)
    assert identity.node_of(cert) == 4
