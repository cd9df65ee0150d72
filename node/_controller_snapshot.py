"""The controller snapshot: the whole ``ControllerState`` as bytes, and back.

A node compacts its controller log into a snapshot (``_broker.py``) and a follower that is
too far behind receives one instead of the entries; every snapshot ever written is in one
of these layouts, so they never change: a new field or meaning needs a new ``"v"``.
``balancer_paused`` (true) is written, in versions 4 and 5, only while the balancer is
paused, so a node of the previous release reads every snapshot of a cluster whose balancer
runs (pause it only once every node runs this release). Version 5 (written once a node has joined; until then version 4, which the previous release
reads, so a rolling upgrade mixes releases) adds ``initial_node_ids`` (the nodes the
cluster started with, sorted) and ``nodes`` (every registered node, sorted by id:
``{"id", "address", "peer_address", "kafka_address", "rack"}``); ``node_ids`` is then every
node, initial and joined. Version 4 adds ``decommissioning`` and ``removed_nodes`` (sorted node ids),
``reassign_throttle_bytes_per_s``, and a partition moving is ``[group_id, replicas,
target, cancelled]`` (one that is not stays ``[group_id, replicas]``). Version 3 adds ``users`` (sorted by name: name, mechanism, iterations and
the base64 salt, stored key and server key; never a password; a user whose password was set
since SCRAM-SHA-512 credentials are stored also has ``sha512_salt``, ``sha512_stored_key``
and ``sha512_server_key``, absent otherwise, so a snapshot without such users is read by
the previous release), ``acls`` (sorted, each
an object of the ``ACL_FIELDS`` strings) and ``quotas`` (sorted by entity). Version 2 (still read, as no users and no ACLs):
a topic's ``configs`` are the configs set on it. Version 1 (still read): they were every
config known then, defaults filled; a value equal to its default is read as not set
(whether it had been set explicitly was not recorded).

Layout: the canonical JSON (``_controller_json.py``: keys sorted, no whitespace, ASCII,
integers only) of one object; topics sorted by name; the position of a partition in its
topic's list is its number::

    {"format": "raftka.controller.snapshot", "v": 2, "node_ids": [1, 2, 3],
     "version": 17, "next_group_id": 8, "next_producer_id": 1001,
     "topics": [{"name": "t", "topic_id": "<uuid>", "internal": false,
                 "replication_factor": 3, "configs": {"retention.ms": "..."},
                 "partitions": [[group_id, [preferred, replica, ...]], ...]}],
     "users": [{"name": "alice", "mechanism": "SCRAM-SHA-256", "iterations": 4096,
                "salt": "...", "stored_key": "...", "server_key": "..."}],
     "acls": [{"principal": "User:alice", "host": "*", "operation": "READ",
               "resource_type": "TOPIC", "resource_name": "t", "pattern_type": "LITERAL",
               "permission": "ALLOW"}],
     "quotas": [{"entity": "User:alice", "produce_bytes_per_s": 1048576,
                 "fetch_bytes_per_s": 0}]}

``encode_snapshot`` is canonical: equal states give equal bytes. ``decode_snapshot`` checks
the layout (exact key sets, types, strict JSON) and leaves the values to
``ControllerState.restored``, which checks every invariant; anything wrong raises
``ValueError`` whose message starts ``invalid controller snapshot:`` (or ``controller
snapshot is not valid JSON:``), so a node never starts from a snapshot it cannot trust.
"""

from __future__ import annotations

import types
from typing import Any, Final

from ._acl import AclBinding
from ._controller_commands import ACL_FIELDS
from ._controller_json import StrictJsonError, canonical_json, strict_json
from ._controller_state import (
    NodeAddress,
    QuotaLimits,
    UserCredential,
    DEFAULT_CONFIGS,
    PARTITION_COUNT_MAX,
    ControllerState,
    PartitionMeta,
    TopicMeta,
)

SNAPSHOT_FORMAT: Final = "raftka.controller.snapshot"
SNAPSHOT_VERSION: Final = 5
SNAPSHOT_VERSIONS_READ: Final = frozenset({1, 2, 3, 4, 5})

