"""The controller's replicated state machine: cluster metadata as a pure function of the log.

Every node applies the committed entries of the controller Raft group (group id 1), in log
order, to a ``ControllerState``. The state is

- ``node_ids``: the cluster's nodes (the static peer list every node starts with; sorted);
- ``topics``: name -> ``TopicMeta`` (topic id, configs with defaults filled, and per partition
  its Raft group id and replica list, ``replicas[0]`` being the preferred leader);
- ``next_group_id``: the next Raft group id to hand to a partition. Group id 1 is the
  controller itself; partitions start at 2; ids are never reused, also after a delete;
- ``next_producer_id``: the next idempotent-producer id to hand out (ids start at 1);
- ``version``: the Raft index of the last applied entry.

Command encoding (one command per Raft entry, no pickle)::

    UTF-8 JSON object, keys sorted, no whitespace, integers only (no floats), e.g.
    {"configs":{},"internal":false,"name":"t","op":"create_topic","partitions":3,
     "replication_factor":3,"v":1}
    {"name":"t","op":"delete_topic","v":1}      (optional "internal": true, see below)
    {"name":"t","op":"add_partitions","partitions":6,"v":1}   (the new total count)
    {"count":1000,"op":"allocate_producer_ids","v":1}

``"v"`` is the command format version (only 1 exists). Every op has an exact field set:
a missing or unknown field, a wrong type, duplicate keys, a float, NaN, invalid UTF-8 or
more than ``COMMAND_SIZE_BYTES_MAX`` bytes gives an ``INVALID_REQUEST`` result. An empty
command (the no-op entry a new Raft leader appends) is accepted and changes nothing.

Determinism rules (every node must reach byte-identical state from the same log):

1. ``apply`` reads only its arguments and the state: no clock, no randomness, no I/O, no
   environment, no floats. Topic ids are derived from the entry's index and the name.
2. Iteration never depends on dict or set order: nodes are a sorted tuple, candidates are
   chosen by explicit sort keys that end in the node id, snapshots sort topics by name.
3. A rejected command leaves the state unchanged except ``version`` (the entry was consumed).
   Validation completes before the first mutation, so a bad entry can never half-apply.
4. ``apply`` never raises because of a command's content: every node would crash on the same
   committed entry. It raises only for a caller bug (an index that does not move forward).
5. ``snapshot()`` is canonical: equal states give equal bytes; ``restore`` checks every
   invariant and raises ``ValueError`` on anything else.

Validation codes (``errors_pb2.ErrorCode``): a bad topic name, partition count or malformed
command is ``INVALID_REQUEST``; an existing name ``TOPIC_EXISTS``; a replication factor above
the node count ``NOT_ENOUGH_REPLICAS``; a bad topic config ``INVALID_CONFIG``; deleting an
unknown topic ``UNKNOWN_TOPIC``. ``add_partitions`` only grows a topic: a total count not
above the current one, or an internal topic (``__consumer_offsets`` maps groups to partitions
by count), is ``INVALID_REQUEST``; an unknown topic ``UNKNOWN_TOPIC``. New partitions get
fresh group ids and the same least-loaded placement as a create, counting every replica the
nodes already hold; existing partitions keep their group ids and replicas.
"""

from __future__ import annotations

import json
import re
import types
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from raftka.v1 import errors_pb2

COMMAND_VERSION: Final = 1
SNAPSHOT_FORMAT: Final = "raftka.controller.snapshot"
SNAPSHOT_VERSION: Final = 1

CONTROLLER_GROUP_ID: Final = 1
FIRST_PARTITION_GROUP_ID: Final = 2
FIRST_PRODUCER_ID: Final = 1
PRODUCER_ID_MAX: Final = 2**63 - 1  # Kafka's producerId is an int64
PRODUCER_ID_COUNT_MAX: Final = 1_000_000  # per allocation

TOPIC_NAME_LENGTH_MAX: Final = 249
PARTITION_COUNT_MAX: Final = 10_000
COMMAND_SIZE_BYTES_MAX: Final = 64 * 1024
INT64_MAX: Final = 2**63 - 1

OP_CREATE_TOPIC: Final = "create_topic"
OP_DELETE_TOPIC: Final = "delete_topic"
OP_ALLOCATE_PRODUCER_IDS: Final = "allocate_producer_ids"
OP_ADD_PARTITIONS: Final = "add_partitions"

