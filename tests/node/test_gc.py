"""The node's collector policy: its thresholds, and GcWatch (every collection is timed; one
longer than the threshold is logged as a warning that names the generation and what it
means for the cluster)."""

from __future__ import annotations

import gc
import logging

from raftka.node._gc import THRESHOLDS, GcWatch, tune_thresholds


def test_a_long_collection_is_logged_and_counted(caplog) -> None:
    watch = GcWatch(long_pause_s=0.0)  # every collection counts as long
    watch.install()
    try:
        with caplog.at_level(logging.WARNING, logger="raftka.gc"):
            gc.collect(2)
    finally:
        watch.uninstall()
    assert watch.collections >= 1 and watch.long_pauses >= 1
    assert "generation 2 paused the node" in caplog.text
    assert "report this node silent" in caplog.text
    gc.collect(2)
    assert watch.collections == 1, "uninstalled: no longer called"


def test_a_short_collection_is_counted_not_logged(caplog) -> None:
    watch = GcWatch(long_pause_s=60.0)
    watch.install()
    watch.install()  # once only
    try:
        with caplog.at_level(logging.WARNING, logger="raftka.gc"):
            gc.collect(0)
    finally:
        watch.uninstall()
    assert watch.collections == 1 and watch.long_pauses == 0
    assert caplog.text == ""


def test_the_node_thresholds_and_the_environment_override(caplog) -> None:
    before = gc.get_threshold()
    try:
        assert tune_thresholds({}) == THRESHOLDS == gc.get_threshold()
        assert THRESHOLDS[0] > 700, "short-lived objects must die before a collection"
        assert tune_thresholds({"RAFTKA_GC_THRESHOLDS": "700,10,10"}) == (700, 10, 10)
        assert gc.get_threshold() == (700, 10, 10)
        with caplog.at_level(logging.WARNING, logger="raftka.gc"):
            assert tune_thresholds({"RAFTKA_GC_THRESHOLDS": "7,x"}) == THRESHOLDS
        assert "not three non-negative integers" in caplog.text
    finally:
        gc.set_threshold(*before)
