"""``python -m tests.fuzz TARGET [libFuzzer flags] [CORPUS_DIR ...]``: fuzz one target of
targets.py with atheris (coverage of the raftka package). A crashing input is written by
libFuzzer as ``crash-<sha1>`` in the working directory (or -artifact_prefix=...): copy it to
tests/fuzz/regressions/TARGET/ so test_fuzz.py replays it for good, then fix the bug."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["raftka"]):
    from tests.fuzz.targets import TARGETS
    if len(sys.argv) > 1 and sys.argv[1] == "rpc":  # loads (and instruments) the whole node
        from tests.fuzz.rpc import rpc

        TARGETS = {**TARGETS, "rpc": rpc}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz {{{','.join([*TARGETS, 'rpc'])}}} "
                 "[libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
