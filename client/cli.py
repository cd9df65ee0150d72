"""``raftka``: the command line (rpk-like).

::

    raftka dev [--nodes 3] [--data-dir ./raftka-data] [--base-port 7001]   (python -m raftka.node.dev)
    raftka node --id 1 --listen H:P --peers 1=H:P,... --data-dir D          (python -m raftka.node)
    raftka node --listen H:P --join H:P,... --data-dir D [--id N]             (join a running cluster)
    raftka topic create NAME [-p N] [-r R] [-c key=value ...] [--no-wait]
    raftka topic list | describe NAME | delete NAME
    raftka topic add-partitions NAME -p TOTAL
    raftka topic alter-config NAME [--set key=value ...] [--delete key ...] [--dry-run]
    raftka topic describe-configs NAME
    raftka topic reassign TOPIC -p N --replicas 2,3,4 [--wait] | --cancel | --status
    raftka topic alter-rf TOPIC -r RF [--wait]
    raftka cluster status                       (every node asked; leaders, under-replicated)
    raftka cluster restart --rolling [--exec CMD] [--nodes 1,2,...] [--node-timeout S]
        [--allow-unavailable] [--dry-run]     (one node at a time, each caught up before the next)
    raftka cluster nodes                        (state: active, decommissioning, removed)
    raftka cluster decommission N [--wait] [--cancel]
    raftka cluster remove N --dead [--wait]     (a node gone for good: re-create its replicas)
    raftka cluster reassign-throttle BYTES_PER_S      (e.g. 10m; 0: the default, 16m)
    raftka cluster balance [--dry-run] | pause | resume | status   (automatic balancing)
    raftka produce TOPIC [--partition N] [--key K | --key-separator SEP] [--acks all|1|0]
    raftka consume TOPIC [--partition N] [--from-beginning | --offset N] [--exit-at-end]
                   [--isolation read-committed]
    raftka consume TOPIC --group G [--from-beginning] [--count N] [--exit-at-end]
    raftka group list | describe G | delete G
    raftka txn list [--state S] | describe ID | abort ID
    raftka group reset-offsets G --topic T [--partition N ...]
        (--to-earliest | --to-latest | --to-offset N | --to-datetime ISO | --to-timestamp MS)
        [--dry-run]
    raftka top [--interval S] [--iterations N]  (live view: nodes, throughput per topic, group lag)
    raftka console [--listen 127.0.0.1:8080] [--sample-interval 2] [--login]   (web console, Ctrl-C stops)
    raftka user create NAME [--replace] [--password-stdin] | delete NAME | list
    raftka acl add|remove --principal User:P --operation OP (--topic T | --group G | --cluster
        | --transactional-id ID) [--prefixed] [--deny] [--host IP]
    raftka acl list [--principal User:P] [--topic T | --group G | --cluster]
    raftka quota set (--principal User:P | --default) [--produce-bytes-per-s N]
        [--fetch-bytes-per-s N] [--requests-per-s N]  (0: no limit; all 0 removes it)
    raftka quota list
    raftka whoami

Every client command takes ``--bootstrap host:port,...``; without it ``$RAFTKA_BOOTSTRAP``,
then ``127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`` (what ``raftka dev`` prints by
default). Topic, cluster and group commands print tables, or JSON with ``--json``.
Security (README, Security): ``--tls-ca``, ``--tls-cert``, ``--tls-key``,
``--tls-server-name`` and ``--user`` (the password from ``$RAFTKA_PASSWORD``, else asked for
on a terminal), defaulting to ``$RAFTKA_TLS_CA``, ``$RAFTKA_TLS_CERT``, ``$RAFTKA_TLS_KEY``,
``$RAFTKA_TLS_SERVER_NAME``, ``$RAFTKA_USERNAME``.

Exit codes: 0 success; 1 a failure, reported as one line on stderr saying what happened and
what to do (never a traceback; ``RAFTKA_DEBUG=1`` shows one for bugs); 2 bad usage
(argparse); 130 interrupted (``top`` exits 0 on Ctrl-C: that is how it is stopped). ``dev`` and ``node`` replace this process with
``python -m raftka.node[.dev]`` (the client never imports the broker).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, NoReturn, TextIO

from raftka.client._admin import Admin
from raftka.client._rolling import exec_restart, restart_order
from raftka.client._consumer import Consumer
from raftka.client._delivery import parse_delay
from raftka.client._security import Acl, ClientSecurity
from raftka.client._cluster import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP, parse_bootstrap, resolve_bootstrap
from raftka.v1.errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
    BrokerNotAvailableError,
    GroupNotEmptyError,
    InvalidConfigError,
    NoBrokersAvailable,
    NotEnoughReplicasError,
    OffsetOutOfRangeError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    RequestTooLargeError,
    TopicExistsError,
    UnknownGroupError,
    UnknownPartitionError,
    UnknownTopicError,
)
from raftka.client._producer import Producer, parse_acks
from raftka.client._reader import TopicReader
from raftka.client._share_cli import add_share_parser, cmd_share
from raftka.client._units import human_bytes
from raftka.client._top import CALL_TIMEOUT_S, run_top
from raftka.client._types import TopicPartition

__all__ = ["build_parser", "main", "node_command"]

PROG = "raftka"
_PASS_THROUGH = {"node": "raftka.node", "dev": "raftka.node.dev"}
_REACH_TIMEOUT_S = 5.0  # how long commands wait for any broker to answer at all


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-b", "--bootstrap", metavar="HOST:PORT,...", default=None,
        help=f"brokers to contact first (default: ${BOOTSTRAP_ENV}, else {DEFAULT_BOOTSTRAP})",
    )
    sec = common.add_argument_group("security")
    sec.add_argument("--tls-ca", metavar="FILE", default=None,
                     help="CA bundle to check the nodes' certificates (implies TLS; "
                     "default $RAFTKA_TLS_CA)")
    sec.add_argument("--tls-cert", metavar="FILE", default=None,
                     help="client certificate for mutual TLS (default $RAFTKA_TLS_CERT)")
    sec.add_argument("--tls-key", metavar="FILE", default=None,
                     help="its key (default $RAFTKA_TLS_KEY)")
    sec.add_argument("--tls-server-name", metavar="NAME", default=None,
                     help="name to check the node certificate against (default: the host)")
    sec.add_argument("--user", metavar="NAME", default=None,
                     help="authenticate with this user (default $RAFTKA_USERNAME); the "
                     "password comes from $RAFTKA_PASSWORD, else it is asked for")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable JSON output")
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument("--timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                         help="give up after this long, retries included (default 30)")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Raftka: a replicated log with Kafka's model and Raft's guarantees.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("dev", add_help=False,
                   help="start a local N-node cluster (runs `python -m raftka.node.dev ARGS`)")
    sub.add_parser("node", add_help=False,
                   help="run one broker node (runs `python -m raftka.node ARGS`)")

    topic = sub.add_parser("topic", help="create, list, describe or delete topics")
    tsub = topic.add_subparsers(dest="topic_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", parents=[common, as_json, timeout],
                             help="create a topic and wait until every partition has a leader")
    create.add_argument("name", metavar="NAME")
    create.add_argument("-p", "--partitions", type=_positive_int, default=1,
                        help="number of partitions (default 1)")
    create.add_argument("-r", "--replicas", type=_positive_int, default=None,
                        help="replication factor (default: 3, or the node count if smaller)")
    create.add_argument("-c", "--config", action="append", default=[], metavar="KEY=VALUE",
                        type=_key_value,
                        help="topic config, repeatable (see `raftka topic describe-configs`: "
                             "retention.ms, retention.bytes, max.message.bytes, "
                             "cleanup.policy, ...)")
    create.add_argument("--no-wait", action="store_true",
                        help="return once the controller accepted it, before leaders exist")
    tsub.add_parser("list", parents=[common, as_json, timeout], help="list topics")
    describe = tsub.add_parser("describe", parents=[common, as_json, timeout],
                               help="partitions, leaders, replicas, watermarks, configs")
    describe.add_argument("name", metavar="NAME")
    alter = tsub.add_parser(
        "alter-config", parents=[common, as_json, timeout],
        help="set topic configs, or return them to their defaults",
        description="Change configs of an existing topic (Kafka's incremental alter "
                    "configs): every replica applies the whole change or none of it. "
                    "Prints every config with its source afterwards.")
    alter.add_argument("name", metavar="NAME")
    alter.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       type=_key_value, dest="set_configs", help="set a config (repeatable)")
    alter.add_argument("--delete", action="append", default=[], metavar="KEY",
                       dest="delete_configs",
                       help="return a config to its default (repeatable)")
    alter.add_argument("--dry-run", action="store_true",
                       help="validate and show the result; change nothing")
    dconf = tsub.add_parser("describe-configs", parents=[common, as_json, timeout],
                            help="every config of a topic: value, source, default, meaning")
    dconf.add_argument("name", metavar="NAME")
    delete = tsub.add_parser("delete", parents=[common, as_json, timeout],
                             help="delete a topic and its data")
    delete.add_argument("name", metavar="NAME")
    grow = tsub.add_parser(
        "add-partitions", parents=[common, as_json, timeout],
        help="grow a topic to a new partition count (never shrinks)",
        description="Grow a topic to TOTAL partitions. Existing partitions and their data "
                    "stay; keys may hash to other partitions afterwards.")
    grow.add_argument("name", metavar="NAME")
    grow.add_argument("-p", "--partitions", type=_positive_int, required=True,
                      metavar="TOTAL", help="the new total number of partitions")
    grow.add_argument("--no-wait", action="store_true",
                      help="return once the controller accepted it, before leaders exist")

    reassign = tsub.add_parser(
        "reassign", parents=[common, as_json, timeout],
        help="move a partition to other nodes, show moves in progress, or cancel one",
        description="Move partition P of TOPIC to the nodes of --replicas (the first one "
                    "becomes the preferred leader): each new node joins as a learner, "
                    "catches up, becomes a voter, then the old ones leave. --status shows "
                    "every move in progress with each replica's progress; --cancel sends a "
                    "move back to its old replicas.")
    reassign.add_argument("name", metavar="TOPIC", nargs="?")
    reassign.add_argument("-p", "--partition", type=int, default=None)
    how = reassign.add_mutually_exclusive_group(required=True)
    how.add_argument("--replicas", type=_node_list, metavar="N,N,...",
                     help="the new replica set, e.g. 2,3,4")
    how.add_argument("--status", action="store_true", help="show moves in progress")
    how.add_argument("--cancel", action="store_true", help="cancel the partition's move")
    reassign.add_argument("--wait", action="store_true",
                          help="with --replicas: wait until the move is done")
    alter_rf = tsub.add_parser(
        "alter-rf", parents=[common, as_json, timeout],
        help="change a topic's replication factor (moves replicas like reassign)")
    alter_rf.add_argument("name", metavar="TOPIC")
    alter_rf.add_argument("-r", "--replicas", type=_positive_int, required=True,
                          metavar="RF", help="the new replication factor")
    alter_rf.add_argument("--wait", action="store_true", help="wait until every move is done")

    cluster = sub.add_parser("cluster", help="cluster information and operations")
    csub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    csub.add_parser("status", parents=[common, as_json, timeout],
                    help="nodes, reachability, leaders per node, under-replicated partitions")
    restart = csub.add_parser(
        "restart", parents=[common],
        help="restart every node in turn, each caught up before the next (--rolling)",
        description="Restart the nodes one at a time: each is restarted (by --exec, or by "
                    "you when told), then awaited until it serves again and has caught up "
                    "on every partition it replicates, before the next one. Refuses to "
                    "begin unless the cluster is healthy. The controller leader goes last.")
    restart.add_argument("--rolling", action="store_true", required=True,
                         help="one node at a time (the only kind of restart there is)")
    restart.add_argument(
        "--exec", dest="exec_command", metavar="CMD", default=None,
        help="shell command that restarts one node, e.g. 'ssh {host} sudo systemctl restart "
             "raftka' ({id}, {host}, {port}, {address} are filled in, shell-quoted; write "
             "a literal brace twice); without it you are told which node to restart and "
             "it waits until you have")
    restart.add_argument("--nodes", type=_node_ids, default=None, metavar="ID,...",
                         help="only these nodes (default: all)")
    restart.add_argument("--node-timeout", type=_positive_float, default=300.0,
                         metavar="SECONDS",
                         help="give up if a node is not back and caught up after this long "
                              "(default 300)")
    restart.add_argument("--allow-unavailable", action="store_true",
                         help="go on although partitions with fewer than 3 replicas lose "
                              "their quorum while one of their nodes restarts")
    restart.add_argument("--dry-run", action="store_true",
                         help="print the order and exit")
    csub.add_parser("nodes", parents=[common, as_json, timeout],
                    help="nodes with their state (active, decommissioning, removed)")
    decom = csub.add_parser(
        "decommission", parents=[common, as_json, timeout],
        help="move every replica off a node, then remove it from the cluster",
        description="Drain node N: the controller moves its replicas (a few partitions at "
                    "a time) to the least-loaded active nodes, then marks it removed (it "
                    "gets no new replica). Refused when the other nodes could not hold "
                    "them. --wait shows the progress until it is done (Ctrl-C leaves it "
                    "running); --cancel stops it.")
    decom.add_argument("node_id", metavar="N", type=_positive_int)
    decom.add_argument("--cancel", action="store_true", help="stop draining the node")
    decom.add_argument("--wait", action="store_true", help="show progress until removed")
    remove = csub.add_parser(
        "remove", parents=[common, as_json, timeout],
        help="remove a node that will never come back (--dead)",
        description="Remove dead node N: its replicas are re-created on the least-loaded "
                    "active nodes from the surviving replicas, then it is marked removed. "
                    "Refused for a node the controller heard from in the last 5 s (drain a "
                    "live node with `decommission`).")
    remove.add_argument("node_id", metavar="N", type=_positive_int)
    remove.add_argument("--dead", action="store_true", required=True,
                        help="confirm that the node is gone for good")
    remove.add_argument("--wait", action="store_true", help="show progress until removed")
    throttle = csub.add_parser(
        "reassign-throttle", parents=[common, as_json, timeout],
        help="limit the bytes/s each node sends to catch up moving replicas "
             "(0: the default, 16m)")
    throttle.add_argument("bytes_per_s", metavar="BYTES_PER_S", type=_size)
    balance = csub.add_parser(
        "balance", parents=[common, as_json, timeout],
        help="the automatic balancer: its plan (--dry-run), status, pause, resume",
        description="The controller leader's balancer evens out replicas, bytes and "
                    "preferred leaders per node (racks respected) by moving a few "
                    "partitions at a time. `status` (the default) shows its state and each "
                    "node's load; --dry-run also lists the moves it would make next; "
                    "`pause` stops new moves (moves under way finish), `resume` lets it go "
                    "on.")
    balance.add_argument("balance_action", nargs="?", default="status",
                         choices=("status", "pause", "resume"), metavar="ACTION",
                         help="status (default), pause or resume")
    balance.add_argument("--dry-run", action="store_true",
                         help="show the moves it would make next (changes nothing)")

    txn = sub.add_parser("txn", help="list, describe or abort transactions")
    tsub = txn.add_subparsers(dest="txn_command", metavar="ACTION", required=True)
    tlist = tsub.add_parser("list", parents=[common, as_json, timeout],
                            help="list transactional ids and their state")
    tlist.add_argument("--state", action="append", default=None,
                       choices=("empty", "ongoing", "prepare_commit", "prepare_abort",
                                "complete_commit", "complete_abort"),
                       help="only ids in this state (repeatable)")
    tdescribe = tsub.add_parser("describe", parents=[common, as_json, timeout],
                                help="one transactional id: producer id/epoch, state, "
                                     "partitions, age")
    tdescribe.add_argument("transactional_id", metavar="ID")
    tabort = tsub.add_parser("abort", parents=[common, as_json, timeout],
                             help="abort the open transaction of ID (its producer is fenced)")
    tabort.add_argument("transactional_id", metavar="ID")

    group = sub.add_parser("group", help="list, describe, reset or delete consumer groups")
    gsub = group.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    gsub.add_parser("list", parents=[common, as_json, timeout], help="list consumer groups")
    gdescribe = gsub.add_parser(
        "describe", parents=[common, as_json, timeout],
        help="members, and per partition the committed offset, log end and lag")
    gdescribe.add_argument("group", metavar="GROUP")
    gdelete = gsub.add_parser("delete", parents=[common, as_json, timeout],
                              help="delete an empty group and its committed offsets")
    gdelete.add_argument("group", metavar="GROUP")
    reset = gsub.add_parser(
        "reset-offsets", parents=[common, as_json, timeout],
        help="set an empty group's committed offsets",
        description="Set the committed offsets of a group that has no active members "
                    "(stop its consumers first). Prints the plan (current -> new); "
                    "--dry-run changes nothing.")
    reset.add_argument("group", metavar="GROUP")
    reset.add_argument("-t", "--topic", required=True, help="the topic whose offsets to set")
    reset.add_argument("--partition", type=_non_negative_int, action="append", default=None,
                       help="only this partition, repeatable (default: every partition)")
    where = reset.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-earliest", action="store_true", help="the log start")
    where.add_argument("--to-latest", action="store_true",
                       help="the high watermark (skip everything written so far)")
    where.add_argument("--to-offset", type=_non_negative_int, metavar="N",
                       help="offset N (clamped into [log start, high watermark])")
    where.add_argument("--to-datetime", type=_datetime_ms, metavar="ISO-8601",
                       help="the first record at or after this time, e.g. "
                            "2026-01-31T12:00:00Z (no zone: local time)")
    where.add_argument("--to-timestamp", type=_non_negative_int, metavar="MS",
                       help="the first record at or after this time in ms since the epoch")
    reset.add_argument("--dry-run", action="store_true",
                       help="print what would change, change nothing")

    produce = sub.add_parser(
        "produce", parents=[common],
        help="write stdin to a topic, one record per line",
        description="Write one record per stdin line (without its newline). Prints only a "
                    "summary on stderr; exits 0 only when every line was acknowledged.",
    )
    produce.add_argument("topic", metavar="TOPIC")
    produce.add_argument("--partition", type=_non_negative_int, default=None,
                         help="write to this partition (default: by key, else round-robin)")
    keys = produce.add_mutually_exclusive_group()
    keys.add_argument("-k", "--key", default=None, help="key for every record")
    keys.add_argument("--key-separator", default=None, metavar="SEP",
                      help="each line is KEY SEP VALUE (split at the first SEP); a line "
                           "without SEP has no key")
    produce.add_argument("--acks", default="all", type=_acks, metavar="all|1|0",
                         help="all: a majority has it durably (default); 1: the leader; "
                              "0: no wait")
    produce.add_argument("--timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                         help="delivery timeout per record, retries included (default 30)")
    when = produce.add_mutually_exclusive_group()
    when.add_argument("--delay", type=_delay_s, default=None, metavar="DURATION",
                      help="delayed delivery: consumers see each record this long after it "
                           "is sent, e.g. 30s, 500ms, 5m, 2h, 1d (at most the topic's "
                           "max.delivery.delay.ms)")
    when.add_argument("--deliver-at", type=_datetime_ms, default=None, metavar="ISO-8601",
                      help="delayed delivery: consumers see the records at this time, e.g. "
                           "2026-01-31T12:00:00Z (no zone: local time)")

    consume = sub.add_parser(
        "consume", parents=[common],
        help="print a topic's records, one value per line",
        description="Print committed records, one value per line (like kcat -C).",
    )
    consume.add_argument("topic", metavar="TOPIC")
    consume.add_argument("--partition", type=_non_negative_int, default=None,
                         help="only this partition (default: every partition)")
    start = consume.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true",
                       help="start at the oldest record (default: only new records)")
    start.add_argument("-o", "--offset", type=_offset, default=None,
                       help="start at this offset (needs --partition), or earliest/latest")
    consume.add_argument("-e", "--exit-at-end", action="store_true",
                         help="exit once every partition is read up to its high watermark")
    consume.add_argument("-n", "--count", type=_positive_int, default=None,
                         help="exit after this many records")
    consume.add_argument("--read-from", choices=("leader", "nearest", "any"), default="leader",
                         help="which replica to read: the leader (default), the nearest "
                         "(one in --rack, else the leader) or any (spread over replicas)")
    consume.add_argument("--rack", default=None,
                         help="the rack (zone) this client runs in, for --read-from nearest")
    consume.add_argument("--isolation", choices=("read-uncommitted", "read-committed"),
                         default="read-uncommitted",
                         help="read-committed: only records of committed transactions, up "
                              "to the last stable offset (default read-uncommitted, as "
                              "Kafka's isolation.level)")
    consume.add_argument("--print-offsets", action="store_true",
                         help="prefix each value with PARTITION<TAB>OFFSET<TAB>")
    consume.add_argument("-g", "--group", default=None, metavar="GROUP",
                         help="consume as a member of this consumer group: partitions are "
                              "shared with the group's other members and offsets are "
                              "committed after each batch is printed (start: the committed "
                              "offset; without one --from-beginning, else only new records)")

    add_share_parser(sub, common, as_json, timeout)  # raftka share ..., raftka dlq ...

    top = sub.add_parser(
        "top", parents=[common],
        help="live view of the cluster: nodes and leaders, throughput per topic, group lag",
        description="A live view updated every --interval seconds: nodes (reachable, "
                    "leaders, replicas), per topic the records committed and records/s "
                    "(high-watermark growth), consumer groups and their lag. Redraws the "
                    "screen on a terminal, prints frames one after the other otherwise. "
                    "Ctrl-C quits (exit status 0).")
    top.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                     help="seconds between frames (default 1)")
    top.add_argument("--iterations", type=_positive_int, default=None, metavar="N",
                     help="print N frames, then exit (default: until Ctrl-C)")
    user = sub.add_parser("user", help="create, delete or list users (password logins)")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    ucreate = usub.add_parser("create", parents=[common, timeout], help="create a user")
    ucreate.add_argument("name")
    ucreate.add_argument("--replace", action="store_true",
                         help="change the password of an existing user")
    ucreate.add_argument("--password-stdin", action="store_true",
                         help="read the new password from the first line of stdin (else "
                         "$RAFTKA_NEW_PASSWORD, else asked for twice)")
    udelete = usub.add_parser("delete", parents=[common, timeout], help="delete a user")
    udelete.add_argument("name")
    usub.add_parser("list", parents=[common, as_json, timeout], help="list users")

    acl = sub.add_parser("acl", help="add, remove or list ACLs")
    asub = acl.add_subparsers(dest="acl_command", metavar="ACTION", required=True)
    for name, what in (("add", "add an ACL"), ("remove", "remove an ACL (exact match)")):
        a = asub.add_parser(name, parents=[common, timeout], help=what)
        a.add_argument("--principal", required=True, help="User:NAME, or User:* (everyone)")
        a.add_argument("--operation", required=True, type=str.upper,
                       help="ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, "
                       "CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE")
        _resource_args(a, required=True)
        a.add_argument("--prefixed", action="store_true",
                       help="match every name starting with the given one")
        a.add_argument("--deny", action="store_true", help="a DENY rule (deny wins)")
        a.add_argument("--host", default="*", help="client IP address (default *: any)")
    alist = asub.add_parser("list", parents=[common, as_json, timeout], help="list ACLs")
    alist.add_argument("--principal", default="")
    _resource_args(alist, required=False)
    quota = sub.add_parser("quota", help="set or list quotas (bytes/s per principal and node)")
    qsub = quota.add_subparsers(dest="quota_command", metavar="ACTION", required=True)
    qset = qsub.add_parser("set", parents=[common, timeout], help="set a quota")
    who = qset.add_mutually_exclusive_group(required=True)
    who.add_argument("--principal", help="User:NAME")
    who.add_argument("--default", action="store_true",
                     help="every principal without a quota of its own")
    qset.add_argument("--produce-bytes-per-s", type=_non_negative_int, default=0)
    qset.add_argument("--fetch-bytes-per-s", type=_non_negative_int, default=0)
    qset.add_argument("--requests-per-s", type=_non_negative_int, default=0,
                      help="requests per second to each node (every RPC counts)")
    qsub.add_parser("list", parents=[common, as_json, timeout], help="list quotas")
    sub.add_parser("whoami", parents=[common, timeout],
                   help="the principal the cluster sees for these credentials")

    console = sub.add_parser(
        "console", parents=[common],
        help="serve the web console (overview, topics, messages, groups, charts)",
        description="Serve a web console for the cluster until Ctrl-C: it reaches the "
                    "cluster over gRPC like every other command.",
    )
    console.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                         help="address to serve HTTP on (default 127.0.0.1:8080; port 0: "
                              "any free port)")
    console.add_argument("--sample-interval", type=_positive_float, default=2.0,
                         metavar="SECONDS",
                         help="how often the charts' samples are taken (default 2)")
    console.add_argument("--login", action="store_true",
                         help="every visitor signs in with a user name and password (a "
                              "cluster with password authentication) and the console acts "
                              "as that user; the charts' sampling keeps the console's own "
                              "credentials")
    return parser


def _resource_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--topic", metavar="NAME", help="a topic (* = every topic)")
    group.add_argument("--group", metavar="NAME", help="a consumer group (* = every group)")
    group.add_argument("--transactional-id", metavar="ID")
    group.add_argument("--cluster", action="store_true", help="the cluster resource")


def _resource(args: argparse.Namespace) -> tuple[str, str]:
    if args.topic is not None:
        return "TOPIC", args.topic
    if args.group is not None:
        return "GROUP", args.group
    if args.transactional_id is not None:
        return "TRANSACTIONAL_ID", args.transactional_id
    if args.cluster:
        return "CLUSTER", "kafka-cluster"
    return "", ""


def security_from_args(args: argparse.Namespace) -> ClientSecurity:
    """TLS and credentials from the flags, then the RAFTKA_* environment."""
    username = getattr(args, "user", None) or os.environ.get("RAFTKA_USERNAME") or None
    password = os.environ.get("RAFTKA_PASSWORD") or None
    if username and password is None:
        if not sys.stdin.isatty():
            raise _UsageError("--user needs a password: set $RAFTKA_PASSWORD")
        import getpass  # noqa: PLC0415
        password = getpass.getpass(f"password for {username}: ")
    return ClientSecurity.from_env(
        ca=getattr(args, "tls_ca", None), cert=getattr(args, "tls_cert", None),
        key=getattr(args, "tls_key", None), server_name=getattr(args, "tls_server_name", None),
        username=username, password=password)


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif os.environ.get("RAFTKA_NEW_PASSWORD"):
        password = os.environ["RAFTKA_NEW_PASSWORD"]
    elif sys.stdin.isatty():
        import getpass  # noqa: PLC0415
        password = getpass.getpass(f"new password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise _UsageError("the passwords differ")
    else:
        raise _UsageError("give the password with --password-stdin or $RAFTKA_NEW_PASSWORD")
    if not password:
        raise _UsageError("the password is empty")
    return password


def _cmd_user(args: argparse.Namespace, bootstrap: list[str]) -> int:
    with Admin(bootstrap, default_timeout=args.timeout, security=security_from_args(args)) as admin:
        if args.user_command == "create":
            admin.create_user(args.name, _new_password(args), replace=args.replace)
            print(f"user {args.name} {'changed' if args.replace else 'created'}")
        elif args.user_command == "delete":
            admin.delete_user(args.name)
            print(f"user {args.name} deleted")
        else:
            users = admin.list_users()
            if getattr(args, "json", False):
                _json([u._asdict() for u in users], sys.stdout)
            else:
                print(_table(["NAME", "MECHANISM", "ITERATIONS"],
                             [(u.name, u.mechanism, u.iterations) for u in users]))
    return 0


def _cmd_acl(args: argparse.Namespace, bootstrap: list[str]) -> int:
    rtype, name = _resource(args)
    with Admin(bootstrap, default_timeout=args.timeout, security=security_from_args(args)) as admin:
        if args.acl_command in ("add", "remove"):
            acl = Acl(args.principal, args.operation, rtype, name,
                      "PREFIXED" if args.prefixed else "LITERAL",
                      "DENY" if args.deny else "ALLOW", args.host)
            if args.acl_command == "add":
                admin.create_acls([acl])
                print(f"added: {acl.describe()}")
            else:
                count = admin.delete_acls([acl])
                print(f"removed: {acl.describe()}" if count else f"no such ACL: {acl.describe()}")
            return 0
        acls = admin.list_acls(principal=args.principal, resource_type=rtype,
                               resource_name=name if rtype != "CLUSTER" else "")
        if args.json:
            _json([a._asdict() for a in acls], sys.stdout)
        else:
            print(_table(["PRINCIPAL", "HOST", "OPERATION", "RESOURCE", "PATTERN", "NAME",
                          "PERMISSION"],
                         [(a.principal, a.host, a.operation, a.resource_type, a.pattern_type,
                           a.resource_name, a.permission) for a in acls]))
    return 0


def _cmd_quota(args: argparse.Namespace, bootstrap: list[str]) -> int:
    with Admin(bootstrap, default_timeout=args.timeout, security=security_from_args(args)) as admin:
        if args.quota_command == "set":
            entity = "<default>" if args.default else args.principal
            admin.set_quota(entity, produce_bytes_per_s=args.produce_bytes_per_s,
                            fetch_bytes_per_s=args.fetch_bytes_per_s,
                            requests_per_s=args.requests_per_s)
            print(f"quota of {entity}: produce {args.produce_bytes_per_s or 'unlimited'} B/s, "
                  f"fetch {args.fetch_bytes_per_s or 'unlimited'} B/s, "
                  f"{args.requests_per_s or 'unlimited'} requests/s per node")
            return 0
        quotas = admin.list_quotas()
        if args.json:
            _json([q._asdict() for q in quotas], sys.stdout)
        else:
            print(_table(["ENTITY", "PRODUCE-B/S", "FETCH-B/S", "REQUESTS/S"],
                         [(q.entity, q.produce_bytes_per_s or "-", q.fetch_bytes_per_s or "-",
                           q.requests_per_s or "-") for q in quotas]))
    return 0


def _cmd_whoami(args: argparse.Namespace, bootstrap: list[str]) -> int:
    with Admin(bootstrap, default_timeout=args.timeout, security=security_from_args(args)) as admin:
        print(admin.whoami())
    return 0


def _delay_s(text: str) -> float:
    try:
        return parse_delay(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _datetime_ms(text: str) -> int:
    raw = text.strip()
    try:
        when = datetime.datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z"))
                                               else raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 date-time: {text!r} (e.g. 2026-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, like kafka-consumer-groups
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970")
    return ms


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _node_ids(text: str) -> list[int]:
    ids = [_positive_int(part.strip()) for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"no node ids in {text!r}")
    return ids


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _acks(text: str) -> str:
    try:
        parse_acks(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip().lower()


def _offset(text: str) -> str | int:
    t = text.strip().lower()
    if t in ("earliest", "beginning", "latest", "end"):
        return t
    return _non_negative_int(text)


def node_command(argv: Sequence[str]) -> list[str] | None:
    """For ``raftka node|dev ARGS``: the argv to exec (``python -m raftka.node[.dev] ARGS``)."""
    if not argv or argv[0] not in _PASS_THROUGH:
        return None
    return [sys.executable, "-m", _PASS_THROUGH[argv[0]], *argv[1:]]


def bootstrap_from_args(args: argparse.Namespace,
                        environ: dict[str, str] | None = None) -> list[str]:
    """``--bootstrap``, else ``$RAFTKA_BOOTSTRAP``, else the ``raftka dev`` default."""
    return parse_bootstrap(resolve_bootstrap(getattr(args, "bootstrap", None), environ))


# --------------------------------------------------------------------------- output


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def _plain(o: Any) -> Any:
    """Dataclasses, named tuples, lists and dicts as JSON-ready values."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: _plain(getattr(o, f.name)) for f in dataclasses.fields(o)}
    if isinstance(o, tuple) and hasattr(o, "_asdict"):
        return {k: _plain(v) for k, v in o._asdict().items()}
    if isinstance(o, (list, tuple)):
        return [_plain(x) for x in o]
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    return o


