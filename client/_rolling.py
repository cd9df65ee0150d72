"""Rolling restart: restart every node of a cluster in turn without an outage
(``raftka cluster restart --rolling``, ``Admin.rolling_restart``; README, Rolling restart and
upgrade).

The client cannot start or stop a node itself (a node runs under systemd, Kubernetes, Docker
or by hand): a *restart action* does that, either a shell command run per node (``--exec``)
or the operator, told which node to restart next. The procedure, per node, one at a time:

1. Refuse to begin unless the cluster is healthy: every node reachable, no leaderless and no
   under-replicated partition (``Admin.cluster_status``), and every partition with at least
   3 replicas (a partition of 1 or 2 replicas has no quorum while one of them restarts;
   ``allow_unavailable`` goes on anyway).
2. Watch the node's ``grpc.health.v1`` status (the whole node, service ``""``): it must be
   ``SERVING`` before, and its stream must end or turn ``NOT_SERVING`` (a graceful stop
   begins) after the restart action, which proves the node really went down.
3. Run the restart action. The node stops gracefully on SIGTERM: its partition leaderships
   move to other nodes first, so producers see at most a leader change.
4. Wait until the node answers ``SERVING`` again, then until it has caught up: every
   partition it replicates has a leader, the node runs its replica, and the node's high
   watermark has reached the leader's high watermark as it was when the node came back
   (it holds everything committed while it was down); and the cluster is healthy again
   (as in 1). Only then does the next node go: at every moment at most one node is down or
   behind, so every partition of 3 or more replicas keeps a quorum of up-to-date replicas.
5. Wait (a bounded while, not required) for the node to lead again the partitions it is the
   preferred leader of, which the nodes hand back by themselves.

Order: the nodes by id, the controller leader last (one controller election instead of
possibly two). Every wait is bounded by ``node_timeout``; on any failure it stops before
the next node and says which nodes were restarted.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftka.v1.errors import RaftkaError

from ._types import BrokerDescription, ClusterStatus

if TYPE_CHECKING:
    from ._admin import Admin

__all__ = ["NodeRestart", "RollingRestartError", "exec_restart", "restart_order",
           "rolling_restart"]

REPLICAS_MIN = 3  # a partition keeps a quorum while one replica restarts
_POLL_S = 0.2
_CALL_TIMEOUT_S = 2.0
_SERVING_BEFORE_TIMEOUT_S = 10.0
_PREFERRED_LEADER_WAIT_S = 20.0


class RollingRestartError(RaftkaError):
    """The rolling restart cannot begin or cannot go on; the message says what to do."""


@dataclass(frozen=True, slots=True)
class NodeRestart:
    """One node's restart: how long it took from the restart action to caught up."""

    node_id: int
    address: str
    partitions: int  # partition replicas it holds (it caught up on all of them)
    seconds: float


RestartAction = Callable[[BrokerDescription], None]


def exec_restart(template: str) -> RestartAction:
    """A restart action that runs ``template`` with ``sh -c`` for each node, after filling
    in ``{id}``, ``{host}``, ``{port}`` and ``{address}`` (shell-quoted). A non-zero exit
    stops the rolling restart."""
    try:
        template.format(id=1, host="h", port="1", address="h:1")
    except (KeyError, IndexError, ValueError) as exc:
        raise RollingRestartError(f"bad --exec template {template!r}: {exc!r}; use {{id}}, "
                                  "{host}, {port}, {address}") from None

    def run(node: BrokerDescription) -> None:
        host, _, port = node.address.rpartition(":")
        command = template.format(id=node.id, host=shlex.quote(host.strip("[]")),
                                  port=shlex.quote(port), address=shlex.quote(node.address))
        result = subprocess.run(["sh", "-c", command], check=False)
        if result.returncode != 0:
            raise RollingRestartError(
                f"the restart command for node {node.id} exited with {result.returncode}: "
                f"{command}")
    return run


