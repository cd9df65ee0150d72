"""examples/monitoring/: the Prometheus config and alert rules pass promtool (Debian's
``prometheus`` package, installed by ``make test`` as root), the rules fire on the series
they watch (``promtool test rules``), the Grafana dashboard is well-formed, and every Raftka
metric the rules and the dashboard name exists in a real 3-node cluster's /metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import grpc
import pytest
import yaml

from raftka import Admin, Producer
from raftka.v1 import broker_pb2
from tests.harness import REPO, Cluster, wait_for
from tests.integration.test_metrics import scrape

MONITORING = REPO / "examples" / "monitoring"
# Metric names in PromQL: ours and the process collector's. `up` is Prometheus's own.
METRIC_NAME = re.compile(r"\b((?:raftka|process|python)_[a-zA-Z0-9_]+)")
PROMETHEUS_OWN = {"up"}


def _promtool() -> str | None:
    path = shutil.which("promtool")
    if path is None and os.geteuid() == 0:
        pytest.fail("promtool is missing; `make monitoring-deps` (part of make test) installs "
                    "Debian's prometheus package when run as root")
    return path


def _rules() -> list[dict]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["type"] == "prometheus"
            exprs.append(target["expr"])
    return exprs


def test_promtool_accepts_the_config_and_the_rules_and_the_rules_fire() -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus); the YAML "
                    "structure is checked by test_alert_rules_name_the_required_alerts")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_alert_rules_name_the_required_alerts() -> None:
    rules = _rules()
    names = {rule["alert"] for rule in rules}
    assert {"RaftkaNodeDown", "RaftkaUnderReplicatedPartitions", "RaftkaPartitionWithoutLeader",
            "RaftkaConsumerGroupLagGrowing", "RaftkaDiskFilling"} <= names
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert config["scrape_configs"][0]["job_name"] == "raftka"


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["title"] == "Raftka" and dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert len(_dashboard_exprs()) >= 20


@pytest.fixture
def busy_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A metered 3-node cluster with a topic, records and a group with a commit: every
    family (follower lag, group lag) has series."""
    cluster = Cluster(tmp_path, 3, metrics=True)
    try:
        cluster.start_all()
        cluster.create_topic("watched", partitions=3, replicas=3)
        for p in range(3):
            cluster.wait_leader("watched", p)
        bootstrap = ",".join(cluster.peers.values())
        with Producer(bootstrap, acks="all") as producer:
            for i in range(30):
                producer.send("watched", b"x%d" % i, partition=i % 3)
            producer.flush()
        with Admin(bootstrap) as admin:
            admin.reset_group_offsets("dashboards", "watched", to="earliest")
        # an answered error on every node (raftka_request_errors_total has no series until
        # one happens; a run without a NOT_LEADER while the cluster settled had none)
        for nid in cluster.peers:
            with pytest.raises(grpc.RpcError):
                cluster.broker(nid).Fetch(broker_pb2.FetchRequest(
                    topic="no-such-topic", partition=0, offset=0), timeout=10)
        yield cluster
    finally:
        cluster.stop_all()


def test_every_metric_of_the_rules_and_the_dashboard_exists_in_a_real_scrape(
        busy_cluster: Cluster) -> None:
    cluster = busy_cluster

    def names() -> set[str]:
        found: set[str] = set()
        for nid in cluster.peers:
            found.update(name for name, _ in scrape(cluster, nid))
        return found

    referenced: set[str] = set()
    for expr in [rule["expr"] for rule in _rules()] + _dashboard_exprs():
        referenced.update(METRIC_NAME.findall(expr))
    assert "raftka_group_lag_records" in referenced  # the pattern finds what it should
    missing: set[str] = set()

    def all_present() -> bool:
        nonlocal missing
        missing = referenced - names()
        return not missing

    try:
        wait_for(all_present, 20, "every metric named by the rules and the dashboard")
    except AssertionError:
        raise AssertionError(f"not in any node's /metrics: {sorted(missing)}") from None
    assert "up" in {w for rule in _rules() for w in re.findall(r"\bup\b", rule["expr"])}