def _json(obj: Any, out: TextIO) -> None:
    json.dump(_plain(obj), out, indent=2, sort_keys=False)
    out.write("\n")


def _print_topic(desc: Any, out: TextIO) -> None:
    configs = ", ".join(f"{k}={v}" for k, v in sorted(desc.configs.items())) or "-"
    out.write(_table(["NAME", desc.name], [
        ["PARTITIONS", desc.partition_count],
        ["REPLICATION", desc.replication_factor],
        ["CONFIGS", configs],
    ]) + "\n\n")
    compacted = "compact" in desc.configs.get("cleanup.policy", "delete")
    rows = [[p.partition, p.leader_id or "-", ",".join(map(str, p.replicas)) or "-",
             p.high_watermark, p.log_start_offset, p.leader_term, human_bytes(p.stored_bytes)]
            + ([f"{p.dirty_ratio:.2f}"] if compacted else [])
            for p in desc.partitions]
    out.write(_table(["PARTITION", "LEADER", "REPLICAS", "HIGH-WATERMARK", "LOG-START",
                      "TERM", "SIZE"] + (["DIRTY-RATIO"] if compacted else []), rows) + "\n")


# --------------------------------------------------------------------------- commands


def _cmd_topic(args: argparse.Namespace, bootstrap: list[str]) -> int:
    out = sys.stdout
    with Admin(bootstrap, default_timeout=args.timeout,
               security=security_from_args(args)) as admin:
        brokers = admin.wait_for_brokers(min(_REACH_TIMEOUT_S, args.timeout))
        action = args.topic_command
        if action in ("reassign", "alter-rf"):
            return _cmd_reassign(args, admin)
        if action == "create":
            replicas = args.replicas
            if replicas is None:
                nodes = len(brokers) or len(admin.describe_cluster().nodes)
                replicas = max(1, min(3, nodes))
            desc = admin.create_topic(args.name, args.partitions, replicas,
                                      dict(args.config))
            status = "created"
            if not args.no_wait:
                desc = admin.wait_for_topic_ready(args.name, timeout=args.timeout)
                status = "ready"
            if args.json:
                _json(desc, out)
            else:
                out.write(_table(["TOPIC", "PARTITIONS", "REPLICAS", "STATUS"],
                                 [[desc.name, desc.partition_count, desc.replication_factor,
                                   status]]) + "\n")
        elif action == "list":
            names = admin.list_topics()
            known = {t.name: t for t in admin.describe_topics(names)}
            if args.json:
                _json([{"name": n,
                        "partitions": known[n].partition_count if n in known else None,
                        "replication_factor":
                            known[n].replication_factor if n in known else None}
                       for n in names], out)
            else:
                rows = [[n, known[n].partition_count if n in known else "-",
                         known[n].replication_factor if n in known else "-"] for n in names]
                out.write(_table(["NAME", "PARTITIONS", "REPLICAS"], rows) + "\n")
        elif action == "describe":
            desc = admin.describe_topic(args.name)
            if args.json:
                _json(desc, out)
            else:
                _print_topic(desc, out)
        elif action in ("alter-config", "describe-configs"):
            if action == "alter-config":
                if not args.set_configs and not args.delete_configs:
                    raise SystemExit("raftka topic alter-config: nothing to change: give "
                                     "--set KEY=VALUE and/or --delete KEY")
                entries = admin.alter_topic_config(
                    args.name, dict(args.set_configs), args.delete_configs,
                    validate_only=args.dry_run)
            else:
                entries = admin.describe_topic_configs(args.name)
            if args.json:
                _json(entries, out)
            else:
                if action == "alter-config" and args.dry_run:
                    out.write("dry run: nothing changed; the configs would be\n")
                out.write(_table(["CONFIG", "VALUE", "SOURCE", "DEFAULT"],
                                 [[e.name, e.value, e.source, e.default] for e in entries])
                          + "\n")
        elif action == "delete":
            admin.delete_topic(args.name)
            if args.json:
                _json({"deleted": args.name}, out)
            else:
                out.write(f"deleted topic {args.name}\n")
        elif action == "add-partitions":
            desc = admin.add_partitions(args.name, args.partitions)
            if not args.no_wait:
                desc = admin.wait_for_topic_ready(args.name, timeout=args.timeout)
            if args.json:
                _json(desc, out)
            else:
                _print_topic(desc, out)
    return 0


