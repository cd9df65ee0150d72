"""examples/deploy/: the Dockerfile, the compose file, the systemd unit and the Kubernetes
manifests, checked without a container engine (none runs where the tests run: README,
Deployment).

- Every node command line in them is parsed by the node's own configuration code
  (``raftka.node._config``), so a flag that does not exist or a peer list that does not name
  the node itself fails here; the Kubernetes one is run through ``sh`` as the container
  would, with a stand-in ``raftka`` that prints its arguments.
- The compose file passes ``docker compose config`` (or Debian's docker-compose), the unit
  ``systemd-analyze verify`` (with ExecStart pointing at this environment's ``raftka``) and
  ``systemd-analyze security``, the manifests the Kubernetes 1.30 JSON schemas in strict
  mode (kubernetes-validate). ``make deploy-deps`` installs docker-compose as root; without
  root a missing tool skips only its check, saying so; as root it is an error.
- The invariants across them: peers, ports, probes, volumes and the image's user agree.
- The image's HEALTHCHECK script answers right about a real node.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from raftka.node._config import NodeConfig, from_args, load_toml

from tests.harness import REPO, Cluster

DEPLOY = REPO / "examples" / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "docker" / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "raftka.service"
NODE_TOML = DEPLOY / "systemd" / "node.toml"
MANIFESTS = DEPLOY / "kubernetes" / "raftka.yaml"
HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"
KUBERNETES_VERSION = "1.30"  # grpc probes are GA since 1.27
DATA_DIR = Path("/var/lib/raftka")


def _tool(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() == 0:
        pytest.fail(f"{' or '.join(names)} is missing; `make deploy-deps` (part of make "
                    "test) installs it when run as root")
    return None


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


# ------------------------------------------------------------------------- Dockerfile

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:]


def test_dockerfile_is_multi_stage_non_root_with_a_grpc_healthcheck_and_a_data_volume() -> None:
    instructions = _instructions(DOCKERFILE)
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2 and re.search(r"\bAS build\b", froms[0]), froms
    # the build stage copies every folder the wheel is made of (pyproject's package-dir)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    copied = {rest.split()[0] for word, rest in instructions if word == "COPY"
              and "--from" not in rest}
    assert roots <= copied, f"the image build misses {roots - copied}"
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"

    final = _final_stage(instructions)
    words = [word for word, _ in final]
    user = [rest for word, rest in final if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), user
    assert any(word == "RUN" and "--no-index" in rest and "from=build" in rest
               for word, rest in final), "the final stage installs the built wheels only"
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and "healthcheck.py" in health[0], health
    volume = [rest for word, rest in final if word == "VOLUME"]
    assert volume and str(DATA_DIR) in volume[0], volume
    assert "7001" in dict(final)["EXPOSE"].split()
    entrypoint = json.loads(dict(final)["ENTRYPOINT"])
    assert entrypoint == ["raftka"] and "raftka" in pyproject["project"]["scripts"]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN"), \
        "USER comes after the last RUN (which needs root to install)"
    # the files the image needs pass the .dockerignore next to the Dockerfile
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    for source in copied:
        assert source in allowed or f"{source}/**" in allowed, f"{source} is ignored"


def test_the_healthcheck_script_tells_serving_from_not(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 1)
    try:
        cluster.start_all()
        address = cluster.peers[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKA_")}

        def check(*args: str, **extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, str(HEALTHCHECK), *args], text=True,
                                  capture_output=True, env={**env, **extra}, timeout=30)

        r = check(RAFTKA_HEALTH_ADDRESS=address)  # the Dockerfile's way: the environment
        assert r.returncode == 0 and r.stdout.strip() == f"{address} (node): SERVING", r
        r = check(address, "raftka.v1.RaftPeer")  # Kubernetes' liveness service name
        assert r.returncode == 0 and "SERVING" in r.stdout, r
        r = check(address, "raftka.v1.NoSuchService")
        assert r.returncode == 1 and "NOT_FOUND" in r.stdout, r
        cluster.terminate(1)
        r = check(address)
        assert r.returncode == 1 and "UNAVAILABLE" in r.stdout and not r.stderr, r
    finally:
        cluster.stop_all()


# ------------------------------------------------------------------------- compose

def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_nodes() -> dict[str, tuple[dict, NodeConfig]]:
    nodes = {}
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if command and command[0] == "node":
            nodes[name] = (service, from_args([str(a) for a in command[1:]]))
    return nodes


def test_compose_runs_three_nodes_that_agree_on_peers_ports_and_volumes() -> None:
    nodes = _compose_nodes()
    assert len(nodes) == 3
    configs = [cfg for _, cfg in nodes.values()]
    assert sorted(cfg.node_id for cfg in configs) == [1, 2, 3]
    peers = configs[0].peers
    assert all(cfg.peers == peers for cfg in configs), "every node has the same peers"
    volumes = set()
    for name, (service, cfg) in nodes.items():
        host, _, port = cfg.peers[cfg.node_id].rpartition(":")
        assert host == name, f"{name}: its peers entry names {host}"
        assert int(port) == _port(cfg.listen), f"{name}: listens elsewhere than its peers entry"
        assert f"127.0.0.1:{port}:{port}" in service["ports"], (name, service["ports"])
        assert _port(service["environment"]["RAFTKA_HEALTH_ADDRESS"]) == int(port)
        assert cfg.data_dir == DATA_DIR
        (volume,) = [v for v in service["volumes"] if v.endswith(f":{DATA_DIR}")]
        volumes.add(volume.split(":")[0])
        assert service["stop_grace_period"], "a graceful stop needs time"
        assert service["build"]["dockerfile"] == str(DOCKERFILE.relative_to(REPO))
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == REPO
    assert len(volumes) == 3 and volumes <= set(_compose()["volumes"])
    cli = _compose()["services"]["cli"]
    assert cli["environment"]["RAFTKA_BOOTSTRAP"].split(",") == [peers[n] for n in sorted(peers)]


def test_compose_file_passes_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        command = [docker, "compose"]
    else:
        legacy = _tool("docker-compose")
        if legacy is None:
            pytest.skip("neither `docker compose` nor docker-compose is installed "
                        "(make deploy-deps installs Debian's docker-compose as root)")
        command = [legacy]
    r = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    bad = COMPOSE.parent / ".broken-compose-test.yml"  # the check can fail
    try:
        bad.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periodd:"))
        r = subprocess.run([*command, "-f", str(bad), "config", "--quiet"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, "docker compose config accepted an unknown key"
    finally:
        bad.unlink(missing_ok=True)


# ------------------------------------------------------------------------- systemd

HARDENING = {
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "ProtectSystem": "strict",
    "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes", "SystemCallArchitectures": "native",
}


def _unit() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_systemd_unit_has_the_hardening_options_and_runs_the_shipped_config() -> None:
    unit = _unit()
    for key, value in HARDENING.items():
        assert unit.get(key) == [value], f"{key}={value} missing (have {unit.get(key)})"
    assert unit["User"] == ["raftka"] and unit["KillSignal"] == ["SIGTERM"]
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["StateDirectory"] == [DATA_DIR.name]
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "raftka" and argv[1:3] == ["node", "--config"]
    assert argv[3] == "/etc/raftka/node.toml"
    cfg = load_toml(NODE_TOML)  # what the unit's --config points at, as shipped
    cfg.validate()
    assert cfg.data_dir == DATA_DIR and cfg.node_id in cfg.peers and len(cfg.peers) == 3
    assert from_args(["--config", str(NODE_TOML)]).node_id == cfg.node_id


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    raftka = Path(sys.executable).with_name("raftka")
    assert raftka.is_file(), raftka
    copy = tmp_path / "raftka.service"
    copy.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={raftka}", UNIT.read_text(),
                           flags=re.M))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r
    r = subprocess.run([analyze, "security", "--offline=true", str(copy)],
                       capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for raftka.service: ([0-9.]+)", r.stdout)
    assert exposure, r.stdout + r.stderr
    assert float(exposure.group(1)) <= 2.0, r.stdout  # "OK" is below 2 on systemd's scale
    # the check can fail: an unknown key is reported, a missing program refused
    bad = tmp_path / "bad.service"
    bad.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHomee=yes"))
    r = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert "ProtectHomee" in r.stderr, r


# ------------------------------------------------------------------------- Kubernetes

def _manifests() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all(MANIFESTS.read_text()):
        out.setdefault(doc["kind"], []).append(doc)
    return out


def test_kubernetes_manifests_pass_the_schemas_in_strict_mode() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = [d for kind in _manifests().values() for d in kind]
    assert {d["kind"] for d in docs} >= {"Service", "StatefulSet", "PodDisruptionBudget"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(_manifests()["StatefulSet"][0]))  # the check can fail
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _pod_argv(container: dict, pod: str, namespace: str, tmp_path: Path) -> list[str]:
    """The node's arguments in pod ``pod``: the container's shell command run by ``sh``
    with a stand-in ``raftka`` that prints them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "raftka"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert container["command"] == ["sh", "-c"]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOSTNAME": pod, "POD_NAMESPACE": namespace}
    r = subprocess.run(["sh", "-c", container["args"][0]], env=env, capture_output=True,
                       text=True, check=True, timeout=30)
    return json.loads(r.stdout)


