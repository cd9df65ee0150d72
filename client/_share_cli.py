"""``raftka share consume|describe``: share groups from the command line (cli.py wires
these in; kept apart so that the share commands do not grow cli.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raftka.client._cluster import Cluster
from raftka.client._share import ShareConsumer, describe_share_group


def add_share_parser(sub: Any, common: argparse.ArgumentParser,
                     as_json: argparse.ArgumentParser,
                     timeout: argparse.ArgumentParser) -> None:
    share = sub.add_parser("share", help="consume as a share-group member, describe share "
                                         "groups")
    ssub = share.add_subparsers(dest="share_command", metavar="ACTION", required=True)
    consume = ssub.add_parser(
        "consume", parents=[common],
        help="print records as a member of a share group, accepting each after printing",
        description="Join share group GROUP and print the records it is handed, one value "
                    "per line; each record is accepted once printed (never delivered again). "
                    "Other members of the group read the same partitions at the same time.")
    consume.add_argument("group", metavar="GROUP")
    consume.add_argument("-t", "--topic", action="append", required=True, metavar="TOPIC",
                         help="topic to read (repeatable)")
    consume.add_argument("-n", "--count", type=int, default=None,
                         help="exit after this many records")
    consume.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                         help="exit once nothing came for this long")
    consume.add_argument("--print-offsets", action="store_true",
                         help="prefix each value with TOPIC<TAB>PARTITION<TAB>OFFSET<TAB>"
                              "DELIVERY-COUNT<TAB>")
    describe = ssub.add_parser("describe", parents=[common, as_json, timeout],
                               help="a share group's configuration, members and per-partition "
                                    "state")
    describe.add_argument("group", metavar="GROUP")


def cmd_share(args: argparse.Namespace, bootstrap: list[str], table, to_json) -> int:
    if args.share_command == "consume":
        return _consume(args, bootstrap)
    cluster = Cluster(bootstrap)
    try:
        desc = describe_share_group(cluster, args.group, args.timeout)
    finally:
        cluster.close()
    out = sys.stdout
    if args.json:
        data = desc._asdict()
        data["members"] = [dict(zip(("member_id", "client_id", "topics", "host"), m))
                           for m in desc.members]
        data["partitions"] = [{**p._asdict(), "in_flight": p.in_flight, "lag": p.lag}
                              for p in desc.partitions]
        to_json(data, out)
        return 0
    out.write(table(["GROUP", desc.group_id], [
        ["coordinator", desc.coordinator_id],
        ["record lock", f"{desc.record_lock_duration_ms} ms"],
        ["max delivery attempts", desc.max_delivery_attempts],
        ["dead-letter topic", desc.dead_letter_topic],
        ["max in-flight records", desc.max_in_flight_records],
        ["members", len(desc.members)]]) + "\n\n")
    out.write(table(
        ["TOPIC", "PARTITION", "START", "END", "LOG-END", "LAG", "IN-FLIGHT", "ACQUIRED",
         "REDELIVER", "DLQ-PENDING", "DEAD-LETTERED", "ACCEPTED"],
        [[p.topic, p.partition, p.start_offset, p.end_offset, p.high_watermark, p.lag,
          p.in_flight, p.acquired, p.available, p.dead_lettering, p.dead_lettered,
          p.accepted] for p in desc.partitions]) + "\n")
    if desc.members:
        out.write("\n" + table(["MEMBER", "CLIENT-ID", "TOPICS", "HOST"],
                               [[m[0], m[1] or "-", ",".join(m[2]), m[3] or "-"]
                                for m in desc.members]) + "\n")
    return 0


def _consume(args: argparse.Namespace, bootstrap: list[str]) -> int:
    out = sys.stdout.buffer
    printed = 0
    with ShareConsumer(bootstrap, args.group, args.topic, auto_accept=False,
                       client_id="raftka-cli") as consumer:
        import time
        idle_since = time.monotonic()
        while True:
            records = consumer.poll(0.5)
            for r in records:
                if args.print_offsets:
                    out.write(f"{r.topic}\t{r.partition}\t{r.offset}\t"
                              f"{r.delivery_count}\t".encode())
                out.write(r.value or b"")
                out.write(b"\n")
                out.flush()
                consumer.accept(r)  # after printing: a crash re-delivers, never skips
                printed += 1
                if args.count is not None and printed >= args.count:
                    break
            if args.count is not None and printed >= args.count:
                consumer.flush()
                return 0
            if records:
                idle_since = time.monotonic()
            elif args.idle_exit is not None and time.monotonic() - idle_since >= args.idle_exit:
                consumer.flush()
                return 0
