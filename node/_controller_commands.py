"""The controller's command codec: one metadata command per entry of the controller Raft log.

Byte layout (format version 1; every committed controller entry ever written is in it, so
it never changes: a new field or op needs a new ``"v"``). A command is the canonical JSON
(``_controller_json.py``: keys sorted, no whitespace, ASCII, integers only) of an object::

    {"configs":{},"internal":false,"name":"t","op":"create_topic","partitions":3,
     "replication_factor":3,"v":1}
    {"name":"t","op":"delete_topic","v":1}      (optional "internal": true for an internal topic)
    {"name":"t","op":"add_partitions","partitions":6,"v":1}   (the new total count)
    {"count":1000,"op":"allocate_producer_ids","v":1}
    {"delete":["retention.ms"],"name":"t","op":"alter_topic_configs",
     "set":{"max.message.bytes":"2000"},"v":1}

Security (issue 16)::

    {"iterations":4096,"mechanism":"SCRAM-SHA-256","name":"alice","op":"put_user",
     "replace":false,"salt":"<base64>","server_key":"<base64>","stored_key":"<base64>","v":1}
    {"name":"alice","op":"delete_user","v":1}
    {"acls":[{"host":"*","operation":"READ","pattern_type":"LITERAL","permission":"ALLOW",
              "principal":"User:alice","resource_name":"t","resource_type":"TOPIC"}],
     "op":"create_acls","v":1}
    {"acls":[...],"op":"delete_acls","v":1}      (exact matches)
    {"entity":"User:alice","fetch_bytes_per_s":0,"op":"set_quota",
     "produce_bytes_per_s":1048576,"v":1}        (entity "<default>": everyone else;
                                                  0 = no limit, both 0 removes it)

Cluster operations (issue 19)::

    {"name":"t","op":"reassign_partition","partition":0,"replicas":[2,3,4],"v":1}
    {"name":"t","op":"cancel_reassignment","partition":0,"v":1}
    {"group_id":2,"name":"t","op":"complete_reassignment","partition":0,
     "replicas":[2,3,4],"v":1}            (by the partition's leader, once its Raft
                                          configuration is exactly these voters)
    {"name":"t","op":"alter_replication_factor","replication_factor":2,"v":1}
    {"bytes_per_s":1048576,"op":"set_reassignment_throttle","v":1}   (0 = no limit)
    {"node_id":4,"op":"decommission_node","v":1}
    {"node_id":4,"op":"cancel_decommission","v":1}
    {"node_id":4,"op":"remove_node","v":1}   (by the controller leader, once a
                                             decommissioned node holds no replica)
    {"address":"10.0.0.4:7001","kafka_address":"","node_id":4,"op":"register_node",
     "peer_address":"","rack":"","v":1}
                                 (a node joins, or re-registers on restart; node_id 0: the
                                  controller picks the next unused id when it applies it)
    {"op":"set_balancer","paused":true,"v":1}   (the automatic balancer stops planning new
                                                moves; false resumes it)

A user's password is never in a command: only its salted SCRAM keys (``_auth.py``).

``"v"`` is the command format version (only 1 exists). Every op has an exact field set:
``create_topic`` needs ``name`` (string), ``partitions`` and ``replication_factor``
(integers), ``configs`` (an object of strings) and ``internal`` (true/false);
``delete_topic`` needs ``name`` and may carry ``internal``; ``add_partitions`` needs
``name`` and ``partitions``; ``allocate_producer_ids`` needs ``count``;
``alter_topic_configs`` needs ``name``, ``set`` (an object of strings: configs to set) and
``delete`` (a list of strings: configs to return to their defaults). (Ops are only ever
added, like ``add_partitions`` and ``alter_topic_configs`` were: a node that does not know
one rejects the entry, the same on every node of that version.) A missing or unknown
field, a wrong type, duplicate keys, a float, NaN, invalid UTF-8 or more than
``COMMAND_SIZE_BYTES_MAX`` bytes makes ``decode_command`` raise ``MalformedCommand``
(an ``INVALID_REQUEST`` result when applied). An empty entry (the no-op a new Raft leader
appends) is not a command: the state machine skips it before decoding.

The codec checks the layout only; whether a command is allowed (a valid name, an existing
topic, a sane count) is the state machine's decision (``_controller_state.py``). Encoders
validate nothing for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from ._controller_json import DisallowedJson, StrictJsonError, canonical_json, strict_json

COMMAND_VERSION: Final = 1
COMMAND_SIZE_BYTES_MAX: Final = 64 * 1024

OP_CREATE_TOPIC: Final = "create_topic"
OP_DELETE_TOPIC: Final = "delete_topic"
OP_ALLOCATE_PRODUCER_IDS: Final = "allocate_producer_ids"
OP_ADD_PARTITIONS: Final = "add_partitions"
OP_ALTER_TOPIC_CONFIGS: Final = "alter_topic_configs"
OP_PUT_USER: Final = "put_user"
OP_DELETE_USER: Final = "delete_user"
OP_CREATE_ACLS: Final = "create_acls"
OP_DELETE_ACLS: Final = "delete_acls"
OP_SET_QUOTA: Final = "set_quota"
OP_REASSIGN_PARTITION: Final = "reassign_partition"
OP_CANCEL_REASSIGNMENT: Final = "cancel_reassignment"
OP_COMPLETE_REASSIGNMENT: Final = "complete_reassignment"
OP_ALTER_REPLICATION_FACTOR: Final = "alter_replication_factor"
OP_SET_REASSIGNMENT_THROTTLE: Final = "set_reassignment_throttle"
OP_DECOMMISSION_NODE: Final = "decommission_node"
OP_CANCEL_DECOMMISSION: Final = "cancel_decommission"
OP_REMOVE_NODE: Final = "remove_node"
OP_REGISTER_NODE: Final = "register_node"
OP_SET_BALANCER: Final = "set_balancer"
ACL_FIELDS: Final = ("principal", "host", "operation", "resource_type", "resource_name",
                     "pattern_type", "permission")  # AclBinding's fields, in its order


class CreateTopic(NamedTuple):
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]  # as requested: not normalized, defaults not filled
    internal: bool


class DeleteTopic(NamedTuple):
    name: str
    internal: bool  # the caller may delete an internal topic


class AddPartitions(NamedTuple):
    name: str
    partitions: int  # the new total


class AllocateProducerIds(NamedTuple):
    count: int


class AlterTopicConfigs(NamedTuple):
    name: str
    set: dict[str, str]  # as requested: not normalized
    delete: tuple[str, ...]  # configs to return to their defaults


class PutUser(NamedTuple):
    name: str
    mechanism: str
    iterations: int
    salt: str  # base64
    stored_key: str  # base64
    server_key: str  # base64
    replace: bool  # False: USER_EXISTS if the user exists
    # SCRAM-SHA-512 (salt, stored key, server key), base64; ("", "", "") in commands
    # written before they were stored (the keys are absent from such a command)
    sha512: tuple[str, str, str] = ("", "", "")


class DeleteUser(NamedTuple):
    name: str


class CreateAcls(NamedTuple):
    acls: tuple[tuple[str, ...], ...]  # each: ACL_FIELDS' values, in order


class DeleteAcls(NamedTuple):
    acls: tuple[tuple[str, ...], ...]


class SetQuota(NamedTuple):
    entity: str  # "User:<name>" or "<default>"
    produce_bytes_per_s: int  # 0: no limit
    fetch_bytes_per_s: int
    requests_per_s: int = 0


class ReassignPartition(NamedTuple):
    name: str
    partition: int
    replicas: tuple[int, ...]  # the target replica set; [0] the preferred leader


class CancelReassignment(NamedTuple):
    name: str
    partition: int


class CompleteReassignment(NamedTuple):
    name: str
    partition: int
    group_id: int  # the partition's Raft group (a re-created topic never matches)
    replicas: tuple[int, ...]  # the voters the leader reached


class AlterReplicationFactor(NamedTuple):
    name: str
    replication_factor: int


class SetReassignmentThrottle(NamedTuple):
    bytes_per_s: int  # 0: no limit


class DecommissionNode(NamedTuple):
    node_id: int


class CancelDecommission(NamedTuple):
    node_id: int


class RemoveNode(NamedTuple):
    node_id: int


class RegisterNode(NamedTuple):
    node_id: int  # 0: the controller picks the next unused id
    address: str  # host:port clients (and peers, without a peer port) use
    peer_address: str  # host:port of the node's peer port; "" if it has none
    kafka_address: str  # host:port Kafka clients use; "" without a Kafka listener
    rack: str


class SetBalancer(NamedTuple):
    paused: bool  # True: the balancer plans no new move (moves under way finish)


Command = (SetBalancer | ReassignPartition | CancelReassignment | CompleteReassignment
           | AlterReplicationFactor | SetReassignmentThrottle | DecommissionNode
           | CancelDecommission | RemoveNode | RegisterNode | SetQuota | CreateTopic | DeleteTopic | AddPartitions | AllocateProducerIds | AlterTopicConfigs
           | PutUser | DeleteUser | CreateAcls | DeleteAcls)


class MalformedCommand(ValueError):
    """The bytes are not a well-formed command (the message says what is wrong)."""


# ---------------------------------------------------------------------------- encoding


def encode_create_topic(
    name: str,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str] | None = None,
    internal: bool = False,
) -> bytes:
    """The command that creates a topic."""
    return canonical_json(
        {
            "v": COMMAND_VERSION,
            "op": OP_CREATE_TOPIC,
            "name": name,
            "partitions": partitions,
            "replication_factor": replication_factor,
            "configs": dict(configs or {}),
            "internal": internal,
        }
    )


def encode_delete_topic(name: str, internal: bool = False) -> bytes:
    """The command that deletes a topic; an internal topic needs ``internal=True``."""
    fields: dict[str, Any] = {"v": COMMAND_VERSION, "op": OP_DELETE_TOPIC, "name": name}
    if internal:
        fields["internal"] = True
    return canonical_json(fields)


def encode_add_partitions(name: str, partitions: int) -> bytes:
    """The command that grows topic ``name`` to ``partitions`` partitions in total."""
    return canonical_json(
        {"v": COMMAND_VERSION, "op": OP_ADD_PARTITIONS, "name": name, "partitions": partitions}
    )


def encode_alter_topic_configs(
    name: str, set: Mapping[str, str] | None = None, delete: Sequence[str] = ()
) -> bytes:
    """The command that sets configs of topic ``name`` and returns others to their defaults."""
    return canonical_json(
        {
            "v": COMMAND_VERSION,
            "op": OP_ALTER_TOPIC_CONFIGS,
            "name": name,
            "set": dict(set or {}),
            "delete": list(delete),
        }
    )


def encode_allocate_producer_ids(count: int) -> bytes:
    """The command that reserves ``count`` consecutive producer ids."""
    return canonical_json({"v": COMMAND_VERSION, "op": OP_ALLOCATE_PRODUCER_IDS, "count": count})


def encode_put_user(name: str, mechanism: str, iterations: int, salt: str, stored_key: str,
                    server_key: str, replace: bool = False,
                    sha512: tuple[str, str, str] = ("", "", "")) -> bytes:
    """The command that creates a user (or changes its credential: ``replace``).
    ``sha512``: the SCRAM-SHA-512 salt, stored key and server key (base64), written as
    ``sha512_salt``, ``sha512_stored_key`` and ``sha512_server_key`` only when given."""
    cmd = {
        "v": COMMAND_VERSION, "op": OP_PUT_USER, "name": name, "mechanism": mechanism,
        "iterations": iterations, "salt": salt, "stored_key": stored_key,
        "server_key": server_key, "replace": replace,
    }
    if any(sha512):
        cmd.update(zip(_SHA512_KEYS, sha512))
    return canonical_json(cmd)


_SHA512_KEYS = ("sha512_salt", "sha512_stored_key", "sha512_server_key")


def encode_set_quota(entity: str, produce_bytes_per_s: int, fetch_bytes_per_s: int,
                     requests_per_s: int = 0) -> bytes:
    cmd = {"v": COMMAND_VERSION, "op": OP_SET_QUOTA, "entity": entity,
           "produce_bytes_per_s": produce_bytes_per_s, "fetch_bytes_per_s": fetch_bytes_per_s}
    if requests_per_s:  # absent when 0: a node of the previous release applies it the same
        cmd["requests_per_s"] = requests_per_s
    return canonical_json(cmd)


def encode_reassign_partition(name: str, partition: int, replicas: Sequence[int]) -> bytes:
    """The command that moves partition ``partition`` of ``name`` to ``replicas``."""
    return canonical_json({"v": COMMAND_VERSION, "op": OP_REASSIGN_PARTITION, "name": name,
                           "partition": partition, "replicas": list(replicas)})


def encode_cancel_reassignment(name: str, partition: int) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_CANCEL_REASSIGNMENT, "name": name,
                           "partition": partition})


def encode_complete_reassignment(name: str, partition: int, group_id: int,
                                 replicas: Sequence[int]) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_COMPLETE_REASSIGNMENT,
                           "name": name, "partition": partition, "group_id": group_id,
                           "replicas": list(replicas)})


def encode_alter_replication_factor(name: str, replication_factor: int) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_ALTER_REPLICATION_FACTOR,
                           "name": name, "replication_factor": replication_factor})


def encode_set_reassignment_throttle(bytes_per_s: int) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_SET_REASSIGNMENT_THROTTLE,
                           "bytes_per_s": bytes_per_s})


def encode_decommission_node(node_id: int) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_DECOMMISSION_NODE,
                           "node_id": node_id})


def encode_cancel_decommission(node_id: int) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_CANCEL_DECOMMISSION,
                           "node_id": node_id})


def encode_remove_node(node_id: int) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_REMOVE_NODE, "node_id": node_id})


def encode_set_balancer(paused: bool) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_SET_BALANCER, "paused": paused})


def encode_register_node(node_id: int, address: str, peer_address: str = "",
                         kafka_address: str = "", rack: str = "") -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_REGISTER_NODE, "node_id": node_id,
                           "address": address, "peer_address": peer_address,
                           "kafka_address": kafka_address, "rack": rack})


def encode_delete_user(name: str) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": OP_DELETE_USER, "name": name})


def _encode_acls(op: str, acls: Sequence[Sequence[str]]) -> bytes:
    return canonical_json({"v": COMMAND_VERSION, "op": op,
                           "acls": [dict(zip(ACL_FIELDS, acl)) for acl in acls]})


def encode_create_acls(acls: Sequence[Sequence[str]]) -> bytes:
    """The command that adds ACLs (each a sequence of ACL_FIELDS' values)."""
    return _encode_acls(OP_CREATE_ACLS, acls)


def encode_delete_acls(acls: Sequence[Sequence[str]]) -> bytes:
    """The command that removes these exact ACLs."""
    return _encode_acls(OP_DELETE_ACLS, acls)


# ---------------------------------------------------------------------------- decoding

_OP_FIELDS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    # op -> (required fields, optional fields), besides "v" and "op"
    OP_CREATE_TOPIC: (
        frozenset({"name", "partitions", "replication_factor", "configs", "internal"}),
        frozenset(),
    ),
    OP_DELETE_TOPIC: (frozenset({"name"}), frozenset({"internal"})),
    OP_ALLOCATE_PRODUCER_IDS: (frozenset({"count"}), frozenset()),
    OP_ADD_PARTITIONS: (frozenset({"name", "partitions"}), frozenset()),
    OP_ALTER_TOPIC_CONFIGS: (frozenset({"name", "set", "delete"}), frozenset()),
    OP_PUT_USER: (frozenset({"name", "mechanism", "iterations", "salt", "stored_key",
                             "server_key", "replace"}),
                  frozenset({"sha512_salt", "sha512_stored_key", "sha512_server_key"})),
    OP_DELETE_USER: (frozenset({"name"}), frozenset()),
    OP_CREATE_ACLS: (frozenset({"acls"}), frozenset()),
    OP_DELETE_ACLS: (frozenset({"acls"}), frozenset()),
    # requests_per_s: written only when set; a node of the previous release refuses such a
    # command (deterministically, as malformed): set request quotas after an upgrade
    OP_SET_QUOTA: (frozenset({"entity", "produce_bytes_per_s", "fetch_bytes_per_s"}),
                   frozenset({"requests_per_s"})),
    OP_REASSIGN_PARTITION: (frozenset({"name", "partition", "replicas"}), frozenset()),
    OP_CANCEL_REASSIGNMENT: (frozenset({"name", "partition"}), frozenset()),
    OP_COMPLETE_REASSIGNMENT: (frozenset({"name", "partition", "group_id", "replicas"}),
                               frozenset()),
    OP_ALTER_REPLICATION_FACTOR: (frozenset({"name", "replication_factor"}), frozenset()),
    OP_SET_REASSIGNMENT_THROTTLE: (frozenset({"bytes_per_s"}), frozenset()),
    OP_DECOMMISSION_NODE: (frozenset({"node_id"}), frozenset()),
    OP_CANCEL_DECOMMISSION: (frozenset({"node_id"}), frozenset()),
    OP_REMOVE_NODE: (frozenset({"node_id"}), frozenset()),
    OP_REGISTER_NODE: (frozenset({"node_id", "address", "peer_address", "kafka_address",
                                  "rack"}), frozenset()),
    OP_SET_BALANCER: (frozenset({"paused"}), frozenset()),
}


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """The command ``data`` encodes (non-empty); raises MalformedCommand if it is not one."""
    if len(data) > COMMAND_SIZE_BYTES_MAX:
        raise MalformedCommand(f"command is {len(data)} bytes; at most {COMMAND_SIZE_BYTES_MAX}")
    try:
        obj = strict_json(data)
    except DisallowedJson as error:
        raise MalformedCommand(str(error)) from None
    except StrictJsonError as error:
        raise MalformedCommand(f"not a JSON command: {error}") from None
    if not isinstance(obj, dict):
        raise MalformedCommand("a command is a JSON object")
    version = obj.get("v")
    if version != COMMAND_VERSION or isinstance(version, bool):
        raise MalformedCommand(
            f"unsupported command version {version!r}; this node knows v={COMMAND_VERSION}"
        )
    op = obj.get("op")
    if not isinstance(op, str) or op not in _OP_FIELDS:
        raise MalformedCommand(f"unknown op {op!r}")
    _check_fields(op, obj)
    if op == OP_CREATE_TOPIC:
        return CreateTopic(
            _str_field(obj, "name"),
            _int_field(obj, "partitions"),
            _int_field(obj, "replication_factor"),
            _configs_field(obj),
            _bool_field(obj, "internal"),
        )
    if op == OP_DELETE_TOPIC:
        return DeleteTopic(_str_field(obj, "name"), _bool_field(obj, "internal"))
    if op == OP_ADD_PARTITIONS:
        return AddPartitions(_str_field(obj, "name"), _int_field(obj, "partitions"))
    if op == OP_ALTER_TOPIC_CONFIGS:
        return AlterTopicConfigs(
            _str_field(obj, "name"), _configs_field(obj, "set"), _str_list_field(obj, "delete")
        )
    if op == OP_PUT_USER:
        return PutUser(_str_field(obj, "name"), _str_field(obj, "mechanism"),
                       _int_field(obj, "iterations"), _str_field(obj, "salt"),
                       _str_field(obj, "stored_key"), _str_field(obj, "server_key"),
                       _bool_field(obj, "replace"),
                       tuple(_str_field(obj, k) if k in obj else "" for k in _SHA512_KEYS))
    if op == OP_DELETE_USER:
        return DeleteUser(_str_field(obj, "name"))
    if op == OP_CREATE_ACLS:
        return CreateAcls(_acls_field(obj))
    if op == OP_DELETE_ACLS:
        return DeleteAcls(_acls_field(obj))
    if op == OP_SET_QUOTA:
        return SetQuota(_str_field(obj, "entity"), _int_field(obj, "produce_bytes_per_s"),
                        _int_field(obj, "fetch_bytes_per_s"),
                        _int_field(obj, "requests_per_s") if "requests_per_s" in obj else 0)
    if op == OP_REASSIGN_PARTITION:
        return ReassignPartition(_str_field(obj, "name"), _int_field(obj, "partition"),
                                 _int_list_field(obj, "replicas"))
    if op == OP_CANCEL_REASSIGNMENT:
        return CancelReassignment(_str_field(obj, "name"), _int_field(obj, "partition"))
    if op == OP_COMPLETE_REASSIGNMENT:
        return CompleteReassignment(_str_field(obj, "name"), _int_field(obj, "partition"),
                                    _int_field(obj, "group_id"),
                                    _int_list_field(obj, "replicas"))
    if op == OP_ALTER_REPLICATION_FACTOR:
        return AlterReplicationFactor(_str_field(obj, "name"),
                                      _int_field(obj, "replication_factor"))
    if op == OP_SET_REASSIGNMENT_THROTTLE:
        return SetReassignmentThrottle(_int_field(obj, "bytes_per_s"))
    if op == OP_DECOMMISSION_NODE:
        return DecommissionNode(_int_field(obj, "node_id"))
    if op == OP_CANCEL_DECOMMISSION:
        return CancelDecommission(_int_field(obj, "node_id"))
    if op == OP_REMOVE_NODE:
        return RemoveNode(_int_field(obj, "node_id"))
    if op == OP_REGISTER_NODE:
        return RegisterNode(_int_field(obj, "node_id"), _str_field(obj, "address"),
                            _str_field(obj, "peer_address"), _str_field(obj, "kafka_address"),
                            _str_field(obj, "rack"))
    if op == OP_SET_BALANCER:
        return SetBalancer(_bool_field(obj, "paused"))
    return AllocateProducerIds(_int_field(obj, "count"))


