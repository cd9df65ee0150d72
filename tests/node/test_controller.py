"""The controller state machine: validation, placement balance, determinism, snapshots."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

import pytest

from raftka.v1 import errors_pb2
from raftka.node._controller_commands import (
    COMMAND_SIZE_BYTES_MAX,
    encode_add_partitions,
    encode_allocate_producer_ids,
    encode_create_topic,
    encode_delete_topic,
)
from raftka.node._controller_placement import assign_replicas
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import (
    CONTROLLER_GROUP_ID,
    FIRST_PARTITION_GROUP_ID,
    PARTITION_COUNT_MAX,
    ApplyResult,
    ControllerState,
    TopicMeta,
)
from raftka.node._topic_configs import TOPIC_CONFIGS

DEFAULT_CONFIGS = {
    "cleanup.policy": "delete",
    "delete.retention.ms": "86400000",
    "max.delivery.delay.ms": "604800000",
    "max.message.bytes": "1048576",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "retention.share.groups": "false",
}


class Log:
    """Feeds commands to a state at consecutive Raft indexes, like the apply loop would."""

    def __init__(self, state: ControllerState) -> None:
        self.state = state
        self.index = state.version

    def apply(self, command: bytes) -> ApplyResult:
        self.index += 1
        return self.state.apply(self.index, command)

    def create(
        self, name: str, partitions: int = 3, rf: int = 3, configs=None, internal=False
    ) -> ApplyResult:
        return self.apply(encode_create_topic(name, partitions, rf, configs or {}, internal))


def content(state: ControllerState) -> dict:
    """The snapshot without ``version``, which moves on every applied entry, even a rejected one."""
    obj = json.loads(encode_snapshot(state))
    del obj["version"]
    return obj


def spread(counts: dict[int, int]) -> int:
    return max(counts.values()) - min(counts.values())


@pytest.fixture
def log() -> Log:
    return Log(ControllerState([1, 2, 3]))


# ---------------------------------------------------------------- create / describe / delete


def test_create_topic_returns_the_topic_with_defaults_and_fresh_group_ids(log: Log) -> None:
    result = log.create("orders", partitions=3, rf=3)
    assert result.ok and result.code == errors_pb2.ERROR_CODE_UNSPECIFIED
    meta = result.value
    assert isinstance(meta, TopicMeta)
    assert meta.name == "orders" and meta.replication_factor == 3 and not meta.internal
    assert dict(meta.configs) == {}  # nothing set on the topic
    assert meta.effective_configs() == DEFAULT_CONFIGS
    assert [p.partition for p in meta.partitions] == [0, 1, 2]
    assert [p.group_id for p in meta.partitions] == [2, 3, 4]
    assert FIRST_PARTITION_GROUP_ID == CONTROLLER_GROUP_ID + 1
    for part in meta.partitions:
        assert sorted(part.replicas) == [1, 2, 3]
    assert log.state.topic("orders") == meta
    assert log.state.topics["orders"] == meta
    assert log.state.next_group_id == 5
    assert log.state.version == 1


def test_describe_queries(log: Log) -> None:
    log.create("b", partitions=2, rf=1)
    log.create("a", partitions=1, rf=2)
    state = log.state
    assert [t.name for t in state.topics_sorted()] == ["a", "b"]
    assert state.topic("missing") is None
    hosted = {n: [(t.name, p.partition) for t, p in state.partitions_on(n)] for n in (1, 2, 3)}
    assert sum(len(v) for v in hosted.values()) == 2 * 1 + 1 * 2
    for names in hosted.values():
        assert names == sorted(names)  # by topic name, then partition
    for meta in state.topics_sorted():
        for part in meta.partitions:
            assert state.partition_by_group(part.group_id) == (meta, part)
            for node in part.replicas:
                assert (meta, part) in state.partitions_on(node)
    assert state.partition_by_group(CONTROLLER_GROUP_ID) is None
    assert state.partition_by_group(999) is None
    assert state.partitions_on(42) == []


def test_topic_meta_is_immutable(log: Log) -> None:
    meta = log.create("t").value
    with pytest.raises(AttributeError):
        meta.name = "u"  # type: ignore[misc]
    with pytest.raises(TypeError):
        meta.configs["retention.ms"] = "1"  # type: ignore[index]
    with pytest.raises(TypeError):
        log.state.topics["x"] = meta  # type: ignore[index]


def test_configs_are_normalized_and_only_the_set_ones_kept(log: Log) -> None:
    meta = log.create("t", configs={"retention.ms": "007", "max.message.bytes": "67108864"}).value
    assert dict(meta.configs) == {"max.message.bytes": "67108864", "retention.ms": "7"}
    assert meta.effective_configs() == {
        **DEFAULT_CONFIGS,
        "max.message.bytes": "67108864",
        "retention.ms": "7",
    }
    assert log.create("u", configs={"retention.ms": "-1", "retention.bytes": "-0"}).ok
    assert log.state.topic("u").configs["retention.bytes"] == "0"
    compacted = log.create("c", configs={"cleanup.policy": "delete,compact",
                                         "min.cleanable.dirty.ratio": "0.10"}).value
    assert compacted.configs["cleanup.policy"] == "compact,delete"
    assert compacted.configs["min.cleanable.dirty.ratio"] == "0.1"


def test_delete_topic_frees_its_partitions_but_never_its_group_ids(log: Log) -> None:
    first = log.create("t", partitions=2).value
    assert log.apply(encode_delete_topic("t")).ok
    assert log.state.topic("t") is None
    assert log.state.topics_sorted() == []
    assert all(log.state.partitions_on(n) == [] for n in (1, 2, 3))
    assert all(log.state.partition_by_group(p.group_id) is None for p in first.partitions)
    assert log.state.replica_counts() == {1: 0, 2: 0, 3: 0}
    assert log.state.leader_counts() == {1: 0, 2: 0, 3: 0}

    again = log.create("t", partitions=2).value
    assert [p.group_id for p in again.partitions] == [4, 5]
    assert again.topic_id != first.topic_id  # a re-created topic is a different topic
    assert log.state.next_group_id == 6


def test_topic_id_is_derived_not_random() -> None:
    a, b = Log(ControllerState([1, 2, 3])), Log(ControllerState([1, 2, 3]))
    assert a.create("t").value.topic_id == b.create("t").value.topic_id


def test_internal_topics(log: Log) -> None:
    result = log.create("__consumer_offsets", partitions=4, rf=3, internal=True)
    assert result.ok and result.value.internal
    refused = log.apply(encode_delete_topic("__consumer_offsets"))
    assert refused.code == errors_pb2.INVALID_REQUEST and "internal" in refused.message
    assert log.state.topic("__consumer_offsets") is not None
    assert log.apply(encode_delete_topic("__consumer_offsets", internal=True)).ok


def test_delete_unknown_topic(log: Log) -> None:
    result = log.apply(encode_delete_topic("nope"))
    assert (result.ok, result.code) == (False, errors_pb2.UNKNOWN_TOPIC)
    assert "nope" in result.message


def test_empty_command_is_a_noop_entry(log: Log) -> None:
    before = content(log.state)
    result = log.apply(b"")
    assert result.ok and result.value is None
    assert content(log.state) == before and log.state.version == 1


def test_apply_index_must_move_forward_but_may_skip(log: Log) -> None:
    assert log.state.apply(5, encode_create_topic("t", 1, 1, {})).ok
    assert log.state.version == 5
    for index in (5, 4, 0):
        with pytest.raises(ValueError, match="greater than version 5"):
            log.state.apply(index, encode_create_topic("u", 1, 1, {}))
    assert log.state.topic("u") is None
    assert log.state.apply(9, encode_create_topic("u", 1, 1, {})).ok


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name,internal",
    [
        ("", False),
        (".", False),
        ("..", False),
        ("has space", False),
        ("slash/name", False),
        ("ünïcode", False),
        ("x" * 250, False),
        ("__reserved", False),
    ],
)
def test_invalid_topic_names(log: Log, name: str, internal: bool) -> None:
    before = content(log.state)
    result = log.create(name, internal=internal)
    assert (result.ok, result.code, result.value) == (False, errors_pb2.INVALID_REQUEST, None)
    assert "topic name" in result.message
    assert content(log.state) == before


@pytest.mark.parametrize("name", ["a", "A-b_c.9", "x" * 249, "...", "_single", "a__b"])
def test_valid_topic_names(log: Log, name: str) -> None:
    assert log.create(name).ok


def test_existing_topic(log: Log) -> None:
    log.create("t", partitions=1)
    before = content(log.state)
    result = log.create("t", partitions=5)
    assert (result.ok, result.code) == (False, errors_pb2.TOPIC_EXISTS)
    assert content(log.state) == before


@pytest.mark.parametrize("partitions", [0, -1, PARTITION_COUNT_MAX + 1])
def test_partition_count_out_of_range(log: Log, partitions: int) -> None:
    before = content(log.state)
    result = log.create("t", partitions=partitions)
    assert (result.ok, result.code) == (False, errors_pb2.INVALID_REQUEST)
    assert "partitions" in result.message
    assert content(log.state) == before


def test_replication_factor_above_node_count(log: Log) -> None:
    before = content(log.state)
    result = log.create("t", rf=4)
    assert (result.ok, result.code) == (False, errors_pb2.NOT_ENOUGH_REPLICAS)
    assert "3 nodes" in result.message
    assert content(log.state) == before


@pytest.mark.parametrize("rf", [0, -3])
def test_replication_factor_below_one(log: Log, rf: int) -> None:
    result = log.create("t", rf=rf)
    assert (result.ok, result.code) == (False, errors_pb2.INVALID_REQUEST)


@pytest.mark.parametrize(
    "key,value",
    [
        ("segment.entries", "10"),
        ("cleanup.policy", "compacted"),
        ("cleanup.policy", ""),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("min.cleanable.dirty.ratio", "nan"),
        ("min.compaction.lag.ms", "-1"),
        ("retention.ms", "-2"),
        ("retention.ms", "1.5"),
        ("retention.ms", " 1"),
        ("retention.ms", "+5"),
        ("retention.ms", ""),
        ("retention.ms", "1_000"),
        ("retention.ms", "٣"),  # a non-ASCII digit that int() would accept
        ("retention.ms", "9223372036854775808"),
        ("retention.bytes", "lots"),
        ("max.message.bytes", "0"),
        ("max.message.bytes", str(64 * 1024 * 1024 + 1)),
    ],
)
def test_invalid_configs_name_the_key(log: Log, key: str, value: str) -> None:
    before = content(log.state)
    result = log.create("t", configs={key: value})
    assert (result.ok, result.code) == (False, errors_pb2.INVALID_CONFIG)
    assert repr(key) in result.message
    if key in TOPIC_CONFIGS:
        assert "must be " + TOPIC_CONFIGS[key].allowed in result.message  # what is allowed
    else:
        assert "retention.ms" in result.message  # lists the known keys
    assert content(log.state) == before


def test_check_validates_without_applying(log: Log) -> None:
    log.create("t")
    before = encode_snapshot(log.state)
    assert log.state.check(encode_create_topic("t", 1, 1, {})).code == errors_pb2.TOPIC_EXISTS
    assert log.state.check(encode_create_topic("u", 1, 9, {})).code == (
        errors_pb2.NOT_ENOUGH_REPLICAS
    )
    assert log.state.check(b"\xff").code == errors_pb2.INVALID_REQUEST
    assert log.state.check(encode_create_topic("u", 1, 1, {})).ok
    assert encode_snapshot(log.state) == before


# ---------------------------------------------------------------------------- producer ids


def test_producer_id_allocation_is_monotonic_and_contiguous(log: Log) -> None:
    firsts = [log.apply(encode_allocate_producer_ids(count)).value for count in (1, 1000, 7)]
    assert firsts == [1, 2, 1002]
    assert log.state.next_producer_id == 1009
    before = content(log.state)
    for count in (0, -5, 1_000_001):
        result = log.apply(encode_allocate_producer_ids(count))
        assert (result.ok, result.code) == (False, errors_pb2.INVALID_REQUEST)
    assert content(log.state) == before
    assert log.apply(encode_allocate_producer_ids(1)).value == 1009


# ---------------------------------------------------------------------------- malformed commands


def _raw(**fields) -> bytes:
    return json.dumps(fields).encode()


CREATE_FIELDS = {
    "v": 1,
    "op": "create_topic",
    "name": "t",
    "partitions": 1,
    "replication_factor": 1,
    "configs": {},
    "internal": False,
}

MALFORMED = [
    b"\x00\x01\x02",
    b"\xff\xfe{}",  # not UTF-8
    b"not json",
    b"[]",
    b"null",
    b"42",
    b'"create_topic"',
    b"{}",
    _raw(**{**CREATE_FIELDS, "v": 2}),
    _raw(**{**CREATE_FIELDS, "v": True}),
    _raw(**{**CREATE_FIELDS, "v": "1"}),
    _raw(**{k: v for k, v in CREATE_FIELDS.items() if k != "v"}),
    _raw(**{**CREATE_FIELDS, "op": "drop_everything"}),
    _raw(**{**CREATE_FIELDS, "op": None}),
    _raw(**{k: v for k, v in CREATE_FIELDS.items() if k != "partitions"}),
    _raw(**{k: v for k, v in CREATE_FIELDS.items() if k != "configs"}),
    _raw(**{**CREATE_FIELDS, "extra": 1}),
    _raw(**{**CREATE_FIELDS, "partitions": "3"}),
    _raw(**{**CREATE_FIELDS, "partitions": True}),
    _raw(**{**CREATE_FIELDS, "partitions": 1.0}),
    _raw(**{**CREATE_FIELDS, "name": 7}),
    _raw(**{**CREATE_FIELDS, "internal": 1}),
    _raw(**{**CREATE_FIELDS, "configs": []}),
    _raw(**{**CREATE_FIELDS, "configs": {"retention.ms": 1000}}),
    b'{"v":1,"op":"create_topic","name":"t","name":"u","partitions":1,'
    b'"replication_factor":1,"configs":{},"internal":false}',  # duplicate key
    b'{"v":1,"op":"allocate_producer_ids","count":NaN}',
    b'{"v":1,"op":"allocate_producer_ids","count":1e3}',
    _raw(v=1, op="delete_topic"),
    _raw(v=1, op="delete_topic", name=["t"]),
    _raw(v=1, op="allocate_producer_ids", count=None),
    b"[" * 50_000 + b"]" * 50_000,  # deep nesting under the size limit
    encode_create_topic("t" * 10, 1, 1, {"k" * COMMAND_SIZE_BYTES_MAX: "1"}),  # oversized
]


@pytest.mark.parametrize("command", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_commands_are_rejected_without_changing_state(log: Log, command: bytes) -> None:
    log.create("existing", partitions=2)
    before = content(log.state)
    result = log.apply(command)
    assert (result.ok, result.code, result.value) == (False, errors_pb2.INVALID_REQUEST, None)
    assert result.message
    assert content(log.state) == before
    assert log.create("after", partitions=1).ok  # the state machine keeps working


def test_random_bytes_never_raise_or_change_state(log: Log) -> None:
    rng = random.Random(20240611)
    log.create("existing")
    saved = encode_snapshot(log.state)
    before = content(log.state)
    valid = encode_create_topic("x", 1, 1, {})
    for _ in range(300):
        if rng.random() < 0.5:
            command = rng.randbytes(rng.randrange(0, 64))
        else:  # a valid command with a few bytes flipped: mostly still JSON-shaped
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            command = bytes(data)
        if command == valid:
            continue
        result = log.apply(command)
        assert isinstance(result, ApplyResult)
        if result.ok:  # a flip that still makes a valid command (e.g. another topic name)
            log.state = decode_snapshot(saved)  # undo it; later indexes stay higher
            continue
        assert result.code in (errors_pb2.INVALID_REQUEST, errors_pb2.INVALID_CONFIG)
        assert content(log.state) == before


# ---------------------------------------------------------------- determinism, snapshots


def _random_commands(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    names = [f"topic-{i}" for i in range(8)]
    commands = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:
            configs = rng.choice([{}, {"retention.ms": str(rng.randrange(-2, 10**9))}])
            commands.append(
                encode_create_topic(
                    rng.choice(names), rng.randrange(0, 12), rng.randrange(0, 6), configs
                )
            )
        elif kind < 0.75:
            commands.append(encode_delete_topic(rng.choice(names)))
        elif kind < 0.82:
            commands.append(encode_allocate_producer_ids(rng.randrange(0, 2000)))
        elif kind < 0.9:
            commands.append(encode_add_partitions(rng.choice(names), rng.randrange(0, 16)))
        else:
            commands.append(rng.randbytes(rng.randrange(0, 20)))
    return commands


def test_same_commands_give_identical_snapshots() -> None:
    for seed in range(5):
        a = Log(ControllerState([1, 2, 3, 4, 5]))
        b = Log(ControllerState([5, 3, 1, 4, 2]))  # peer-list order does not matter
        results_a = [a.apply(c) for c in _random_commands(seed, 200)]
        results_b = [b.apply(c) for c in _random_commands(seed, 200)]
        assert results_a == results_b
        assert encode_snapshot(a.state) == encode_snapshot(b.state)
        assert any(r.ok for r in results_a) and any(not r.ok for r in results_a)


def test_snapshot_restore_round_trip_then_continue() -> None:
    commands = _random_commands(7, 300)
    live = Log(ControllerState([1, 2, 3, 4]))
    for command in commands[:150]:
        live.apply(command)
    data = encode_snapshot(live.state)
    restored = Log(decode_snapshot(data))
    assert encode_snapshot(restored.state) == data
    assert restored.state.version == live.state.version == 150
    assert restored.state.topics_sorted() == live.state.topics_sorted()
    assert restored.state.replica_counts() == live.state.replica_counts()
    assert restored.state.leader_counts() == live.state.leader_counts()
    for node in (1, 2, 3, 4):
        assert restored.state.partitions_on(node) == live.state.partitions_on(node)
    for group_id in range(1, live.state.next_group_id + 1):
        assert restored.state.partition_by_group(group_id) == live.state.partition_by_group(
            group_id
        )
    for command in commands[150:]:
        assert restored.apply(command) == live.apply(command)
    assert encode_snapshot(restored.state) == encode_snapshot(live.state)


def test_snapshot_bytes_are_canonical_json() -> None:
    log = Log(ControllerState([1, 2, 3]))
    log.create("b")
    log.create("a", configs={"retention.ms": "5"})
    data = encode_snapshot(log.state)
    obj = json.loads(data)
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert [t["name"] for t in obj["topics"]] == ["a", "b"]
    assert obj["format"] == "raftka.controller.snapshot" and obj["v"] == 4


def _snapshot_obj() -> dict:
    log = Log(ControllerState([1, 2, 3]))
    log.create("t", partitions=2, rf=2)
    return json.loads(encode_snapshot(log.state))


def _mutated(change) -> bytes:
    obj = _snapshot_obj()
    change(obj)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff",
        b"garbage",
        b"[]",
        b'{"format":"raftka.controller.snapshot","v":1}',
        _mutated(lambda o: o.update(format="other")),
        _mutated(lambda o: o.update(v=5)),
        _mutated(lambda o: o.pop("users")),
        _mutated(lambda o: o.update(users=[{"name": "x"}])),
        _mutated(lambda o: o.update(acls=[{"principal": "User:a"}])),
        _mutated(lambda o: o.update(acls=[dict(
            principal="bob", host="*", operation="READ", resource_type="TOPIC",
            resource_name="t", pattern_type="LITERAL", permission="ALLOW")])),
        _mutated(lambda o: o.update(extra=1)),
        _mutated(lambda o: o.pop("next_group_id")),
        _mutated(lambda o: o.update(node_ids=[])),
        _mutated(lambda o: o.update(node_ids=[1, 1, 2])),
        _mutated(lambda o: o.update(version=-1)),
        _mutated(lambda o: o.update(version=1.5)),
        _mutated(lambda o: o.update(next_group_id=1)),
        _mutated(lambda o: o.update(next_producer_id=0)),
        _mutated(lambda o: o["topics"][0].update(name="bad name")),
        _mutated(lambda o: o["topics"][0].update(name="__hidden")),
        _mutated(lambda o: o["topics"][0].update(replication_factor=4)),
        _mutated(lambda o: o["topics"][0].update(configs={"nope": "1"})),
        _mutated(lambda o: o["topics"][0]["configs"].update({"retention.ms": "007"})),
        _mutated(lambda o: o["topics"][0]["configs"].update({"cleanup.policy": "delete,compact"})),
        _mutated(lambda o: o["topics"][0].update(partitions=[])),
        _mutated(lambda o: o["topics"][0]["partitions"][1].__setitem__(0, 2)),  # dup group
        _mutated(lambda o: o["topics"][0]["partitions"][1].__setitem__(0, 99)),  # >= next
        _mutated(lambda o: o["topics"][0]["partitions"][0].__setitem__(1, [1, 1])),
        _mutated(lambda o: o["topics"][0]["partitions"][0].__setitem__(1, [1, 9])),
        _mutated(lambda o: o["topics"][0]["partitions"][0].__setitem__(1, [1])),
        _mutated(lambda o: o["topics"].append(dict(o["topics"][0]))),  # duplicate topic
    ],
)
def test_restore_rejects_garbage_with_a_clear_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="controller snapshot"):
        decode_snapshot(data)


def test_restore_accepts_an_unmutated_snapshot() -> None:
    data = _mutated(lambda o: None)
    assert decode_snapshot(data).topic("t").replication_factor == 2


# ---------------------------------------------------------------------------- placement balance


def _check_partition_shapes(state: ControllerState) -> None:
    for meta in state.topics_sorted():
        for part in meta.partitions:
            assert len(part.replicas) == meta.replication_factor
            assert len(set(part.replicas)) == meta.replication_factor
            assert set(part.replicas) <= set(state.node_ids)


def test_three_nodes_six_partitions_rf3_each_node_leads_two() -> None:
    log = Log(ControllerState([1, 2, 3]))
    meta = log.create("t", partitions=6, rf=3).value
    leaders = Counter(p.replicas[0] for p in meta.partitions)
    assert leaders == {1: 2, 2: 2, 3: 2}
    assert log.state.replica_counts() == {1: 6, 2: 6, 3: 6}


def test_five_nodes_ten_partitions_rf3_is_balanced() -> None:
    log = Log(ControllerState([1, 2, 3, 4, 5]))
    log.create("t", partitions=10, rf=3)
    _check_partition_shapes(log.state)
    assert log.state.replica_counts() == {n: 6 for n in range(1, 6)}
    assert log.state.leader_counts() == {n: 2 for n in range(1, 6)}


def test_topics_created_one_after_another_stay_balanced() -> None:
    log = Log(ControllerState([1, 2, 3, 4, 5]))
    for i, (partitions, rf) in enumerate([(1, 1), (3, 2), (7, 3), (2, 5), (4, 3), (1, 2)]):
        assert log.create(f"t{i}", partitions=partitions, rf=rf).ok
        assert spread(log.state.replica_counts()) <= 1
        assert spread(log.state.leader_counts()) <= 1
    _check_partition_shapes(log.state)


def test_single_partition_topics_rotate_over_nodes() -> None:
    log = Log(ControllerState([1, 2, 3]))
    placed = [log.create(f"t{i}", partitions=1, rf=1).value.partitions[0] for i in range(6)]
    assert [p.replicas for p in placed] == [(1,), (2,), (3,), (1,), (2,), (3,)]


def test_balance_holds_after_every_partition_for_small_clusters() -> None:
    """Exhaustive over cluster sizes and RFs, random topic sizes: both spreads stay <= 1."""
    rng = random.Random(5)
    for nodes, rf in itertools.chain.from_iterable(
        ((n, r) for r in range(1, n + 1)) for n in range(1, 8)
    ):
        node_ids = list(range(1, nodes + 1))
        for _ in range(3):
            replicas = {n: 0 for n in node_ids}
            leaders = {n: 0 for n in node_ids}
            for _topic in range(4):
                count = rng.randrange(1, 16)
                for assignment in assign_replicas(node_ids, count, rf, replicas, leaders):
                    assert len(set(assignment)) == rf
                    leaders[assignment[0]] += 1
                    for node in assignment:
                        replicas[node] += 1
                    assert spread(replicas) <= 1, (nodes, rf, replicas)
                    assert spread(leaders) <= 1, (nodes, rf, leaders)


def test_new_partitions_go_to_the_least_loaded_nodes_after_a_delete() -> None:
    log = Log(ControllerState([1, 2, 3, 4]))
    log.create("a", partitions=2, rf=2)  # nodes 1..4 hold one replica each
    log.create("b", partitions=1, rf=2)
    b_nodes = set(log.state.topic("b").partitions[0].replicas)
    assert log.apply(encode_delete_topic("a")).ok
    counts = log.state.replica_counts()
    assert {n for n, c in counts.items() if c} == b_nodes
    meta = log.create("c", partitions=1, rf=2).value
    assert set(meta.partitions[0].replicas).isdisjoint(b_nodes)
    assert spread(log.state.replica_counts()) == 0


def test_assign_replicas_does_not_modify_its_inputs() -> None:
    replicas, leaders = {1: 3, 2: 0, 3: 1}, {1: 1, 2: 0, 3: 0}
    assign_replicas([1, 2, 3], 5, 2, replicas, leaders)
    assert (replicas, leaders) == ({1: 3, 2: 0, 3: 1}, {1: 1, 2: 0, 3: 0})


def test_largest_topic_is_placed_and_snapshotted_quickly() -> None:
    log = Log(ControllerState([1, 2, 3, 4, 5]))
    meta = log.create("big", partitions=PARTITION_COUNT_MAX, rf=3).value
    assert len(meta.partitions) == PARTITION_COUNT_MAX
    assert log.state.replica_counts() == {n: 6000 for n in range(1, 6)}
    assert log.state.leader_counts() == {n: 2000 for n in range(1, 6)}
    data = encode_snapshot(log.state)
    assert encode_snapshot(decode_snapshot(data)) == data


def test_node_ids_are_validated() -> None:
    for bad in ([], [0, 1], [1, 1], [-2]):
        with pytest.raises(ValueError):
            ControllerState(bad)
    assert ControllerState([3, 1, 2]).node_ids == (1, 2, 3)
