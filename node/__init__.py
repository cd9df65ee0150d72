"""The Raftka broker node: partitions as Raft groups, served over gRPC.

Run one with ``python -m raftka.node --id 1 --listen H:P --peers 1=H:P,... --data-dir D`` or a
local cluster with ``python -m raftka.node.dev``. See node/README.md for the tasks and queues.
"""
