"""`raftka top` against a real 3-node cluster: frames with nodes, leaders, throughput per
topic and group lag; --iterations for scripts; Ctrl-C (SIGINT) exits 0 without a
traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from raftka import Admin, Producer
from tests.harness import REPO, Cluster


def _env(cluster: Cluster) -> dict[str, str]:
    return dict(os.environ, RAFTKA_BOOTSTRAP=",".join(cluster.peers.values()))


def test_top_prints_nodes_topics_and_group_lag(cluster: Cluster) -> None:
    cluster.create_topic("shown", partitions=2, replicas=3)
    for p in range(2):
        cluster.wait_leader("shown", p)
    bootstrap = ",".join(cluster.peers.values())
    with Producer(bootstrap, acks="all") as producer:
        for i in range(25):
            producer.send("shown", b"v%d" % i, partition=i % 2)
        producer.flush()
    with Admin(bootstrap) as admin:
        admin.reset_group_offsets("viewers", "shown", to="earliest")
    r = subprocess.run([sys.executable, "-m", "raftka.client", "top", "--iterations", "2",
                        "--interval", "0.5"], env=_env(cluster), cwd=REPO, text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert "\x1b[" not in out  # not a terminal: plain frames, no screen control
    frames = out.split("raftka top  ")[1:]
    assert len(frames) == 2
    for frame in frames:
        lines = frame.splitlines()[1:]  # after the heading (bootstrap and time)
        nodes = [line.split() for line in lines if line[:1].isdigit()]
        assert [n[0] for n in nodes] == ["1", "2", "3"]
        assert all(n[2] == "yes" for n in nodes)
        # leaders per node add up to every partition (2 of "shown" + 6 internal) but those
        # shown leaderless (an election on a loaded machine may be under way)
        summary = next(line for line in lines if line.startswith("controller: "))
        assert "partitions: 8 " in summary
        leaderless = int(summary.rsplit("leaderless: ", 1)[1].split()[0])
        assert sum(int(n[3]) for n in nodes) == 8 - leaderless
        shown = next(line.split() for line in lines if line.startswith("shown "))
        assert shown[1:3] == ["2", "25"]  # partitions, records committed
        viewers = next(line.split() for line in lines if line.startswith("viewers "))
        assert viewers[1] == "empty" and viewers[-1] == "25"  # state ... lag
    first_rate = next(line.split() for line in frames[0].splitlines()
                      if line.startswith("shown "))[3]
    assert first_rate == "-"  # a rate needs two samples
    second_rate = next(line.split() for line in frames[1].splitlines()
                       if line.startswith("shown "))[3]
    assert float(second_rate.replace(",", "")) >= 0


def test_top_exits_0_on_sigint(cluster: Cluster) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "raftka.client", "top", "--interval", "0.2"],
                            env=_env(cluster), cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        assert first.startswith("raftka top  "), first + proc.stderr.read()
        time.sleep(0.3)  # let it sit in a frame or a sleep; either must end cleanly
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
