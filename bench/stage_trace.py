"""Where an acks=all write's time goes, stage by stage: a tracer for ``bench.latency_stages``.

Nothing here runs in a normal node or client. ``install_node(dir)`` wraps a handful of
functions of the node (its Produce handler, the partition's proposal and apply, the host
driver's passes and inputs, the WAL's synced writes, the peer transport's batch encoder)
so that each records ``(event, group, raft index, extra, time.monotonic_ns())``; at exit
the node writes them to ``dir/node-<id>.events``. ``CLOCK_MONOTONIC`` is one clock for
every process of the machine, so events of the client, the leader and the followers can
be subtracted from each other. ``install_client(events)`` wraps the producers' unary
Produce call (threaded and asyncio) the same way, in the calling process.

Events (index: the Raft index of the entry, or the last one of a batch of entries):

==============  ================================================================
h_in / h_out    the Produce handler began / returned (index: base offset; extra: topic)
propose         the partition proposed a request (index; extra: (topic, base, last))
pass            a ready pass took a Ready with entries (index: its last entry)
fsync0 / fsync1 the sync thread's synced write began / ended (index: last entry)
synced          the loop learned the write is durable (``sync_completed``)
apply           committed entries applied (index: the last one)
send_app        an append with entries was encoded for a peer (extra: the peer)
recv_app        an append with entries was delivered from a peer (extra: the peer)
send_resp       an append acknowledgement was encoded for a peer
recv_resp       an append acknowledgement was delivered from a peer
c_call          client: a unary Produce call was made (index: base offset of the
                answer; extra: the call's start time; t: its answer's arrival)
==============  ================================================================
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import time
from pathlib import Path

_now = time.monotonic_ns


def _node_id() -> str:
    argv = sys.argv
    return argv[argv.index("--id") + 1] if "--id" in argv else str(os.getpid())


def install_node(directory: str) -> None:
    from raftka.node import _partition, _services, _transport
    from raftka.raft import host as raft_host
    from raftka.raft import rocksdb
    from raftka.raft.core import MsgType

    events: list[tuple] = []
    record = events.append
    app, app_resp = MsgType.APP, MsgType.APP_RESP

    def dump() -> None:
        path = Path(directory) / f"node-{_node_id()}.events"
        with open(path, "w") as f:
            for e in events:
                f.write(repr(e) + "\n")
    atexit.register(dump)

    produce = _services.BrokerService.Produce

    @functools.wraps(produce)
    async def traced_produce(self, request, context):
        t0 = _now()
        response = await produce(self, request, context)
        record(("h_in", -1, response.base_offset, request.topic, t0))
        record(("h_out", -1, response.base_offset, request.topic, _now()))
        return response
    _services.BrokerService.Produce = traced_produce

    before_ready = _partition.PartitionReplica.before_ready

    def traced_before_ready(self):
        waiters = self._acks_all
        n = len(waiters)
        before_ready(self)
        if len(waiters) > n:
            t = _now()
            for w in list(waiters)[n:]:
                record(("propose", self.group_id, w.index, (self.topic, w.base, w.last), t))
    _partition.PartitionReplica.before_ready = traced_before_ready

    apply = _partition.PartitionReplica.apply

    def traced_apply(self, entries):
        record(("apply", self.group_id, entries[-1].index, None, _now()))
        apply(self, entries)
    _partition.PartitionReplica.apply = traced_apply

    take = raft_host.HostDriver._take_readies

    def traced_take(self):
        readies = take(self)
        t = _now()
        for group, rd in readies:
            if rd.entries:
                record(("pass", group.group_id, rd.entries[-1].index, None, t))
        return readies
    raft_host.HostDriver._take_readies = traced_take

    completed = raft_host.HostDriver.sync_completed

    def traced_completed(self):
        t = _now()
        for group, rd in self._readies or ():
            if rd.entries:
                record(("synced", group.group_id, rd.entries[-1].index, None, t))
        completed(self)
    raft_host.HostDriver.sync_completed = traced_completed

    def appends(prefix: str, items, peer: int) -> None:
        """``prefix``_app / _resp events of the appends and acknowledgements in ``items``."""
        t = _now()
        for gid, m in items:
            if m.type == app and m.entries:
                record((prefix + "_app", gid, m.entries[-1].index, peer, t))
            elif m.type == app_resp and not m.reject:
                record((prefix + "_resp", gid, m.index, peer, t))

    deliver = raft_host.HostDriver.deliver_many

    def traced_deliver(self, items, frm=0):
        appends("recv", items, frm)
        deliver(self, items, frm)
    raft_host.HostDriver.deliver_many = traced_deliver

    save_many = rocksdb.RocksLogDB.save_many

    def traced_save_many(self, items, sync=True):
        if not sync:
            return save_many(self, items, sync)
        t0 = _now()
        save_many(self, items, sync)
        t1 = _now()
        for gid, _, entries, _ in items:
            if entries:
                record(("fsync0", gid, entries[-1].index, None, t0))
                record(("fsync1", gid, entries[-1].index, None, t1))
    rocksdb.RocksLogDB.save_many = traced_save_many

    encode = _transport.encode_batch

    def traced_encode(frm, to, items):
        appends("send", items, to)
        return encode(frm, to, items)
    _transport.encode_batch = traced_encode


def install_client(events: list) -> None:
    """Record every producer unary Produce call (start, answer) into ``events``."""
    from raftka.client import _sender
    from raftka.client.aio import _producer as aio_producer

    record = events.append

    def wrap(send_unary):
        @functools.wraps(send_unary)
        def traced(self, address, request, callback):
            t0 = _now()

            def answered(response, error):
                if response is not None:
                    record(("c_call", -1, response.base_offset, t0, _now()))
                callback(response, error)
            send_unary(self, address, request, answered)
        return traced
    _sender.Sender._send_unary = wrap(_sender.Sender._send_unary)
    aio_producer.AsyncSender._send_unary = wrap(aio_producer.AsyncSender._send_unary)
