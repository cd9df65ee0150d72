"""Consumer groups against real node processes: assignment, failover, fencing, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import grpc
import pytest

from raftka.client import CommitFailedError, Consumer, Producer
from raftka.v1 import errors_pb2, group_pb2, group_pb2_grpc
from tests.harness import REPO, Cluster, error_info, wait_for
from tests.safety import assert_log_matches_acks

TOPIC = "orders"


def bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers[i] for i in sorted(cluster.peers))


def produce_values(cluster: Cluster, values: list[str],
                   topic: str = TOPIC) -> dict[str, tuple[int, int]]:
    """Send every value (keyed by itself); {value: (partition, offset)} as acknowledged."""
    with Producer(bootstrap(cluster)) as producer:
        futures = [producer.send(topic, v.encode(), key=v.encode()) for v in values]
        return {v: f.result(timeout=30) for v, f in zip(values, futures)}


def assert_consumed_exactly_the_acks(seen: dict[tuple[int, int], list[tuple[int, str]]],
                                     values: list[str],
                                     acked: dict[str, tuple[int, int]]) -> None:
    """``seen`` (from ``drain``) holds, per partition, exactly the acknowledged records:
    each once, at its offset, in send order (``tests.safety.assert_log_matches_acks``)."""
    for partition in sorted({p for p, _ in acked.values()} | {p for p, _ in seen}):
        log = sorted((o, v.encode()) for (p, o), entries in seen.items() if p == partition
                     for _, v in entries)
        sent = [v.encode() for v in values if acked[v][0] == partition]
        assert_log_matches_acks(log, sent, {v.encode(): acked[v][1] for v in values
                                            if acked[v][0] == partition},
                                where=f"{TOPIC}/{partition} as the group consumed it")


def coordinator_stub(cluster: Cluster, group: str) -> tuple[int, group_pb2_grpc.GroupCoordinatorStub]:
    """The coordinator of ``group`` once it is elected and loaded."""

    def find():
        for nid in cluster.live():
            try:
                stub = group_pb2_grpc.GroupCoordinatorStub(cluster.channel(nid))
                r = stub.FindCoordinator(group_pb2.FindCoordinatorRequest(group_id=group),
                                         timeout=2)
                if not r.node_id or r.node_id not in cluster.live():
                    continue
                coord = group_pb2_grpc.GroupCoordinatorStub(cluster.channel(r.node_id))
                coord.FetchOffsets(group_pb2.OffsetFetchRequest(group_id=group), timeout=2)
                return r.node_id, coord
            except grpc.RpcError:
                continue
        return None

    return wait_for(find, 30, f"the coordinator of {group}")


def offsets_partition_of(cluster: Cluster, group: str) -> int:
    _, stub = coordinator_stub(cluster, group)
    return stub.FindCoordinator(group_pb2.FindCoordinatorRequest(group_id=group),
                                timeout=5).offsets_partition


def drain(consumers: list[Consumer], want: int, timeout: float = 60) -> dict[int, list]:
    """Poll every consumer (one thread each, committing after each poll) until ``want``
    distinct (partition, offset) pairs were seen; returns who saw what."""
    seen: dict[tuple[int, int], list[tuple[int, str]]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def run(i: int, c: Consumer) -> None:
        while not stop.is_set():
            records = c.poll(0.2)
            with lock:
                for r in records:
                    seen.setdefault((r.partition, r.offset), []).append((i, r.value.decode()))
            if records:
                c.commit()

    threads = [threading.Thread(target=run, args=(i, c), daemon=True)
               for i, c in enumerate(consumers)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(seen) >= want, timeout, f"{want} records consumed")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    return seen


def test_three_consumers_share_six_partitions_disjointly_and_two_groups_each_see_all(
        cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=6)
    values = [f"order-{i}" for i in range(300)]
    acked = produce_values(cluster, values)
    boot = bootstrap(cluster)
    workers = [Consumer(boot, "inventory", [TOPIC]) for _ in range(3)]
    audit = Consumer(boot, "audit", [TOPIC])
    try:
        seen = drain(workers, len(values))
        assert_consumed_exactly_the_acks(seen, values, acked)  # each handled once

        def balanced() -> bool:  # the first member may drain all before the others join
            late = [r for c in workers for r in c.poll(0.1)]  # (rebalances need polls)
            assert not late, f"{len(late)} records handed out again after their commit"
            return sorted(len(c.assignment()) for c in workers) == [2, 2, 2]
        wait_for(balanced, 30, "two partitions per member")
        assignments = [c.assignment() for c in workers]
        assert len(set().union(*assignments)) == 6
        audit_seen = drain([audit], len(values))
        assert_consumed_exactly_the_acks(audit_seen, values, acked)
    finally:
        for c in [*workers, audit]:
            c.close()


def _member(cluster: Cluster, group: str, session_ms: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.group_member", bootstrap(cluster), group,
         TOPIC, str(session_ms)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


class _Output:
    """Reads a member process's JSON lines in a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.assignment: list = []
        self.records: list = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            event = json.loads(line)
            if "assignment" in event:
                self.assignment = event["assignment"]
            else:
                self.records.extend(event["records"])