_SNAPSHOT_KEYS: Final = frozenset(
    {"format", "v", "node_ids", "version", "next_group_id", "next_producer_id", "topics"}
)
_SNAPSHOT_KEYS_V3: Final = _SNAPSHOT_KEYS | {"users", "acls", "quotas"}
_SNAPSHOT_KEYS_V4: Final = _SNAPSHOT_KEYS_V3 | {"decommissioning", "removed_nodes",
                                                "reassign_throttle_bytes_per_s"}
_SNAPSHOT_KEYS_V5: Final = _SNAPSHOT_KEYS_V4 | {"initial_node_ids", "nodes"}
_NODE_KEYS: Final = frozenset({"id", *NodeAddress._fields})
_QUOTA_KEYS: Final = frozenset({"entity", "produce_bytes_per_s", "fetch_bytes_per_s"})
# requests_per_s is written only when set, so a node of the previous release (which knows
# only the keys above) still reads every snapshot of a cluster that uses no request quota
_QUOTA_KEYS_WITH_REQUESTS: Final = _QUOTA_KEYS | {"requests_per_s"}


def _encode_quota(entity: str, limits: QuotaLimits) -> dict:
    quota = {"entity": entity, **limits._asdict()}
    if not limits.requests_per_s:
        del quota["requests_per_s"]
    return quota
_SHA512_USER_KEYS: Final = frozenset({"sha512_salt", "sha512_stored_key", "sha512_server_key"})
_USER_KEYS: Final = frozenset(UserCredential._fields) - _SHA512_USER_KEYS
# the SCRAM-SHA-512 keys are written only for users that have them, so snapshots of users
# whose passwords were set before (and every older snapshot) keep the version-3 user layout
_USER_KEYS_WITH_SHA512: Final = _USER_KEYS | _SHA512_USER_KEYS


def _encode_user(user: UserCredential) -> dict:
    raw = user._asdict()
    if not user.sha512_salt:
        for key in _SHA512_USER_KEYS:
            del raw[key]
    return raw
_TOPIC_KEYS: Final = frozenset(
    {"name", "topic_id", "internal", "replication_factor", "configs", "partitions"}
)


def encode_snapshot(state: ControllerState) -> bytes:
    """The canonical bytes of the whole ``state``."""
    obj = {
            "format": SNAPSHOT_FORMAT,
            "v": SNAPSHOT_VERSION,
            "node_ids": list(state.node_ids),
            "version": state.version,
            "next_group_id": state.next_group_id,
            "next_producer_id": state.next_producer_id,
            "topics": [
                {
                    "name": meta.name,
                    "topic_id": meta.topic_id,
                    "internal": meta.internal,
                    "replication_factor": meta.replication_factor,
                    "configs": dict(meta.configs),
                    "partitions": [_encode_partition(p) for p in meta.partitions],
                }
                for meta in state.topics_sorted()
            ],
            "users": [_encode_user(user) for _, user in sorted(state.users.items())],
            "acls": [dict(zip(ACL_FIELDS, acl)) for acl in state.acls],
            "quotas": [_encode_quota(entity, limits)
                       for entity, limits in sorted(state.quotas.items())],
            "decommissioning": sorted(state.decommissioning),
            "removed_nodes": sorted(state.removed_nodes),
            "reassign_throttle_bytes_per_s": state.reassign_throttle_bytes_per_s,
    }
    if state.balancer_paused:
        obj["balancer_paused"] = True
    if state.node_addresses or state.initial_node_ids != state.node_ids:
        obj["initial_node_ids"] = list(state.initial_node_ids)
        obj["nodes"] = [{"id": n, **addr._asdict()}
                        for n, addr in sorted(state.node_addresses.items())]
    else:
        obj["v"] = 4  # nothing joined: the layout the previous release reads
    return canonical_json(obj)


def _encode_partition(part: PartitionMeta) -> list[Any]:
    if not part.target:
        return [part.group_id, list(part.replicas)]
    return [part.group_id, list(part.replicas), list(part.target), part.cancelled]


