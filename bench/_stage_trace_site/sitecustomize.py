"""Loaded by every Python process started with this directory on PYTHONPATH: the nodes of
``python -m bench.latency_stages`` install the stage tracer (``bench/stage_trace.py``)
before ``raftka.node`` starts. Does nothing unless RAFTKA_STAGE_TRACE names a directory."""

import os
import sys

if os.environ.get("RAFTKA_STAGE_TRACE"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    from bench.stage_trace import install_node

    install_node(os.environ["RAFTKA_STAGE_TRACE"])