def test_a_killed_member_loses_its_partitions_to_the_survivor(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=6)
    session_ms = 2000
    procs = [_member(cluster, "billing", session_ms) for _ in range(2)]
    outs = [_Output(p) for p in procs]
    try:
        wait_for(lambda: all(len(o.assignment) == 3 for o in outs), 60,
                 "two members with three partitions each")
        acked = produce_values(cluster, [f"a-{i}" for i in range(120)])
        wait_for(lambda: sum(len(o.records) for o in outs) >= 120, 60, "first batch consumed")
        procs[0].kill()  # SIGKILL: no leave, no final commit
        procs[0].wait()
        # Removed after its session timeout; the survivor then owns all six.
        wait_for(lambda: len(outs[1].assignment) == 6, session_ms / 1000 + 20,
                 "the survivor to own all six partitions")
        acked.update(produce_values(cluster, [f"b-{i}" for i in range(120)]))
        wait_for(lambda: {v for _, _, v in outs[1].records} >= {f"b-{i}" for i in range(120)},
                 60, "the survivor to read the second batch")
        # Uncommitted records of the killed member are delivered again (at-least-once),
        # so a (partition, offset) may be read twice; what was read is exactly what was
        # acknowledged: every record, each at its offset, nothing else.
        everything = {tuple(r) for o in outs for r in o.records}
        assert everything == {(p, o, v) for v, (p, o) in acked.items()}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_committed_offsets_survive_kill_of_the_coordinator_node(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=3)
    produce_values(cluster, [f"o-{i}" for i in range(90)])
    boot = bootstrap(cluster)
    with Consumer(boot, "payments", [TOPIC]) as consumer:
        drain([consumer], 90)
        committed = consumer.committed([(TOPIC, p) for p in range(3)])
    assert sum(committed.values()) == 90
    coord_id, _ = coordinator_stub(cluster, "payments")
    cluster.kill(coord_id)
    new_coord, _ = coordinator_stub(cluster, "payments")
    assert new_coord != coord_id
    with Consumer(boot, "payments", [TOPIC]) as consumer:
        assert consumer.committed([(TOPIC, p) for p in range(3)]) == committed
        produce_values(cluster, ["after-failover"])
        seen = drain([consumer], 1)
        assert [v for e in seen.values() for _, v in e] == ["after-failover"]
    cluster.start(coord_id)
    cluster.assert_replicas_agree("__consumer_offsets", offsets_partition_of(cluster, "payments"))
    for p in range(3):
        cluster.assert_replicas_agree(TOPIC, p)


def _join(stub, group: str, session_ms: int = 10_000) -> group_pb2.GroupHeartbeatResponse:
    r = stub.Heartbeat(group_pb2.GroupHeartbeatRequest(
        group_id=group, topics=[TOPIC], session_timeout_ms=session_ms), timeout=5)
    return wait_for(lambda: _beat(stub, group, r.member_id, r.member_epoch), 10,
                    "an assignment")


def _beat(stub, group, member_id, epoch):
    r = stub.Heartbeat(group_pb2.GroupHeartbeatRequest(
        group_id=group, member_id=member_id, member_epoch=epoch), timeout=5)
    if r.assignment and r.member_epoch == epoch:
        return r
    return stub.Heartbeat(group_pb2.GroupHeartbeatRequest(
        group_id=group, member_id=member_id, member_epoch=r.member_epoch), timeout=5) \
        if r.assignment else None