def _node_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected node ids separated by commas, e.g. 2,3,4; got {text!r}") from None


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    """A byte count: digits, optionally followed by k, m or g (KiB, MiB, GiB)."""
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = raw[-1:] if raw[-1:] in ("k", "m", "g") else ""
    number = raw[:-1] if unit else raw
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"expected a byte count like 1048576 or 10m, got "
                                         f"{text!r}")
    return int(number) * _SIZE_UNITS[unit]


def _print_reassignments(moves: list, out) -> None:
    if not moves:
        out.write("no partition is moving\n")
        return
    rows = []
    for m in moves:
        progress = " ".join(
            f"{p.node_id}:{p.role}@{p.caught_up_offset}/{m.high_watermark}"
            for p in m.progress) or "(leader unknown)"
        rows.append([m.topic, m.partition, ",".join(map(str, m.replicas)),
                     ",".join(map(str, m.target)) + (" (cancelled)" if m.cancelled else ""),
                     m.leader_id or "-", progress])
    out.write(_table(["TOPIC", "PARTITION", "FROM", "TO", "LEADER",
                      "PROGRESS (node:role@caught-up/high watermark)"], rows) + "\n")


def _wait_moves(admin: Admin, topic: str, done, out, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"{PROG}: not done within {timeout:.0f}s; it goes on in the "
                             "background (see `raftka topic reassign --status`)")
        _print_reassignments(admin.list_reassignments(topic), out)
        out.flush()
        time.sleep(1.0)


