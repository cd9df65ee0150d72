"""tests/jepsen: the jepsen-like harness's checker (unit tests on hand-written histories)
and its short real run. The harness lives in ``jepsen-like/`` (not an importable name),
so its package ``rkjepsen`` is put on the path here."""

import sys
from pathlib import Path

JEPSEN_DIR = Path(__file__).resolve().parents[2] / "jepsen-like"
if str(JEPSEN_DIR) not in sys.path:
    sys.path.insert(0, str(JEPSEN_DIR))