def _commit_error(stub, group, member_id, epoch, partition=0, offset=1, topic=TOPIC):
    with pytest.raises(grpc.RpcError) as e:
        stub.CommitOffsets(group_pb2.OffsetCommitRequest(
            group_id=group, member_id=member_id, member_epoch=epoch,
            offsets=[group_pb2.OffsetCommitEntry(topic=topic, partition=partition,
                                                 offset=offset)]), timeout=5)
    info = error_info(e.value)
    assert info is not None and info.message
    return e.value.code(), info.code


def test_stale_member_commit_and_bad_input_are_refused(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=2)
    # Bad input, each with a clear status (a long-lived member, so nothing times out).
    _, stub = coordinator_stub(cluster, "careful")
    x = _join(stub, "careful", session_ms=60_000)
    assert _commit_error(stub, "careful", x.member_id, x.member_epoch, offset=-3) == (
        grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.INVALID_OFFSET)
    assert _commit_error(stub, "careful", "no-such-member", 1) == (
        grpc.StatusCode.FAILED_PRECONDITION, errors_pb2.UNKNOWN_MEMBER_ID)
    assert _commit_error(stub, "careful", x.member_id, x.member_epoch, topic="nope") == (
        grpc.StatusCode.NOT_FOUND, errors_pb2.UNKNOWN_TOPIC)
    assert _commit_error(stub, "careful", x.member_id, x.member_epoch, partition=7) == (
        grpc.StatusCode.NOT_FOUND, errors_pb2.UNKNOWN_PARTITION)
    with pytest.raises(grpc.RpcError) as e:
        stub.Heartbeat(group_pb2.GroupHeartbeatRequest(group_id="", topics=[TOPIC]), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    _, stub = coordinator_stub(cluster, "fenced")
    a = _join(stub, "fenced", session_ms=1000)
    assert sorted(p for tp in a.assignment for p in tp.partitions) == [0, 1]
    stub.CommitOffsets(group_pb2.OffsetCommitRequest(
        group_id="fenced", member_id=a.member_id, member_epoch=a.member_epoch,
        offsets=[group_pb2.OffsetCommitEntry(topic=TOPIC, partition=0, offset=5)]), timeout=5)

    # A stops heartbeating; B joins and gets both partitions once A is removed.
    b = stub.Heartbeat(group_pb2.GroupHeartbeatRequest(
        group_id="fenced", topics=[TOPIC], session_timeout_ms=10_000), timeout=5)
    state = {"epoch": b.member_epoch, "stub": stub}

    def b_owns_both():
        try:
            r = state["stub"].Heartbeat(group_pb2.GroupHeartbeatRequest(
                group_id="fenced", member_id=b.member_id, member_epoch=state["epoch"]),
                timeout=5)
        except grpc.RpcError as exc:
            # the offsets partition may change leader on a loaded machine: membership is
            # replicated, so B carries on at the new coordinator (as the client does)
            info = error_info(exc)
            if info is None or info.code not in (errors_pb2.NOT_COORDINATOR,
                                                 errors_pb2.COORDINATOR_LOADING):
                raise
            state["stub"] = coordinator_stub(cluster, "fenced")[1]
            return False
        state["epoch"] = r.member_epoch
        return sorted(p for tp in r.assignment for p in tp.partitions) == [0, 1]

    wait_for(b_owns_both, 15, "B to own both partitions after A's session timeout")
    stub = state["stub"]
    # The stale member's commit is refused: its partitions belong to B now.
    assert _commit_error(stub, "fenced", a.member_id, a.member_epoch) == (
        grpc.StatusCode.FAILED_PRECONDITION, errors_pb2.UNKNOWN_MEMBER_ID)
    # B's own commits work; the committed offset A made earlier is still there.
    r = stub.FetchOffsets(group_pb2.OffsetFetchRequest(group_id="fenced"), timeout=5)
    assert {(o.partition, o.offset) for o in r.offsets} == {(0, 5)}


def test_consumer_commit_after_losing_a_partition_raises_commit_failed(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=2)
    boot = bootstrap(cluster)
    first = Consumer(boot, "shared", [TOPIC])
    second = None
    try:
        wait_for(lambda: first.poll(0.1) is not None and len(first.assignment()) == 2, 30,
                 "the first member to own both partitions")
        second = Consumer(boot, "shared", [TOPIC])
        def both_own_one():
            first.poll(0.05)  # applying the revocation happens inside poll
            second.poll(0.05)
            return len(first.assignment()) == 1 and len(second.assignment()) == 1

        wait_for(both_own_one, 30, "each member to own one partition")
        lost = next(iter(second.assignment()))
        with pytest.raises(CommitFailedError):
            first.commit({(lost.topic, lost.partition): 1})
    finally:
        first.close()
        if second is not None:
            second.close()


def test_rebalance_after_a_member_leaves(cluster: Cluster):
    """close() leaves the group: the other member takes the partitions without waiting
    for a session timeout."""
    cluster.create_topic(TOPIC, partitions=4)
    boot = bootstrap(cluster)
    a = Consumer(boot, "leavers", [TOPIC], session_timeout_ms=60_000)
    b = Consumer(boot, "leavers", [TOPIC], session_timeout_ms=60_000)
    try:
        wait_for(lambda: a.poll(0.05) is not None and b.poll(0.05) is not None
                 and len(a.assignment()) == 2 and len(b.assignment()) == 2, 30,
                 "two members with two partitions each")
        a.close()
        # Bounded far below the 60 s session timeout: the leave, not a timeout, moves them.
        wait_for(lambda: b.poll(0.05) is not None and len(b.assignment()) == 4, 20,
                 "the remaining member to own all four")
    finally:
        a.close()
        b.close()


def test_offsets_partition_compacts_and_offsets_survive_restarts(tmp_path):
    """With a tiny compaction threshold the offsets partitions snapshot their map and drop
    old entries. A node that missed the commits gets the map by snapshot; a restarted
    coordinator rebuilds it from snapshot + tail."""
    from raftka.v1 import broker_pb2

    c = Cluster(tmp_path, 3, extra_args=("--offsets-compact-entries", "20"))
    try:
        c.start_all()
        c.create_topic(TOPIC, partitions=2)
        coord, stub = coordinator_stub(c, "compacting")
        find = group_pb2.FindCoordinatorRequest(group_id="compacting")
        offsets_partition = stub.FindCoordinator(find, timeout=5).offsets_partition
        down = next(n for n in sorted(c.peers) if n != coord)
        c.kill(down)  # it misses every commit below; only a snapshot can bring them
        for i in range(1, 121):
            request = group_pb2.OffsetCommitRequest(
                group_id="compacting",
                offsets=[group_pb2.OffsetCommitEntry(topic=TOPIC, partition=i % 2, offset=i)])
            while True:  # leadership may move (preferred-leader handoff): follow it
                try:
                    stub.CommitOffsets(request, timeout=5)
                    break
                except grpc.RpcError as e:
                    info = error_info(e)
                    assert info is not None and info.retriable, e
                    coord, stub = coordinator_stub(c, "compacting")
        expected = {(0, 120), (1, 119)}

        def log_start_on(node_id):
            r = c.broker(node_id).Metadata(
                broker_pb2.MetadataRequest(topics=["__consumer_offsets"]), timeout=5)
            return r.topics[0].partitions[offsets_partition].log_start_offset

        wait_for(lambda: log_start_on(coord) > 0, 30, "the offsets partition to compact")

        def listed_on(node_id):
            try:
                r = group_pb2_grpc.GroupCoordinatorStub(c.channel(node_id)).ListGroups(
                    group_pb2.ListGroupsRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return "compacting" in {g.group_id for g in r.groups}

        c.start(down)
        wait_for(lambda: listed_on(down), 30, "the restarted node to install the snapshot")

        def offsets():
            _, stub = coordinator_stub(c, "compacting")
            try:
                r = stub.FetchOffsets(group_pb2.OffsetFetchRequest(group_id="compacting"),
                                      timeout=5)
            except grpc.RpcError:
                return None  # moved between finding and asking: ask again
            return {(o.partition, o.offset) for o in r.offsets}

        assert wait_for(offsets, 30, "committed offsets") == expected
        for _ in range(2):
            coord, _ = coordinator_stub(c, "compacting")
            c.kill(coord)
            c.start(coord)
            assert wait_for(offsets, 30, "committed offsets after a restart") == expected
        # compacted at different points on each replica: compared from the latest start
        c.assert_replicas_agree("__consumer_offsets", offsets_partition)
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop_all()


def test_a_slow_handler_neither_loses_membership_nor_stalls_the_others(cluster: Cluster):
    cluster.create_topic(TOPIC, partitions=4)
    boot = bootstrap(cluster)
    slow = Consumer(boot, "slowpoke", [TOPIC], session_timeout_ms=1500)
    fast = Consumer(boot, "slowpoke", [TOPIC], session_timeout_ms=1500)
    try:
        def split():
            slow.poll(0.05)
            fast.poll(0.05)
            return len(slow.assignment()) == 2 and len(fast.assignment()) == 2

        wait_for(split, 30, "two members with two partitions each")
        member_id, owned = slow.member_id, slow.assignment()
        fast_partitions = sorted(tp.partition for tp in fast.assignment())
        values = [f"p{p}-{i}" for p in fast_partitions for i in range(20)]
        # The slow member "handles" a record for several session timeouts (no poll): its
        # heartbeat thread keeps it in the group, and the fast one keeps consuming.
        slow_since = time.monotonic()
        got: list[str] = []
        with Producer(boot) as producer:
            for v in values:
                producer.send(TOPIC, v.encode(), partition=int(v[1:v.index("-")]))

        def fast_has_all():
            got.extend(r.value.decode() for r in fast.poll(0.1))
            return sorted(got) == sorted(values)

        wait_for(fast_has_all, 60, "the fast member to consume while the slow one is busy")
        time.sleep(max(0.0, slow_since + 5.0 - time.monotonic()))  # the slow handler's work
        assert slow.member_id == member_id
        slow.poll(0.05)
        assert slow.assignment() == owned  # never removed, nothing moved
    finally:
        slow.close()
        fast.close()


def test_members_keep_their_membership_and_partitions_when_the_coordinator_moves(
        cluster: Cluster):
    """The coordinator's node stops gracefully (its leaderships move to the others) and
    comes back, twice: a live member keeps its member id, its partitions and its right to
    commit through every move, and a member joining right after a move gets only
    partitions nobody holds. This is how tests/integration/test_examples.py failed once:
    the offsets partition's leadership moved (a first election won by a replica that is not
    the preferred one, then the preferred-leader handoff), the new coordinator knew no
    member, and a member joining just then was given every partition while the first one
    still processed them."""
    cluster.create_topic(TOPIC, partitions=4)
    boot = bootstrap(cluster)
    first = Consumer(boot, "steady", [TOPIC], session_timeout_ms=10_000)
    second = None
    try:
        wait_for(lambda: first.poll(0.1) is not None and len(first.assignment()) == 4, 30,
                 "the first member to own the four partitions")
        ids = {"first": first.member_id}

        def members_known() -> set[str]:
            _, stub = coordinator_stub(cluster, "steady")
            try:
                r = stub.DescribeGroup(group_pb2.DescribeGroupRequest(group_id="steady"),
                                       timeout=2)
            except grpc.RpcError:
                return set()
            return {m.member_id for m in r.members}

        def check_members() -> None:
            first.poll(0.05)
            assert first.member_id == ids["first"], "the first member lost its membership"
            if second is not None:
                second.poll(0.05)
                assert second.member_id == ids.get("second", second.member_id), \
                    "the second member lost its membership"
                assert not first.assignment() & second.assignment(), "a partition owned twice"

        def shared() -> bool:
            check_members()
            return len(first.assignment()) == 2 and len(second.assignment()) == 2

        for move in range(2):
            old, _ = coordinator_stub(cluster, "steady")
            assert cluster.terminate(old) == 0
            new, _ = coordinator_stub(cluster, "steady")
            assert new != old
            if second is None:  # joins the new coordinator at once, racing the first
                second = Consumer(boot, "steady", [TOPIC], session_timeout_ms=10_000)
                wait_for(lambda: second.poll(0.05) is not None and second.member_id, 30,
                         "the second member to join")
                ids["second"] = second.member_id
            wait_for(shared, 30, f"the two members to share the partitions (move {move + 1})")
            wait_for(lambda: set(ids.values()) <= members_known(), 30,
                     f"coordinator node {new} to know both members")
            first.commit()  # still members: their commits are accepted
            second.commit()
            cluster.start(old)
            check_members()
        cluster.assert_replicas_agree("__consumer_offsets",
                                      offsets_partition_of(cluster, "steady"))
    finally:
        first.close()
        if second is not None:
            second.close()


def test_three_members_keep_ids_epochs_and_partitions_when_the_coordinator_is_killed(
        cluster: Cluster):
    """Issue 19: a group of three consumers, kill -9 of the coordinator's node. The new
    coordinator rebuilds the group from the membership records in the offsets log: the
    same member ids with the same member epochs and partitions, the group epoch continues
    (it neither restarts nor bumps: nothing about the group changed), no member rejoins,
    and as no partition changed hands no record is consumed twice (each member keeps its
    position; the at-least-once window, records after a member's last commit, only opens
    when a partition moves)."""
    cluster.create_topic(TOPIC, partitions=6)
    boot = bootstrap(cluster)
    consumers = [Consumer(boot, "trio", [TOPIC], session_timeout_ms=10_000,
                          auto_offset_reset="earliest") for _ in range(3)]
    seen: dict[tuple[int, int], list[tuple[int, str]]] = {}
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def run(i: int, c: Consumer) -> None:
        try:
            while not stop.is_set():
                records = c.poll(0.2)
                with lock:
                    for r in records:
                        seen.setdefault((r.partition, r.offset), []).append((i, r.value.decode()))
                if records:
                    try:
                        c.commit()
                    except CommitFailedError:
                        raise
                    except Exception:  # noqa: BLE001 - a commit racing the failover; the next one covers it
                        pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    def describe() -> group_pb2.DescribeGroupResponse:
        _, stub = coordinator_stub(cluster, "trio")
        return stub.DescribeGroup(group_pb2.DescribeGroupRequest(group_id="trio"), timeout=5)

    def membership(d: group_pb2.DescribeGroupResponse) -> dict[str, tuple[int, frozenset]]:
        return {m.member_id: (m.member_epoch, frozenset(
            (tp.topic, p) for tp in m.assignment for p in tp.partitions)) for m in d.members}

    threads = [threading.Thread(target=run, args=(i, c), daemon=True)
               for i, c in enumerate(consumers)]
    try:
        for t in threads:
            t.start()
        def settled() -> bool:
            try:
                d = describe()
            except grpc.RpcError:  # NOT_FOUND until the first member joined
                return False
            return d.state == "stable" and len(d.members) == 3 and all(
                len(tps) == 2 for _, tps in membership(d).values())

        wait_for(settled, 30, "three members with two partitions each, stable")
        # the coordinator's view settles before every member has taken its partitions
        wait_for(lambda: all(len(c.assignment()) == 2 for c in consumers), 30,
                 "every member holding its two partitions")
        before = describe()
        ids = [c.member_id for c in consumers]
        assignments = [c.assignment() for c in consumers]
        values = [f"v{i}" for i in range(300)]
        acked = produce_values(cluster, values[:150])
        wait_for(lambda: len(seen) >= 150, 30, "the first half consumed")
        old, _ = coordinator_stub(cluster, "trio")
        cluster.kill(old)
        new, _ = coordinator_stub(cluster, "trio")
        assert new != old
        acked.update(produce_values(cluster, values[150:]))
        wait_for(lambda: len(seen) >= 300, 60, "every record consumed after the failover")
        after = describe()
        assert not failures, failures
        # a loaded machine may elect twice (the survivors' leadership can move once more):
        # what matters is that a survivor coordinates and nothing about the group changed
        assert after.coordinator_id != old and after.coordinator_id in cluster.live()
        assert membership(after) == membership(before), "members, epochs or partitions changed"
        assert after.group_epoch == before.group_epoch, (
            f"group epoch {before.group_epoch} became {after.group_epoch}")
        assert [c.member_id for c in consumers] == ids, "a member rejoined"
        assert [c.assignment() for c in consumers] == assignments
        twice = {k: v for k, v in seen.items() if len(v) > 1}
        assert not twice, f"consumed twice without any partition moving: {twice}"
        assert_consumed_exactly_the_acks(seen, values, acked)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for c in consumers:
            c.close()
