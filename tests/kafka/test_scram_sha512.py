"""SCRAM-SHA-512 credentials: stored beside the SHA-256 ones when a password is set
(salted, iterated, never the password), carried by the user command and the controller
snapshot without changing what older commands and snapshots mean, and served by the Kafka
listener. The confluent-kafka exchange itself runs on test_security.py's cluster."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from types import SimpleNamespace

from raftka.node._auth import scram_credential, verify_password
from raftka.node._controller_commands import encode_put_user
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import ControllerState
from raftka.node._kafka._security import ListenerSecurity
from raftka.v1 import errors_pb2


def _put(cred, sha512: bool = True, replace: bool = False) -> bytes:
    return encode_put_user(cred.name, cred.mechanism, cred.iterations, cred.salt,
                           cred.stored_key, cred.server_key, replace,
                           (cred.sha512_salt, cred.sha512_stored_key, cred.sha512_server_key)
                           if sha512 else ("", "", ""))


def test_a_credential_holds_sha512_keys_derived_from_the_password_under_their_own_salt():
    # "-" and "!" are outside base64's alphabet: the stored salts and keys (base64) can
    # never contain this password by chance, as they contained "pw" now and then
    password = "pass-word!"
    cred = scram_credential("alice", password)
    assert cred.sha512_salt != cred.salt  # a salt per mechanism
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(),
                                 base64.b64decode(cred.sha512_salt), cred.iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha512")
    assert base64.b64decode(cred.sha512_stored_key) == hashlib.sha512(client_key).digest()
    assert base64.b64decode(cred.sha512_server_key) == hmac.digest(salted, b"Server Key",
                                                                   "sha512")
    assert password not in json.dumps(cred._asdict())
    assert verify_password(cred, password) and not verify_password(cred, "other")


def test_old_user_commands_and_snapshots_read_as_users_without_sha512_keys():
    s = ControllerState([1, 2, 3])
    old = _put(scram_credential("old", "pw"), sha512=False)
    assert b"sha512" not in old  # the command of the previous release, byte for byte
    assert s.apply(1, old).ok
    assert s.apply(2, _put(scram_credential("new", "pw"))).ok
    assert s.users["old"].sha512_salt == "" and verify_password(s.users["old"], "pw")
    assert s.users["new"].sha512_stored_key
    data = encode_snapshot(s)
    users = {u["name"]: u for u in json.loads(data)["users"]}
    assert "sha512_salt" not in users["old"]  # the version-3 user layout, unchanged
    assert set(users["new"]) - set(users["old"]) == {"sha512_salt", "sha512_stored_key",
                                                     "sha512_server_key"}
    restored = decode_snapshot(data)
    assert dict(restored.users) == dict(s.users)
    assert encode_snapshot(restored) == data


def test_a_partial_or_malformed_sha512_credential_is_refused_and_changes_nothing():
    s = ControllerState([1, 2, 3])
    cred = scram_credential("alice", "pw")
    partial = encode_put_user(cred.name, cred.mechanism, cred.iterations, cred.salt,
                              cred.stored_key, cred.server_key, False,
                              (cred.sha512_salt, "", ""))
    result = s.apply(1, partial)
    assert result.code == errors_pb2.INVALID_REQUEST and "SHA-512" in result.message
    short = encode_put_user(cred.name, cred.mechanism, cred.iterations, cred.salt,
                            cred.stored_key, cred.server_key, False,
                            (cred.sha512_salt, cred.stored_key, cred.server_key))  # 32 bytes
    result = s.apply(2, short)
    assert result.code == errors_pb2.INVALID_REQUEST and "sha512_stored_key" in result.message
    assert "alice" not in s.users


def _listener(users: dict) -> ListenerSecurity:
    security = SimpleNamespace(authenticator=SimpleNamespace(mechanisms=("password",)))
    return ListenerSecurity(security, True, lambda: users)  # type: ignore[arg-type]


def test_scram_sha512_is_offered_once_a_user_has_sha512_keys():
    old = scram_credential("old", "pw", sha512=False)
    users = {"old": old}
    ls = _listener(users)
    assert ls.offered() == ("PLAIN", "SCRAM-SHA-256")
    users["new"] = scram_credential("new", "pw")
    assert ls.offered() == ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    # a user without SHA-512 keys gets random ones: its exchange fails at the proof, as
    # an unknown user's does (nothing tells the client which users exist)
    salt, stored, server, _ = ls.scram_keys_512("old")
    assert len(stored) == len(server) == 64
    assert stored != base64.b64decode(users["new"].sha512_stored_key)
    assert ls.scram_keys_512("new")[1] == base64.b64decode(users["new"].sha512_stored_key)


def test_a_scram_sha512_exchange_proves_the_password_and_names_the_user():
    from scramp import ScramClient, ScramMechanism

    users = {"alice": scram_credential("alice", "pw")}
    ls = _listener(users)
    for password, proved in (("pw", "alice"), ("wrong", None)):
        server = ScramMechanism("SCRAM-SHA-512").make_server(ls.scram_keys_512)
        client = ScramClient(["SCRAM-SHA-512"], "alice", password)
        server.set_client_first(client.get_client_first())
        client.set_server_first(server.get_server_first())
        try:
            server.set_client_final(client.get_client_final())
        except Exception:  # noqa: BLE001 - scramp refuses a wrong proof
            assert proved is None
            continue
        assert ls.scram_user(server, sha512=True) == proved
