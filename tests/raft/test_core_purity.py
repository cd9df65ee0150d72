"""The Raft core is a pure state machine: it imports only the standard library, and no part
of it that could read a clock, sleep, do I/O or start threads (README: layout rules)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "raft" / "core"
FORBIDDEN = {"time", "asyncio", "threading", "socket", "os", "subprocess", "grpc", "rocksdict",
             "datetime", "selectors", "multiprocessing", "concurrent"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_only_pure_standard_library_modules() -> None:
    modules = sorted(CORE.glob("*.py"))
    assert len(modules) >= 9
    for path in modules:
        imported = _imports(path) - {"__future__"}
        assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"
        outside_stdlib = {n for n in imported if n not in sys.stdlib_module_names}
        assert not outside_stdlib, f"{path.name} imports {sorted(outside_stdlib)}"


def test_importing_the_raft_package_does_not_load_rocksdb() -> None:
    import subprocess

    code = ("import sys, raftka.raft, raftka.raft.core; "
            "print(sorted(m for m in ('rocksdict', 'grpc', 'asyncio', 'raftka.raft.rocksdb') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
