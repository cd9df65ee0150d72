"""Altering and describing topic configs on a real 3-node cluster."""

from __future__ import annotations

import os

import pytest

from raftka.client import Admin, InvalidConfigError, InvalidRequestError, Producer
from raftka.client import RequestTooLargeError
from tests.harness import Cluster, wait_for


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def test_alter_config_is_validated_replicated_and_described(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("conf", partitions=3, replication_factor=3)
        admin.wait_for_topic_ready("conf", timeout=20)
        before = {c.name: c for c in admin.describe_topic_configs("conf")}
        assert before["max.message.bytes"].source == "DEFAULT"
        assert before["cleanup.policy"].value == "delete"
        with pytest.raises(InvalidConfigError, match="max.message.bytes"):
            admin.alter_topic_config("conf", set={"max.message.bytes": "0", "retention.ms": "5"})
        with pytest.raises(InvalidConfigError, match="nope"):
            admin.alter_topic_config("conf", set={"nope": "1"})
        with pytest.raises(InvalidRequestError):
            admin.alter_topic_config("conf", set={"retention.ms": "5"}, delete=["retention.ms"])
        dry = admin.alter_topic_config("conf", set={"retention.ms": "5"}, validate_only=True)
        assert {c.name: c.value for c in dry}["retention.ms"] == "5"
        assert {c.name: c for c in admin.describe_topic_configs("conf")} == before
        altered = admin.alter_topic_config("conf", set={"max.message.bytes": "200"})
        assert {c.name: (c.value, c.source) for c in altered}["max.message.bytes"] == (
            "200", "TOPIC")
    # Every node applies it (each answers from its own applied metadata).
    for address in cluster.peers.values():
        with Admin(address) as admin:
            def applied() -> bool:
                entries = {c.name: c for c in admin.describe_topic_configs("conf")}
                entry = entries["max.message.bytes"]
                return (entry.value, entry.source) == ("200", "TOPIC")
            wait_for(applied, 10, f"the altered config at {address}")
    # Enforced by each partition's leader, whichever node that is.
    with Producer(bootstrap, acks="all") as producer:
        for partition in range(3):
            with pytest.raises(RequestTooLargeError):
                producer.send("conf", os.urandom(500), partition=partition).result(timeout=30)
    with Admin(bootstrap) as admin:
        back = admin.alter_topic_config("conf", delete=["max.message.bytes"])
        assert {c.name: c.source for c in back}["max.message.bytes"] == "DEFAULT"
    # Each leader applies the reset when its controller replica does: retry until it has.
    with Producer(bootstrap, acks="all") as producer:
        def accepted() -> bool:
            try:
                producer.send("conf", os.urandom(500), partition=0).result(timeout=30)
            except RequestTooLargeError:
                return False
            return True
        wait_for(accepted, 10, "the default max.message.bytes back at the leader")
