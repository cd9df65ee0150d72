"""Fixtures for the console's browser tests: one real 3-node cluster, one ``raftka console``
process and one headless Chromium per module (starting them is most of the time).

The browser is Debian's ``chromium`` driven through Debian's ``chromedriver`` by Selenium,
both named by path so Selenium Manager never looks for (or downloads) anything; ``make
console-deps`` installs them as root. Without them the browser tests skip, saying why, unless
we run as root (CI), where that is a failure: the tests must run there.

Screenshots of every page go to ``<pytest basetemp>/console-screenshots/`` (outside the
checkout; printed at the end of the session).
"""

from __future__ import annotations

import html
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REPO, Cluster, free_ports

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _missing() -> str:
    try:
        import selenium  # noqa: F401, PLC0415
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (make console-deps installs chromium and chromium-driver as root)"
    return ""


def require_browser() -> None:
    why = _missing()
    if why:
        if os.geteuid() == 0:
            pytest.fail(f"browser tests must run as root: {why}")
        pytest.skip(why)


class Console:
    """A ``raftka console`` subprocess (the real command line) on a free port."""

    def __init__(self, bootstrap: str, log_path: Path) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raftka.client.cli", "console", "--bootstrap", bootstrap,
             "--listen", f"127.0.0.1:{self.port}", "--sample-interval", "1"],
            cwd=REPO, stdout=self._log, stderr=self._log, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"raftka console exited with {self.proc.returncode}: "
                                     f"{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/api/overview", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the console did not answer within {timeout:.0f}s: "
                                     f"{self.log()}")
            time.sleep(0.1)

    def get(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str]:
        """(HTTP status, body as text: HTML entities decoded) of a GET (or a POST of
        ``data``)."""
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
        try:
            with urllib.request.urlopen(self.url + path, data=body, timeout=30) as r:
                return r.status, html.unescape(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, html.unescape(e.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def console_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_browser()
    cluster = Cluster(tmp_path_factory.mktemp("console-cluster"), 3)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def console(console_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    c = Console(",".join(console_cluster.peers.values()),
                tmp_path_factory.mktemp("console") / "console.log")
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()
        text = c.log()
        assert "Traceback" not in text, f"the console logged a traceback:\n{text}"


@pytest.fixture(scope="module")
def browser(console_cluster: Cluster) -> Iterator[object]:
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "console-screenshots"
    path.mkdir(exist_ok=True)
    return path
