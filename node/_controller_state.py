"""The controller's replicated state machine: cluster metadata as a pure function of the log.

Every node applies the committed entries of the controller Raft group (group id 1), in log
order, to a ``ControllerState``. The state is

- ``node_ids``: the cluster's nodes (sorted): ``initial_node_ids`` (the static peer list
  the first nodes start with) and every node that joined since (``register_node``);
- ``node_addresses``: node id -> ``NodeAddress`` (client, peer and Kafka addresses, rack) of
  every node that registered (a joined node; the first nodes' addresses come from each
  node's ``--peers``, and the join answer carries them to a new node);
- ``topics``: name -> ``TopicMeta`` (topic id, the configs set on it (``_topic_configs.py``
  knows every config and its default), and per partition
  its Raft group id and replica list, ``replicas[0]`` being the preferred leader);
- ``next_group_id``: the next Raft group id to hand to a partition. Group id 1 is the
  controller itself; partitions start at 2; ids are never reused, also after a delete;
- ``next_producer_id``: the next idempotent-producer id to hand out (ids start at 1);
- ``version``: the Raft index of the last applied entry;
- ``users``: name -> ``UserCredential`` (SCRAM-SHA-256 salt and keys, never a password);
- ``acls``: the ACLs (``_acl.AclBinding``), a sorted tuple without duplicates; a new tuple
  object whenever it changes (the authorizer's cache key);
- ``quotas``: entity (``User:<name>`` or ``<default>``) -> ``QuotaLimits`` (bytes per
  second per node; 0 = no limit);
- per partition, a move in progress (issue 19): ``target`` (the replica set it moves to;
  empty when none) and ``cancelled`` (the move goes back to ``replicas``). The nodes that
  host a partition are ``replicas`` and ``target`` together, until the partition's leader
  records the move complete (``complete_reassignment``, naming exactly the set it was
  moving to); ``replicas`` then become that set and the others delete their copy;
- ``decommissioning`` and ``removed_nodes``: nodes being drained and nodes drained (they
  get no new replica; a removed node holds none); ``reassign_throttle_bytes_per_s``: what
  catch-up of moving replicas may send per second from each node (0: the nodes'
  default pace, ``_catchup_pacer.DEFAULT_BYTES_PER_S``);
- ``balancer_paused``: the automatic balancer (``_balancer.py``) plans no new move
  (``set_balancer``; moves under way finish).

The entries are commands (``_controller_commands.py``, their byte layout); new partitions
are placed by ``_controller_placement.py``; ``_controller_snapshot.py`` writes and reads the
whole state, and hands what it read to ``ControllerState.restored``, which checks it.

Determinism rules (every node must reach byte-identical state from the same log):

1. ``apply`` reads only its arguments and the state: no clock, no randomness, no I/O, no
   environment, no floats. Topic ids are derived from the entry's index and the name.
2. Iteration never depends on dict or set order: nodes are a sorted tuple, candidates are
   chosen by explicit sort keys that end in the node id, snapshots sort topics by name.
3. A rejected command leaves the state unchanged except ``version`` (the entry was consumed).
   Validation completes before the first mutation, so a bad entry can never half-apply.
4. ``apply`` never raises because of a command's content: every node would crash on the same
   committed entry. It raises only for a caller bug (an index that does not move forward).
5. ``restored`` checks every invariant of the state and raises ``ValueError`` on anything
   else, so a snapshot can never bring in a state that ``apply`` could not have built.

Validation codes (``errors_pb2.ErrorCode``): a bad topic name, partition count or malformed
command is ``INVALID_REQUEST``; an existing name ``TOPIC_EXISTS``; a replication factor above
the node count ``NOT_ENOUGH_REPLICAS``; a bad topic config ``INVALID_CONFIG``; deleting an
unknown topic ``UNKNOWN_TOPIC``. ``add_partitions`` only grows a topic: a total count not
above the current one, or an internal topic (``__consumer_offsets`` maps groups to partitions
by count), is ``INVALID_REQUEST``; an unknown topic ``UNKNOWN_TOPIC``. New partitions get
fresh group ids and the same least-loaded placement as a create, counting every replica the
nodes already hold; existing partitions keep their group ids and replicas.
``alter_topic_configs`` sets configs and returns others to their defaults (Kafka's
IncrementalAlterConfigs): an unknown topic is ``UNKNOWN_TOPIC``; an internal topic or a
config both set and deleted ``INVALID_REQUEST``; an unknown config name or a bad value
``INVALID_CONFIG``; then nothing changes.
``reassign_partition``: an unknown topic ``UNKNOWN_TOPIC``, partition ``UNKNOWN_PARTITION``;
an empty, duplicated or wrong-sized (not the replication factor) set, an unknown,
decommissioning or removed node, the current set again, or a partition already moving
``INVALID_REQUEST``. ``alter_replication_factor`` moves every partition of a topic to
``resized_replicas`` at once (refused while any of them moves, or above the active node
count: ``NOT_ENOUGH_REPLICAS``). ``cancel_reassignment`` of a partition not moving (or
already cancelled) and a ``complete_reassignment`` whose group or set is not the one the
partition moves to (a stale leader's) are ``INVALID_REQUEST``. ``decommission_node``: an
unknown or removed node, or one already decommissioning, is ``INVALID_REQUEST``; leaving
fewer active nodes than some topic's replication factor ``NOT_ENOUGH_REPLICAS``.
``remove_node`` needs a decommissioning node that hosts nothing.
``register_node`` (a node joins): a malformed address or rack, or more than ``NODES_MAX``
nodes, is ``INVALID_REQUEST``; a joining node whose id is in use (a first node's, a removed
node's, or a registered node's with other addresses) ``INVALID_REQUEST`` naming the holder; re-registering an id
with the same addresses is a no-op (a restart; only its rack may change). Node id 0 gets the
next unused id (one above the highest ever known): the result's value is the id.
``put_user``: a bad name or credential is ``INVALID_REQUEST``, an existing user without
``replace`` ``USER_EXISTS``; ``delete_user`` of an unknown user ``UNKNOWN_USER``.
``create_acls``/``delete_acls``: an invalid ACL is ``INVALID_REQUEST`` (none of the
command's ACLs is applied); adding an existing ACL or deleting a missing one changes
nothing. More than ``ACLS_MAX`` ACLs in total is ``INVALID_REQUEST``. ``set_quota`` with a
bad entity or a rate outside 0..``QUOTA_BYTES_PER_S_MAX`` is ``INVALID_REQUEST``.
"""

from __future__ import annotations

import base64
import binascii
import re
import types
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

from raftka.v1 import errors_pb2

