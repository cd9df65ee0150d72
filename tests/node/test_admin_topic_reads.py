"""Topic reads of the Admin service at a node whose metadata may lag: a topic it does not
know is asked of the controller leader (whose UNKNOWN_TOPIC clients take as final); a
topic it knows is answered here. (CI of stop 31: a node that had not applied a creation
yet answered a describe with UNKNOWN_TOPIC, which the Admin client, taking that node for
the controller leader, raised.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from raftka.v1 import admin_pb2
from raftka.node._errors import BrokerError, Code
from raftka.node._services import AdminService


class _Forwarder:
    """The controller forwarder: records the calls; runs ``local`` when this node leads."""

    def __init__(self, leads: bool) -> None:
        self.leads = leads
        self.forwarded: list[str] = []

    async def call(self, context, what, timeout_s, local, remote, retry=False):
        if self.leads:
            return await local(timeout_s)
        self.forwarded.append(what)
        return "the leader's answer"


def _service(topics: dict, leads: bool) -> tuple[AdminService, _Forwarder]:
    broker = SimpleNamespace(controller=SimpleNamespace(
        state=SimpleNamespace(topic=topics.get)))
    forwarder = _Forwarder(leads)
    return AdminService(broker, forwarder), forwarder  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["DescribeTopic", "DescribeTopicConfigs"])
def test_a_topic_this_node_does_not_know_is_asked_of_the_controller_leader(method) -> None:
    service, forwarder = _service({}, leads=False)
    request = getattr(admin_pb2, f"{method}Request")(name="fresh")
    read = getattr(AdminService, method).__wrapped__
    assert asyncio.run(read(service, request, None)) == "the leader's answer"
    assert forwarder.forwarded == [f"{method} of topic 'fresh'"]


@pytest.mark.parametrize("method", ["DescribeTopic", "DescribeTopicConfigs"])
def test_the_controller_leader_answers_unknown_topic_itself(method) -> None:
    service, forwarder = _service({}, leads=True)
    request = getattr(admin_pb2, f"{method}Request")(name="nosuch")
    read = getattr(AdminService, method).__wrapped__
    with pytest.raises(BrokerError) as info:
        asyncio.run(read(service, request, None))
    assert info.value.code == Code.UNKNOWN_TOPIC and "'nosuch' does not exist" in \
        info.value.message


def test_a_known_topic_is_answered_here() -> None:
    topic = SimpleNamespace(configs={"retention.ms": "1000"}, internal=False)
    service, forwarder = _service({"known": topic}, leads=False)
    read = AdminService.DescribeTopicConfigs.__wrapped__
    answer = asyncio.run(read(service, admin_pb2.DescribeTopicConfigsRequest(name="known"),
                              None))
    assert forwarder.forwarded == []
    assert {c.name: c.value for c in answer.configs}["retention.ms"] == "1000"
