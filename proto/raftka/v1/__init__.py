"""The ``raftka.v1`` wire contract, shared by the client and the broker.

- the schema: ``*.proto`` beside this file (packaged with it, for clients in other languages);
- the generated protobuf messages and gRPC stubs: ``broker_pb2``, ``admin_pb2``, ``group_pb2``,
  ``raft_pb2``, ``errors_pb2`` and their ``*_pb2_grpc`` (``make proto`` regenerates them);
- ``recordbatch``: Kafka's RecordBatch v2 codec (the bytes that travel in Produce and Fetch);
- ``errors``: the one table of error codes: number, gRPC status, retriable flag, the
  exception class each maps to, and how an error travels on the wire.

The generated modules have the proto package's own name (``raftka.v1``), so their imports
work as generated.
"""
