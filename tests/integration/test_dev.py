"""`raftka dev` (python -m raftka.node.dev): starts a healthy cluster, prints how to reach it, and
stops every node on SIGTERM/Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from raftka.client import Admin
from raftka.node.dev import ports_in_use
from tests.harness import REPO, free_ports, wait_for


def test_dev_starts_a_healthy_cluster_and_stops_it(tmp_path: Path) -> None:
    base = _free_consecutive_ports(3)
    metrics_base = _free_consecutive_ports(3)
    while abs(metrics_base - base) < 3:  # the two ranges must not overlap
        metrics_base = _free_consecutive_ports(3)
    kafka_base = _free_consecutive_ports(3)
    while min(abs(kafka_base - base), abs(kafka_base - metrics_base)) < 3:
        kafka_base = _free_consecutive_ports(3)
    console_port = free_ports(1)[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftka.node.dev", "--nodes", "3", "--data-dir", str(tmp_path),
         "--base-port", str(base), "--metrics-base-port", str(metrics_base),
         "--kafka-base-port", str(kafka_base), "--console-port", str(console_port)], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        bootstrap = kafka_bootstrap = ""
        metrics_urls: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(metrics_urls) < 3:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("bootstrap: "):
                bootstrap = line.split(" ", 1)[1].strip()
            if line.startswith("kafka bootstrap: "):
                kafka_bootstrap = line.split()[2]
            if line.startswith("metrics: node "):
                metrics_urls.append(line.split()[-1])
        console_url = ""
        while time.monotonic() < deadline and not console_url:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("console: "):
                console_url = line.split(" ", 1)[1].strip()
        assert bootstrap == ",".join(f"127.0.0.1:{base + i}" for i in range(3)), proc.stderr
        # make dev prints every node's metrics address, and each one answers
        assert metrics_urls == [f"http://127.0.0.1:{metrics_base + i}/metrics"
                                for i in range(3)]
        for i, url in enumerate(metrics_urls):
            with urllib.request.urlopen(url, timeout=10) as response:
                assert f"raftka_node_id {i + 1}.0" in response.read().decode()
        with Admin(bootstrap) as admin:
            assert len(admin.describe_cluster().nodes) == 3
        # the Kafka bootstrap it prints is one Kafka tools can use (kcat from Debian)
        assert kafka_bootstrap == ",".join(f"127.0.0.1:{kafka_base + i}" for i in range(3))
        kcat = shutil.which("kcat")
        assert kcat or os.geteuid() != 0, "kcat is missing: make kafka-deps installs it"
        if kcat:
            listed = subprocess.run([kcat, "-b", kafka_bootstrap, "-L", "-m", "10"],
                                    capture_output=True, text=True, timeout=30)
            assert listed.returncode == 0, listed.stderr
            assert " 3 brokers:" in listed.stdout, listed.stdout
        assert console_url == f"http://127.0.0.1:{console_port}/"
        wait_for(lambda: _answers(console_url), 30, "the web console")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Every node process is gone: its port can be bound again (TIME_WAIT aside).
    assert not ports_in_use({i: f"127.0.0.1:{base + i}" for i in range(3)}, reuse=True)


def _free_consecutive_ports(count: int) -> int:
    for _ in range(50):
        base = free_ports(1)[0]
        if base + count < 65535 and not ports_in_use(
                {i: f"127.0.0.1:{base + i}" for i in range(count)}):
            return base
    raise RuntimeError("no free consecutive ports")


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False
