"""examples/asyncio/order_api.py against a real cluster: the service starts (creating its
topic), POST /orders answers once the order is acknowledged, GET /orders/{id} finds it
through the service's consumer-group member, bad input is a 400, and Ctrl-C stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness import Cluster, free_ports, wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "asyncio" / "order_api.py"


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _up(port: int) -> bool:
    try:
        return _request(port, "GET", "/orders/none")[0] == 404
    except OSError:
        return False


def test_order_api_example_places_and_finds_orders(cluster: Cluster, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    log = open(tmp_path / "order_api.log", "wb")
    proc = subprocess.Popen(
        # -X faulthandler: a SIGABRT (below, if Ctrl-C does not stop it) dumps every thread
        [sys.executable, "-X", "faulthandler", str(EXAMPLE),
         "--bootstrap", ",".join(cluster.peers.values()),
         "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _up(port) or proc.poll() is not None, 60, "the service to serve")
        assert proc.poll() is None, (tmp_path / "order_api.log").read_text()
        code, placed = _request(port, "POST", "/orders",
                                json.dumps({"id": "o-1", "item": "book", "qty": 2}).encode())
        assert code == 201, placed
        assert placed["status"] == "placed" and placed["offset"] >= 0
        found = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
            _request(port, "GET", "/orders/o-1")), 30, "the order's status")
        assert found[1]["item"] == "book"
        assert (found[1]["partition"], found[1]["offset"]) == (placed["partition"],
                                                               placed["offset"])
        assert _request(port, "POST", "/orders", b"not json")[0] == 400
        assert _request(port, "POST", "/orders", b'{"item": "no id"}')[0] == 400
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # where it hangs goes to its log
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
    assert proc.returncode == 0, (tmp_path / "order_api.log").read_text()
