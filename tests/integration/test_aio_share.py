"""``raftka.aio.ShareConsumer`` against a real 3-node cluster: a member that dies (kill -9)
holding records loses them to another member (delivered again, delivery count 2);
release, reject and accept through the coroutine API; ``async for`` with auto-accept.
The loop runs in debug mode and fails if any callback held it longer than
tests/aio_loop.SLOW_CALLBACK_S."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time

import raftka.aio
from raftka.client import Producer, describe_share_group

from tests.aio_loop import run_unblocked
from tests.harness import REPO, Cluster, wait_for

TOPIC = "aio-tasks"
GROUP = "aio-workers"
LOCK_MS = 2000


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _produce(cluster: Cluster, values: list[str]) -> None:
    with Producer(_bootstrap(cluster)) as producer:
        futures = [producer.send(TOPIC, v.encode(), partition=i % 2)
                   for i, v in enumerate(values)]
        for f in futures:
            f.result(timeout=30)


def test_a_killed_member_s_records_go_to_another_and_acks_work(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    cluster.create_topic(TOPIC, partitions=2)
    values = [f"task-{i}" for i in range(20)]
    _produce(cluster, values)
    doomed = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.share_member", bootstrap, GROUP, TOPIC,
         str(LOCK_MS)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        ready, _, _ = select.select([doomed.stdout], [], [], 60)
        assert ready, "the member process printed nothing within 60 s"
        line = doomed.stdout.readline()  # it prints once it holds records (or dies)
        assert line, f"the member process exited ({doomed.wait()}) without records"
        held = {v for _, _, v in json.loads(line)["held"]}
        assert held
    finally:
        doomed.kill()  # SIGKILL: no release, no leave: its locks must expire
        doomed.wait()

    async def main() -> None:
        async with raftka.aio.ShareConsumer(bootstrap, GROUP, [TOPIC],
                                            auto_accept=False, max_records=50) as member:
            assert member.config.record_lock_duration_ms == LOCK_MS  # the group's
            got: dict[str, object] = {}
            deadline = time.monotonic() + 30
            while len(got) < len(values) and time.monotonic() < deadline:
                for r in await member.poll(0.5):
                    got[r.value.decode()] = r
            assert sorted(got) == sorted(values)
            counts = {v: r.delivery_count for v, r in got.items()}
            assert {v for v, c in counts.items() if c == 2} == held  # redelivered
            assert all(c == 1 for v, c in counts.items() if v not in held)

            await member.release(got["task-0"], error="later")
            await member.reject(got["task-1"], error="poison")
            for v, r in got.items():
                if v not in ("task-0", "task-1"):
                    await member.accept(r)
            await member.flush()
            again = []
            deadline = time.monotonic() + 30
            while not again and time.monotonic() < deadline:
                again = await member.poll(0.5)
            assert [(r.value, r.delivery_count) for r in again] == [
                (b"task-0", counts["task-0"] + 1)]
            await member.accept(again[0])

        later = [f"more-{i}" for i in range(4)]
        async with raftka.aio.ShareConsumer(bootstrap, GROUP, [TOPIC]) as auto:
            async with raftka.aio.Producer(bootstrap) as producer:
                for i, v in enumerate(later):
                    await producer.send_and_wait(TOPIC, v.encode(), partition=i % 2)
            seen = []
            async for record in auto:  # each accepted when the body returns for it
                seen.append(record)
                if len(seen) == len(later):
                    await auto.accept(record)  # the loop is left: accept the last one
                    break
            assert sorted(r.value.decode() for r in seen) == later
            assert all(r.delivery_count == 1 for r in seen)

    run_unblocked(main)

    def settled():
        d = describe_share_group(bootstrap, GROUP)
        return (sum(p.accepted for p in d.partitions) == len(values) - 1 + 4
                and sum(p.dead_lettered for p in d.partitions) == 1
                and all(p.lag == 0 for p in d.partitions))

    wait_for(settled, 30, "24 records accepted, one dead-lettered, nothing left",
             interval=0.2)