from ._acl import AclBinding, acl_error
from ._controller_commands import (
    AlterReplicationFactor,
    CancelDecommission,
    CancelReassignment,
    CompleteReassignment,
    DecommissionNode,
    ReassignPartition,
    RegisterNode,
    RemoveNode,
    SetBalancer,
    SetReassignmentThrottle,
    SetQuota,
    CreateAcls,
    DeleteAcls,
    DeleteUser,
    PutUser,
    AddPartitions,
    AllocateProducerIds,
    AlterTopicConfigs,
    Command,
    CreateTopic,
    DeleteTopic,
    MalformedCommand,
    decode_command,
)
from ._controller_placement import assign_replicas, least_loaded, resized_replicas
from ._topic_configs import (
    DEFAULT_CONFIGS,
    TOPIC_CONFIGS,
    effective_configs,
    normalize_configs,
    unknown_config,
)

CONTROLLER_GROUP_ID: Final = 1
FIRST_PARTITION_GROUP_ID: Final = 2
FIRST_PRODUCER_ID: Final = 1
PRODUCER_ID_MAX: Final = 2**63 - 1  # Kafka's producerId is an int64
PRODUCER_ID_COUNT_MAX: Final = 1_000_000  # per allocation

TOPIC_NAME_LENGTH_MAX: Final = 249
TOPIC_ID_LENGTH_MAX: Final = 64
PARTITION_COUNT_MAX: Final = 10_000
INT64_MAX: Final = 2**63 - 1

USER_NAME_LENGTH_MAX: Final = 255
SCRAM_MECHANISM: Final = "SCRAM-SHA-256"
SCRAM_ITERATIONS_MIN: Final = 4096
SCRAM_ITERATIONS_MAX: Final = 10_000_000
ACLS_MAX: Final = 100_000
QUOTA_DEFAULT_ENTITY: Final = "<default>"
QUOTA_BYTES_PER_S_MAX: Final = 1 << 40
QUOTA_REQUESTS_PER_S_MAX: Final = 1_000_000
QUOTAS_MAX: Final = 100_000
NODES_MAX: Final = 1000
NODE_ID_MAX: Final = 2**31 - 1
ADDRESS_LENGTH_MAX: Final = 255
RACK_LENGTH_MAX: Final = 64
_USER_NAME = re.compile(r"[a-zA-Z0-9._@=+-]{1,255}")

_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
# Topic ids are UUIDs (as in Kafka), derived rather than random: uuid5(namespace, "index:name").
_TOPIC_ID_NAMESPACE: Final = uuid.UUID("6f2d1c3e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")


# ---------------------------------------------------------------------------- value types


class PartitionMeta(NamedTuple):
    partition: int
    group_id: int  # the partition's Raft group; unique in the cluster, never reused
    replicas: tuple[int, ...]  # distinct node ids; replicas[0] is the preferred leader
    target: tuple[int, ...] = ()  # a move in progress: the set it moves to; () if none
    cancelled: bool = False  # the move in progress goes back to ``replicas``

    @property
    def desired(self) -> tuple[int, ...]:
        """The replica set the partition's Raft group is heading for."""
        if not self.target or self.cancelled:
            return self.replicas
        return self.target

    @property
    def hosts(self) -> tuple[int, ...]:
        """Every node that keeps a replica of the partition: the current replicas and,
        during a move, the target's too (sorted)."""
        if not self.target:
            return tuple(sorted(self.replicas))
        return tuple(sorted(set(self.replicas) | set(self.target)))


class TopicMeta(NamedTuple):
    name: str
    topic_id: str  # UUID string; differs between a deleted topic and its re-creation
    partitions: tuple[PartitionMeta, ...]  # partitions[i].partition == i
    replication_factor: int
    configs: Mapping[str, str]  # read-only; the configs set on the topic, normalized
    internal: bool

    def effective_configs(self) -> dict[str, str]:
        """Every known config of the topic: the ones set on it, defaults for the rest."""
        return effective_configs(self.configs)


class NodeAddress(NamedTuple):
    """Where a registered node is reached: what it told the controller when it joined."""
    address: str  # host:port of its client port (peers too, without a peer port)
    peer_address: str = ""  # host:port of its peer port; "" when it has none
    kafka_address: str = ""  # host:port Kafka clients use; "" without a Kafka listener
    rack: str = ""


def node_address_error(addr: NodeAddress) -> str | None:
    """Why ``addr`` cannot be registered, or None."""
    for field, value, required in (("address", addr.address, True),
                                   ("peer_address", addr.peer_address, False),
                                   ("kafka_address", addr.kafka_address, False)):
        if not value and not required:
            continue
        host, sep, port = value.rpartition(":")
        if (len(value) > ADDRESS_LENGTH_MAX or not sep or not host or not port.isdigit()
                or not 0 < int(port) <= 65535 or not value.isprintable() or " " in value):
            return f"{field} must be HOST:PORT (at most {ADDRESS_LENGTH_MAX} characters), " \
                   f"got {value[:300]!r}"
    if len(addr.rack) > RACK_LENGTH_MAX or not addr.rack.isprintable() \
            or addr.rack != addr.rack.strip():
        return f"rack must be printable, without surrounding spaces and at most " \
               f"{RACK_LENGTH_MAX} characters, got {addr.rack[:100]!r}"
    return None


class UserCredential(NamedTuple):
    name: str
    mechanism: str  # SCRAM_MECHANISM
    iterations: int
    salt: str  # base64, at least 16 bytes
    stored_key: str  # base64 of H(HMAC(SaltedPassword, "Client Key")), 32 bytes
    server_key: str  # base64 of HMAC(SaltedPassword, "Server Key"), 32 bytes
    # SCRAM-SHA-512 (Kafka listener), same iteration count, its own salt; "" for users
    # whose password was set before SHA-512 credentials were stored (SHA-256 only)
    sha512_salt: str = ""  # base64, at least 16 bytes
    sha512_stored_key: str = ""  # base64, 64 bytes
    sha512_server_key: str = ""  # base64, 64 bytes