_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
# Topic ids are UUIDs (as in Kafka), derived rather than random: uuid5(namespace, "index:name").
_TOPIC_ID_NAMESPACE: Final = uuid.UUID("6f2d1c3e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")


# ---------------------------------------------------------------------------- value types


class PartitionMeta(NamedTuple):
    partition: int
    group_id: int  # the partition's Raft group; unique in the cluster, never reused
    replicas: tuple[int, ...]  # distinct node ids; replicas[0] is the preferred leader


class TopicMeta(NamedTuple):
    name: str
    topic_id: str  # UUID string; differs between a deleted topic and its re-creation
    partitions: tuple[PartitionMeta, ...]  # partitions[i].partition == i
    replication_factor: int
    configs: Mapping[str, str]  # read-only; every known key, normalized
    internal: bool


class ApplyResult(NamedTuple):
    ok: bool
    code: int  # errors_pb2.ErrorCode; 0 (ERROR_CODE_UNSPECIFIED) when ok
    message: str
    value: object | None = None  # the created/grown TopicMeta, or the first producer id


class _ConfigSpec(NamedTuple):
    default: str
    minimum: int
    maximum: int

    def allowed(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"


TOPIC_CONFIGS: Final[Mapping[str, _ConfigSpec]] = types.MappingProxyType(
    {
        "max.message.bytes": _ConfigSpec("1048576", 1, 64 * 1024 * 1024),
        "retention.bytes": _ConfigSpec("-1", -1, INT64_MAX),  # -1: no size limit
        "retention.ms": _ConfigSpec("604800000", -1, INT64_MAX),  # 7 days; -1: no time limit
    }
)
"""The topic configs we know, with their defaults and bounds (values are decimal strings)."""


# ---------------------------------------------------------------------------- commands


def _encode(fields: dict[str, Any]) -> bytes:
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def encode_create_topic(
    name: str,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str] | None = None,
    internal: bool = False,
) -> bytes:
    """The command that creates a topic. Nothing is validated here: ``apply`` decides."""
    return _encode(
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
    return _encode(fields)


def encode_add_partitions(name: str, partitions: int) -> bytes:
    """The command that grows topic ``name`` to ``partitions`` partitions in total."""
    return _encode(
        {"v": COMMAND_VERSION, "op": OP_ADD_PARTITIONS, "name": name, "partitions": partitions}
    )


def encode_allocate_producer_ids(count: int) -> bytes:
    """The command that reserves ``count`` consecutive producer ids."""
    return _encode({"v": COMMAND_VERSION, "op": OP_ALLOCATE_PRODUCER_IDS, "count": count})


class _Malformed(Exception):
    """The command bytes are not a well-formed command (reported as INVALID_REQUEST)."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Malformed(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_float(text: str) -> Any:
    raise _Malformed(f"floats are not allowed (got {text})")


def _reject_constant(text: str) -> Any:
    raise _Malformed(f"{text} is not allowed")


def _decode(command: bytes) -> dict[str, Any]:
    if len(command) > COMMAND_SIZE_BYTES_MAX:
        raise _Malformed(f"command is {len(command)} bytes; at most {COMMAND_SIZE_BYTES_MAX}")
    try:
        obj = json.loads(
            bytes(command).decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError, JSONDecodeError
        raise _Malformed(f"not a JSON command: {error}") from None
    if not isinstance(obj, dict):
        raise _Malformed("a command is a JSON object")
    version = obj.get("v")
    if version != COMMAND_VERSION or isinstance(version, bool):
        raise _Malformed(f"unsupported command version {version!r}; this node knows v=1")
    return obj


_OP_FIELDS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    # op -> (required fields, optional fields), besides "v" and "op"
    OP_CREATE_TOPIC: (
        frozenset({"name", "partitions", "replication_factor", "configs", "internal"}),
        frozenset(),
    ),
    OP_DELETE_TOPIC: (frozenset({"name"}), frozenset({"internal"})),
    OP_ALLOCATE_PRODUCER_IDS: (frozenset({"count"}), frozenset()),
    OP_ADD_PARTITIONS: (frozenset({"name", "partitions"}), frozenset()),
}


def _check_fields(op: str, cmd: Mapping[str, Any]) -> None:
    required, optional = _OP_FIELDS[op]
    present = set(cmd) - {"v", "op"}
    missing = sorted(required - present)
    if missing:
        raise _Malformed(f"{op}: missing field {missing[0]!r}")
    unknown = sorted(present - required - optional)
    if unknown:
        raise _Malformed(f"{op}: unknown field {unknown[0]!r}")


def _int_field(cmd: Mapping[str, Any], key: str) -> int:
    value = cmd[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Malformed(f"field {key!r} must be an integer")
    return value


def _str_field(cmd: Mapping[str, Any], key: str) -> str:
    value = cmd[key]
    if not isinstance(value, str):
        raise _Malformed(f"field {key!r} must be a string")
    return value


def _bool_field(cmd: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = cmd.get(key, default)
    if not isinstance(value, bool):
        raise _Malformed(f"field {key!r} must be true or false")
    return value


def _configs_field(cmd: Mapping[str, Any]) -> dict[str, str]:
    value = cmd["configs"]
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _Malformed("field 'configs' must map strings to strings")
    return value


# ---------------------------------------------------------------------------- validation


def _ok(message: str, value: object | None = None) -> ApplyResult:
    return ApplyResult(True, errors_pb2.ERROR_CODE_UNSPECIFIED, message, value)


def _error(code: int, message: str) -> ApplyResult:
    return ApplyResult(False, code, message, None)


def topic_name_error(name: str, internal: bool = False) -> str | None:
    """Why ``name`` is not a valid topic name (Kafka's rules), or None if it is."""
    if not _TOPIC_NAME.fullmatch(name):
        return (
            f"invalid topic name {name[:300]!r}: use 1 to {TOPIC_NAME_LENGTH_MAX} characters "
            "from a-z, A-Z, 0-9, '.', '_' and '-'"
        )
    if name in (".", ".."):
        return f"invalid topic name {name!r}: '.' and '..' are not allowed"
    if name.startswith("__") and not internal:
        return f"invalid topic name {name!r}: names starting with '__' are reserved"
    return None


def normalize_configs(configs: Mapping[str, str]) -> tuple[dict[str, str] | None, str]:
    """Topic configs with defaults filled and integers in canonical form.

    Returns ``(configs, "")``, or ``(None, reason)`` naming the bad key and what it allows.
    Keys are checked in sorted order so the reported key is the same on every node.
    """
    result = {key: spec.default for key, spec in sorted(TOPIC_CONFIGS.items())}
    for key in sorted(configs):
        value = configs[key]
        spec = TOPIC_CONFIGS.get(key)
        if spec is None:
            known = ", ".join(sorted(TOPIC_CONFIGS))
            return None, f"unknown topic config {key[:100]!r}; known configs: {known}"
        number = int(value) if _INTEGER.fullmatch(value) else None
        if number is None or not spec.minimum <= number <= spec.maximum:
            return None, f"invalid value {value[:100]!r} for {key!r}: must be {spec.allowed()}"
        result[key] = str(number)
    return result, ""


class _CreateTopic(NamedTuple):
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    internal: bool


class _DeleteTopic(NamedTuple):
    name: str


class _AllocateProducerIds(NamedTuple):
    count: int


class _AddPartitions(NamedTuple):
    name: str
    partitions: int  # the new total


_Validated = _CreateTopic | _DeleteTopic | _AllocateProducerIds | _AddPartitions


# ---------------------------------------------------------------------------- the state


class ControllerState:
    """Cluster metadata, changed only by ``apply`` (or replaced by ``restore``).

    Invariants (checked by ``restore``, kept by ``apply``):
    - ``version`` never decreases;
    - every partition's replicas are ``replication_factor`` distinct members of ``node_ids``;
    - group ids are unique, in ``[FIRST_PARTITION_GROUP_ID, next_group_id)``, and
      ``next_group_id`` never decreases (ids are never reused);
    - ``next_producer_id`` never decreases; ids below it have been handed out.
    """

    def __init__(self, node_ids: Sequence[int]) -> None:
        nodes = tuple(sorted(node_ids))
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        if any(not isinstance(n, int) or isinstance(n, bool) or n <= 0 for n in nodes):
            raise ValueError(f"node ids must be positive integers, got {list(node_ids)}")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"node ids must be distinct, got {list(node_ids)}")
        self._node_ids: tuple[int, ...] = nodes
        self._topics: dict[str, TopicMeta] = {}
        # group id -> (topic name, partition); derived from _topics
        self._groups: dict[int, tuple[str, int]] = {}
        # node -> how many partition replicas / preferred leaderships it holds; derived
        self._replica_counts: dict[int, int] = {n: 0 for n in nodes}
        self._leader_counts: dict[int, int] = {n: 0 for n in nodes}
        self._next_group_id = FIRST_PARTITION_GROUP_ID  # never decreases
        self._next_producer_id = FIRST_PRODUCER_ID  # never decreases
        self._version = 0  # index of the last applied entry; never decreases

    # -- read-only views

    @property
    def node_ids(self) -> tuple[int, ...]:
        return self._node_ids

    @property
    def topics(self) -> Mapping[str, TopicMeta]:
        return types.MappingProxyType(self._topics)

    @property
    def next_group_id(self) -> int:
        return self._next_group_id

    @property
    def next_producer_id(self) -> int:
        return self._next_producer_id

    @property
    def version(self) -> int:
        return self._version

    def topic(self, name: str) -> TopicMeta | None:
        return self._topics.get(name)

    def topics_sorted(self) -> list[TopicMeta]:
        return [self._topics[name] for name in sorted(self._topics)]

    def partitions_on(self, node_id: int) -> list[tuple[TopicMeta, PartitionMeta]]:
        """The partitions ``node_id`` must host, by topic name then partition."""
        return [
            (meta, part)
            for meta in self.topics_sorted()
            for part in meta.partitions
            if node_id in part.replicas
        ]

    def partition_by_group(self, group_id: int) -> tuple[TopicMeta, PartitionMeta] | None:
        where = self._groups.get(group_id)
        if where is None:
            return None
        meta = self._topics[where[0]]
        return meta, meta.partitions[where[1]]

    def replica_counts(self) -> dict[int, int]:
        """Node id -> number of partition replicas it holds, over all topics."""
        return dict(self._replica_counts)

    def leader_counts(self) -> dict[int, int]:
        """Node id -> number of partitions whose preferred leader it is."""
        return dict(self._leader_counts)

    # -- applying commands

    def apply(self, index: int, command: bytes) -> ApplyResult:
        """Apply the committed entry at Raft ``index``; the same on every node.

        Raises ValueError only if ``index`` does not exceed ``version`` (a caller bug:
        entries are applied once, in log order; gaps for non-controller entries are fine).
        Any problem with ``command`` itself is an error result, with the state unchanged
        except ``version``.
        """
        if not isinstance(index, int) or isinstance(index, bool) or index <= self._version:
            raise ValueError(
                f"apply index {index!r} must be greater than version {self._version}: "
                "entries are applied once, in log order"
            )
        self._version = index
        validated = self._validate(command)
        if isinstance(validated, ApplyResult):
            return validated
        if isinstance(validated, _CreateTopic):
            return self._create_topic(index, validated)
        if isinstance(validated, _DeleteTopic):
            return self._delete_topic(validated)
        if isinstance(validated, _AddPartitions):
            return self._add_partitions(validated)
        return self._allocate_producer_ids(validated)

    def check(self, command: bytes) -> ApplyResult:
        """Validate ``command`` against the current state without applying it.

        For a leader to reject bad requests before proposing them. Advisory only: the state
        may change before the entry commits, and ``apply`` decides. An ok result has no value.
        """
        validated = self._validate(command)
        if isinstance(validated, ApplyResult):
            return validated
        return _ok("valid")

    def _validate(self, command: bytes) -> _Validated | ApplyResult:
        if not isinstance(command, (bytes, bytearray, memoryview)):
            return _error(errors_pb2.INVALID_REQUEST, f"a command is bytes, got {type(command)}")
        if len(command) == 0:
            return _ok("no-op")
        try:
            return self._validate_fields(_decode(command))
        except _Malformed as error:
            return _error(errors_pb2.INVALID_REQUEST, f"malformed controller command: {error}")
        except Exception as error:  # a bug in validation; must not take every node down
            return _error(errors_pb2.INTERNAL_ERROR, f"controller command rejected: {error!r}")

    def _validate_fields(self, cmd: dict[str, Any]) -> _Validated | ApplyResult:
        op = cmd.get("op")
        if not isinstance(op, str) or op not in _OP_FIELDS:
            raise _Malformed(f"unknown op {op!r}")
        _check_fields(op, cmd)
        if op == OP_CREATE_TOPIC:
            return self._validate_create_topic(cmd)
        if op == OP_DELETE_TOPIC:
            return self._validate_delete_topic(cmd)
        if op == OP_ADD_PARTITIONS:
            return self._validate_add_partitions(cmd)
        return self._validate_allocate_producer_ids(cmd)

    def _validate_create_topic(self, cmd: dict[str, Any]) -> _CreateTopic | ApplyResult:
        name = _str_field(cmd, "name")
        partitions = _int_field(cmd, "partitions")
        replication_factor = _int_field(cmd, "replication_factor")
        raw_configs = _configs_field(cmd)
        internal = _bool_field(cmd, "internal")
        name_error = topic_name_error(name, internal)
        if name_error is not None:
            return _error(errors_pb2.INVALID_REQUEST, name_error)
        if name in self._topics:
            return _error(errors_pb2.TOPIC_EXISTS, f"topic {name!r} already exists")
        if not 1 <= partitions <= PARTITION_COUNT_MAX:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"partitions must be from 1 to {PARTITION_COUNT_MAX}, got {partitions}",
            )
        node_count = len(self._node_ids)
        if replication_factor < 1:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"replication factor must be at least 1, got {replication_factor}",
            )
        if replication_factor > node_count:
            return _error(
                errors_pb2.NOT_ENOUGH_REPLICAS,
                f"replication factor {replication_factor} is more than the {node_count} "
                f"node{'s' if node_count != 1 else ''} in the cluster",
            )
        configs, reason = normalize_configs(raw_configs)
        if configs is None:
            return _error(errors_pb2.INVALID_CONFIG, reason)
        if self._next_group_id + partitions > INT64_MAX:
            return _error(errors_pb2.INVALID_REQUEST, "raft group ids exhausted")
        return _CreateTopic(name, partitions, replication_factor, configs, internal)

    def _validate_delete_topic(self, cmd: dict[str, Any]) -> _DeleteTopic | ApplyResult:
        name = _str_field(cmd, "name")
        internal = _bool_field(cmd, "internal")
        meta = self._topics.get(name)
        if meta is None:
            return _error(errors_pb2.UNKNOWN_TOPIC, f"unknown topic {name[:300]!r}")
        if meta.internal and not internal:
            return _error(
                errors_pb2.INVALID_REQUEST, f"topic {name!r} is internal and cannot be deleted"
            )
        return _DeleteTopic(name)

    def _validate_add_partitions(self, cmd: dict[str, Any]) -> _AddPartitions | ApplyResult:
        name = _str_field(cmd, "name")
        partitions = _int_field(cmd, "partitions")
        meta = self._topics.get(name)
        if meta is None:
            return _error(errors_pb2.UNKNOWN_TOPIC, f"unknown topic {name[:300]!r}")
        if meta.internal:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"topic {name!r} is internal; its partition count cannot change",
            )
        current = len(meta.partitions)
        if partitions <= current:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"topic {name!r} has {current} partition{'s' if current != 1 else ''}; the "
                f"new total must be more than that (partitions are never removed), got "
                f"{partitions}",
            )
        if partitions > PARTITION_COUNT_MAX:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"partitions must be at most {PARTITION_COUNT_MAX}, got {partitions}",
            )
        if self._next_group_id + (partitions - current) > INT64_MAX:
            return _error(errors_pb2.INVALID_REQUEST, "raft group ids exhausted")
        return _AddPartitions(name, partitions)

    def _validate_allocate_producer_ids(
        self, cmd: dict[str, Any]
    ) -> _AllocateProducerIds | ApplyResult:
        count = _int_field(cmd, "count")
        if not 1 <= count <= PRODUCER_ID_COUNT_MAX:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"producer id count must be from 1 to {PRODUCER_ID_COUNT_MAX}, got {count}",
            )
        if self._next_producer_id + count - 1 > PRODUCER_ID_MAX:
            return _error(errors_pb2.INVALID_REQUEST, "producer ids exhausted")
        return _AllocateProducerIds(count)

    # -- mutations: called only after validation succeeded; they cannot fail

    def _create_topic(self, index: int, cmd: _CreateTopic) -> ApplyResult:
        assignment = assign_replicas(
            self._node_ids,
            cmd.partitions,
            cmd.replication_factor,
            self._replica_counts,
            self._leader_counts,
        )
        first_group_id = self._next_group_id
        partitions = tuple(
            PartitionMeta(p, first_group_id + p, replicas) for p, replicas in enumerate(assignment)
        )
        meta = TopicMeta(
            name=cmd.name,
            topic_id=str(uuid.uuid5(_TOPIC_ID_NAMESPACE, f"{index}:{cmd.name}")),
            partitions=partitions,
            replication_factor=cmd.replication_factor,
            configs=types.MappingProxyType(cmd.configs),
            internal=cmd.internal,
        )
        self._add_topic(meta)
        self._next_group_id = first_group_id + cmd.partitions
        return _ok(
            f"created topic {cmd.name!r}: {cmd.partitions} partition(s), replication factor "
            f"{cmd.replication_factor}, groups {first_group_id}..{self._next_group_id - 1}",
            meta,
        )

    def _delete_topic(self, cmd: _DeleteTopic) -> ApplyResult:
        meta = self._topics.pop(cmd.name)
        for part in meta.partitions:
            del self._groups[part.group_id]
            self._leader_counts[part.replicas[0]] -= 1
            for node in part.replicas:
                self._replica_counts[node] -= 1
        return _ok(f"deleted topic {cmd.name!r}", meta)

    def _add_partitions(self, cmd: _AddPartitions) -> ApplyResult:
        meta = self._topics[cmd.name]
        current = len(meta.partitions)
        added = cmd.partitions - current
        assignment = assign_replicas(
            self._node_ids,
            added,
            meta.replication_factor,
            self._replica_counts,
            self._leader_counts,
        )
        first_group_id = self._next_group_id
        new_parts = tuple(
            PartitionMeta(current + i, first_group_id + i, replicas)
            for i, replicas in enumerate(assignment)
        )
        grown = meta._replace(partitions=meta.partitions + new_parts)
        self._topics[cmd.name] = grown
        for part in new_parts:
            self._groups[part.group_id] = (cmd.name, part.partition)
            self._leader_counts[part.replicas[0]] += 1
            for node in part.replicas:
                self._replica_counts[node] += 1
        self._next_group_id = first_group_id + added
        return _ok(
            f"topic {cmd.name!r} grew from {current} to {cmd.partitions} partitions, groups "
            f"{first_group_id}..{self._next_group_id - 1}",
            grown,
        )

    def _allocate_producer_ids(self, cmd: _AllocateProducerIds) -> ApplyResult:
        first = self._next_producer_id
        self._next_producer_id = first + cmd.count
        return _ok(f"allocated producer ids {first}..{self._next_producer_id - 1}", first)

    def _add_topic(self, meta: TopicMeta) -> None:
        self._topics[meta.name] = meta
        for part in meta.partitions:
            self._groups[part.group_id] = (meta.name, part.partition)
            self._leader_counts[part.replicas[0]] += 1
            for node in part.replicas:
                self._replica_counts[node] += 1

    # -- snapshots

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state (equal states give equal bytes).

        Layout (JSON, keys sorted, no whitespace; topics sorted by name; the position of a
        partition in its list is its number)::

            {"format": "raftka.controller.snapshot", "v": 1, "node_ids": [1, 2, 3],
             "version": 17, "next_group_id": 8, "next_producer_id": 1001,
             "topics": [{"name": "t", "topic_id": "<uuid>", "internal": false,
                         "replication_factor": 3, "configs": {"retention.ms": "..."},
                         "partitions": [[group_id, [preferred, replica, ...]], ...]}]}
        """
        return _encode(
            {
                "format": SNAPSHOT_FORMAT,
                "v": SNAPSHOT_VERSION,
                "node_ids": list(self._node_ids),
                "version": self._version,
                "next_group_id": self._next_group_id,
                "next_producer_id": self._next_producer_id,
                "topics": [
                    {
                        "name": meta.name,
                        "topic_id": meta.topic_id,
                        "internal": meta.internal,
                        "replication_factor": meta.replication_factor,
                        "configs": dict(meta.configs),
                        "partitions": [[p.group_id, list(p.replicas)] for p in meta.partitions],
                    }
                    for meta in self.topics_sorted()
                ],
            }
        )

    @classmethod
    def restore(cls, data: bytes) -> ControllerState:
        """The state a ``snapshot()`` describes. Raises ValueError if ``data`` is not one."""
        try:
            obj = json.loads(
                bytes(data).decode("utf-8"),
                object_pairs_hook=_reject_duplicates,
                parse_float=_reject_float,
                parse_constant=_reject_constant,
            )
        except (ValueError, RecursionError, TypeError, _Malformed) as error:
            raise ValueError(f"controller snapshot is not valid JSON: {error}") from None
        return _restore(obj)


# ---------------------------------------------------------------------------- replica placement


def assign_replicas(
    node_ids: Sequence[int],
    partition_count: int,
    replication_factor: int,
    replica_counts: Mapping[int, int],
    leader_counts: Mapping[int, int],
) -> list[tuple[int, ...]]:
    """Replica lists for ``partition_count`` new partitions; ``[0]`` is the preferred leader.

    Greedy least-loaded placement (like Redpanda's allocator) that counts what every node
    already holds across all topics and updates the counts partition by partition. For each
    partition, with R = ``replication_factor``:

    1. Eligible nodes. Sort nodes by replica count; let ``c`` be the count of the R-th one.
       Nodes below ``c`` are *required* (fewer than R of them); nodes at exactly ``c`` form
       the *pool*; nodes above ``c`` are not used. Any R-set made of all required nodes plus
       pool nodes is a set of R least-loaded nodes, so replica counts never drift apart:
       if they differ by at most 1 before, they differ by at most 1 after.
    2. Preferred leader: the eligible node (required or pool) with the fewest preferred
       leaderships; ties go to fewer replicas, then the lower node id.
    3. Followers: the remaining required nodes, then pool nodes with the *most* preferred
       leaderships first (ties: lower id). Nodes short of leaderships are thereby kept out
       of partitions they would not lead, so they stay eligible to lead the next ones.
       (Filling with the least-leading nodes instead lets a node fall 2+ leaderships behind,
       e.g. 4 nodes, RF 2, 4 partitions.)

    Starting from a balanced cluster and only creating topics, this keeps both the replica
    counts and the preferred-leader counts of all nodes within 1 of each other after every
    partition (checked exhaustively in the tests for small clusters). After deletes the
    counts may differ by more; new partitions go to the least-loaded nodes first, so later
    creates move the cluster back toward balance. Every choice is by an explicit key ending
    in the node id, so the result depends only on the arguments, never on dict order.
    Cost: O(partition_count * n log n) for n nodes. The counts passed in are not modified.
    """
    if not 1 <= replication_factor <= len(node_ids):
        raise ValueError(f"replication factor {replication_factor} with {len(node_ids)} nodes")
    nodes = sorted(node_ids)
    replicas_held = {n: replica_counts.get(n, 0) for n in nodes}
    leaderships = {n: leader_counts.get(n, 0) for n in nodes}
    result: list[tuple[int, ...]] = []
    for _ in range(partition_count):
        by_load = sorted(nodes, key=lambda n: (replicas_held[n], n))
        threshold = replicas_held[by_load[replication_factor - 1]]
        required = [n for n in by_load if replicas_held[n] < threshold]
        pool = [n for n in by_load if replicas_held[n] == threshold]
        leader = min(required + pool, key=lambda n: (leaderships[n], replicas_held[n], n))
        followers = [n for n in required if n != leader]
        spare = sorted((n for n in pool if n != leader), key=lambda n: (-leaderships[n], n))
        followers += spare[: replication_factor - 1 - len(followers)]
        replicas = (leader, *followers)
        leaderships[leader] += 1
        for node in replicas:
            replicas_held[node] += 1
        result.append(replicas)
    return result


# ---------------------------------------------------------------------------- restore checks


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"invalid controller snapshot: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_keys(obj: Any, keys: set[str], what: str) -> None:
    _require(isinstance(obj, dict), f"{what} must be a JSON object")
    missing = sorted(keys - set(obj))
    unknown = sorted(set(obj) - keys)
    _require(not missing, f"{what} is missing {missing}")
    _require(not unknown, f"{what} has unknown fields {unknown}")


def _restore(obj: Any) -> ControllerState:
    _require(isinstance(obj, dict), "top level must be a JSON object")
    _require(obj.get("format") == SNAPSHOT_FORMAT, f"format must be {SNAPSHOT_FORMAT!r}")
    version = obj.get("v")
    _require(
        _is_int(version) and version == SNAPSHOT_VERSION,
        f"unsupported snapshot version {version!r}; this node reads v={SNAPSHOT_VERSION}",
    )
    _exact_keys(
        obj,
        {"format", "v", "node_ids", "version", "next_group_id", "next_producer_id", "topics"},
        "snapshot",
    )
    node_ids = obj["node_ids"]
    _require(
        isinstance(node_ids, list) and all(_is_int(n) for n in node_ids),
        "node_ids must be a list of integers",
    )
    try:
        state = ControllerState(node_ids)
    except ValueError as error:
        raise ValueError(f"invalid controller snapshot: {error}") from None
    for key in ("version", "next_group_id", "next_producer_id"):
        _require(_is_int(obj[key]), f"{key} must be an integer")
    _require(obj["version"] >= 0, "version must be >= 0")
    _require(
        FIRST_PARTITION_GROUP_ID <= obj["next_group_id"] <= INT64_MAX,
        f"next_group_id must be >= {FIRST_PARTITION_GROUP_ID}",
    )
    _require(
        FIRST_PRODUCER_ID <= obj["next_producer_id"] <= PRODUCER_ID_MAX + 1,
        f"next_producer_id must be >= {FIRST_PRODUCER_ID}",
    )
    state._version = obj["version"]
    state._next_group_id = obj["next_group_id"]
    state._next_producer_id = obj["next_producer_id"]
    topics = obj["topics"]
    _require(isinstance(topics, list), "topics must be a list")
    for raw in topics:
        meta = _restore_topic(raw, state)
        _require(meta.name not in state._topics, f"topic {meta.name!r} appears twice")
        state._add_topic(meta)
    return state


def _restore_topic(raw: Any, state: ControllerState) -> TopicMeta:
    _exact_keys(
        raw,
        {"name", "topic_id", "internal", "replication_factor", "configs", "partitions"},
        "a topic",
    )
    name, internal = raw["name"], raw["internal"]
    _require(isinstance(name, str), "a topic name must be a string")
    _require(isinstance(internal, bool), f"topic {name!r}: internal must be true or false")
    name_error = topic_name_error(name, internal)
    _require(name_error is None, str(name_error))
    topic_id = raw["topic_id"]
    _require(
        isinstance(topic_id, str) and 0 < len(topic_id) <= 64,
        f"topic {name!r}: topic_id must be a non-empty string",
    )
    rf = raw["replication_factor"]
    _require(
        _is_int(rf) and 1 <= rf <= len(state.node_ids),
        f"topic {name!r}: replication_factor must be from 1 to {len(state.node_ids)}",
    )
    configs = raw["configs"]
    _require(
        isinstance(configs, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in configs.items()),
        f"topic {name!r}: configs must map strings to strings",
    )
    normalized, reason = normalize_configs(configs)
    _require(normalized == configs, f"topic {name!r}: configs are not normalized ({reason})")
    parts = raw["partitions"]
    _require(
        isinstance(parts, list) and 1 <= len(parts) <= PARTITION_COUNT_MAX,
        f"topic {name!r}: partitions must be a list of 1 to {PARTITION_COUNT_MAX}",
    )
    nodes = set(state.node_ids)
    partitions: list[PartitionMeta] = []
    group_ids: set[int] = set()
    for number, part in enumerate(parts):
        where = f"topic {name!r} partition {number}"
        _require(
            isinstance(part, list) and len(part) == 2, f"{where}: must be [group_id, replicas]"
        )
        group_id, replicas = part
        _require(
            _is_int(group_id) and FIRST_PARTITION_GROUP_ID <= group_id < state.next_group_id,
            f"{where}: group id {group_id!r} must be in "
            f"[{FIRST_PARTITION_GROUP_ID}, next_group_id={state.next_group_id})",
        )
        _require(
            group_id not in state._groups and group_id not in group_ids,
            f"{where}: group id {group_id} is used twice",
        )
        _require(
            isinstance(replicas, list)
            and len(replicas) == rf
            and all(_is_int(n) and n in nodes for n in replicas)
            and len(set(replicas)) == rf,
            f"{where}: replicas must be {rf} distinct node ids out of {sorted(nodes)}",
        )
        group_ids.add(group_id)
        partitions.append(PartitionMeta(number, group_id, tuple(replicas)))
    return TopicMeta(
        name=name,
        topic_id=topic_id,
        partitions=tuple(partitions),
        replication_factor=rf,
        configs=types.MappingProxyType(dict(normalized or {})),
        internal=internal,
    )


__all__ = [
    "ApplyResult",
    "COMMAND_VERSION",
    "CONTROLLER_GROUP_ID",
    "ControllerState",
    "FIRST_PARTITION_GROUP_ID",
    "FIRST_PRODUCER_ID",
    "PARTITION_COUNT_MAX",
    "PartitionMeta",
    "TOPIC_CONFIGS",
    "TopicMeta",
    "assign_replicas",
    "encode_add_partitions",
    "encode_allocate_producer_ids",
    "encode_create_topic",
    "encode_delete_topic",
    "normalize_configs",
    "topic_name_error",
]