def restart_order(admin: Admin, nodes: Sequence[int] | None = None,
                  timeout: float = 10.0) -> tuple[list[BrokerDescription], int]:
    """The nodes to restart, in order: by id, the controller leader last; and the
    controller leader's id (0 if none is known)."""
    brokers = {b.id: b for b in admin.wait_for_brokers(timeout)}
    wanted = list(dict.fromkeys(nodes)) if nodes else sorted(brokers)
    unknown = [n for n in wanted if n not in brokers]
    if unknown:
        raise RollingRestartError(
            f"unknown node {','.join(map(str, unknown))}: the cluster's nodes are "
            f"{','.join(map(str, sorted(brokers)))}")
    controller = admin.cluster_status(timeout=timeout).controller_id
    ordered = sorted(wanted, key=lambda n: (n == controller, n))
    return [brokers[n] for n in ordered], controller


def rolling_restart(admin: Admin, restart: RestartAction | None = None, *,
                    nodes: Sequence[int] | None = None, node_timeout: float = 300.0,
                    allow_unavailable: bool = False,
                    progress: Callable[[str], None] = lambda line: None) -> list[NodeRestart]:
    """Restart ``nodes`` (default every node) one at a time with ``restart`` (None: the
    operator restarts each node when ``progress`` says so), as the module docstring says."""
    _wait_healthy(admin, node_timeout, "before the rolling restart")
    order, controller = restart_order(admin, nodes)
    if not allow_unavailable:
        _refuse_small_partitions(admin, {n.id for n in order})
    progress(f"rolling restart of {len(order)} node(s), in this order: "
             f"{', '.join(str(n.id) for n in order)} (controller: node {controller})")
    done: list[NodeRestart] = []
    for node in order:
        try:
            done.append(_restart_one(admin, node, restart, node_timeout, progress))
        except RollingRestartError as exc:
            restarted = ",".join(str(d.node_id) for d in done) or "none"
            raise RollingRestartError(f"{exc} (nodes restarted so far: {restarted}; "
                                      "the others were not touched)") from None
    return done


# ---------------------------------------------------------------------------- one node

def _restart_one(admin: Admin, node: BrokerDescription, restart: RestartAction | None,
                 timeout: float, progress: Callable[[str], None]) -> NodeRestart:
    channel = admin._cluster.channel(node.address)  # noqa: SLF001 - the client's own channel
    watch = _DownWatch(channel)
    try:
        if not watch.serving.wait(_SERVING_BEFORE_TIMEOUT_S):
            raise RollingRestartError(f"node {node.id} at {node.address} does not report "
                                      "SERVING on grpc.health; not restarting it")
        leads = admin.cluster_status().nodes
        count = next((n.leader_count for n in leads if n.id == node.id), 0)
        started = time.monotonic()
        if restart is None:
            progress(f"node {node.id} ({node.address}, leads {count} partition(s)): restart "
                     "it now; waiting for it to stop and come back")
            restart_timeout = max(timeout, 3600.0)  # a person does it
        else:
            progress(f"node {node.id} ({node.address}, leads {count} partition(s)): "
                     "restarting")
            restart(node)
            restart_timeout = timeout
        if not watch.down.wait(restart_timeout):
            raise RollingRestartError(
                f"node {node.id} did not go down within {restart_timeout:.0f}s (its health "
                "stream stayed SERVING): did the restart action restart it?")
    finally:
        watch.close()
    progress(f"node {node.id}: down; waiting for it to come back and catch up")
    if restart is None:
        started = time.monotonic()  # from when it went down: not the operator's delay
    deadline = started + timeout
    _wait(lambda: _serving(channel), deadline,
          f"node {node.id} to answer SERVING on grpc.health again")
    partitions = _wait_caught_up(admin, node.id, deadline)
    _wait_healthy(admin, max(1.0, deadline - time.monotonic()),
                  f"after restarting node {node.id}")
    seconds = time.monotonic() - started
    progress(f"node {node.id}: back and caught up on {partitions} partition(s) in "
             f"{seconds:.1f}s")
    if not _wait_preferred(admin, node.id, min(_PREFERRED_LEADER_WAIT_S, timeout)):
        progress(f"node {node.id}: does not lead all its preferred partitions yet; going on")
    return NodeRestart(node.id, node.address, partitions, seconds)


