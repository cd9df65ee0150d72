"""GroupCoordinatorClient against fake brokers: finding, caching and following a group's
coordinator (client/_coordinator.py), without a cluster."""

from __future__ import annotations

import grpc
import pytest

from raftka.client import (
    RaftkaTimeoutError,
    UnknownMemberIdError,
)
from raftka.client._cluster import Cluster
from raftka.client._coordinator import GroupCoordinatorClient
from raftka.v1 import errors_pb2, group_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, info: errors_pb2.ErrorInfo | None = None) -> None:
        self._code = code
        self._info = info

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "fake"

    def trailing_metadata(self):
        if self._info is None:
            return None
        return [("raftka-error-bin", self._info.SerializeToString())]


def error(code: int, *, leader_id: int = 0, leader_address: str = "",
          status: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> FakeRpcError:
    return FakeRpcError(status, errors_pb2.ErrorInfo(
        code=code, message="fake", leader_id=leader_id, leader_address=leader_address))


UNAVAILABLE = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
ADDRESSES = {1: "n1:1", 2: "n2:2", 3: "n3:3"}


class World:
    """Three fake brokers. ``coordinator`` is what FindCoordinator answers; ``down`` nodes
    raise UNAVAILABLE; ``script[address]`` lists exceptions a DescribeGroup there raises
    first (then it answers)."""

    def __init__(self) -> None:
        self.coordinator = 2
        self.down: set[str] = set()
        self.script: dict[str, list[BaseException]] = {}
        self.calls: list[tuple[str, str]] = []

    def stub(self, address: str) -> FakeStub:
        return FakeStub(self, address)


class FakeStub:
    def __init__(self, world: World, address: str) -> None:
        self.world = world
        self.address = address

    def _enter(self, method: str) -> None:
        self.world.calls.append((self.address, method))
        if self.address in self.world.down:
            raise UNAVAILABLE

    def FindCoordinator(self, request, timeout=None):  # noqa: N802
        self._enter("FindCoordinator")
        node = self.world.coordinator
        return group_pb2.FindCoordinatorResponse(node_id=node, address=ADDRESSES.get(node, ""),
                                                 offsets_partition=7)

    def DescribeGroup(self, request, timeout=None):  # noqa: N802
        self._enter("DescribeGroup")
        pending = self.world.script.get(self.address)
        if pending:
            raise pending.pop(0)
        return group_pb2.DescribeGroupResponse(group_id=request.group_id, state="stable")


@pytest.fixture
def world() -> World:
    return World()


def client(world: World, **kwargs) -> GroupCoordinatorClient:
    cluster = Cluster(",".join(ADDRESSES.values()))
    kwargs.setdefault("backoff_initial_s", 0.001)
    kwargs.setdefault("backoff_max_s", 0.002)
    return GroupCoordinatorClient(cluster, "g", stub_factory=world.stub, **kwargs)


def describe(c: GroupCoordinatorClient, timeout_s: float = 5.0):
    return c.call("DescribeGroup", group_pb2.DescribeGroupRequest(group_id="g"), timeout_s)


def test_finds_the_coordinator_once_and_caches_it(world: World) -> None:
    c = client(world)
    assert describe(c).state == "stable"
    assert describe(c).group_id == "g"
    assert world.calls == [("n1:1", "FindCoordinator"), ("n2:2", "DescribeGroup"),
                           ("n2:2", "DescribeGroup")]
    assert c.coordinator is not None and c.coordinator.node_id == 2


def test_not_coordinator_naming_the_new_one_goes_there_directly(world: World) -> None:
    c = client(world)
    describe(c)
    world.script["n2:2"] = [error(errors_pb2.NOT_COORDINATOR, leader_id=3,
                                  leader_address="n3:3")]
    world.calls.clear()
    describe(c)
    assert world.calls == [("n2:2", "DescribeGroup"), ("n3:3", "DescribeGroup")]
    assert c.coordinator.node_id == 3 and c.coordinator.address == "n3:3"


def test_not_coordinator_without_a_name_finds_again(world: World) -> None:
    c = client(world)
    describe(c)
    world.coordinator = 3
    world.script["n2:2"] = [error(errors_pb2.NOT_COORDINATOR)]
    world.calls.clear()
    describe(c)
    assert [m for _, m in world.calls] == ["DescribeGroup", "FindCoordinator", "DescribeGroup"]
    assert world.calls[-1] == ("n3:3", "DescribeGroup")


def test_an_unreachable_coordinator_is_forgotten_and_found_again(world: World) -> None:
    c = client(world)
    describe(c)
    world.down.add("n2:2")
    world.coordinator = 1
    assert describe(c).state == "stable"
    assert c.coordinator.node_id == 1


def test_find_skips_an_unreachable_broker(world: World) -> None:
    world.down.add("n1:1")
    c = client(world)
    describe(c)
    finds = [a for a, m in world.calls if m == "FindCoordinator"]
    assert finds[0] == "n1:1" and finds[-1] != "n1:1"
    assert c.coordinator.node_id == 2


def test_no_coordinator_elected_yet_is_retried(world: World) -> None:
    world.coordinator = 0
    answers = iter([0, 0, 3])

    original = FakeStub.FindCoordinator

    def find(self, request, timeout=None):
        world.coordinator = next(answers)
        return original(self, request, timeout)

    FakeStub.FindCoordinator = find  # type: ignore[method-assign]
    try:
        c = client(world)
        describe(c)
    finally:
        FakeStub.FindCoordinator = original  # type: ignore[method-assign]
    assert c.coordinator.node_id == 3


def test_loading_coordinator_is_retried_in_place(world: World) -> None:
    c = client(world)
    world.script["n2:2"] = [error(errors_pb2.COORDINATOR_LOADING,
                                  status=grpc.StatusCode.UNAVAILABLE)] * 2
    describe(c)
    assert [a for a, m in world.calls if m == "FindCoordinator"] == ["n1:1"]
    assert [a for a, m in world.calls if m == "DescribeGroup"] == ["n2:2"] * 3


def test_non_retriable_errors_are_raised_at_once(world: World) -> None:
    c = client(world)
    world.script["n2:2"] = [error(errors_pb2.UNKNOWN_MEMBER_ID)]
    with pytest.raises(UnknownMemberIdError):
        describe(c)
    assert len([m for _, m in world.calls if m == "DescribeGroup"]) == 1


def test_gives_up_after_the_deadline_naming_the_last_error(world: World) -> None:
    world.down.update(ADDRESSES.values())
    c = client(world)
    with pytest.raises(RaftkaTimeoutError, match="unavailable") as info:
        describe(c, timeout_s=0.2)
    assert info.value.retriable  # transient: a caller with more time tries again


def test_gives_up_after_attempts_max(world: World) -> None:
    c = client(world, attempts_max=3)
    world.script["n2:2"] = [error(errors_pb2.COORDINATOR_LOADING,
                                  status=grpc.StatusCode.UNAVAILABLE)] * 10
    with pytest.raises(RaftkaTimeoutError, match="3 attempts") as info:
        describe(c, timeout_s=30)
    assert info.value.retriable
    assert len([m for _, m in world.calls if m == "DescribeGroup"]) == 3


def test_group_id_must_not_be_empty() -> None:
    with pytest.raises(ValueError):
        GroupCoordinatorClient(Cluster("n1:1"), "")