def decode_snapshot(data: bytes) -> ControllerState:
    """The state an ``encode_snapshot`` result describes; ValueError if ``data`` is not one."""
    try:
        obj = strict_json(data)
    except StrictJsonError as error:
        raise ValueError(f"controller snapshot is not valid JSON: {error}") from None
    _require(isinstance(obj, dict), "top level must be a JSON object")
    _require(obj.get("format") == SNAPSHOT_FORMAT, f"format must be {SNAPSHOT_FORMAT!r}")
    version = obj.get("v")
    _require(
        _is_int(version) and version in SNAPSHOT_VERSIONS_READ,
        f"unsupported snapshot version {version!r}; this node reads v="
        f"{' or '.join(map(str, sorted(SNAPSHOT_VERSIONS_READ)))}",
    )
    paused = False
    if version >= 4 and "balancer_paused" in obj:
        paused = obj.pop("balancer_paused")
        _require(paused is True, "balancer_paused is written only as true")
    _exact_keys(obj, _SNAPSHOT_KEYS_V5 if version >= 5 else
                _SNAPSHOT_KEYS_V4 if version >= 4 else
                _SNAPSHOT_KEYS_V3 if version >= 3 else _SNAPSHOT_KEYS, "snapshot")
    node_ids = obj["node_ids"]
    _require(
        isinstance(node_ids, list) and all(_is_int(n) for n in node_ids),
        "node_ids must be a list of integers",
    )
    for key in ("version", "next_group_id", "next_producer_id"):
        _require(_is_int(obj[key]), f"{key} must be an integer")
    _require(isinstance(obj["topics"], list), "topics must be a list")
    topics = [_decode_topic(raw, version) for raw in obj["topics"]]
    node_sets: dict[str, list[int]] = {"decommissioning": [], "removed_nodes": []}
    throttle = 0
    if version >= 4:
        for key in node_sets:
            value = obj[key]
            _require(isinstance(value, list) and all(_is_int(n) for n in value)
                     and value == sorted(set(value)), f"{key} must be sorted node ids")
            node_sets[key] = value
        throttle = obj["reassign_throttle_bytes_per_s"]
        _require(_is_int(throttle), "reassign_throttle_bytes_per_s must be an integer")
    initial: list[int] | None = None
    addresses: dict[int, NodeAddress] = {}
    if version >= 5:
        initial = obj["initial_node_ids"]
        _require(isinstance(initial, list) and all(_is_int(n) for n in initial)
                 and initial == sorted(set(initial)), "initial_node_ids must be sorted node ids")
        _require(isinstance(obj["nodes"], list), "nodes must be a list")
        for raw in obj["nodes"]:
            _exact_keys(raw, _NODE_KEYS, "a node")
            _require(_is_int(raw["id"]) and all(isinstance(raw[k], str)
                                                for k in NodeAddress._fields),
                     "a node is an integer id and string addresses")
            _require(raw["id"] not in addresses, f"node {raw['id']} appears twice")
            addresses[raw["id"]] = NodeAddress(*(raw[k] for k in NodeAddress._fields))
    users: list[UserCredential] = []
    acls: list[AclBinding] = []
    quotas: dict[str, QuotaLimits] = {}
    if version >= 3:
        _require(isinstance(obj["quotas"], list), "quotas must be a list")
        for raw in obj["quotas"]:
            _exact_keys(raw, _QUOTA_KEYS_WITH_REQUESTS if "requests_per_s" in raw
                        else _QUOTA_KEYS, "a quota")
            requests = raw.get("requests_per_s", 0)
            _require(isinstance(raw["entity"], str) and _is_int(raw["produce_bytes_per_s"])
                     and _is_int(raw["fetch_bytes_per_s"]) and _is_int(requests),
                     "a quota is an entity and integer rates")
            _require(raw["entity"] not in quotas, f"quota of {raw['entity']!r} appears twice")
            quotas[raw["entity"]] = QuotaLimits(raw["produce_bytes_per_s"],
                                                raw["fetch_bytes_per_s"], requests)
        _require(isinstance(obj["users"], list), "users must be a list")
        for raw in obj["users"]:
            keys = _USER_KEYS_WITH_SHA512 if "sha512_salt" in raw else _USER_KEYS
            _exact_keys(raw, keys, "a user")
            _require(all(isinstance(raw[k], str) for k in keys - {"iterations"})
                     and _is_int(raw["iterations"]), "a user's fields are strings and "
                     "an integer iteration count")
            users.append(UserCredential(**raw))
        _require(isinstance(obj["acls"], list), "acls must be a list")
        for raw in obj["acls"]:
            _exact_keys(raw, frozenset(ACL_FIELDS), "an ACL")
            _require(all(isinstance(v, str) for v in raw.values()), "an ACL's fields are strings")
            acls.append(AclBinding(*(raw[k] for k in ACL_FIELDS)))
    try:
        return ControllerState.restored(
            node_ids,
            version=obj["version"],
            next_group_id=obj["next_group_id"],
            next_producer_id=obj["next_producer_id"],
            topics=topics,
            users=users,
            acls=acls,
            quotas=quotas,
            decommissioning=node_sets["decommissioning"],
            removed_nodes=node_sets["removed_nodes"],
            reassign_throttle_bytes_per_s=throttle,
            initial_node_ids=initial,
            node_addresses=addresses,
            balancer_paused=paused,
        )
    except ValueError as error:
        raise ValueError(f"invalid controller snapshot: {error}") from None


