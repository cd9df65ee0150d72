"""A wheel of Raftka installs the ``raftka`` namespace and nothing else at the top of
site-packages, its console script runs, and a produce/consume round trip works from the
installed wheel alone (no checkout on the path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from tests.harness import free_ports, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _site_packages(env_dir: Path) -> Path:
    paths = sysconfig.get_paths(vars={"base": str(env_dir), "platbase": str(env_dir)})
    return Path(paths["purelib"])


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("RAFTKA_BOOTSTRAP", None)
    return env


def test_the_wheel_installs_only_raftka_and_works_on_its_own(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(dist), str(ROOT)],
                   check=True, cwd=tmp_path, timeout=300)
    (wheel,) = dist.glob("raftka-*.whl")

    # A fresh environment without pip; the dependencies (grpcio, rocksdict, ...) come from
    # this test's own environment through a path entry placed after the new site-packages.
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)
    site = _site_packages(env_dir)
    before = set(os.listdir(site))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"),
                    "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    added = set(os.listdir(site)) - before
    assert added == {"raftka", "raftka-0.1.0.dist-info"}, sorted(added)
    installed = site / "raftka"
    assert (installed / "v1" / "broker.proto").is_file(), "the schema ships with the contract"
    assert {p.name for p in installed.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "v1", "client", "node", "raft"}
    deps = Path(sysconfig.get_paths()["purelib"])
    (site / "zz_test_dependencies.pth").write_text(f"{deps}\n")

    python = str(env_dir / "bin" / "python")
    raftka_cli = str(env_dir / "bin" / "raftka")
    env = _clean_env()
    where = subprocess.run([python, "-c", "import raftka, raftka.node; print(raftka.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(installed)), where.stdout
    help_text = subprocess.run([raftka_cli, "--help"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True, timeout=60)
    assert "produce" in help_text.stdout

    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    node = subprocess.Popen(
        [raftka_cli, "node", "--id", "1", "--listen", address, "--peers", f"1={address}",
         "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([raftka_cli, *args], input=stdin, cwd=tmp_path,
                                  env={**env, "RAFTKA_BOOTSTRAP": address},
                                  capture_output=True, text=True, timeout=60)

        wait_for(lambda: cli("topic", "create", "wheel", "-p", "1", "-r", "1").returncode == 0,
                 60, "the installed node to create a topic")
        produced = cli("produce", "wheel", stdin="one\ntwo\nthree\n")
        assert produced.returncode == 0, produced.stderr
        consumed = cli("consume", "wheel", "--from-beginning", "--exit-at-end")
        assert consumed.returncode == 0, consumed.stderr
        assert consumed.stdout.splitlines() == ["one", "two", "three"]
    finally:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)
        node.stderr.close()