def user_error(user: UserCredential) -> str | None:
    """Why ``user`` is not a valid user record, or None."""
    if not _USER_NAME.fullmatch(user.name):
        return (f"invalid user name {user.name[:100]!r}: use 1 to {USER_NAME_LENGTH_MAX} "
                "characters from a-z, A-Z, 0-9 and . _ @ = + -")
    if user.mechanism != SCRAM_MECHANISM:
        return f"mechanism must be {SCRAM_MECHANISM}, got {user.mechanism[:50]!r}"
    if not SCRAM_ITERATIONS_MIN <= user.iterations <= SCRAM_ITERATIONS_MAX:
        return f"iterations must be from {SCRAM_ITERATIONS_MIN} to {SCRAM_ITERATIONS_MAX}"
    sha512 = (user.sha512_salt, user.sha512_stored_key, user.sha512_server_key)
    if any(sha512) and not all(sha512):
        return "the SCRAM-SHA-512 salt, stored key and server key go together"
    checks = [("salt", 16, 64), ("stored_key", 32, 32), ("server_key", 32, 32)]
    if all(sha512):
        checks += [("sha512_salt", 16, 64), ("sha512_stored_key", 64, 64),
                   ("sha512_server_key", 64, 64)]
    for field, size_min, size_max in checks:
        try:
            raw = base64.b64decode(getattr(user, field), validate=True)
        except (binascii.Error, ValueError):
            return f"{field} must be base64"
        if not size_min <= len(raw) <= size_max:
            return f"{field} must be {size_min} to {size_max} bytes"
    return None


class QuotaLimits(NamedTuple):
    produce_bytes_per_s: int  # 0: no limit
    fetch_bytes_per_s: int
    requests_per_s: int = 0  # every RPC (a stream's items each) of the principal


def quota_error(entity: str, limits: QuotaLimits) -> str | None:
    if entity != QUOTA_DEFAULT_ENTITY and not (
            entity.startswith("User:") and 5 < len(entity) <= 1000):
        return f"quota entity {entity[:100]!r} must be User:<name> or {QUOTA_DEFAULT_ENTITY}"
    for value in limits[:2]:
        if not 0 <= value <= QUOTA_BYTES_PER_S_MAX:
            return f"a quota is 0 (no limit) to {QUOTA_BYTES_PER_S_MAX} bytes per second"
    if not 0 <= limits.requests_per_s <= QUOTA_REQUESTS_PER_S_MAX:
        return f"a request quota is 0 (no limit) to {QUOTA_REQUESTS_PER_S_MAX} requests per second"
    return None


class ApplyResult(NamedTuple):
    ok: bool
    code: int  # errors_pb2.ErrorCode; 0 (ERROR_CODE_UNSPECIFIED) when ok
    message: str
    value: object | None = None  # the created/grown TopicMeta, or the first producer id


# ---------------------------------------------------------------------------- topic rules


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


# ---------------------------------------------------------------------------- the state


