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
from tests.harness import REPO, LineReader, free_port_range, free_ports, wait_for


def test_dev_starts_a_healthy_cluster_and_stops_it(tmp_path: Path) -> None:
    # each range from the test's own port band; the cursor moves past it, so none overlap
    base, metrics_base, kafka_base = (free_port_range(3) for _ in range(3))
    console_port = free_ports(1)[0]
    log = open(tmp_path / "dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftka.node.dev", "--nodes", "3", "--data-dir",
         str(tmp_path / "data"), "--base-port", str(base), "--metrics-base-port",
         str(metrics_base), "--kafka-base-port", str(kafka_base), "--console-port",
         str(console_port)], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    out = LineReader(proc.stdout)
    try:
        bootstrap = kafka_bootstrap = ""
        metrics_urls: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(metrics_urls) < 3:
            line = out.readline(deadline)
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
            line = out.readline(deadline)
            if not line:
                break
            if line.startswith("console: "):
                console_url = line.split(" ", 1)[1].strip()
        assert bootstrap == ",".join(f"127.0.0.1:{base + i}" for i in range(3)), \
            (tmp_path / "dev.log").read_text()
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
            proc.wait(10)
        log.close()
    # Every node process is gone: its port can be bound again (TIME_WAIT aside).
    assert not ports_in_use({i: f"127.0.0.1:{base + i}" for i in range(3)}, reuse=True)


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_dev_auth_starts_a_secured_cluster_the_cli_uses_with_what_it_prints(
        tmp_path: Path) -> None:
    """`raftka dev --auth`: TLS, authentication and ACLs; the printed environment makes the
    CLI the super user, the printed password makes it `dev`, who may do nothing until an
    ACL allows it; without a client certificate nothing gets through."""
    import os
    import re

    base, peer_base = free_port_range(3), free_port_range(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftka.node.dev", "--auth", "--data-dir", str(tmp_path),
         "--base-port", str(base), "--peer-base-port", str(peer_base),
         "--metrics-base-port", "0", "--console-port", "0",
         "--kafka-base-port", "0"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = LineReader(proc.stdout)
    try:
        env = dict(os.environ)
        password = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = out.readline(deadline)
            if not line or line.startswith("Ctrl-C"):
                break
            m = re.match(r"\s+export (RAFTKA_\w+)=(\S+)", line)
            if m:
                env[m.group(1)] = m.group(2)
            m = re.search(r"RAFTKA_PASSWORD=(\S+)", line)
            if m:
                password = m.group(1)
        assert {"RAFTKA_BOOTSTRAP", "RAFTKA_TLS_CA", "RAFTKA_TLS_CERT"} <= set(env), env
        assert password

        def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "raftka.client.cli", *args],
                                  env={**env, **extra}, cwd=REPO, capture_output=True,
                                  text=True, timeout=60)

        assert cli("whoami").stdout.strip() == "User:admin"
        assert cli("whoami", "--user", "dev", RAFTKA_PASSWORD=password).stdout.strip() \
            == "User:dev"
        assert cli("topic", "create", "demo", "-p", "1").returncode == 0
        denied = cli("topic", "describe", "demo", "--user", "dev", "--timeout", "5",
                     RAFTKA_PASSWORD=password)
        assert denied.returncode == 1 and "TOPIC_AUTHORIZATION_FAILED" in denied.stderr
        assert cli("acl", "add", "--principal", "User:dev", "--operation", "DESCRIBE",
                   "--topic", "de", "--prefixed").returncode == 0
        listed = cli("acl", "list", "--principal", "User:dev", "--json")
        assert '"pattern_type": "PREFIXED"' in listed.stdout, listed
        wait_for(lambda: cli("topic", "describe", "demo", "--user", "dev", "--timeout", "5",
                             RAFTKA_PASSWORD=password).returncode == 0, 20,
                 "dev allowed to describe demo")
        assert cli("quota", "set", "--default", "--produce-bytes-per-s", "1000000").returncode == 0
        assert '"entity": "<default>"' in cli("quota", "list", "--json").stdout
        no_cert = cli("topic", "list", "--timeout", "3", RAFTKA_TLS_CERT="", RAFTKA_TLS_KEY="")
        assert no_cert.returncode == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
