"""Print each benchmark's derived rates (entries/s, MiB/s) after the timing table."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    terminalreporter.write_sep("-", "derived rates")
    for bench in session.benchmarks:
        if bench.extra_info:
            info = ", ".join(f"{k}={v}" for k, v in sorted(bench.extra_info.items()))
            terminalreporter.write_line(f"{bench.name}: {info}")
