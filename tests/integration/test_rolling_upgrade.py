"""Nodes of two consecutive versions in one cluster (README, Rolling restart and upgrade).

The previous version is this repository at the parent of the commit that introduced the
current peer protocol version (the line ``PROTOCOL_VERSION = N`` in node/_transport.py): the
last node that speaks the version before ours, with every change made since then on the new
side (``RAFTKA_PREVIOUS_COMMIT`` picks another commit). Its wheel is built from
``git archive`` of that commit and unpacked into a directory of its own; the old node runs
from there (``PYTHONPATH``, its dependencies from this environment) beside two nodes of this
checkout. A produce/consume round trip across every partition works in the mixed cluster,
then the old node is upgraded in place (stopped with SIGTERM, started from this checkout on
its data directory) and the data written before is still there and more can be written.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from raftka import Admin, PartitionReader, Producer
from raftka.node._transport import PROTOCOL_VERSION, PROTOCOL_VERSIONS_ACCEPTED

from tests.harness import REPO, Cluster, wait_for

OLD_NODE = 1  # a controller voter, and the preferred leader of some partitions
PARTITIONS = 3


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def _previous_commit() -> str:
    chosen = os.environ.get("RAFTKA_PREVIOUS_COMMIT")
    if chosen:
        return _git("rev-parse", "--verify", f"{chosen}^{{commit}}")
    # commits that added or removed the line, newest first: the last one introduced it
    touched = _git("log", "--format=%H", f"-SPROTOCOL_VERSION = {PROTOCOL_VERSION}\n",
                   "--", "node/_transport.py").split()
    if not touched:
        raise AssertionError(f"no commit introduced PROTOCOL_VERSION = {PROTOCOL_VERSION}")
    return _git("rev-parse", "--verify", f"{touched[-1]}^")


def _build_previous(tmp: Path) -> tuple[str, Path]:
    """(commit, a directory whose ``raftka`` package is that commit's wheel, unpacked)."""
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO,
                      capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: the previous version comes from the git history")
    try:
        commit = _previous_commit()
    except subprocess.CalledProcessError as exc:
        raise AssertionError("the previous version's commit is not in this clone (a shallow "
                             f"clone? fetch more history): {exc.stderr.strip()}") from None
    source = tmp / "previous-source"
    source.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO,
                             capture_output=True, check=True, timeout=60).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    dist = tmp / "previous-dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(dist), str(source)],
                   check=True, cwd=tmp, timeout=300, capture_output=True)
    (wheel,) = dist.glob("raftka-*.whl")
    site = tmp / "previous-site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return commit, site


class MixedCluster(Cluster):
    """Node ``OLD_NODE`` runs the previous version while ``old_site`` is set."""

    old_site: Path | None = None

    def start(self, node_id: int) -> None:
        if node_id != OLD_NODE or self.old_site is None:
            return super().start(node_id)
        cmd = [
            sys.executable, "-m", "raftka.node", "--id", str(node_id),
            "--listen", self.peers[node_id],
            "--peers", ",".join(f"{k}={v}" for k, v in sorted(self.peers.items())),
            "--data-dir", str(self.root / f"node-{node_id}"), "--tick-ms", str(self.tick_ms),
            "--log-level", "info",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = str(self.old_site)  # before this environment's editable raftka
        with open(self.root / f"node-{node_id}.log", "ab") as log:
            proc = subprocess.Popen(cmd, cwd=self.old_site, env=env, stdout=log, stderr=log,
                                    start_new_session=True)
        self._started.append(proc)
        self.procs[node_id] = proc


@pytest.fixture
def mixed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, MixedCluster]]:
    commit, site = _build_previous(tmp_path)
    # the old node really runs the old code: its transport predates the version field
    probe = subprocess.run(
        [sys.executable, "-c", "import raftka.node._transport as t; "
         "print(t.__file__, getattr(t, 'PROTOCOL_VERSION', 0))"],
        cwd=site, env={**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
                       "PYTHONPATH": str(site)},
        capture_output=True, text=True, check=True)
    where, version = probe.stdout.split()
    assert Path(where).is_relative_to(site), where
    assert int(version) in PROTOCOL_VERSIONS_ACCEPTED, (commit, version)
    if not os.environ.get("RAFTKA_PREVIOUS_COMMIT"):
        assert int(version) == PROTOCOL_VERSION - 1, (commit, version)

    c = MixedCluster(tmp_path / "cluster", 3)
    c.root.mkdir()
    c.old_site = site
    try:
        c.start_all()
        yield commit, c
    finally:
        c.stop_all()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(c.logs())


def _round_trip(bootstrap: str, topic: str, values: list[bytes]) -> dict[int, list[bytes]]:
    """Write ``values`` round-robin over the partitions (acks=all, idempotent), then read
    every partition from the beginning: partition -> values."""
    with Producer(bootstrap, acks="all", linger_ms=0) as producer:
        futures = [producer.send(topic, v, partition=i % PARTITIONS)
                   for i, v in enumerate(values)]
        producer.flush()
        for f in futures:
            f.result(timeout=30)
    out: dict[int, list[bytes]] = {}
    with Admin(bootstrap) as admin:
        ends = {p: admin.list_offsets(topic, p, "latest").offset for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        got: list[bytes] = []
        with PartitionReader(bootstrap, topic, p, offset="earliest") as reader:
            wait_for(lambda: got.extend(r.value for r in reader.poll(timeout=1.0))
                     or len(got) >= ends[p], 60, f"{topic}/{p} read to offset {ends[p]}")
        out[p] = got
    return out


def test_a_node_of_the_previous_version_works_beside_new_ones_and_upgrades_in_place(
        mixed: tuple[str, MixedCluster]) -> None:
    commit, cluster = mixed
    cluster.create_topic("mixed", partitions=PARTITIONS)
    # every node leads one partition (the old one too) and follows the others; on a loaded
    # machine a starved node may lose a leadership for a while before it is handed back
    leaders = {cluster.wait_preferred_leader("mixed", p, timeout=60) for p in range(PARTITIONS)}
    assert leaders == {1, 2, 3}, leaders
    bootstrap = ",".join(cluster.peers.values())

    before = [b"v%d" % i for i in range(60)]
    got = _round_trip(bootstrap, "mixed", before)
    assert got == {p: before[p::PARTITIONS] for p in range(PARTITIONS)}, commit
    for p in range(PARTITIONS):
        cluster.assert_replicas_agree("mixed", p)

    # upgrade the old node in place: same data directory, this checkout's code
    assert cluster.terminate(OLD_NODE) == 0
    cluster.old_site = None
    cluster.start(OLD_NODE)
    cluster.wait_healthy()
    for p in range(PARTITIONS):
        cluster.wait_preferred_leader("mixed", p, timeout=60)
    after = [b"w%d" % i for i in range(30)]
    got = _round_trip(bootstrap, "mixed", after)
    assert got == {p: before[p::PARTITIONS] + after[p::PARTITIONS]
                   for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        cluster.assert_replicas_agree("mixed", p)
    logs = "".join(p.read_text(errors="replace") for p in cluster.root.glob("node-*.log"))
    assert "protocol version" not in logs  # nobody refused anybody