def _cmd_reassign(args: argparse.Namespace, admin: Admin) -> int:
    out = sys.stdout
    if args.topic_command == "alter-rf":
        admin.alter_replication_factor(args.name, args.replicas)
        if args.wait:
            _wait_moves(admin, args.name, lambda: not admin.list_reassignments(args.name),
                        out, args.timeout)
        _print_topic(admin.describe_topic(args.name), out) if not args.json else _json(
            admin.describe_topic(args.name), out)
        return 0
    if args.status:
        moves = admin.list_reassignments(args.name or "")
        if args.json:
            _json(moves, out)
        else:
            _print_reassignments(moves, out)
        return 0
    if not args.name or args.partition is None:
        raise SystemExit(f"{PROG} topic reassign: give TOPIC and -p PARTITION")
    if args.cancel:
        admin.cancel_reassignment(args.name, args.partition)
        out.write(f"cancelled: {args.name}/{args.partition} goes back to its old replicas\n")
        return 0
    admin.reassign_partition(args.name, args.partition, args.replicas)
    target = tuple(args.replicas)
    if args.wait:
        _wait_moves(admin, args.name, lambda: tuple(admin.describe_topic(
            args.name).partitions[args.partition].replicas) == target, out, args.timeout)
        out.write(f"{args.name}/{args.partition} now on {','.join(map(str, target))}\n")
    elif args.json:
        _json({"topic": args.name, "partition": args.partition, "target": list(target)}, out)
    else:
        out.write(f"moving {args.name}/{args.partition} to {','.join(map(str, target))} "
                  "(see `raftka topic reassign --status`)\n")
    return 0


