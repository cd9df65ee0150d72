"""A node that has not caught up with the cluster's metadata since it started does not
answer for topics as if it knew them all: a topic it does not know yet may exist.

A node whose store was recreated empty (node/README.md, "Operations: damaged storage")
hears its controller leader's heartbeat, whose commit its empty log cannot take (Raft core
rule 12); its own commit index stays 0, so "applied everything committed" held at once,
and for a moment it answered UNKNOWN_TOPIC for topics that exist. A transaction
coordinator took that answer for a deleted topic and never wrote the marker there
(jepsen-like txn workload under disk faults)."""

from __future__ import annotations

import types

import pytest

from raftka.node._broker import Broker
from raftka.node._errors import BrokerError, Code


def _broker(applied: int, commit: int, leader_commit: int, topics=None):
    node = types.SimpleNamespace(leader_id=3, applied_index=applied, commit_index=commit,
                                 leader_commit=leader_commit)
    group = types.SimpleNamespace(closed=False, node=node)
    topics = topics or {}
    fake = types.SimpleNamespace(
        node_id=1, partitions={}, _metadata_ready=False,
        controller=types.SimpleNamespace(group=group, state=types.SimpleNamespace(
            topic=topics.get)))
    fake.metadata_caught_up = lambda: Broker.metadata_caught_up(fake)
    fake.metadata_ready = lambda: Broker.metadata_ready(fake)
    return fake, node


def test_a_node_behind_its_leaders_commit_has_not_caught_up() -> None:
    fake, node = _broker(applied=0, commit=0, leader_commit=40)
    assert not Broker.metadata_caught_up(fake)
    node.applied_index = node.commit_index = 40
    assert Broker.metadata_caught_up(fake)


def test_an_unknown_topic_before_the_metadata_is_ready_is_retriable() -> None:
    fake, node = _broker(applied=0, commit=0, leader_commit=40)
    with pytest.raises(BrokerError) as exc:
        Broker.partition(fake, "orders", 0)
    assert exc.value.code == Code.LEADER_NOT_AVAILABLE and exc.value.retriable
    assert "has not caught up with the cluster metadata" in exc.value.message
    node.applied_index = node.commit_index = 40
    with pytest.raises(BrokerError) as exc:
        Broker.partition(fake, "orders", 0)
    assert exc.value.code == Code.UNKNOWN_TOPIC
