"""Regenerate the Python gRPC/protobuf code in ``client/pb`` from ``proto/``.

Run ``make proto`` (or ``python -m client.pb._generate``). The generated modules are
committed so that installing Raftka needs no code generation; a test checks they match
what this script produces from the ``.proto`` files.

grpcio-tools names imports after the proto package path (``from raftka.v1 import ...``);
we rewrite them to ``client.pb.raftka.v1`` so no top-level ``raftka`` (or ``proto``)
import name is claimed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "client" / "pb"
PACKAGE = "client.pb"

_IMPORT = re.compile(r"^from raftka\.v1 import ", re.M)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("raftka/v1/*.proto"))


def generate(out_dir: Path = OUT_DIR) -> list[Path]:
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
    written = []
    for path in sorted((out_dir / "raftka" / "v1").glob("*.py*")):
        text = path.read_text()
        fixed = _IMPORT.sub(f"from {PACKAGE}.raftka.v1 import ", text)
        if fixed != text:
            path.write_text(fixed)
        written.append(path)
    for pkg in (out_dir / "raftka", out_dir / "raftka" / "v1"):
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text("")
    return written


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR):
        print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
