"""``python -m raftka.node`` runs one Raftka node (``raftka node`` execs this)."""

import sys

from ._server import main

sys.exit(main())
