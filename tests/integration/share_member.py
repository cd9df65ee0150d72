"""A share-group member in its own process, for tests that kill members with SIGKILL.

    python -m tests.integration.share_member BOOTSTRAP GROUP TOPIC LOCK_MS

An asyncio ``raftka.aio.ShareConsumer`` (auto_accept off) that polls until it holds some
records, prints them as one JSON line ``{"held": [[partition, offset, value], ...]}`` and
then holds them without acknowledging, until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

import raftka.aio


async def main() -> None:
    bootstrap, group, topic, lock_ms = sys.argv[1:5]
    consumer = raftka.aio.ShareConsumer(bootstrap, group, [topic], auto_accept=False,
                                        client_id="doomed",
                                        record_lock_duration_ms=int(lock_ms))
    await consumer.start()
    while True:
        records = await consumer.poll(0.5)
        if records:
            print(json.dumps({"held": [[r.partition, r.offset, r.value.decode()]
                                       for r in records]}), flush=True)
            break
    await asyncio.sleep(3600)  # hold them: the test kills this process


if __name__ == "__main__":
    asyncio.run(main())
