"""The committed generated code in proto/raftka/v1 is exactly what `make proto` makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("raftka_proto_generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    generate = _generator()
    fresh = {p.relative_to(tmp_path): p.read_text() for p in generate.generate(tmp_path)}
    committed = {p.relative_to(generate.PROTO_DIR): p.read_text()
                 for p in generate.generated_files()}
    assert fresh, "protoc generated nothing"
    stale = sorted(str(rel) for rel in fresh.keys() | committed.keys()
                   if fresh.get(rel) != committed.get(rel))
    assert not stale, f"proto/raftka/v1 is out of date for {stale}: run `make proto` and commit"


def test_generated_modules_import_under_the_raftka_v1_package() -> None:
    from raftka.v1 import admin_pb2_grpc, broker_pb2, errors_pb2, raft_pb2  # noqa: F401

    assert broker_pb2.ACKS_ALL == 0  # the zero value is the safe default
    assert errors_pb2.NOT_LEADER == 1
    assert broker_pb2.DESCRIPTOR.package == "raftka.v1"
