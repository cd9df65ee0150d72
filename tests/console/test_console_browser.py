"""The web console end to end: headless Chromium (Selenium) against ``raftka console`` against
a real 3-node cluster. One cluster, console and browser for the module; the test that kills a
node runs last. Every page visited is saved as a screenshot (see conftest.py).

Waits are bounded polls (WebDriverWait), never fixed sleeps; nothing asserts on timing except
the bound on how long we wait for the console to show a change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from raftka.client import Admin, Consumer, PartitionReader, Producer
from tests.harness import REPO, Cluster, wait_for

if TYPE_CHECKING:
    from tests.console.conftest import Console

pytestmark = pytest.mark.usefixtures("console")


def _wait(browser, condition, timeout: float, what: str):
    from selenium.common.exceptions import (  # noqa: PLC0415
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    try:
        # a live update may replace an element between finding it and reading it
        return WebDriverWait(browser, timeout, poll_frequency=0.2, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; page: "
                             f"{browser.find_element('tag name', 'body').text[:2000]}") from None


def _text(browser, selector: str) -> str:
    """The element's text; found again if a live update replaced it between the find and
    the read (StaleElementReferenceException in a clean-clone run)."""
    from selenium.common.exceptions import StaleElementReferenceException  # noqa: PLC0415

    for _ in range(20):
        try:
            return browser.find_element("css selector", selector).text
        except StaleElementReferenceException:
            continue
    return browser.find_element("css selector", selector).text


def _shot(browser, screenshots: Path, name: str) -> None:
    browser.save_screenshot(str(screenshots / f"{name}.png"))


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def test_overview_shows_three_healthy_nodes(console: Console, browser, screenshots: Path) -> None:
    browser.get(console.url + "/")
    rows = browser.find_elements("css selector", "#nodes tbody tr")
    assert len(rows) == 3
    assert all(r.get_attribute("class") == "up" for r in rows), [r.text for r in rows]
    assert all("healthy" in r.text for r in rows)
    assert _text(browser, "#nodes-up") == "3 / 3"
    assert _text(browser, "#controller") in {"1", "2", "3"}
    # the overview refreshes itself: the live update replaces the rows with the same state
    _wait(browser, lambda b: "Last update" in _text(b, "#overview-at"), 15, "a live update")
    assert len(browser.find_elements("css selector", "#nodes tbody tr.up")) == 3
    _shot(browser, screenshots, "overview")


def test_topic_created_in_the_console_appears_in_raftka_topic_list(
        console: Console, console_cluster: Cluster, browser, screenshots: Path) -> None:
    browser.get(console.url + "/topics")
    browser.find_element("id", "create-name").send_keys("from-console")
    partitions = browser.find_element("id", "create-partitions")
    partitions.clear()
    partitions.send_keys("2")
    _shot(browser, screenshots, "topics")
    browser.find_element("id", "create-submit").click()
    _wait(browser, lambda b: b.find_elements("id", "topic-name"), 30, "the topic page")
    assert _text(browser, "#topic-name") == "from-console"
    assert len(browser.find_elements("css selector", "#partitions tbody tr")) == 2
    _shot(browser, screenshots, "topic")
    # edit a config: it is set on the topic (source "topic") in the cluster, then reset
    assert _text(browser, "#config-retention\\.ms td.source") == "default"
    browser.find_element("id", "configs-set").send_keys("retention.ms=3600000")
    browser.find_element("id", "configs-submit").click()
    _wait(browser, lambda b: b.find_elements("css selector", ".flash"), 30, "the change")
    assert _text(browser, "#config-retention\\.ms td.value") == "3600000"
    assert _text(browser, "#config-retention\\.ms td.source") == "topic"
    with Admin(_bootstrap(console_cluster)) as admin:
        assert admin.describe_topic("from-console").configs["retention.ms"] == "3600000"
    _shot(browser, screenshots, "topic-configs")
    listed = subprocess.run(
        [sys.executable, "-m", "raftka.client.cli", "topic", "list", "--bootstrap",
         _bootstrap(console_cluster)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "from-console" in listed.stdout.split()


def test_a_produced_record_is_found_in_the_message_browser(
        console: Console, console_cluster: Cluster, browser, screenshots: Path) -> None:
    bootstrap = _bootstrap(console_cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("browse", partitions=2, replication_factor=3)
        admin.wait_for_topic_ready("browse", timeout=30)
    with Producer(bootstrap) as producer:
        for i in range(5):
            producer.send("browse", f"filler {i}".encode(), partition=1)
        partition, offset = producer.send(
            "browse", json.dumps({"order": 42, "items": ["tea"]}).encode(), key=b"user-7",
            headers=[("trace-id", b"abc123")], partition=1).result(timeout=30)
    assert (partition, offset) == (1, 5)
    browser.get(f"{console.url}/topics/browse/messages?partition=1&offset=5&format=json")
    row = browser.find_element("id", "record-5")
    assert "user-7" in row.find_element("css selector", "td.key").text
    assert "trace-id" in row.find_element("css selector", "td.headers").text
    assert "abc123" in row.find_element("css selector", "td.headers").text
    value = row.find_element("css selector", "td.value pre").text
    assert json.loads(value) == {"order": 42, "items": ["tea"]}
    assert '\n  "order": 42' in value  # pretty-printed
    _shot(browser, screenshots, "messages-json")
    # hex: the value's bytes
    browser.get(f"{console.url}/topics/browse/messages?partition=1&offset=5&format=hex")
    hexed = browser.find_element("css selector", "#record-5 td.value pre").text
    assert "7b 22 6f 72 64 65 72 22" in hexed  # {"order"
    # the newest records by default, and from a time
    browser.get(f"{console.url}/topics/browse/messages?partition=1")
    assert len(browser.find_elements("css selector", "#messages tbody tr[id^=record-]")) == 6
    browser.get(f"{console.url}/topics/browse/messages?partition=1&timestamp=0")
    assert browser.find_elements("id", "record-0")

    # produce a test record from the console's form, then read it back from the cluster
    browser.find_element("id", "produce-partition").send_keys("0")
    browser.find_element("id", "produce-key").send_keys("k-console")
    browser.find_element("id", "produce-headers").send_keys("source: console")
    browser.find_element("id", "produce-value").send_keys("hello from the console")
    browser.find_element("id", "produce-submit").click()
    # the page shown before the submit (partition 1) has a record-0 too: wait for the
    # answer's flash message, which only the page after the produce carries
    _wait(browser, lambda b: b.find_elements("css selector", ".flash"), 30,
          "the produce's answer")
    assert "produced offset 0 to partition 0" in _text(browser, ".flash")
    assert "hello from the console" in _text(browser, "#record-0 td.value")
    _shot(browser, screenshots, "messages-produced")
    with PartitionReader(bootstrap, "browse", 0, offset=0) as reader:
        records = wait_for(lambda: reader.poll(timeout=1.0), 30, "the console's record")
    assert (records[0].key, records[0].value, records[0].headers) == (
        b"k-console", b"hello from the console", (("source", b"console"),))


def test_group_lag_appears_then_drops_to_zero_and_offsets_reset_with_a_dry_run(
        console: Console, console_cluster: Cluster, browser, screenshots: Path) -> None:
    bootstrap = _bootstrap(console_cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("lagged", partitions=1, replication_factor=3)
        admin.wait_for_topic_ready("lagged", timeout=30)
    with Producer(bootstrap) as producer:
        producer.send_many("lagged", [f"r{i}".encode() for i in range(30)], partition=0).result(30)
    url = f"{console.url}/groups/billing"

    def total_lag(expected: str):
        def check(b):
            b.get(url)
            found = b.find_elements("id", "total-lag")
            return found and found[0].text == expected
        return check

    with Consumer(bootstrap, "billing", ["lagged"]) as consumer:
        seen: list = []
        wait_for(lambda: seen.extend(consumer.poll(timeout=0.5)) or len(seen) >= 30, 60,
                 "the consumer to read 30 records")
        consumer.commit({("lagged", 0): 10})
        _wait(browser, total_lag("20"), 30, "a lag of 20")
        assert _text(browser, "#lag-lagged-0 td.lag") == "20"
        _wait(browser, lambda b: b.execute_script(
            "const c = raftka.charts['lag-chart']; return c && c.data.datasets.length > 0 && "
            "c.data.datasets[0].data.includes(20);"), 30, "the lag chart to show 20")
        _shot(browser, screenshots, "group-lagging")
        consumer.commit()  # caught up: the position after the 30 records
        _wait(browser, total_lag("0"), 30, "the lag to drop to 0")
        _wait(browser, lambda b: b.execute_script(
            # the chart and its series may be between a re-render and the next: guarded as
            # the lag-of-20 check above is
            "const c = raftka.charts['lag-chart']; const s = c && c.data.datasets[0]; "
            "return !!s && s.data.length > 0 && s.data[s.data.length - 1] === 0;"), 30,
            "the lag chart to reach 0")
        _shot(browser, screenshots, "group")

    # The group is empty now: a dry run shows the plan and changes nothing; apply does it.
    with Admin(bootstrap) as admin:
        wait_for(lambda: admin.describe_group("billing").is_empty, 30, "the group to be empty")
        browser.get(url)
        browser.find_element("id", "reset-partitions").send_keys("0")
        browser.find_element("id", "reset-dry-run").click()
        _wait(browser, lambda b: b.find_elements("id", "reset-plan"), 30, "the dry run's plan")
        assert "dry run" in _text(browser, "#reset-plan h3")
        assert _text(browser, "#reset-plan td.new-offset") == "0"
        assert admin.committed_offsets("billing") == {("lagged", 0): 30}
        _shot(browser, screenshots, "group-reset-dry-run")
        browser.find_element("id", "reset-apply").click()
        _wait(browser, lambda b: "Applied" in _text(b, "#reset-plan h3"), 30, "the reset")
        assert admin.committed_offsets("billing") == {("lagged", 0): 0}
        assert _text(browser, "#total-lag") == "30"
    browser.get(console.url + "/groups")
    assert browser.find_elements("id", "group-billing")
    _shot(browser, screenshots, "groups")
    browser.get(console.url + "/throughput")
    _wait(browser, lambda b: b.execute_script(
        "const c = raftka.charts['throughput-chart']; return c && c.data.datasets.some("
        "d => d.label === 'lagged');"), 30, "the throughput chart to list the topic")

    def latency_charted(b) -> bool:
        with Producer(bootstrap, acks="all", linger_ms=0) as p:  # requests to chart
            p.send("lagged", b"timed", partition=0).result(30)
        return b.execute_script(
            "const c = raftka.charts['latency-chart']; return c && c.data.datasets.some("
            "d => d.label.endsWith(' p99') && d.data.some(v => typeof v === 'number' && v > 0));")
    _wait(browser, latency_charted, 60, "the latency chart to show a produce p99")
    _shot(browser, screenshots, "throughput")
    browser.get(console.url + "/topics/lagged")
    size = _text(browser, "#topic-size")
    assert size.endswith("B") and not size.startswith("0 "), size  # 30+ records stored


def test_error_pages_answer_with_a_status_and_a_message(
        console: Console, browser, screenshots: Path) -> None:
    cases = [
        ("/topics/no-such-topic", 404, "does not exist"),
        ("/topics/no-such-topic/messages", 404, "does not exist"),
        ("/topics/browse/messages?partition=1&offset=999", 400, "out of range"),
        ("/topics/browse/messages?partition=1&offset=abc", 400, "whole number"),
        ("/topics/browse/messages?partition=7", 404, "partition 7 does not exist"),
        ("/topics/browse/messages?format=yaml", 400, "format must be"),
        ("/topics/browse/messages?timestamp=yesterday", 400, "timestamp must be"),
        ("/groups/no-such-group", 404, "no-such-group"),
        ("/no/such/page", 404, "Not Found"),
    ]
    for path, status, words in cases:
        code, body = console.get(path)
        assert code == status, (path, code, body[:500])
        assert words in body, (path, body[:2000])
        assert "Traceback" not in body
    code, body = console.get("/topics", {"name": "x", "partitions": "many"})
    assert code == 400 and "partitions must be a whole number" in body
    code, body = console.get("/topics", {"name": "bad name!", "partitions": "1"})
    assert code == 400 and "invalid topic name" in body, body[:2000]
    code, body = console.get("/topics/browse/delete", {"confirm": "wrong"})
    assert code == 400 and "type the topic's name" in body
    code, body = console.get("/topics/browse/configs", {"set": "retention.ms=soon"})
    assert code == 400 and "retention.ms" in body and "Traceback" not in body
    code, body = console.get("/topics/browse/configs", {"set": ""})
    assert code == 400 and "nothing to change" in body
    browser.get(console.url + "/topics/no-such-topic")
    assert "404" in _text(browser, "#error h1")
    assert "no-such-topic" in _text(browser, "#error-message")
    _shot(browser, screenshots, "error-missing-topic")
    browser.get(console.url + "/topics/browse/messages?partition=1&offset=999")
    assert "out of range" in _text(browser, "#error-message")
    _shot(browser, screenshots, "error-bad-offset")


def test_a_topic_is_deleted_only_after_typing_its_name(
        console: Console, console_cluster: Cluster, browser, screenshots: Path) -> None:
    browser.get(console.url + "/topics/from-console")
    browser.find_element("id", "delete-link").click()
    _wait(browser, lambda b: b.find_elements("id", "delete-confirm"), 30, "the confirmation")
    _shot(browser, screenshots, "topic-delete-confirm")
    browser.find_element("id", "delete-confirm").send_keys("from-console")
    browser.find_element("id", "delete-submit").click()
    _wait(browser, lambda b: "deleted topic from-console" in _text(b, "main"), 30, "deletion")
    with Admin(_bootstrap(console_cluster)) as admin:
        assert "from-console" not in admin.list_topics()


def test_a_killed_node_turns_red_on_the_overview(
        console: Console, console_cluster: Cluster, browser, screenshots: Path) -> None:
    browser.get(console.url + "/")
    assert len(browser.find_elements("css selector", "#nodes tbody tr.up")) == 3
    victim = next(n for n in console_cluster.live() if n != console_cluster.controller_leader())
    os.kill(console_cluster.procs[victim].pid, signal.SIGKILL)  # kill -9 by PID
    console_cluster.kill(victim)  # reaps it; the harness forgets it
    # no reload: the page updates itself
    _wait(browser, lambda b: b.find_elements("css selector", f"#node-{victim}.down"), 15,
          f"node {victim} to turn red")
    assert "unreachable" in _text(browser, f"#node-{victim}")
    _wait(browser, lambda b: _text(b, "#nodes-up") == "2 / 3", 15, "2 of 3 nodes up")
    _shot(browser, screenshots, "overview-node-down")
    print(f"console screenshots: {screenshots}")