def _cmd_cluster_balance(args: argparse.Namespace, admin: Admin) -> int:
    out = sys.stdout
    action = args.balance_action
    if action in ("pause", "resume"):
        if args.dry_run:
            raise SystemExit(f"{PROG} cluster balance: --dry-run goes with status only")
        if action == "pause":
            admin.pause_balancer()
            out.write("the balancer is paused (moves under way finish)\n")
        else:
            admin.resume_balancer()
            out.write("the balancer is running\n")
        return 0
    status = admin.describe_balancer()
    if args.json:
        data = _plain(status)
        if not args.dry_run:
            data.pop("plan", None)
        _json(data, out)
        return 0
    out.write(f"balancer: {status.status}\n")
    out.write(f"moves under way: {status.moves_in_flight} (the balancer keeps at most "
              f"{status.moves_in_flight_max})\n\n")
    out.write(_table(["NODE", "RACK", "REPLICAS", "LEADERS", "BYTES"],
                     [[n.id, n.rack or "-", n.replica_count, n.leader_count, n.size_bytes]
                      for n in status.nodes]) + "\n")
    if args.dry_run:
        if not status.plan:
            out.write("\nplan: nothing to move\n")
        else:
            out.write("\nplan (in order; leader moves move no data):\n")
            out.write(_table(["TOPIC", "PARTITION", "FROM", "TO", "GOAL", "WHY"],
                             [[m.topic, m.partition, ",".join(map(str, m.replicas)),
                               ",".join(map(str, m.target)), m.kind, m.reason]
                              for m in status.plan]) + "\n")
    elif status.plan:
        out.write(f"\n{len(status.plan)} move(s) planned (see --dry-run)\n")
    return 0


