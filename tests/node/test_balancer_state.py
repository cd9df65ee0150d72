"""The balancer's pause flag in the controller state (issue 19): a replicated command, kept in
snapshots (written only while paused, so the previous release reads the others), malformed
commands refused with nothing changed."""

from __future__ import annotations

import json

import pytest

from raftka.node._controller_commands import encode_set_balancer
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import ControllerState
from raftka.v1 import errors_pb2


def test_pause_and_resume_are_replicated_and_survive_a_snapshot() -> None:
    state = ControllerState([1, 2, 3])
    assert not state.balancer_paused
    unpaused = encode_snapshot(state)
    assert b"balancer_paused" not in unpaused  # the previous release reads it
    assert state.apply(1, encode_set_balancer(True)).ok and state.balancer_paused
    restored = decode_snapshot(encode_snapshot(state))
    assert restored.balancer_paused and encode_snapshot(restored) == encode_snapshot(state)
    assert state.apply(2, encode_set_balancer(False)).ok and not state.balancer_paused
    assert not decode_snapshot(encode_snapshot(state)).balancer_paused


@pytest.mark.parametrize("command", [
    b'{"op":"set_balancer","paused":1,"v":1}',
    b'{"op":"set_balancer","v":1}',
    b'{"op":"set_balancer","paused":true,"extra":0,"v":1}',
])
def test_a_malformed_command_changes_nothing(command: bytes) -> None:
    state = ControllerState([1, 2, 3])
    result = state.apply(1, command)
    assert not result.ok and result.code == errors_pb2.INVALID_REQUEST
    assert not state.balancer_paused


def test_a_snapshot_saying_not_paused_explicitly_is_refused() -> None:
    obj = json.loads(encode_snapshot(ControllerState([1, 2, 3])))
    obj["balancer_paused"] = False
    with pytest.raises(ValueError, match="balancer_paused"):
        decode_snapshot(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
