"""Users and ACLs in the controller state machine: validation before any change, the same
state on every node, and snapshots that carry them (format 3)."""

from __future__ import annotations

from raftka.node._acl import AclBinding
from raftka.node._auth import scram_credential, verify_password
from raftka.node._controller_commands import (
    encode_create_acls,
    encode_delete_acls,
    encode_delete_user,
    encode_put_user,
)
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import ControllerState
from raftka.v1 import errors_pb2

READ_T = AclBinding("User:a", "*", "READ", "TOPIC", "t", "LITERAL", "ALLOW")
DENY_P = AclBinding("User:*", "10.0.0.1", "WRITE", "TOPIC", "p.", "PREFIXED", "DENY")


def _put(name: str, password: str, replace: bool = False, salt: bytes | None = None) -> bytes:
    c = scram_credential(name, password, salt=salt)
    return encode_put_user(c.name, c.mechanism, c.iterations, c.salt, c.stored_key,
                           c.server_key, replace)


def test_users_are_created_replaced_and_deleted_with_clear_errors() -> None:
    s = ControllerState([1, 2, 3])
    assert s.apply(1, _put("alice", "pw1")).ok
    assert s.apply(2, _put("alice", "pw2")).code == errors_pb2.USER_EXISTS
    assert verify_password(s.users["alice"], "pw1")
    assert s.apply(3, _put("alice", "pw2", replace=True)).ok
    assert verify_password(s.users["alice"], "pw2") and not verify_password(s.users["alice"], "pw1")
    assert s.apply(4, encode_delete_user("alice")).ok and "alice" not in s.users
    assert s.apply(5, encode_delete_user("alice")).code == errors_pb2.UNKNOWN_USER
    bad_name = _put("no spaces", "pw")
    assert s.apply(6, bad_name).code == errors_pb2.INVALID_REQUEST
    weak = encode_put_user("bob", "SCRAM-SHA-256", 10, "AAAAAAAAAAAAAAAAAAAAAA==",
                           "A" * 44, "A" * 44)
    assert s.apply(7, weak).code == errors_pb2.INVALID_REQUEST and "bob" not in s.users
    assert s.version == 7


def test_acls_are_added_once_and_removed_exactly() -> None:
    s = ControllerState([1, 2, 3])
    first = s.acls
    assert s.apply(1, encode_create_acls([READ_T, DENY_P])).value == 2
    assert s.acls == tuple(sorted([READ_T, DENY_P])) and s.acls is not first
    same = s.acls
    assert s.apply(2, encode_create_acls([READ_T])).value == 0 and s.acls is same
    assert s.apply(3, encode_delete_acls([READ_T, READ_T._replace(host="x")])).value == 1
    assert s.acls == (DENY_P,)
    bad = READ_T._replace(operation="FLY")
    result = s.apply(4, encode_create_acls([READ_T, bad]))
    assert result.code == errors_pb2.INVALID_REQUEST and "FLY" in result.message
    assert s.acls == (DENY_P,)  # none of the command's ACLs was applied
    assert s.apply(5, encode_create_acls([READ_T._replace(principal="alice")])).code \
        == errors_pb2.INVALID_REQUEST


def test_snapshot_v3_round_trips_users_and_acls_byte_for_byte() -> None:
    s = ControllerState([1, 2, 3])
    s.apply(1, _put("alice", "pw", salt=b"0123456789abcdef"))
    s.apply(2, encode_create_acls([DENY_P, READ_T]))
    data = encode_snapshot(s)
    assert b"pw" not in data.replace(b"password", b"")  # never the password
    restored = decode_snapshot(data)
    assert restored.users == s.users and restored.acls == s.acls
    assert encode_snapshot(restored) == data


def test_two_nodes_applying_the_same_log_agree() -> None:
    log = [_put("u1", "x", salt=b"s" * 16), encode_create_acls([READ_T]),
           encode_create_acls([DENY_P]), encode_delete_acls([READ_T]),
           _put("u1", "y", replace=True, salt=b"t" * 16), encode_delete_user("nobody")]
    states = [ControllerState([1, 2, 3]) for _ in range(2)]
    for state in states:
        for index, command in enumerate(log, start=1):
            state.apply(index, command)
    assert encode_snapshot(states[0]) == encode_snapshot(states[1])
