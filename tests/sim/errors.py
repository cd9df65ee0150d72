"""How a simulation run fails. Every message carries the seed, the replay command, a
summary of the cluster and the last events of the trace."""

from __future__ import annotations


class SimulationFailure(AssertionError):
    """Base of every simulator failure (an AssertionError, so pytest shows it as one)."""


class InvariantViolation(SimulationFailure):
    """A safety property of Raft broke."""


class LivenessFailure(SimulationFailure):
    """Something that must eventually happen (a leader, a commit) did not, in time."""


class CoreError(SimulationFailure):
    """The Raft core raised where it should not have (an internal error, a storage error
    caused by what it asked to persist)."""
