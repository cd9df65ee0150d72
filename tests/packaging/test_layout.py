"""One import namespace and one contract: every module imports Raftka's code as ``raftka.*``,
and the broker never imports the client (what both need is ``raftka.v1``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("client", "node", "raft", "proto", "tests", "bench", "examples", "jepsen-like")
OLD_TOP_LEVEL = {"client", "node", "raft", "proto"}


def _python_files():
    for folder in SOURCE_DIRS:
        yield from (p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _absolute_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_no_module_imports_the_old_top_level_package_names() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {name}" for p in _python_files()
                 for name in _absolute_imports(p) if name.split(".")[0] in OLD_TOP_LEVEL]
    assert not offenders, offenders


def test_the_broker_never_imports_the_client() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {name}" for p in (ROOT / "node").rglob("*.py")
                 for name in _absolute_imports(p)
                 if name == "raftka.client" or name.startswith("raftka.client.")
                 or name == "raftka" ]
    assert not offenders, offenders
    code = ("import sys, raftka.node._server, raftka.node.dev; "
            "print([m for m in sys.modules if m.startswith('raftka.client')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"loading the broker loaded {out.stdout}"


def test_the_public_client_api_is_importable_from_raftka() -> None:
    import raftka
    from raftka import Admin, Consumer, PartitionReader, Producer, RaftkaError, TopicPartition
    from raftka.client import Producer as ClientProducer

    assert Producer is ClientProducer
    assert issubclass(raftka.NotLeaderError, RaftkaError)
    assert {"Admin", "Consumer", "PartitionReader", "Producer"} <= set(dir(raftka))
    assert Admin and Consumer and PartitionReader and TopicPartition
