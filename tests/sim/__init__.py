"""Deterministic cluster simulator for the Raft core and the node's host driver (see
``cluster.py``): every simulated node runs ``raftka.raft.host.HostDriver``, the code the
broker runs, over a simulated network (``network.py``) and disk (``disk.py``), with the
checker (``checker.py``) after every step.

    from tests.sim import Cluster
    cluster = Cluster(3, seed=7)
    leader = cluster.wait_for_leader()
    cluster.replicate(b"x")
    cluster.produce([b"y"])        # an acks=all client; acknowledgements are checked
"""

from .checker import Checker
from .cluster import (
    DOWN, MAIN_GROUP, STOPPED, UP, Cluster, ReadRequest, SimNode, SimOptions, SimReplica,
)
from .errors import CoreError, InvariantViolation, LivenessFailure, SimulationFailure
from .network import Network
from .statemachine import ListStateMachine

__all__ = [
    "Checker", "Cluster", "CoreError", "DOWN", "InvariantViolation", "ListStateMachine",
    "LivenessFailure", "MAIN_GROUP", "Network", "ReadRequest", "STOPPED", "SimNode",
    "SimOptions", "SimReplica", "SimulationFailure", "UP",
]
