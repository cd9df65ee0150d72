"""``python -m bench [--quick] [--out DIR] [--only raftka|nats] [--skip w6,w7]``: Raftka
against NATS JetStream, side by side, in one run (see bench/README.md)."""

from bench.run import main

raise SystemExit(main())
