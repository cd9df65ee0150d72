"""Deterministic cluster simulator for the Raft core (see ``cluster.py``).

    from tests.sim import Cluster
    cluster = Cluster(3, seed=7)
    leader = cluster.wait_for_leader()
    cluster.replicate(b"x")
"""

from .checker import Checker
from .cluster import DOWN, STOPPED, UP, Cluster, ReadRequest, SimNode, SimOptions
from .errors import CoreError, InvariantViolation, LivenessFailure, SimulationFailure
from .network import Network
from .statemachine import ListStateMachine

__all__ = [
    "Checker", "Cluster", "CoreError", "DOWN", "InvariantViolation", "ListStateMachine",
    "LivenessFailure", "Network", "ReadRequest", "STOPPED", "SimNode", "SimOptions",
    "SimulationFailure", "UP",
]
