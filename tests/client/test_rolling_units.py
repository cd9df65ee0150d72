"""``raftka.exec_restart``: the ``--exec`` command of ``raftka cluster restart --rolling``
(client/_rolling.py) runs with the node's fields filled in and shell-quoted, a non-zero exit
stops the rolling restart, and a template with unknown fields is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftka import RollingRestartError, exec_restart
from raftka.client._types import BrokerDescription


def test_the_command_gets_the_node_fields_shell_quoted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = exec_restart(f"printf '%s|' {{id}} {{host}} {{port}} {{address}} > {out}; "
                       f"echo $((1+{{id}})) >> {out}")
    run(BrokerDescription(2, "node-2.example:7001"))
    assert out.read_text() == "2|node-2.example|7001|node-2.example:7001|3\n"
    run(BrokerDescription(3, "[::1]:7003"))  # brackets stripped from the host
    assert out.read_text() == "3|::1|7003|[::1]:7003|4\n"
    # an address cannot break out of its quotes
    run(BrokerDescription(4, "$(touch pwned); x:1"))
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert out.read_text().startswith("4|$(touch pwned); x|1|")


def test_a_failing_command_stops_the_rolling_restart() -> None:
    run = exec_restart("exit 3")
    with pytest.raises(RollingRestartError, match="node 5 exited with 3"):
        run(BrokerDescription(5, "h:1"))


@pytest.mark.parametrize("template", ["restart {node}", "echo {", "echo {0}"])
def test_a_template_with_unknown_fields_is_refused_up_front(template: str) -> None:
    with pytest.raises(RollingRestartError, match="bad --exec template"):
        exec_restart(template)
