"""The contract from another language (issue 12): tests/interop/js/interop.mjs, a Node.js
client on @grpc/grpc-js and @grpc/proto-loader that loads only the .proto files, against a
real 3-node cluster. It prints what it observed as JSON; this test asserts on it.

Node.js and npm come from the machine (``make test`` installs them from Debian when missing,
as root); the npm packages are pinned by tests/interop/js/package-lock.json and installed
with ``npm ci`` into its (gitignored) node_modules, by ``make test`` or here when missing.
Without node/npm, or without the npm registry, the test is skipped with the reason, unless
running as root (CI): there it fails, because it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import google.rpc
import pytest

from tests.harness import REPO, Cluster

JS_DIR = Path(__file__).resolve().parent / "js"
INSTALLED_STAMP = JS_DIR / "node_modules" / ".installed"  # the Makefile's stamp too
NPM_CI = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
SCRIPT_TIMEOUT_S = 120
SERVICES = ["", "raftka.v1.Broker", "raftka.v1.Admin", "raftka.v1.GroupCoordinator",
            "raftka.v1.RaftPeer"]


def _cannot_run(reason: str) -> None:
    if os.geteuid() == 0:
        pytest.fail(f"{reason}; as root this test must run (make test installs Node.js and "
                    "npm from Debian, then the npm packages with npm ci)")
    pytest.skip(f"NODE.JS INTEROP TEST NOT RUN: {reason} (run `make test` as root, or "
                "install nodejs and npm)")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            _cannot_run(f"`{tool}` is not on PATH")
    lock = JS_DIR / "package-lock.json"
    if not INSTALLED_STAMP.exists() or INSTALLED_STAMP.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(NPM_CI, cwd=JS_DIR, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            _cannot_run(f"`npm ci` in {JS_DIR} failed: {done.stderr.strip()[-2000:]}")
        INSTALLED_STAMP.touch()
    return JS_DIR / "node_modules"


def _google_protos() -> str:
    """The directory holding google/rpc/status.proto: googleapis-common-protos ships the
    .proto files beside its generated modules."""
    root = Path(next(iter(google.rpc.__path__))).parent.parent
    assert (root / "google" / "rpc" / "status.proto").exists(), root
    return str(root)


@pytest.fixture
def observed(node_modules: Path, cluster: Cluster) -> dict:
    arg = json.dumps({"bootstrap": [cluster.peers[n] for n in sorted(cluster.peers)],
                      "protoRoot": str(REPO / "proto"), "googleProtos": _google_protos()})
    done = subprocess.run(["node", str(JS_DIR / "interop.mjs"), arg], cwd=JS_DIR,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    assert done.returncode == 0, f"interop.mjs failed:\n{done.stderr}"
    return json.loads(done.stdout)


def test_a_nodejs_client_with_only_the_proto_files(observed: dict, cluster: Cluster) -> None:
    # a topic created at a node that is not the controller leader (forwarded to it)
    assert observed["created"]["atNode"] != observed["controllerId"]
    assert observed["created"] == {"atNode": observed["created"]["atNode"],
                                   "name": "interop-js", "partitions": 1}

    # produce: plain protobuf records, then a RecordBatch v2 built in JavaScript
    assert observed["producePlain"] == {"base": "0", "last": "1"}
    assert observed["produceBatch"] == {"base": "2", "last": "4"}

    # fetch with decoded records: all of it, in order, nothing of the refused batch
    fetched = observed["fetched"]
    assert [(r["offset"], r["key"], r["value"], r["headers"]) for r in fetched] == [
        ("0", "k0", "plain-0", [["h", "1"]]),
        ("1", None, "plain-1", []),
        ("2", "k2", "batch-2", [["trace", "t"]]),
        ("3", None, "batch-3", []),
        ("4", "k4", None, []),
    ]
    assert observed["fetchedHighWatermark"] == observed["fetchedNextOffset"] == "5"
    assert all(int(r["timestampMs"]) == observed["producedAtMs"] for r in fetched[2:])

    errors = observed["errors"]
    for name, error in errors.items():
        assert "unexpectedSuccess" not in error, name
        assert error["codeName"] != "INTERNAL", name
        assert error["statusDetailsMatch"] is True, name  # google.rpc.Status = the status
        assert error["errorInfo"]["domain"] == "raftka.v1", name

    unknown = errors["unknownTopic"]
    assert unknown["codeName"] == "NOT_FOUND"
    assert unknown["errorInfo"]["reason"] == "UNKNOWN_TOPIC"
    assert unknown["errorInfo"]["metadata"]["retriable"] == "true"

    corrupt = errors["corruptBatch"]  # header and CRC right, records undecodable
    assert corrupt["codeName"] == "INVALID_ARGUMENT"
    assert corrupt["errorInfo"]["reason"] == "CORRUPT_BATCH"
    assert corrupt["errorInfo"]["metadata"]["retriable"] == "false"
    assert "records do not decode" in corrupt["details"]

    not_leader = errors["notLeader"]  # produce at a follower names the leader
    leader = observed["leader"]
    assert not_leader["codeName"] == "FAILED_PRECONDITION"
    assert not_leader["errorInfo"]["reason"] == "NOT_LEADER"
    assert not_leader["errorInfo"]["metadata"] == {
        "retriable": "true", "leader_id": str(leader["id"]),
        "leader_address": leader["address"]}
    assert leader["address"] == cluster.peers[leader["id"]]

    out_of_range = errors["offsetOutOfRange"]
    assert out_of_range["codeName"] == "OUT_OF_RANGE"
    assert out_of_range["errorInfo"]["reason"] == "OFFSET_OUT_OF_RANGE"

    # health per service name, on every node
    assert sorted(observed["health"]) == [str(n) for n in sorted(cluster.peers)]
    for node, statuses in observed["health"].items():
        for service in SERVICES:
            assert statuses[service] == "SERVING", (node, service)
        assert statuses["raftka.v1.NoSuchService"] == "NOT_FOUND", node
