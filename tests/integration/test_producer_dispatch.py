"""The Producer's low-latency paths against real processes (rules 4 and 5 of
client/_sender.py): with linger_ms=0 a record is sent by the thread that called
``send()``, answers complete their batch on the thread that delivered them, and a lone
small batch goes as a unary Produce call. These must keep the guarantees of the
sender-thread path: per-partition order, no duplicates, retries after a leader change."""

from __future__ import annotations

import threading

import pytest

from raftka.client import Producer
from raftka.v1.recordbatch import decode_batches

from tests.harness import Cluster, wait_for


def _log(cluster: Cluster, topic: str) -> list[tuple[int, bytes]]:
    return [(r.offset, r.value) for r in decode_batches(cluster.fetch_all(topic, 0))]


@pytest.mark.parametrize("acks", ["all", "1"])
def test_concurrent_senders_keep_their_order_and_write_each_record_once(
        cluster: Cluster, acks: str) -> None:
    """Four threads send to one partition at once; each sends its records directly. A
    thread's records keep its order in the log, and every record is there exactly once
    at the offset its future reported."""
    cluster.create_topic("direct")
    cluster.wait_leader("direct", 0)
    threads_count, per_thread = 4, 400
    futures: dict[int, list] = {t: [] for t in range(threads_count)}
    with Producer(",".join(cluster.peers.values()), acks=acks, linger_ms=0) as producer:
        producer.send("direct", b"warm-up", partition=0).result(30)

        def run(t: int) -> None:
            for i in range(per_thread):
                futures[t].append(producer.send("direct", b"%d-%05d" % (t, i), partition=0))
                if i % 7 == 0:  # a mix of lone records and records that queue up
                    futures[t][-1].result(30)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(threads_count)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        producer.flush(60)
        stats = producer.statistics()
    offsets = {}
    for t, fs in futures.items():
        got = [f.result(0)[1] for f in fs]
        assert got == sorted(got), f"thread {t}: offsets follow its send order"
        offsets.update({o: b"%d-%05d" % (t, i) for i, o in enumerate(got)})
    # acks=1 answers before the followers have the records: the committed log (what a
    # fetch returns) catches up a moment later.
    total = 1 + threads_count * per_thread
    wait_for(lambda: len(_log(cluster, "direct")) >= total, 30, "every record committed")
    log = _log(cluster, "direct")
    assert [o for o, _ in log] == list(range(total)), "no gap"
    assert dict(log[1:]) == offsets, "each record once, where its future said"
    assert stats["records_sent"] == 1 + threads_count * per_thread
    assert stats["requests"] < stats["records_sent"], "records that queued went together"


def test_a_direct_send_without_a_known_leader_goes_through_the_sender(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's thread never blocks on metadata: a batch whose leader it does not
    know goes to the sender thread, which finds the leader (refreshing the metadata if
    needed) and sends it."""
    cluster.create_topic("unknown-leader")
    cluster.wait_leader("unknown-leader", 0)
    with Producer(",".join(cluster.peers.values()), acks="all", linger_ms=0) as producer:
        assert producer.send("unknown-leader", b"a", partition=0).result(30) == (0, 0)
        known = producer._cluster.leader_address
        asked_by: list[str] = []

        def leader_address(topic: str, partition: int) -> str | None:
            asked_by.append(threading.current_thread().name)
            if threading.current_thread() is threading.main_thread():
                return None  # as if the metadata had no leader yet
            return known(topic, partition)

        monkeypatch.setattr(producer._cluster, "leader_address", leader_address)
        assert producer.send("unknown-leader", b"b", partition=0).result(30) == (0, 1)
        assert asked_by[0] == threading.main_thread().name
        assert "raftka-producer-sender" in asked_by
        assert producer.statistics()["requests"] == 2  # handed over, not sent twice
    assert [v for _, v in _log(cluster, "unknown-leader")] == [b"a", b"b"]


def test_a_lone_record_follows_a_leader_change_without_idempotence(
        cluster: Cluster) -> None:
    """acks=1 (no idempotence, one batch in flight): the unary call to the killed leader
    fails or is answered NOT_LEADER, and the record is sent again to the new leader."""
    cluster.create_topic("moving")
    leader = cluster.wait_leader("moving", 0)
    with Producer(",".join(cluster.peers.values()), acks="1", linger_ms=0,
                  retry_backoff_ms=20, request_timeout_ms=2000) as producer:
        assert producer.send("moving", b"before", partition=0).result(30) == (0, 0)
        cluster.kill(leader)
        wait_for(lambda: cluster.partition_leader("moving", 0) not in (0, leader), 30,
                 "a new leader")
        partition, offset = producer.send("moving", b"after", partition=0).result(60)
        assert partition == 0 and offset >= 1
        assert producer.statistics()["retries"] >= 1
    cluster.start(leader)
    # acks=1 answered once the new leader stored it; fetches see it once a majority has it
    # (under load the one surviving follower may still be catching up)
    values = wait_for(lambda: (lambda vs: vs if b"after" in vs else None)(
        [v for _, v in _log(cluster, "moving")]), 30, "the resent record committed")
    assert values[0] == b"before" and b"after" in values
    cluster.assert_replicas_agree("moving", 0)  # the restarted old leader included


def test_flush_and_close_wait_for_records_sent_by_the_callers(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """flush() returns only once every record's future holds its outcome: the futures are
    resolved after their batch is marked done (outside the producer's lock), so a future
    that is slow to resolve must still hold flush back."""
    from raftka.client._producer import _RecordFuture
    set_result = _RecordFuture.set_result
    slowed = threading.Event()

    def slow_first_set_result(self, result) -> None:
        if not slowed.is_set():
            slowed.set()
            threading.Event().wait(0.3)
        set_result(self, result)
    monkeypatch.setattr(_RecordFuture, "set_result", slow_first_set_result)
    cluster.create_topic("closing")
    cluster.wait_leader("closing", 0)
    producer = Producer(",".join(cluster.peers.values()), acks="all", linger_ms=0)
    futures = [producer.send("closing", b"%04d" % i, partition=0) for i in range(500)]
    producer.flush(60)
    assert all(f.done() for f in futures)
    futures += [producer.send("closing", b"%04d" % i, partition=0) for i in range(500, 800)]
    producer.close(60)
    assert [f.result(0)[1] for f in futures] == list(range(800))
