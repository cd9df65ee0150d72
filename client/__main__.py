"""``python -m raftka.client`` = the ``raftka`` command."""

import sys

from raftka.client.cli import main

sys.exit(main())
