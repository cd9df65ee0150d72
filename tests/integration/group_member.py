"""A consumer-group member in its own process, for tests that kill members with SIGKILL.

    python -m tests.integration.group_member BOOTSTRAP GROUP TOPIC [SESSION_TIMEOUT_MS]

Prints one JSON line per event on stdout: ``{"assignment": [[topic, partition], ...]}``
whenever its assignment changes, ``{"records": [[partition, offset, value], ...]}`` for each
non-empty poll, then commits what it printed (so a line printed before a commit may be
re-delivered after a crash; a committed one never is).
"""

from __future__ import annotations

import json
import sys

from raftka.client import Consumer


def main() -> None:
    bootstrap, group, topic = sys.argv[1:4]
    session_ms = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    consumer = Consumer(bootstrap, group, [topic], session_timeout_ms=session_ms)
    last = None
    try:
        while True:
            records = consumer.poll(0.2)
            assignment = sorted(consumer.assignment())
            if assignment != last:
                print(json.dumps({"assignment": assignment}), flush=True)
                last = assignment
            if records:
                print(json.dumps({"records": [[r.partition, r.offset, r.value.decode()]
                                              for r in records]}), flush=True)
                consumer.commit()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