def _cmd_cluster_ops(args: argparse.Namespace, admin: Admin) -> int:
    out = sys.stdout
    action = args.cluster_command
    if action == "balance":
        return _cmd_cluster_balance(args, admin)
    if action == "reassign-throttle":
        admin.set_reassignment_throttle(args.bytes_per_s)
        out.write(f"reassignment throttle: {args.bytes_per_s} B/s per node"
                  f"{' (the default pace, 16 MiB/s)' if not args.bytes_per_s else ''}\n")
        return 0
    if action in ("decommission", "remove"):
        node = args.node_id
        cancel = action == "decommission" and args.cancel
        admin.decommission_node(node, cancel=cancel, dead=action == "remove")
        if cancel:
            out.write(f"node {node} is active again (moves already running finish)\n")
            return 0
        if not args.wait:
            out.write(f"node {node} is {'being removed' if action == 'remove' else 'decommissioning'}"
                      " (see `raftka cluster nodes` and `raftka topic reassign --status`)\n")
            return 0

        def state() -> str:
            return {n.id: n.state for n in admin.list_nodes()}.get(node, "removed")
        _wait_moves(admin, "", lambda: state() == "removed", out, args.timeout)
        out.write(f"node {node} is drained and removed\n")
        return 0
    nodes = admin.list_nodes()
    if args.json:
        _json(nodes, out)
    else:
        controller = admin.describe_cluster().controller_id
        out.write(_table(["ID", "ADDRESS", "STATE", "REACHABLE", "REPLICAS", "LEADERS",
                          "CONTROLLER"],
                         [[n.id, n.address, n.state, "yes" if n.reachable else "NO",
                           n.replica_count, n.leader_count,
                           ("leader" if n.id == controller else "voter")
                           if n.controller_voter else "-"] for n in nodes]) + "\n")
    return 0


def _cmd_cluster(args: argparse.Namespace, bootstrap: list[str]) -> int:
    out = sys.stdout
    if args.cluster_command == "restart":
        return _cmd_cluster_restart(args, bootstrap)
    with Admin(bootstrap, default_timeout=args.timeout,
               security=security_from_args(args)) as admin:
        admin.wait_for_brokers(min(_REACH_TIMEOUT_S, args.timeout))
        if args.cluster_command != "status":
            return _cmd_cluster_ops(args, admin)
        status = admin.cluster_status()
    if args.json:
        data = _plain(status)
        data["under_replicated_partitions"] = status.under_replicated_partitions
        _json(data, out)
        return 0
    rows = []
    for n in status.nodes:
        reach = "yes" if n.reachable else "NO"
        if n.reachable and n.seen_down_by:
            reach = "partly (not from " + ",".join(map(str, n.seen_down_by)) + ")"
        rows.append([n.id, n.address, reach, n.leader_count, n.replica_count,
                     "controller" if n.id == status.controller_id else ""])
    out.write(_table(["ID", "ADDRESS", "REACHABLE", "LEADERS", "REPLICAS", "ROLE"], rows)
              + "\n\n")
    controller = f"node {status.controller_id}" if status.controller_id else "none (election?)"
    out.write(f"controller: {controller}\n")
    out.write(f"partitions: {status.partition_count}\n")
    out.write(f"under-replicated partitions: {status.under_replicated_partitions}\n")
    if status.under_replicated:
        out.write("\n" + _table(
            ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "MISSING"],
            [[p.topic, p.partition, p.leader_id or "none", ",".join(map(str, p.replicas)),
              ",".join(map(str, p.missing)) or "-"] for p in status.under_replicated]) + "\n")
    return 0


