"""The ``--exec`` command of tests/integration/test_rolling_restart.py: asks the test to
restart node ID by creating ``DIR/restart-ID``, then waits until the test has restarted it
and removed the file (at most TIMEOUT seconds; exit 1 then).

    python restart_request.py DIR ID TIMEOUT
"""

import sys
import time
from pathlib import Path

request = Path(sys.argv[1]) / f"restart-{sys.argv[2]}"
deadline = time.monotonic() + float(sys.argv[3])
request.touch()
while request.exists():
    if time.monotonic() > deadline:
        sys.exit(f"node {sys.argv[2]} was not restarted within {sys.argv[3]}s")
    time.sleep(0.05)