def _int_list_field(obj: Mapping[str, Any], key: str) -> tuple[int, ...]:
    value = obj[key]
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise MalformedCommand(f"field {key!r} must be a list of integers")
    return tuple(value)


def _acls_field(obj: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    value = obj["acls"]
    if not isinstance(value, list):
        raise MalformedCommand("field 'acls' must be a list")
    out = []
    for acl in value:
        if (not isinstance(acl, dict) or set(acl) != set(ACL_FIELDS)
                or not all(isinstance(v, str) for v in acl.values())):
            raise MalformedCommand(f"an ACL is an object of the strings {', '.join(ACL_FIELDS)}")
        out.append(tuple(acl[k] for k in ACL_FIELDS))
    return tuple(out)


def _check_fields(op: str, obj: Mapping[str, Any]) -> None:
    required, optional = _OP_FIELDS[op]
    present = set(obj) - {"v", "op"}
    missing = sorted(required - present)
    if missing:
        raise MalformedCommand(f"{op}: missing field {missing[0]!r}")
    unknown = sorted(present - required - optional)
    if unknown:
        raise MalformedCommand(f"{op}: unknown field {unknown[0]!r}")


def _int_field(obj: Mapping[str, Any], key: str) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedCommand(f"field {key!r} must be an integer")
    return value


def _str_field(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise MalformedCommand(f"field {key!r} must be a string")
    return value


def _bool_field(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise MalformedCommand(f"field {key!r} must be true or false")
    return value


def _configs_field(obj: Mapping[str, Any], key: str = "configs") -> dict[str, str]:
    value = obj[key]
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MalformedCommand(f"field {key!r} must map strings to strings")
    return value


def _str_list_field(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedCommand(f"field {key!r} must be a list of strings")
    return tuple(value)


__all__ = [
    "AlterReplicationFactor",
    "CancelDecommission",
    "CancelReassignment",
    "CompleteReassignment",
    "DecommissionNode",
    "ReassignPartition",
    "RegisterNode",
    "RemoveNode",
    "SetBalancer",
    "encode_set_balancer",
    "encode_register_node",
    "SetReassignmentThrottle",
    "encode_alter_replication_factor",
    "encode_cancel_decommission",
    "encode_cancel_reassignment",
    "encode_complete_reassignment",
    "encode_decommission_node",
    "encode_reassign_partition",
    "encode_remove_node",
    "encode_set_reassignment_throttle",
    "AddPartitions",
    "AllocateProducerIds",
    "AlterTopicConfigs",
    "ACL_FIELDS",
    "COMMAND_SIZE_BYTES_MAX",
    "CreateAcls",
    "DeleteAcls",
    "DeleteUser",
    "PutUser",
    "SetQuota",
    "encode_set_quota",
    "encode_create_acls",
    "encode_delete_acls",
    "encode_delete_user",
    "encode_put_user",
    "COMMAND_VERSION",
    "Command",
    "CreateTopic",
    "DeleteTopic",
    "MalformedCommand",
    "decode_command",
    "encode_add_partitions",
    "encode_allocate_producer_ids",
    "encode_alter_topic_configs",
    "encode_create_topic",
    "encode_delete_topic",
]