def test_kubernetes_statefulset_agrees_with_its_peers_probes_and_volumes(
        tmp_path: Path) -> None:
    manifests = _manifests()
    (sts,) = manifests["StatefulSet"]
    services = {s["metadata"]["name"]: s for s in manifests["Service"]}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["podManagementPolicy"] == "Parallel", \
        "pods must start together: a node is ready only with a quorum"
    replicas = sts["spec"]["replicas"]
    pod_spec = sts["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
    name, namespace = sts["metadata"]["name"], "shop"
    for ordinal in range(replicas):
        argv = _pod_argv(container, f"{name}-{ordinal}", namespace, tmp_path)
        assert argv[0] == "node"
        cfg = from_args(argv[1:])
        assert cfg.node_id == ordinal + 1
        assert len(cfg.peers) == replicas, "replicas == the peers listed"
        assert cfg.peers == {k + 1: f"{name}-{k}.{headless['metadata']['name']}.{namespace}"
                             f".svc:{grpc_port}" for k in range(replicas)}
        assert _port(cfg.listen) == grpc_port
    for port in headless["spec"]["ports"]:
        assert port["targetPort"] in {p["containerPort"] for p in container["ports"]}
    probes = {kind: container[kind]["grpc"] for kind in
              ("startupProbe", "livenessProbe", "readinessProbe")}
    assert all(p["port"] == grpc_port for p in probes.values()), probes
    assert probes["livenessProbe"]["service"] == "raftka.v1.RaftPeer", \
        "liveness must not depend on a quorum"
    assert probes["readinessProbe"]["service"] == ""
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(cfg.data_dir) == str(DATA_DIR)
    # the image's user (the Dockerfile's USER) and a locked-down container
    uid = int(dict(_final_stage(_instructions(DOCKERFILE)))["USER"].split(":")[0])
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod_spec["terminationGracePeriodSeconds"] >= 30, "a graceful stop needs time"
    (pdb,) = manifests["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert sts["spec"]["updateStrategy"]["type"] == "OnDelete", \
        "restarts go through `raftka cluster restart --rolling` (README)"
