"""Every saved fuzz finding replayed (regressions/TARGET/*), and each target fuzzed briefly
from a seed corpus: a crash (an exception other than the parser's own refusal), a hang past
libFuzzer's -timeout or memory past -rss_limit_mb fails the test with the input saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raftka.node._transport import encode_batch
from raftka.raft import Entry, Message, MsgType
from raftka.v1.recordbatch import Record, build_batch
from tests.fuzz.targets import TARGETS
from tests.harness import REPO

HERE = Path(__file__).parent
# per target in make test: a smoke run of a few seconds each, which keeps every target and
# its seed corpus working; finding bugs is make fuzz's job (minutes per target, corpora kept)
RUNS = 8_000


# the recordbatch target decodes each input with the compiled decoder, its fallback and the
# reference reader: ~8x the work per run of the others
RECORDBATCH_RUNS = 1_600
RPC_RUNS = 1_200  # the rpc target: one call to a live in-process node each (~700/s)


def _regressions() -> list[tuple[str, Path]]:
    return [(name, path) for name in TARGETS
            for path in sorted((HERE / "regressions" / name).glob("*"))
            if path.name != ".gitkeep" and name != "rpc"]


@pytest.mark.parametrize(("target", "path"), _regressions(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_saved_findings_stay_fixed(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())


def _seeds(target: str, corpus: Path) -> None:
    """Valid inputs to start from: the fuzzer mutates them into the deep paths."""
    corpus.mkdir()
    if target == "recordbatch":
        records = [Record(b"k%d" % i, b"v" * i, headers=(("h", b"x"),)) for i in range(5)]
        for n, compression in enumerate(("none", "lz4")):
            (corpus / f"batch-{n}").write_bytes(build_batch(records, compression=compression))
    elif target == "raft_batch":
        append = Message(MsgType.APP, 2, 1, term=3, log_term=2, index=7, commit=6,
                         entries=[Entry(3, 8, 0, b"data")])
        heartbeat = Message(MsgType.HEARTBEAT, 2, 1, term=3, commit=8)
        (corpus / "append").write_bytes(
            encode_batch(1, 2, [(5, append), (6, heartbeat)]).SerializeToString())
    elif target == "kafka_request":  # ApiVersions v3 (key 18)
        (corpus / "api-versions").write_bytes(
            b"\x00\x00" + b"\x00\x12\x00\x03\x00\x00\x00\x01\x00\x04test\x00\x02\x03x\x02y\x00")


@pytest.mark.parametrize("target", [*sorted(TARGETS), "rpc"])
def test_a_short_fuzz_run_finds_nothing_and_saved_findings_stay_fixed(
        target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _seeds(target, corpus)
    runs = RPC_RUNS if target == "rpc" else RECORDBATCH_RUNS if target == "recordbatch" else RUNS
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", target, f"-runs={runs}", "-seed=1",
         "-max_len=8192", "-timeout=10", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/", str(corpus),
         # saved findings as a second corpus: libFuzzer runs each before fuzzing (the
         # rpc target's inputs drive FuzzedDataProvider, so they replay only this way)
         str(HERE / "regressions" / target)],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(
        p.name for p in tmp_path.glob("timeout-*")) + sorted(p.name for p in tmp_path.glob("oom-*"))
    assert done.returncode == 0 and not crashes, (
        f"fuzzing {target} failed (inputs saved in {tmp_path}: {crashes}); copy them to "
        f"tests/fuzz/regressions/{target}/ and fix the bug:\n{done.stderr[-4000:]}")
