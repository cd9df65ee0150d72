"""Generated protobuf/gRPC code for the ``raftka.v1`` API (see ``_generate.py``).

Import the modules from ``client.pb.raftka.v1``: ``broker_pb2``, ``admin_pb2``, ``raft_pb2``,
``errors_pb2`` and their ``*_pb2_grpc`` service stubs.
"""
