"""Regenerate the Python gRPC/protobuf code of the contract from the ``.proto`` files.

Run ``make proto``. The generated ``*_pb2*.py`` modules sit beside their ``.proto`` files in
``proto/raftka/v1/`` (installed as the package ``raftka.v1``, the same name as the proto
package), so grpcio-tools' own imports (``from raftka.v1 import errors_pb2``) are right as
generated and nothing is rewritten. The generated modules are committed so that installing
Raftka needs no code generation; ``tests/client/test_generated_code.py`` checks that they are
exactly what this script makes.

This script is a build tool, not part of the installed package.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("raftka/v1/*.proto"))


def generated_files(root: Path = PROTO_DIR) -> list[Path]:
    return sorted(p for p in (root / "raftka" / "v1").iterdir()
                  if p.name.endswith(GENERATED_SUFFIXES))


def generate(out_dir: Path = PROTO_DIR) -> list[Path]:
    """Write the generated modules under ``out_dir/raftka/v1`` and return their paths."""
    from grpc_tools import protoc  # build-time tool: imported only here

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_DIR)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    return generated_files(out_dir)


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR):
        print(path)
