"""Settings for the whole test run."""

from __future__ import annotations

import signal

# A test run started in the background (CI, `make test &`) inherits SIGINT *ignored*, an
# ignored signal stays ignored across fork and exec, and Python then installs no
# KeyboardInterrupt handler: every program a test starts and stops with Ctrl-C (the asyncio
# example, `raftka top`) ignored the test's SIGINT and hung until it was killed (CI failed
# this way, reproducibly, while the same tests passed from a terminal). A handled signal is
# reset to its default across exec, so handling it here gives the children Ctrl-C back.
# (preexec_fn would fork without vfork and run gRPC's fork handlers in the child: it broke.)
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