def _decode_topic(raw: Any, version: int) -> TopicMeta:
    _exact_keys(raw, _TOPIC_KEYS, "a topic")
    name = raw["name"]
    _require(isinstance(name, str), "a topic name must be a string")
    _require(isinstance(raw["internal"], bool), f"topic {name!r}: internal must be true or false")
    _require(
        isinstance(raw["topic_id"], str), f"topic {name!r}: topic_id must be a non-empty string"
    )
    _require(
        _is_int(raw["replication_factor"]),
        f"topic {name!r}: replication_factor must be an integer",
    )
    configs = raw["configs"]
    _require(
        isinstance(configs, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in configs.items()),
        f"topic {name!r}: configs must map strings to strings",
    )
    if version == 1:  # defaults were filled: only a value that differs was surely set
        configs = {k: v for k, v in configs.items() if DEFAULT_CONFIGS.get(k) != v}
    parts = raw["partitions"]
    _require(
        isinstance(parts, list),
        f"topic {name!r}: partitions must be a list of 1 to {PARTITION_COUNT_MAX}",
    )
    partitions = []
    for number, part in enumerate(parts):
        where = f"topic {name!r} partition {number}"
        moving = version >= 4 and isinstance(part, list) and len(part) == 4
        _require(
            isinstance(part, list) and (len(part) == 2 or moving),
            f"{where}: must be [group_id, replicas] or [group_id, replicas, target, cancelled]"
        )
        group_id, replicas = part[0], part[1]
        target: list[int] = []
        cancelled = False
        if moving:
            target, cancelled = part[2], part[3]
            _require(isinstance(target, list) and target and all(_is_int(n) for n in target)
                     and isinstance(cancelled, bool),
                     f"{where}: a move is a non-empty target list and a cancelled flag")
        _require(_is_int(group_id), f"{where}: group id {group_id!r} must be an integer")
        _require(
            isinstance(replicas, list) and all(_is_int(n) for n in replicas),
            f"{where}: replicas must be a list of node ids",
        )
        partitions.append(PartitionMeta(number, group_id, tuple(replicas), tuple(target),
                                        cancelled))
    return TopicMeta(
        name=name,
        topic_id=raw["topic_id"],
        partitions=tuple(partitions),
        replication_factor=raw["replication_factor"],
        configs=types.MappingProxyType(configs),
        internal=raw["internal"],
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"invalid controller snapshot: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_keys(obj: Any, keys: frozenset[str], what: str) -> None:
    _require(isinstance(obj, dict), f"{what} must be a JSON object")
    missing = sorted(keys - set(obj))
    unknown = sorted(set(obj) - keys)
    _require(not missing, f"{what} is missing {missing}")
    _require(not unknown, f"{what} has unknown fields {unknown}")


__all__ = ["SNAPSHOT_FORMAT", "SNAPSHOT_VERSION", "decode_snapshot", "encode_snapshot"]