def _cmd_cluster_restart(args: argparse.Namespace, bootstrap: list[str]) -> int:
    out = sys.stdout

    def progress(line: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        out.write(f"{stamp} {line}\n")
        out.flush()

    action = exec_restart(args.exec_command) if args.exec_command else None
    with Admin(bootstrap, security=security_from_args(args)) as admin:
        admin.wait_for_brokers(_REACH_TIMEOUT_S)
        if args.dry_run:
            order, controller = restart_order(admin, args.nodes)
            out.write(_table(["ORDER", "ID", "ADDRESS", "ROLE"],
                             [[i + 1, n.id, n.address, "controller" if n.id == controller else ""]
                              for i, n in enumerate(order)]) + "\n")
            return 0
        started = datetime.datetime.now()
        done = admin.rolling_restart(action, nodes=args.nodes, node_timeout=args.node_timeout,
                                     allow_unavailable=args.allow_unavailable,
                                     progress=progress)
    seconds = (datetime.datetime.now() - started).total_seconds()
    progress(f"rolling restart done: {len(done)} node(s) in {seconds:.0f}s")
    return 0


def _cmd_txn(args: argparse.Namespace, bootstrap: list[str]) -> int:
    out = sys.stdout
    action = args.txn_command
    with Admin(bootstrap, default_timeout=args.timeout,
               security=security_from_args(args)) as admin:
        admin.wait_for_brokers(min(_REACH_TIMEOUT_S, args.timeout))
        if action == "abort":
            admin.abort_transaction(args.transactional_id)
            if args.json:
                _json({"aborted": args.transactional_id}, out)
            else:
                out.write(f"aborted the transaction of {args.transactional_id}\n")
            return 0
        txns = (admin.list_transactions(states=args.state or ()) if action == "list"
                else [admin.describe_transaction(args.transactional_id)])
        if args.json:
            _json(txns if action == "list" else txns[0], out)
            return 0
        now_ms = time.time() * 1000
        out.write(_table(
            ["TRANSACTIONAL ID", "STATE", "PRODUCER ID", "EPOCH", "PARTITIONS", "AGE",
             "COORDINATOR"],
            [[t.transactional_id, t.state, t.producer_id, t.producer_epoch,
              ",".join(f"{topic}/{p}" for topic, p in t.partitions) or "-",
              f"{max(now_ms - t.start_time_ms, 0) / 1000:.1f}s" if t.start_time_ms else "-",
              t.coordinator_id] for t in txns]) + "\n")
    return 0


def _cmd_group(args: argparse.Namespace, bootstrap: list[str]) -> int:
    out = sys.stdout
    action = args.group_command
    with Admin(bootstrap, default_timeout=args.timeout,
               security=security_from_args(args)) as admin:
        admin.wait_for_brokers(min(_REACH_TIMEOUT_S, args.timeout))
        if action == "list":
            groups = admin.list_groups()
            if args.json:
                _json(groups, out)
            else:
                out.write(_table(["GROUP", "STATE", "MEMBERS", "COORDINATOR"],
                                 [[g.group_id, g.state, g.member_count,
                                   g.coordinator_id or "-"] for g in groups]) + "\n")
        elif action == "describe":
            desc = admin.describe_group(args.group)
            if args.json:
                data = _plain(desc)
                data["total_lag"] = desc.total_lag
                _json(data, out)
            else:
                _print_group(desc, out)
        elif action == "delete":
            admin.delete_group(args.group)
            if args.json:
                _json({"deleted": args.group}, out)
            else:
                out.write(f"deleted group {args.group}\n")
        elif action == "reset-offsets":
            to: str | int | None = None
            timestamp_ms: int | None = None
            if args.to_earliest:
                to = "earliest"
            elif args.to_latest:
                to = "latest"
            elif args.to_offset is not None:
                to = args.to_offset
            else:
                timestamp_ms = (args.to_datetime if args.to_datetime is not None
                                else args.to_timestamp)
            partitions = ([(args.topic, p) for p in args.partition]
                          if args.partition else None)
            plan = admin.reset_group_offsets(
                args.group, None if partitions else args.topic, partitions=partitions, to=to,
                timestamp_ms=timestamp_ms, dry_run=args.dry_run)
            if args.json:
                _json({"group": args.group, "dry_run": args.dry_run, "offsets": plan}, out)
            else:
                out.write(_table(
                    ["TOPIC", "PARTITION", "CURRENT", "NEW"],
                    [[r.topic, r.partition, "-" if r.previous_offset is None
                      else r.previous_offset, r.new_offset] for r in plan]) + "\n")
                verb = "would set" if args.dry_run else "set"
                out.write(f"\n{verb} {len(plan)} offset{'s' if len(plan) != 1 else ''} of "
                          f"group {args.group}" + (" (dry run: nothing changed)"
                                                   if args.dry_run else "") + "\n")
    return 0


def _print_group(desc: Any, out: TextIO) -> None:
    lag = desc.total_lag
    out.write(_table(["GROUP", desc.group_id], [
        ["STATE", desc.state],
        ["MEMBERS", len(desc.members)],
        ["COORDINATOR", desc.coordinator_id or "-"],
        ["ASSIGNOR", desc.assignor or "-"],
        ["EPOCH", desc.group_epoch],
        ["ISOLATION", desc.isolation_level],
        ["TOTAL-LAG", "-" if lag is None else lag],
    ]) + "\n\n")
    if not desc.members and not desc.partitions:
        out.write(f"group {desc.group_id} has no members and no committed offsets (it does "
                  f"not exist, or was deleted; see `{PROG} group list`)\n")
        return
    members = {m.member_id: m for m in desc.members}
    rows = [[p.topic, p.partition, "-" if p.committed_offset is None else p.committed_offset,
             "-" if p.log_end_offset is None else p.log_end_offset,
             "-" if p.last_stable_offset is None else p.last_stable_offset,
             "-" if p.lag is None else p.lag, _member_label(members.get(p.member_id),
                                                             p.member_id)]
            for p in desc.partitions]
    # LAG is against LOG-END, or against STABLE (the last stable offset) for a
    # read_committed group: what its members can read
    out.write(_table(["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "STABLE", "LAG", "MEMBER"],
                     rows) + "\n")
    if desc.members:
        out.write("\n" + _table(
            ["MEMBER", "CLIENT", "HOST", "EPOCH", "PARTITIONS"],
            [[m.member_id, m.client_id or "-", m.host or "-", m.member_epoch,
              _partitions_label(m.assignment)] for m in desc.members]) + "\n")


def _member_label(member: Any, member_id: str) -> str:
    if not member_id:
        return "-"
    if member is not None and member.client_id:
        return f"{member_id} ({member.client_id})"
    return member_id


def _partitions_label(assignment: Sequence[Any]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in assignment:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}:{','.join(map(str, sorted(ps)))}" for t, ps in sorted(by_topic.items())) \
        or "-"


def _cmd_produce(args: argparse.Namespace, bootstrap: list[str]) -> int:
    lock = threading.Lock()
    acked = 0
    failures = 0
    first_error: BaseException | None = None

    def on_done(f: Future[Any]) -> None:
        nonlocal acked, failures, first_error
        err = f.exception()
        with lock:
            if err is None:
                acked += 1
            else:
                failures += 1
                if first_error is None:
                    first_error = err

    sent = 0
    separator = None
    if args.key_separator is not None:
        if not args.key_separator:
            raise _UsageError("--key-separator must not be empty")
        separator = args.key_separator.encode()
    delivery_ms = int(args.timeout * 1000)
    producer = Producer(bootstrap, acks=args.acks, delivery_timeout_ms=delivery_ms,
                        max_block_ms=min(delivery_ms, 5000), security=security_from_args(args))
    try:
        for line in sys.stdin.buffer:
            if first_error is not None:
                break  # stop at the first failure; what was sent is still flushed
            value = line[:-1] if line.endswith(b"\n") else line
            key: str | bytes | None = args.key
            if separator is not None:
                head, sep, tail = value.partition(separator)
                key, value = (head, tail) if sep else (None, value)
            producer.send(args.topic, value, key=key, partition=args.partition,
                          delay=args.delay, deliver_at=args.deliver_at
                          ).add_done_callback(on_done)
            sent += 1
        producer.flush()
    except KeyboardInterrupt:
        producer.close(timeout=1.0)  # deliver what is on its way, briefly
        raise
    finally:
        producer.close()
    if first_error is not None:
        raise _ProduceFailed(acked, sent, first_error)
    where = f"{args.topic}" + (f"/{args.partition}" if args.partition is not None else "")
    later = ""
    if args.delay is not None:
        later = f", delivered after {args.delay:g}s"
    elif args.deliver_at is not None:
        later = (", delivered at " + datetime.datetime.fromtimestamp(
            args.deliver_at / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds"))
    sys.stderr.write(f"{PROG}: produced {acked} record{'s' if acked != 1 else ''} to {where} "
                     f"(acks={args.acks}{later})\n")
    return 0


class _ProduceFailed(Exception):
    def __init__(self, acked: int, sent: int, error: BaseException) -> None:
        super().__init__(f"{sent - acked} of {sent} records were not acknowledged; first "
                         f"failure: {error}")
        self.error = error


def _cmd_consume(args: argparse.Namespace, bootstrap: list[str]) -> int:
    if args.read_from == "nearest" and not args.rack:
        raise _UsageError("--read-from nearest needs --rack (the rack this client runs in)")
    if args.group is not None:
        return _cmd_consume_group(args, bootstrap)
    if args.from_beginning:
        offset: str | int = "earliest"
    elif args.offset is not None:
        offset = args.offset
    else:
        offset = "latest"
    if isinstance(offset, int) and args.partition is None:
        raise _UsageError("--offset N needs --partition (offsets are per partition)")
    partitions = None if args.partition is None else [args.partition]
    out = sys.stdout.buffer
    printed = 0
    with TopicReader(bootstrap, args.topic, partitions, offset, metadata_timeout=5.0,
                     security=security_from_args(args), read_from=args.read_from,
                     rack=args.rack, isolation_level=args.isolation) as reader:
        while True:
            records = reader.poll(0.5)
            for r in records:
                if args.print_offsets:
                    out.write(f"{r.partition}\t{r.offset}\t".encode())
                out.write(r.value or b"")
                out.write(b"\n")
                printed += 1
                if args.count is not None and printed >= args.count:
                    break
            out.flush()
            if args.count is not None and printed >= args.count:
                return 0
            if args.exit_at_end and reader.at_end:
                return 0


def _cmd_consume_group(args: argparse.Namespace, bootstrap: list[str]) -> int:
    """Consume as a group member; commit after each poll's records are printed (so a crash
    re-delivers at most the last poll's records, never skips one)."""
    if args.partition is not None or args.offset is not None:
        raise _UsageError("--group shares the topic's partitions among the group's members: "
                          "it cannot be combined with --partition or --offset (use `raftka "
                          "group reset-offsets` to move the group)")
    if not args.group.strip():
        raise _UsageError("--group needs a non-empty group id")
    out = sys.stdout.buffer
    printed = 0
    with Admin(bootstrap, security=security_from_args(args)) as admin:
        admin.wait_for_brokers(_REACH_TIMEOUT_S)
        admin.describe_topic(args.topic)  # UnknownTopicError now, not a silent wait
        with Consumer(bootstrap, args.group, [args.topic],
                      auto_offset_reset="earliest" if args.from_beginning else "latest",
                      enable_auto_commit=False, client_id=f"{PROG}-cli",
                      security=security_from_args(args), read_from=args.read_from,
                      rack=args.rack, isolation_level=args.isolation) as consumer:
            while True:
                limit = None if args.count is None else args.count - printed
                records = consumer.poll(0.5, max_records=limit)
                for r in records:
                    if args.print_offsets:
                        out.write(f"{r.partition}\t{r.offset}\t".encode())
                    out.write(r.value or b"")
                    out.write(b"\n")
                printed += len(records)
                out.flush()
                if records:
                    consumer.commit()  # the positions after what was just printed
                if args.count is not None and printed >= args.count:
                    return 0
                if args.exit_at_end and not records and _group_at_end(admin, consumer,
                                                                      args.topic):
                    return 0


def _group_at_end(admin: Admin, consumer: Consumer, topic: str) -> bool:
    """True when the group has consumed every partition of ``topic`` up to its high
    watermark: by its committed offsets, or by this member's positions for the partitions
    it owns. Partitions that hold no records count as done."""
    if not consumer.assignment():
        return False  # not joined yet
    committed = admin.committed_offsets(consumer.group_id)
    desc = admin.describe_topics([topic])
    if not desc:
        return False
    for p in desc[0].partitions:
        bounds = admin.list_offsets(topic, p.partition, "latest")
        if bounds.high_watermark <= bounds.log_start_offset:
            continue
        done = max(committed.get(TopicPartition(topic, p.partition), -1),
                   consumer.position(topic, p.partition) or -1)
        if done < bounds.high_watermark:
            return False
    return True


def _cmd_console(args: argparse.Namespace, bootstrap: list[str]) -> int:
    from raftka.client.console import parse_listen, serve  # noqa: PLC0415 - Flask, on demand

    parse_listen(args.listen)  # a malformed address is a usage error before anything starts
    try:
        serve(bootstrap, args.listen, sample_interval_s=args.sample_interval,
              security=security_from_args(args), login=args.login,
              on_ready=lambda url: print(f"{PROG} console: {url} (cluster {','.join(bootstrap)}); "
                                         "Ctrl-C stops it", file=sys.stderr, flush=True))
    except OSError as e:
        raise _UsageError(f"cannot listen on {args.listen}: {e.strerror or e}") from None
    return 0


class _UsageError(Exception):
    pass


# --------------------------------------------------------------------------- errors


def _cmd_top(args: argparse.Namespace, bootstrap: list[str]) -> int:
    try:
        with Admin(bootstrap, default_timeout=CALL_TIMEOUT_S,
                   security=security_from_args(args)) as admin:
            admin.wait_for_brokers(_REACH_TIMEOUT_S)
            return run_top(admin, sys.stdout, ",".join(bootstrap), args.interval,
                           args.iterations)
    except KeyboardInterrupt:  # Ctrl-C while connecting or closing: still a normal quit
        sys.stdout.flush()
        return 0


def _hint(err: BaseException, args: argparse.Namespace, bootstrap: list[str] | None) -> str:
    topic = getattr(args, "topic", None) or getattr(args, "name", None) or "TOPIC"
    where = ",".join(bootstrap) if bootstrap else "the bootstrap brokers"
    if isinstance(err, (NoBrokersAvailable, BrokerNotAvailableError)):
        return (f"is a cluster running at {where}? start one with `{PROG} dev`, or point "
                f"--bootstrap / ${BOOTSTRAP_ENV} at it")
    if isinstance(err, RequestTimedOutError):
        return f"a node is not answering; check `{PROG} cluster status`"
    if isinstance(err, UnknownTopicError) and getattr(args, "topic_command", "") == "delete":
        return f"see the topics with `{PROG} topic list`"
    if isinstance(err, UnknownTopicError):
        return f"create it with `{PROG} topic create {topic}`, or see `{PROG} topic list`"
    if isinstance(err, UnknownPartitionError):
        return f"see the partitions with `{PROG} topic describe {topic}`"
    if isinstance(err, TopicExistsError):
        return f"pick another name, or delete it first with `{PROG} topic delete {topic}`"
    if isinstance(err, NotEnoughReplicasError):
        return "lower --replicas, or start more nodes"
    if isinstance(err, InvalidConfigError):
        return "check the -c KEY=VALUE settings (retention.ms, retention.bytes, max.message.bytes)"
    if isinstance(err, OffsetOutOfRangeError):
        return (f"use --from-beginning, or an offset between the log start and the high "
                f"watermark (`{PROG} topic describe {topic}`)")
    if isinstance(err, RequestTooLargeError):
        return "send smaller records"
    if isinstance(err, GroupNotEmptyError):
        group = getattr(args, "group", None) or "GROUP"
        return (f"stop the group's consumers first (see the members with `{PROG} group "
                f"describe {group}`); a member leaves after its session timeout")
    if isinstance(err, UnknownGroupError):
        return f"see the groups with `{PROG} group list`"
    if isinstance(err, RaftkaTimeoutError):
        return f"the cluster may have lost its quorum or leader; check `{PROG} cluster status`"
    if isinstance(err, AuthenticationFailedError):
        return ("give a client certificate (--tls-cert/--tls-key) or --user with "
                "$RAFTKA_PASSWORD, as the cluster requires")
    if isinstance(err, AuthorizationFailedError):
        return (f"an ACL must allow it: ask an administrator (`{PROG} acl add ...`); "
                f"`{PROG} whoami` shows who you are to the cluster")
    return ""


def _fail(message: str, hint: str = "") -> int:
    line = f"{PROG}: error: {message}" + (f" -- {hint}" if hint else "")
    sys.stderr.write(" ".join(line.split("\n")) + "\n")
    return 1


def _exec(command: list[str]) -> NoReturn:
    try:
        os.execv(command[0], command)
    except OSError as e:
        sys.stderr.write(f"{PROG}: error: cannot run {' '.join(command[:3])}: {e}\n")
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = node_command(argv)
    if command is not None:
        _exec(command)
    args = build_parser().parse_args(argv)
    bootstrap: list[str] | None = None
    try:
        bootstrap = bootstrap_from_args(args)
        if args.command == "topic":
            return _cmd_topic(args, bootstrap)
        if args.command == "cluster":
            return _cmd_cluster(args, bootstrap)
        if args.command == "group":
            return _cmd_group(args, bootstrap)
        if args.command == "txn":
            return _cmd_txn(args, bootstrap)
        if args.command == "produce":
            return _cmd_produce(args, bootstrap)
        if args.command == "consume":
            return _cmd_consume(args, bootstrap)
        if args.command in ("share", "dlq"):
            return cmd_share(args, bootstrap, _table, _json)
        if args.command == "top":
            return _cmd_top(args, bootstrap)
        if args.command == "console":
            return _cmd_console(args, bootstrap)
        if args.command == "user":
            return _cmd_user(args, bootstrap)
        if args.command == "acl":
            return _cmd_acl(args, bootstrap)
        if args.command == "whoami":
            return _cmd_whoami(args, bootstrap)
        if args.command == "quota":
            return _cmd_quota(args, bootstrap)
        raise AssertionError(f"unhandled command {args.command}")
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python from complaining
        # when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except _UsageError as e:
        return _fail(str(e))
    except _ProduceFailed as e:
        return _fail(str(e), _hint(e.error, args, bootstrap))
    except RaftkaError as e:
        return _fail(str(e), _hint(e, args, bootstrap))
    except (ValueError, TypeError) as e:
        return _fail(str(e))
    except Exception as e:  # noqa: BLE001 - a bug: one line unless asked for more
        if os.environ.get("RAFTKA_DEBUG"):
            raise
        return _fail(f"unexpected {type(e).__name__}: {e}",
                     "this is a bug in raftka; rerun with RAFTKA_DEBUG=1 for the traceback")


if __name__ == "__main__":
    sys.exit(main())
