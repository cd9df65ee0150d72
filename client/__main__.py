"""``python -m client`` = the ``raftka`` command."""

import sys

from client.cli import main

sys.exit(main())