class ControllerState:
    """Cluster metadata, changed only by ``apply`` (or built whole by ``restored``).

    Invariants (checked by ``restored``, kept by ``apply``):
    - ``version`` never decreases;
    - every partition's replicas are ``replication_factor`` distinct members of ``node_ids``,
      except during a move started by ``alter_replication_factor`` (the replicas keep the
      old size; the target has the new one); a move's target is ``replication_factor``
      distinct nodes; only a moving partition is ``cancelled``;
    - a removed node hosts no partition;
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
        self._node_ids: tuple[int, ...] = nodes  # the initial ones and the registered ones
        self._initial_ids: tuple[int, ...] = nodes  # never changes
        self._addresses: dict[int, NodeAddress] = {}  # registered nodes only
        self._topics: dict[str, TopicMeta] = {}
        # group id -> (topic name, partition); derived from _topics
        self._groups: dict[int, tuple[str, int]] = {}
        # node -> how many partition replicas / preferred leaderships it holds; derived
        self._replica_counts: dict[int, int] = {n: 0 for n in nodes}
        self._leader_counts: dict[int, int] = {n: 0 for n in nodes}
        self._next_group_id = FIRST_PARTITION_GROUP_ID  # never decreases
        self._next_producer_id = FIRST_PRODUCER_ID  # never decreases
        self._version = 0  # index of the last applied entry; never decreases
        # Derived views the controller leader's periodic passes read several times a
        # second: computed on demand, dropped whenever an entry has been applied (a view
        # computed while an entry applies may predate its change).
        self._reassignments_cache: list[tuple[TopicMeta, PartitionMeta]] | None = None
        self._loads_cache: dict[int, int] | None = None
        self._users: dict[str, UserCredential] = {}
        self._acls: tuple[AclBinding, ...] = ()  # sorted, distinct; replaced on change
        self._quotas: dict[str, QuotaLimits] = {}
        self._decommissioning: frozenset[int] = frozenset()
        self._removed: frozenset[int] = frozenset()
        self._reassign_throttle = 0  # bytes/s per node; 0: the default pace
        self._balancer_paused = False

    # -- read-only views

    @property
    def node_ids(self) -> tuple[int, ...]:
        return self._node_ids

    @property
    def initial_node_ids(self) -> tuple[int, ...]:
        """The nodes the cluster started with (the ``--peers`` of its first nodes); a node
        that joins starts its controller state from these to replay the log from its start."""
        return self._initial_ids

    @property
    def node_addresses(self) -> Mapping[str, NodeAddress]:
        """Node id -> addresses of every registered (joined) node."""
        return types.MappingProxyType(self._addresses)

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

    @property
    def users(self) -> Mapping[str, UserCredential]:
        return types.MappingProxyType(self._users)

    @property
    def acls(self) -> tuple[AclBinding, ...]:
        return self._acls

    @property
    def quotas(self) -> Mapping[str, QuotaLimits]:
        return types.MappingProxyType(self._quotas)

    @property
    def decommissioning(self) -> frozenset[int]:
        return self._decommissioning

    @property
    def removed_nodes(self) -> frozenset[int]:
        return self._removed

    @property
    def active_node_ids(self) -> tuple[int, ...]:
        """Nodes that may get new replicas: neither decommissioning nor removed."""
        gone = self._decommissioning | self._removed
        return tuple(n for n in self._node_ids if n not in gone)

    @property
    def reassign_throttle_bytes_per_s(self) -> int:
        return self._reassign_throttle

    @property
    def balancer_paused(self) -> bool:
        return self._balancer_paused

    def node_state(self, node_id: int) -> str:
        if node_id in self._removed:
            return "removed"
        if node_id in self._decommissioning:
            return "decommissioning"
        return "active"

    def reassignments(self) -> list[tuple[TopicMeta, PartitionMeta]]:
        """Partitions with a move in progress, by topic name then partition. Computed once
        per applied entry: the reassignment driver asks five times a second, and a walk of
        every partition each time was a visible part of an idle node's CPU."""
        moves = self._reassignments_cache
        if moves is None:
            moves = self._reassignments_cache = [
                (meta, part) for meta in self.topics_sorted() for part in meta.partitions
                if part.target]
        return list(moves)

    def host_loads(self) -> dict[int, int]:
        """Node id -> partitions it hosts (moves in progress counted on both sides).
        Computed once per applied entry (a decommission's planning reads it five times a
        second on the controller leader: 28% of its CPU when walked each time at 10,000
        partitions); the caller gets its own copy."""
        loads = self._loads_cache
        if loads is None:
            loads = {n: 0 for n in self._node_ids}
            for meta in self._topics.values():
                for part in meta.partitions:
                    for n in part.hosts:
                        loads[n] += 1
            self._loads_cache = loads
        return dict(loads)

    def plan_moves_off(self, node_id: int, limit: int) -> list[tuple[str, int, tuple[int, ...]]]:
        """Up to ``limit`` moves (topic, partition, new replicas) that take replicas off
        ``node_id``, counting the moves already in progress against ``limit``: each
        partition on it that is not moving gets the least-loaded active node it lacks in
        its place (appended last, so another replica becomes the preferred leader).
        Partitions for which no active node is free are skipped."""
        busy = sum(1 for _, part in self.reassignments() if node_id in part.hosts)
        if busy >= limit:
            return []
        loads = self.host_loads()
        active = self.active_node_ids
        moves: list[tuple[str, int, tuple[int, ...]]] = []
        for meta in self.topics_sorted():
            for part in meta.partitions:
                if busy + len(moves) >= limit:
                    return moves
                if part.target or node_id not in part.replicas:
                    continue
                spare = [n for n in active if n not in part.replicas]
                pick = least_loaded(spare, 1, loads)
                if not pick:
                    continue
                loads[pick[0]] += 1
                moves.append((meta.name, part.partition,
                              tuple(n for n in part.replicas if n != node_id) + (pick[0],)))
        return moves

    def hosts_anything(self, node_id: int) -> bool:
        return self.host_loads().get(node_id, 0) > 0

    def topic(self, name: str) -> TopicMeta | None:
        return self._topics.get(name)

    def topics_sorted(self) -> list[TopicMeta]:
        return [self._topics[name] for name in sorted(self._topics)]

    def partitions_on(self, node_id: int) -> list[tuple[TopicMeta, PartitionMeta]]:
        """The partitions ``node_id`` must host (during a move: also as a target), by
        topic name then partition."""
        return [
            (meta, part)
            for meta in self.topics_sorted()
            for part in meta.partitions
            if node_id in part.replicas or node_id in part.target
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
        try:
            return self._apply(index, command)
        finally:
            self._reassignments_cache = self._loads_cache = None

    def _apply(self, index: int, command: bytes) -> ApplyResult:
        if not isinstance(index, int) or isinstance(index, bool) or index <= self._version:
            raise ValueError(
                f"apply index {index!r} must be greater than version {self._version}: "
                "entries are applied once, in log order"
            )
        self._version = index
        validated = self._validate(command)
        if isinstance(validated, ApplyResult):
            return validated
        if isinstance(validated, CreateTopic):
            return self._create_topic(index, validated)
        if isinstance(validated, DeleteTopic):
            return self._delete_topic(validated)
        if isinstance(validated, AddPartitions):
            return self._add_partitions(validated)
        if isinstance(validated, AlterTopicConfigs):
            return self._alter_topic_configs(validated)
        if isinstance(validated, PutUser):
            return self._put_user(validated)
        if isinstance(validated, DeleteUser):
            return self._delete_user(validated)
        if isinstance(validated, CreateAcls):
            return self._create_acls(validated)
        if isinstance(validated, DeleteAcls):
            return self._delete_acls(validated)
        if isinstance(validated, SetQuota):
            return self._set_quota(validated)
        if isinstance(validated, ReassignPartition):
            return self._reassign(validated)
        if isinstance(validated, CancelReassignment):
            return self._cancel_reassignment(validated)
        if isinstance(validated, CompleteReassignment):
            return self._complete_reassignment(validated)
        if isinstance(validated, AlterReplicationFactor):
            return self._alter_replication_factor(validated)
        if isinstance(validated, SetReassignmentThrottle):
            self._reassign_throttle = validated.bytes_per_s
            return _ok(f"reassignment throttle: {validated.bytes_per_s} B/s per node "
                       "(0: the default pace)")
        if isinstance(validated, SetBalancer):
            self._balancer_paused = validated.paused
            return _ok(f"the balancer is {'paused' if validated.paused else 'running'}")
        if isinstance(validated, DecommissionNode):
            self._decommissioning = self._decommissioning | {validated.node_id}
            return _ok(f"node {validated.node_id} is decommissioning")
        if isinstance(validated, CancelDecommission):
            self._decommissioning = self._decommissioning - {validated.node_id}
            return _ok(f"node {validated.node_id} is active again")
        if isinstance(validated, RegisterNode):
            return self._register_node(validated)
        if isinstance(validated, RemoveNode):
            self._decommissioning = self._decommissioning - {validated.node_id}
            self._removed = self._removed | {validated.node_id}
            return _ok(f"node {validated.node_id} is removed")
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

    def _validate(self, command: bytes) -> Command | ApplyResult:
        """The command to apply (create_topic's configs normalized), or the result that
        rejects it (or the no-op's)."""
        if not isinstance(command, (bytes, bytearray, memoryview)):
            return _error(errors_pb2.INVALID_REQUEST, f"a command is bytes, got {type(command)}")
        if len(command) == 0:
            return _ok("no-op")
        try:
            decoded = decode_command(command)
            if isinstance(decoded, CreateTopic):
                return self._validate_create_topic(decoded)
            if isinstance(decoded, DeleteTopic):
                return self._validate_delete_topic(decoded)
            if isinstance(decoded, AddPartitions):
                return self._validate_add_partitions(decoded)
            if isinstance(decoded, AlterTopicConfigs):
                return self._validate_alter_topic_configs(decoded)
            if isinstance(decoded, PutUser):
                return self._validate_put_user(decoded)
            if isinstance(decoded, DeleteUser):
                if decoded.name not in self._users:
                    return _error(errors_pb2.UNKNOWN_USER,
                                  f"unknown user {decoded.name[:300]!r}")
                return decoded
            if isinstance(decoded, (CreateAcls, DeleteAcls)):
                return self._validate_acls(decoded)
            if isinstance(decoded, SetQuota):
                reason = quota_error(decoded.entity, QuotaLimits(
                    decoded.produce_bytes_per_s, decoded.fetch_bytes_per_s,
                    decoded.requests_per_s))
                if reason is not None:
                    return _error(errors_pb2.INVALID_REQUEST, reason)
                if decoded.entity not in self._quotas and len(self._quotas) >= QUOTAS_MAX:
                    return _error(errors_pb2.INVALID_REQUEST, f"at most {QUOTAS_MAX} quotas")
                return decoded
            if isinstance(decoded, (ReassignPartition, CancelReassignment,
                                    CompleteReassignment, AlterReplicationFactor)):
                return self._validate_move(decoded)
            if isinstance(decoded, SetReassignmentThrottle):
                if not 0 <= decoded.bytes_per_s <= QUOTA_BYTES_PER_S_MAX:
                    return _error(errors_pb2.INVALID_REQUEST,
                                  "the reassignment throttle is 0 (the default pace) to "
                                  f"{QUOTA_BYTES_PER_S_MAX} bytes per second")
                return decoded
            if isinstance(decoded, (DecommissionNode, CancelDecommission, RemoveNode)):
                return self._validate_node_change(decoded)
            if isinstance(decoded, RegisterNode):
                return self._validate_register_node(decoded)
            if isinstance(decoded, SetBalancer):
                return decoded
            return self._validate_allocate_producer_ids(decoded)
        except MalformedCommand as error:
            return _error(errors_pb2.INVALID_REQUEST, f"malformed controller command: {error}")
        except Exception as error:  # a bug in validation; must not take every node down
            return _error(errors_pb2.INTERNAL_ERROR, f"controller command rejected: {error!r}")

    def _validate_create_topic(self, cmd: CreateTopic) -> CreateTopic | ApplyResult:
        name, partitions, replication_factor = cmd.name, cmd.partitions, cmd.replication_factor
        name_error = topic_name_error(name, cmd.internal)
        if name_error is not None:
            return _error(errors_pb2.INVALID_REQUEST, name_error)
        if name in self._topics:
            return _error(errors_pb2.TOPIC_EXISTS, f"topic {name!r} already exists")
        if not 1 <= partitions <= PARTITION_COUNT_MAX:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"partitions must be from 1 to {PARTITION_COUNT_MAX}, got {partitions}",
            )
        node_count = len(self.active_node_ids)
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
        configs, reason = normalize_configs(cmd.configs)
        if configs is None:
            return _error(errors_pb2.INVALID_CONFIG, reason)
        if self._next_group_id + partitions > INT64_MAX:
            return _error(errors_pb2.INVALID_REQUEST, "raft group ids exhausted")
        return cmd._replace(configs=configs)

    def _validate_move(self, cmd: ReassignPartition | CancelReassignment | CompleteReassignment
                       | AlterReplicationFactor) -> Command | ApplyResult:
        meta = self._topics.get(cmd.name)
        if meta is None:
            return _error(errors_pb2.UNKNOWN_TOPIC, f"unknown topic {cmd.name[:300]!r}")
        if isinstance(cmd, AlterReplicationFactor):
            rf = cmd.replication_factor
            active = len(self.active_node_ids)
            moving = [p.partition for p in meta.partitions if p.target]
            if moving:
                return _error(errors_pb2.INVALID_REQUEST, f"topic {cmd.name!r} has partitions "
                              f"moving ({moving[:10]}); wait for them or cancel them first")
            if rf < 1:
                return _error(errors_pb2.INVALID_REQUEST,
                              f"replication factor must be at least 1, got {rf}")
            if rf > active:
                return _error(errors_pb2.NOT_ENOUGH_REPLICAS, f"replication factor {rf} is "
                              f"more than the {active} active node(s) in the cluster")
            if rf == meta.replication_factor:
                return _error(errors_pb2.INVALID_REQUEST, f"topic {cmd.name!r} already has "
                              f"replication factor {rf}")
            return cmd
        if not 0 <= cmd.partition < len(meta.partitions):
            return _error(errors_pb2.UNKNOWN_PARTITION, f"topic {cmd.name!r} has partitions "
                          f"0..{len(meta.partitions) - 1}; partition {cmd.partition} does not "
                          "exist")
        part = meta.partitions[cmd.partition]
        where = f"{cmd.name}/{cmd.partition}"
        if isinstance(cmd, CancelReassignment):
            if not part.target:
                return _error(errors_pb2.INVALID_REQUEST, f"{where} is not moving")
            if part.cancelled:
                return _error(errors_pb2.INVALID_REQUEST, f"the move of {where} is already "
                              "cancelled")
            return cmd
        if isinstance(cmd, CompleteReassignment):
            if cmd.group_id != part.group_id or not part.target or \
                    cmd.replicas != part.desired:
                return _error(errors_pb2.INVALID_REQUEST, f"{where} is not moving to "
                              f"{list(cmd.replicas)} in group {cmd.group_id} (a stale report)")
            return cmd
        replicas = cmd.replicas
        if not replicas:
            return _error(errors_pb2.INVALID_REQUEST, "the new replica set is empty")
        if len(set(replicas)) != len(replicas):
            return _error(errors_pb2.INVALID_REQUEST,
                          f"the new replica set {list(replicas)} names a node twice")
        for n in replicas:
            if n not in self._node_ids:
                return _error(errors_pb2.INVALID_REQUEST, f"unknown node {n}; the cluster's "
                              f"nodes are {list(self._node_ids)}")
            if n in self._removed or n in self._decommissioning:
                return _error(errors_pb2.INVALID_REQUEST, f"node {n} is {self.node_state(n)} "
                              "and takes no new replicas")
        if len(replicas) != meta.replication_factor:
            return _error(errors_pb2.INVALID_REQUEST, f"topic {cmd.name!r} has replication "
                          f"factor {meta.replication_factor}; name that many replicas (change "
                          "the factor with alter-rf)")
        if part.target:
            return _error(errors_pb2.INVALID_REQUEST, f"{where} is already moving from "
                          f"{list(part.replicas)} to {list(part.target)}; wait for it or cancel "
                          "it first")
        if replicas == part.replicas:
            return _error(errors_pb2.INVALID_REQUEST, f"{where} already has replicas "
                          f"{list(replicas)}")
        return cmd

    def _validate_node_change(self, cmd: DecommissionNode | CancelDecommission | RemoveNode
                              ) -> Command | ApplyResult:
        node = cmd.node_id
        if node not in self._node_ids:
            return _error(errors_pb2.INVALID_REQUEST, f"unknown node {node}; the cluster's "
                          f"nodes are {list(self._node_ids)}")
        if node in self._removed:
            return _error(errors_pb2.INVALID_REQUEST, f"node {node} is already removed")
        if isinstance(cmd, DecommissionNode):
            if node in self._decommissioning:
                return _error(errors_pb2.INVALID_REQUEST,
                              f"node {node} is already decommissioning")
            remaining = len(self.active_node_ids) - 1
            need = max((m.replication_factor for m in self._topics.values()), default=1)
            if remaining < max(need, 1):
                return _error(errors_pb2.NOT_ENOUGH_REPLICAS, f"no node could take node "
                              f"{node}'s replicas: {remaining} active node(s) would be left and "
                              f"a topic has replication factor {need}")
            return cmd
        if node not in self._decommissioning:
            return _error(errors_pb2.INVALID_REQUEST, f"node {node} is not decommissioning")
        if isinstance(cmd, RemoveNode) and self.hosts_anything(node):
            return _error(errors_pb2.INVALID_REQUEST, f"node {node} still hosts replicas")
        return cmd

    def _validate_register_node(self, cmd: RegisterNode) -> RegisterNode | ApplyResult:
        node = cmd.node_id
        if not 0 <= node <= NODE_ID_MAX:
            return _error(errors_pb2.INVALID_REQUEST, f"a node id is from 1 to {NODE_ID_MAX} "
                          f"(0: let the controller pick one), got {node}")
        addr = NodeAddress(cmd.address, cmd.peer_address, cmd.kafka_address, cmd.rack)
        reason = node_address_error(addr)
        if reason is not None:
            return _error(errors_pb2.INVALID_REQUEST, reason)
        if node == 0:  # the same node asking again (its answer was lost): its id
            for other, known in sorted(self._addresses.items()):
                if known[:3] == addr[:3]:
                    return cmd._replace(node_id=other)
        if node == 0 and max(self._node_ids) >= NODE_ID_MAX:
            return _error(errors_pb2.INVALID_REQUEST, "node ids exhausted; join with an --id")
        if node in self._removed:
            return _error(errors_pb2.INVALID_REQUEST, f"node id {node} belonged to a node "
                          "that was removed from the cluster; ids are never reused: join with "
                          "another --id, or none to let the controller pick one")
        current = self._addresses.get(node)
        if current is not None:
            if current[:3] == addr[:3]:
                return cmd  # a restart: the same node again
            return _error(errors_pb2.INVALID_REQUEST, f"node id {node} is in use by the "
                          f"node at {current.address}; join with another --id, or none to "
                          "let the controller pick one")
        if node in self._node_ids:
            return _error(errors_pb2.INVALID_REQUEST, f"node id {node} is in use by one of "
                          f"the cluster's first nodes {list(self._initial_ids)}; join with "
                          "another --id, or none to let the controller pick one")
        if len(self._node_ids) >= NODES_MAX:
            return _error(errors_pb2.INVALID_REQUEST, f"at most {NODES_MAX} nodes in a cluster")
        for other, known in self._addresses.items():
            if other != node and known.address == addr.address:
                return _error(errors_pb2.INVALID_REQUEST, f"address {addr.address} is node "
                              f"{other}'s; give this node its own --advertise address")
        return cmd

    def _register_node(self, cmd: RegisterNode) -> ApplyResult:
        node = cmd.node_id or max(self._node_ids) + 1
        addr = NodeAddress(cmd.address, cmd.peer_address, cmd.kafka_address, cmd.rack)
        existed = node in self._addresses
        self._addresses[node] = addr
        if node not in self._node_ids:
            self._node_ids = tuple(sorted(self._node_ids + (node,)))
            self._replica_counts[node] = 0
            self._leader_counts[node] = 0
        return _ok(f"node {node} {'re-registered' if existed else 'joined'} at {addr.address}",
                   node)

    def _validate_delete_topic(self, cmd: DeleteTopic) -> DeleteTopic | ApplyResult:
        name = cmd.name
        meta = self._topics.get(name)
        if meta is None:
            return _error(errors_pb2.UNKNOWN_TOPIC, f"unknown topic {name[:300]!r}")
        if meta.internal and not cmd.internal:
            return _error(
                errors_pb2.INVALID_REQUEST, f"topic {name!r} is internal and cannot be deleted"
            )
        return cmd

    def _validate_add_partitions(self, cmd: AddPartitions) -> AddPartitions | ApplyResult:
        name, partitions = cmd.name, cmd.partitions
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
        if meta.replication_factor > len(self.active_node_ids):
            return _error(errors_pb2.NOT_ENOUGH_REPLICAS, f"replication factor "
                          f"{meta.replication_factor} is more than the "
                          f"{len(self.active_node_ids)} active node(s)")
        return cmd

    def _validate_alter_topic_configs(
        self, cmd: AlterTopicConfigs
    ) -> AlterTopicConfigs | ApplyResult:
        """The command with ``set`` normalized, or the error that rejects it whole."""
        name = cmd.name
        meta = self._topics.get(name)
        if meta is None:
            return _error(errors_pb2.UNKNOWN_TOPIC, f"unknown topic {name[:300]!r}")
        if meta.internal:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"topic {name!r} is internal; its configs cannot change",
            )
        both = sorted(set(cmd.set) & set(cmd.delete))
        if both:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"config {both[0][:100]!r} is both set and deleted; do one or the other",
            )
        for key in sorted(cmd.delete):
            if key not in TOPIC_CONFIGS:
                return _error(errors_pb2.INVALID_CONFIG, unknown_config(key))
        normalized, reason = normalize_configs(cmd.set)
        if normalized is None:
            return _error(errors_pb2.INVALID_CONFIG, reason)
        return cmd._replace(set=normalized)

    def _validate_allocate_producer_ids(
        self, cmd: AllocateProducerIds
    ) -> AllocateProducerIds | ApplyResult:
        count = cmd.count
        if not 1 <= count <= PRODUCER_ID_COUNT_MAX:
            return _error(
                errors_pb2.INVALID_REQUEST,
                f"producer id count must be from 1 to {PRODUCER_ID_COUNT_MAX}, got {count}",
            )
        if self._next_producer_id + count - 1 > PRODUCER_ID_MAX:
            return _error(errors_pb2.INVALID_REQUEST, "producer ids exhausted")
        return cmd

    def _validate_put_user(self, cmd: PutUser) -> PutUser | ApplyResult:
        reason = user_error(UserCredential(cmd.name, cmd.mechanism, cmd.iterations, cmd.salt,
                                           cmd.stored_key, cmd.server_key, *cmd.sha512))
        if reason is not None:
            return _error(errors_pb2.INVALID_REQUEST, reason)
        if cmd.name in self._users and not cmd.replace:
            return _error(errors_pb2.USER_EXISTS, f"user {cmd.name!r} already exists; "
                          "replace its password to change it")
        return cmd

    def _validate_acls(self, cmd: CreateAcls | DeleteAcls) -> CreateAcls | DeleteAcls | ApplyResult:
        if not cmd.acls:
            return _error(errors_pb2.INVALID_REQUEST, "the command names no ACL")
        for fields in cmd.acls:
            reason = acl_error(AclBinding(*fields))
            if reason is not None:
                return _error(errors_pb2.INVALID_REQUEST, f"invalid ACL: {reason}")
        if isinstance(cmd, CreateAcls) and len(set(self._acls) | set(
                AclBinding(*f) for f in cmd.acls)) > ACLS_MAX:
            return _error(errors_pb2.INVALID_REQUEST, f"at most {ACLS_MAX} ACLs in a cluster")
        return cmd

    # -- mutations: called only after validation succeeded; they cannot fail

    def _put_user(self, cmd: PutUser) -> ApplyResult:
        existed = cmd.name in self._users
        self._users[cmd.name] = UserCredential(cmd.name, cmd.mechanism, cmd.iterations,
                                               cmd.salt, cmd.stored_key, cmd.server_key,
                                               *cmd.sha512)
        return _ok(f"{'changed the password of' if existed else 'created'} user {cmd.name!r}")

    def _delete_user(self, cmd: DeleteUser) -> ApplyResult:
        del self._users[cmd.name]
        return _ok(f"deleted user {cmd.name!r}")

    def _create_acls(self, cmd: CreateAcls) -> ApplyResult:
        new = set(AclBinding(*f) for f in cmd.acls) - set(self._acls)
        if new:
            self._acls = tuple(sorted(set(self._acls) | new))
        return _ok(f"added {len(new)} ACL(s)", len(new))

    def _set_quota(self, cmd: SetQuota) -> ApplyResult:
        limits = QuotaLimits(cmd.produce_bytes_per_s, cmd.fetch_bytes_per_s, cmd.requests_per_s)
        if limits == (0, 0, 0):
            self._quotas.pop(cmd.entity, None)
            return _ok(f"removed the quota of {cmd.entity}")
        self._quotas[cmd.entity] = limits
        return _ok(f"quota of {cmd.entity}: produce {limits[0]} B/s, fetch {limits[1]} B/s, "
                   f"{limits[2]} requests/s (0: no limit)")

    def _delete_acls(self, cmd: DeleteAcls) -> ApplyResult:
        gone = set(AclBinding(*f) for f in cmd.acls) & set(self._acls)
        if gone:
            self._acls = tuple(a for a in self._acls if a not in gone)
        return _ok(f"deleted {len(gone)} ACL(s)", len(gone))

    def _reassign(self, cmd: ReassignPartition) -> ApplyResult:
        meta = self._topics[cmd.name]
        part = meta.partitions[cmd.partition]
        self._set_partition(meta, part._replace(target=cmd.replicas, cancelled=False))
        return _ok(f"{cmd.name}/{cmd.partition} moves from {list(part.replicas)} to "
                   f"{list(cmd.replicas)}")

    def _cancel_reassignment(self, cmd: CancelReassignment) -> ApplyResult:
        meta = self._topics[cmd.name]
        part = meta.partitions[cmd.partition]
        self._set_partition(meta, part._replace(cancelled=True))
        return _ok(f"the move of {cmd.name}/{cmd.partition} to {list(part.target)} is "
                   f"cancelled; it goes back to {list(part.replicas)}")

    def _complete_reassignment(self, cmd: CompleteReassignment) -> ApplyResult:
        meta = self._topics[cmd.name]
        part = meta.partitions[cmd.partition]
        self._leader_counts[part.replicas[0]] -= 1
        for n in part.replicas:
            self._replica_counts[n] -= 1
        done = part._replace(replicas=cmd.replicas, target=(), cancelled=False)
        self._leader_counts[done.replicas[0]] += 1
        for n in done.replicas:
            self._replica_counts[n] += 1
        self._set_partition(meta, done)
        return _ok(f"{cmd.name}/{cmd.partition} now has replicas {list(done.replicas)}")

    def _alter_replication_factor(self, cmd: AlterReplicationFactor) -> ApplyResult:
        meta = self._topics[cmd.name]
        loads = self.host_loads()
        active = self.active_node_ids
        parts = []
        for part in meta.partitions:
            target = resized_replicas(part.replicas, cmd.replication_factor, active, loads)
            for n in set(target) - set(part.replicas):
                loads[n] += 1
            parts.append(part._replace(target=target, cancelled=False))
        altered = meta._replace(partitions=tuple(parts),
                                replication_factor=cmd.replication_factor)
        self._topics[cmd.name] = altered
        return _ok(f"topic {cmd.name!r} moves to replication factor {cmd.replication_factor}",
                   altered)

    def _set_partition(self, meta: TopicMeta, part: PartitionMeta) -> None:
        parts = list(meta.partitions)
        parts[part.partition] = part
        self._topics[meta.name] = meta._replace(partitions=tuple(parts))

    def _create_topic(self, index: int, cmd: CreateTopic) -> ApplyResult:
        assignment = assign_replicas(
            self.active_node_ids,
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

    def _delete_topic(self, cmd: DeleteTopic) -> ApplyResult:
        meta = self._topics.pop(cmd.name)
        for part in meta.partitions:
            del self._groups[part.group_id]
            self._leader_counts[part.replicas[0]] -= 1
            for node in part.replicas:
                self._replica_counts[node] -= 1
        return _ok(f"deleted topic {cmd.name!r}", meta)

    def _add_partitions(self, cmd: AddPartitions) -> ApplyResult:
        meta = self._topics[cmd.name]
        current = len(meta.partitions)
        added = cmd.partitions - current
        assignment = assign_replicas(
            self.active_node_ids,
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

    def _alter_topic_configs(self, cmd: AlterTopicConfigs) -> ApplyResult:
        meta = self._topics[cmd.name]
        configs = {k: v for k, v in meta.configs.items() if k not in cmd.delete}
        configs.update(cmd.set)
        altered = meta._replace(configs=types.MappingProxyType(dict(sorted(configs.items()))))
        self._topics[cmd.name] = altered
        changes = [f"{k}={v}" for k, v in sorted(cmd.set.items())]
        changes += [f"{k} to its default" for k in sorted(set(cmd.delete))]
        return _ok(f"topic {cmd.name!r}: set {', '.join(changes) or 'nothing'}", altered)

    def _allocate_producer_ids(self, cmd: AllocateProducerIds) -> ApplyResult:
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


    # -- restoring (from a snapshot)

    @classmethod
    def restored(
        cls,
        node_ids: Sequence[int],
        *,
        version: int,
        next_group_id: int,
        next_producer_id: int,
        topics: Iterable[TopicMeta],
        users: Iterable[UserCredential] = (),
        acls: Iterable[AclBinding] = (),
        quotas: Mapping[str, QuotaLimits] | None = None,
        decommissioning: Iterable[int] = (),
        removed_nodes: Iterable[int] = (),
        reassign_throttle_bytes_per_s: int = 0,
        initial_node_ids: Sequence[int] | None = None,
        node_addresses: Mapping[int, NodeAddress] | None = None,
        balancer_paused: bool = False,
    ) -> ControllerState:
        """The state with these parts, after checking every invariant ``apply`` keeps.

        Raises ValueError naming the first part that breaks one: a node list, counter,
        topic name, topic id, replication factor, config, group id or replica list that
        ``apply`` could not have produced. ``_controller_snapshot.py`` checks the layout
        and types; this checks the values.
        """
        initial = tuple(sorted(initial_node_ids if initial_node_ids is not None else node_ids))
        state = cls(initial)
        addresses = dict(node_addresses or {})
        joined = sorted(set(node_ids) - set(initial))
        _check(set(initial) <= set(node_ids), "initial_node_ids must be cluster nodes")
        _check(set(joined) <= set(addresses) and set(addresses) <= set(node_ids),
               "every joined node, and only cluster nodes, have registered addresses")
        _check(len(node_ids) == len(set(node_ids)) and len(node_ids) <= NODES_MAX
               and all(isinstance(n, int) and 0 < n <= NODE_ID_MAX for n in node_ids),
               f"node_ids must be at most {NODES_MAX} distinct ids from 1 to {NODE_ID_MAX}")
        for node, addr in sorted(addresses.items()):
            reason = node_address_error(addr)
            _check(reason is None, f"node {node}: {reason}")
        state._node_ids = tuple(sorted(node_ids))
        state._addresses = addresses
        for node in joined:
            state._replica_counts[node] = 0
            state._leader_counts[node] = 0
        _check(version >= 0, "version must be >= 0")
        _check(
            FIRST_PARTITION_GROUP_ID <= next_group_id <= INT64_MAX,
            f"next_group_id must be >= {FIRST_PARTITION_GROUP_ID}",
        )
        _check(
            FIRST_PRODUCER_ID <= next_producer_id <= PRODUCER_ID_MAX + 1,
            f"next_producer_id must be >= {FIRST_PRODUCER_ID}",
        )
        state._version = version
        decommissioning = frozenset(decommissioning)
        removed = frozenset(removed_nodes)
        _check(decommissioning <= set(state._node_ids) and removed <= set(state._node_ids)
               and not decommissioning & removed,
               "decommissioning and removed nodes must be distinct cluster nodes")
        _check(0 <= reassign_throttle_bytes_per_s <= QUOTA_BYTES_PER_S_MAX,
               "reassign_throttle_bytes_per_s out of range")
        state._decommissioning = decommissioning
        state._removed = removed
        state._reassign_throttle = reassign_throttle_bytes_per_s
        _check(isinstance(balancer_paused, bool), "balancer_paused must be true or false")
        state._balancer_paused = balancer_paused
        state._next_group_id = next_group_id
        state._next_producer_id = next_producer_id
        for meta in topics:
            checked = state._checked_topic(meta)
            _check(checked.name not in state._topics, f"topic {checked.name!r} appears twice")
            state._add_topic(checked)
        for user in users:
            reason = user_error(user)
            _check(reason is None, f"user {user.name[:100]!r}: {reason}")
            _check(user.name not in state._users, f"user {user.name!r} appears twice")
            state._users[user.name] = user
        acl_list = list(acls)
        for acl in acl_list:
            reason = acl_error(acl)
            _check(reason is None, f"ACL {acl.describe()[:300]}: {reason}")
        _check(acl_list == sorted(set(acl_list)), "ACLs must be sorted and distinct")
        state._acls = tuple(acl_list)
        for entity, limits in (quotas or {}).items():
            reason = quota_error(entity, limits)
            _check(reason is None and tuple(limits) not in ((0, 0), (0, 0, 0)), f"quota of {entity[:100]!r}: "
                   f"{reason or 'an entry without a limit'}")
            state._quotas[entity] = QuotaLimits(*limits)
        for node in sorted(removed):
            _check(not state.hosts_anything(node), f"removed node {node} hosts replicas")
        return state

    def _checked_topic(self, meta: TopicMeta) -> TopicMeta:
        """``meta`` with read-only normalized configs, if it fits this state beside the
        topics added so far; else ValueError."""
        name = meta.name
        name_error = topic_name_error(name, meta.internal)
        _check(name_error is None, str(name_error))
        _check(
            0 < len(meta.topic_id) <= TOPIC_ID_LENGTH_MAX,
            f"topic {name!r}: topic_id must be a non-empty string",
        )
        rf = meta.replication_factor
        _check(
            1 <= rf <= len(self._node_ids),
            f"topic {name!r}: replication_factor must be from 1 to {len(self._node_ids)}",
        )
        configs = dict(meta.configs)
        normalized, reason = normalize_configs(configs)
        _check(normalized == configs, f"topic {name!r}: configs are not normalized ({reason})")
        _check(
            1 <= len(meta.partitions) <= PARTITION_COUNT_MAX,
            f"topic {name!r}: partitions must be a list of 1 to {PARTITION_COUNT_MAX}",
        )
        nodes = set(self._node_ids)
        group_ids: set[int] = set()
        for number, part in enumerate(meta.partitions):
            where = f"topic {name!r} partition {number}"
            _check(part.partition == number, f"{where}: numbered {part.partition}")
            group_id, replicas = part.group_id, part.replicas
            _check(
                FIRST_PARTITION_GROUP_ID <= group_id < self._next_group_id,
                f"{where}: group id {group_id!r} must be in "
                f"[{FIRST_PARTITION_GROUP_ID}, next_group_id={self._next_group_id})",
            )
            _check(
                group_id not in self._groups and group_id not in group_ids,
                f"{where}: group id {group_id} is used twice",
            )
            size = len(replicas) if part.target else rf
            _check(
                len(replicas) == size and all(n in nodes for n in replicas)
                and len(set(replicas)) == size and size >= 1,
                f"{where}: replicas must be {size} distinct node ids out of {sorted(nodes)}",
            )
            target = part.target
            _check(
                not target or (len(target) == rf and len(set(target)) == rf
                               and all(n in nodes for n in target)),
                f"{where}: a move's target must be {rf} distinct node ids out of "
                f"{sorted(nodes)}",
            )
            _check(target or not part.cancelled, f"{where}: only a move can be cancelled")
            group_ids.add(group_id)
        return meta._replace(configs=types.MappingProxyType(configs))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


__all__ = [
    "ApplyResult",
    "CONTROLLER_GROUP_ID",
    "NodeAddress",
    "ControllerState",
    "DEFAULT_CONFIGS",
    "FIRST_PARTITION_GROUP_ID",
    "FIRST_PRODUCER_ID",
    "PARTITION_COUNT_MAX",
    "PartitionMeta",
    "TOPIC_CONFIGS",
    "TopicMeta",
    "UserCredential",
    "QuotaLimits",
    "normalize_configs",
    "topic_name_error",
]
