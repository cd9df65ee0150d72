"""The committed code in client/pb is exactly what `make proto` makes from proto/."""

from __future__ import annotations

from pathlib import Path

from client.pb import _generate


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    fresh = {p.relative_to(tmp_path): p.read_text() for p in _generate.generate(tmp_path)}
    committed_dir = _generate.OUT_DIR
    stale = [
        str(rel) for rel, text in fresh.items()
        if not (committed_dir / rel).exists() or (committed_dir / rel).read_text() != text
    ]
    assert not stale, f"client/pb is out of date for {stale}: run `make proto` and commit"


def test_generated_modules_import_without_a_top_level_raftka_package() -> None:
    from client.pb.raftka.v1 import admin_pb2_grpc, broker_pb2, raft_pb2, errors_pb2  # noqa: F401

    assert broker_pb2.ACKS_ALL == 0  # the zero value is the safe default
    assert errors_pb2.NOT_LEADER == 1
