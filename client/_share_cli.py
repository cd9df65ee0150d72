"""``raftka share consume|describe`` and ``raftka dlq list|show|replay``: share groups and
their dead letters from the command line (cli.py wires these in; kept apart so that the
share commands do not grow cli.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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

    dlq = sub.add_parser("dlq", help="list, show or replay a group's dead letters (a share "
                                     "group's, or a consumer group's from the Consumer's "
                                     "retry option)")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    which_topic = argparse.ArgumentParser(add_help=False)
    which_topic.add_argument("--dlq-topic", default=None, metavar="TOPIC",
                             help="the dead-letter topic (default: a share group's "
                                  "configured one; <group>.dlq for a consumer group)")
    dlist = dsub.add_parser("list", parents=[common, as_json, timeout, which_topic],
                            help="the group's dead letters (not yet replayed)")
    dlist.add_argument("group", metavar="GROUP")
    dlist.add_argument("--all", action="store_true", help="include replayed ones")
    show = dsub.add_parser("show", parents=[common, as_json, timeout, which_topic],
                           help="one dead letter in full (value, headers)")
    show.add_argument("group", metavar="GROUP")
    show.add_argument("letter", metavar="PARTITION:OFFSET", type=_letter,
                      help="its place in the dead-letter topic (as `dlq list` shows)")
    replay = dsub.add_parser(
        "replay", parents=[common, as_json, timeout, which_topic],
        help="send dead letters back to their source topic and mark them replayed",
        description="Send the chosen dead letters back to their source topic and partition "
                    "(same key, value and headers, plus raftka.dlq.replayed-from) and mark "
                    "them replayed in the dead-letter topic.")
    replay.add_argument("group", metavar="GROUP")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("letters", metavar="PARTITION:OFFSET", type=_letter, nargs="*",
                       default=[])
    which.add_argument("--all", action="store_true", help="every dead letter not replayed")
    replay.add_argument("--dry-run", action="store_true", help="only list what would be sent")


def _security(args: argparse.Namespace):
    from raftka.client.cli import security_from_args  # noqa: PLC0415 - cli imports this
    return security_from_args(args)


def _letter(text: str) -> tuple[int, int]:
    try:
        partition, offset = text.split(":")
        p, o = int(partition), int(offset)
        if p < 0 or o < 0:
            raise ValueError
        return p, o
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PARTITION:OFFSET (e.g. 0:17), got "
                                         f"{text!r}") from None


def cmd_dlq(args: argparse.Namespace, bootstrap: list[str], table, to_json) -> int:
    from raftka.client._admin import Admin  # noqa: PLC0415 - only for these commands
    from raftka.client._dlq import choose_dead_letters  # noqa: PLC0415
    out = sys.stdout
    with Admin(bootstrap, security=_security(args), default_timeout=args.timeout) as admin:
        letters = admin.list_dead_letters(
            args.group, dead_letter_topic=args.dlq_topic,
            include_replayed=args.dlq_command == "show" or (
                args.dlq_command == "list" and args.all))
        if args.dlq_command == "list":
            if args.json:
                to_json([_letter_json(x) for x in letters], out)
            else:
                out.write(table(["DLQ", "SOURCE", "COUNT", "REASON", "ERROR", "KEY",
                                 "REPLAYED"], [
                    [f"{x.dlq_partition}:{x.dlq_offset}",
                     f"{x.source_topic}/{x.source_partition}@{x.source_offset}",
                     x.delivery_count, x.reason, (x.error[:40] or "-"), _short(x.key),
                     "yes" if x.replayed else "-"] for x in letters]) + "\n")
            return 0
        if args.dlq_command == "show":
            letter = next((x for x in letters
                           if (x.dlq_partition, x.dlq_offset) == args.letter), None)
            if letter is None:
                raise ValueError(f"no dead letter at {args.letter[0]}:{args.letter[1]} of "
                                 f"group {args.group}'s dead-letter topic; see `raftka dlq "
                                 f"list {args.group}`")
            if args.json:
                to_json(_letter_json(letter), out)
            else:
                out.write(table(["FIELD", "VALUE"], [[k, v] for k, v in
                                                     _letter_json(letter).items()]) + "\n")
            return 0
        if not args.all and not args.letters:
            raise ValueError("name the dead letters to replay (PARTITION:OFFSET, as `raftka "
                             "dlq list` shows them) or use --all")
        chosen = choose_dead_letters(letters, None if args.all else args.letters)
        done = [] if args.dry_run else admin.replay_letters(chosen)
    if args.json:
        to_json({"dry_run": args.dry_run, "replayed": [
            {**_letter_json(x), "to": [x.source_topic, p, o]} for x, p, o in done]
            if not args.dry_run else [_letter_json(x) for x in chosen]}, out)
    else:
        verb = "would replay" if args.dry_run else "replayed"
        for x in chosen:
            out.write(f"{verb} {x.dlq_partition}:{x.dlq_offset} -> {x.source_topic}/"
                      f"{x.source_partition}\n")
        out.write(f"{verb} {len(chosen)} dead letter{'s' if len(chosen) != 1 else ''}\n")
    return 0


def _short(data: bytes | None) -> str:
    if data is None:
        return "-"
    text = data.decode("utf-8", "replace")
    return text if len(text) <= 20 else text[:19] + "…"


def _letter_json(x) -> dict:
    d = x._asdict()
    for k in ("key", "value"):
        d[k] = None if d[k] is None else d[k].decode("utf-8", "replace")
    d["headers"] = {k: (v.decode("utf-8", "replace") if v is not None else None)
                    for k, v in x.headers}
    return d


def cmd_share(args: argparse.Namespace, bootstrap: list[str], table, to_json) -> int:
    if args.command == "dlq":
        return cmd_dlq(args, bootstrap, table, to_json)
    if args.share_command == "consume":
        return _consume(args, bootstrap)
    desc = describe_share_group(bootstrap, args.group, args.timeout,
                                security=_security(args))
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
        ["redelivery backoff", "none" if not desc.redelivery_backoff[0] else
         "{} ms x{:g} up to {} ms".format(*desc.redelivery_backoff)],
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
                       client_id="raftka-cli", security=_security(args)) as consumer:
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