class _DownWatch:
    """``grpc.health.v1.Health/Watch`` of a whole node on a thread: ``serving`` once it said
    SERVING, then ``down`` when it says anything else or the stream ends (the node stops)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.serving = threading.Event()
        self.down = threading.Event()
        self._call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""))
        self._thread = threading.Thread(target=self._run, name="raftka-health-watch",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for answer in self._call:
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    self.serving.set()
                elif self.serving.is_set():
                    break
        except grpc.RpcError:
            pass
        if self.serving.is_set():
            self.down.set()

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


def _serving(channel: grpc.Channel) -> bool:
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=_CALL_TIMEOUT_S)
    except grpc.RpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def _wait(predicate: Callable[[], Any], deadline: float, what: str) -> Any:
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RollingRestartError(f"timed out waiting for {what}")
        time.sleep(_POLL_S)


def _unhealthy(status: ClusterStatus) -> str:
    """Why the cluster is not healthy, or ""."""
    down = [n.id for n in status.nodes if not n.reachable or n.seen_down_by]
    if down:
        return f"node(s) {','.join(map(str, down))} unreachable (from some nodes)"
    if not status.controller_id:
        return "no controller leader"
    if status.leaderless:
        first = status.leaderless[0]
        return (f"{len(status.leaderless)} partition(s) without a leader "
                f"({first.topic}/{first.partition}, ...)")
    if status.under_replicated:
        first = status.under_replicated[0]
        return (f"{len(status.under_replicated)} under-replicated partition(s) "
                f"({first.topic}/{first.partition}, ...)")
    return ""


def _wait_healthy(admin: Admin, timeout: float, when: str) -> ClusterStatus:
    deadline = time.monotonic() + timeout
    why = "no answer"
    while True:
        try:
            status = admin.cluster_status(timeout=min(_CALL_TIMEOUT_S * 2, timeout))
            why = _unhealthy(status)
            if not why:
                return status
        except RaftkaError as exc:
            why = str(exc)
        if time.monotonic() > deadline:
            raise RollingRestartError(f"the cluster is not healthy {when}: {why}; see "
                                      "`raftka cluster status`")
        time.sleep(_POLL_S)


def _refuse_small_partitions(admin: Admin, nodes: set[int]) -> None:
    small = [(t.name, p.partition, len(p.replicas))
             for t in admin.describe_topics() for p in t.partitions
             if len(p.replicas) < REPLICAS_MIN and nodes.intersection(p.replicas)]
    if small:
        topic, partition, count = small[0]
        raise RollingRestartError(
            f"{len(small)} partition(s) have fewer than {REPLICAS_MIN} replicas (e.g. "
            f"{topic}/{partition} has {count}) and lose their quorum while one of their "
            "nodes restarts; pass --allow-unavailable to restart anyway")


def _wait_caught_up(admin: Admin, node_id: int, deadline: float) -> int:
    """Wait until node ``node_id`` runs every replica it holds and its high watermark of
    each reached the leader's as first seen here; returns the number of replicas."""
    targets: dict[tuple[str, int], int] = {}

    def caught_up() -> bool:
        try:
            _, answers = admin._node_answers(_CALL_TIMEOUT_S)  # noqa: SLF001
        except RaftkaError:
            return False
        if node_id not in answers:
            return False
        mine = {(t.name, p.partition): p for t in answers[node_id][0].topics
                for p in t.partitions if node_id in p.replicas}
        views: dict[tuple[str, int], dict[int, Any]] = {}
        for nid, (meta, _) in answers.items():
            for t in meta.topics:
                for p in t.partitions:
                    if (t.name, p.partition) in mine:
                        views.setdefault((t.name, p.partition), {})[nid] = p
        ok = True
        for key, own in mine.items():
            claims = [(info.leader_term, nid) for nid, info in views[key].items()
                      if info.leader_id == nid]
            if not claims or not own.leader_term:
                ok = False  # no leader yet, or the node does not run its replica yet
                continue
            leader = max(claims)[1]
            target = targets.setdefault(key, views[key][leader].high_watermark)
            if own.high_watermark < target:
                ok = False
        return ok and len(targets) == len(mine)

    _wait(caught_up, deadline, f"node {node_id} to catch up on its partitions")
    return len(targets)


def _wait_preferred(admin: Admin, node_id: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            preferred = [p for t in admin.describe_topics() for p in t.partitions
                         if p.replicas and p.replicas[0] == node_id]
            if all(p.leader_id == node_id for p in preferred):
                return True
        except RaftkaError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
