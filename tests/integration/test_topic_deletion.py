"""Deleting a topic on a real 3-node cluster: its data is gone on every node, the name can
be used again for a new, empty topic, and consumer groups' committed offsets for it go."""

from __future__ import annotations

import grpc

from raftka.client import Admin, PartitionReader, Producer
from raftka.v1 import debug_pb2, debug_pb2_grpc
from tests.harness import Cluster, wait_for


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _replica_state(address: str, topic: str, partition: int) -> str | int:
    """This node's replica of the partition: its high watermark, or the error's name."""
    with grpc.insecure_channel(address) as channel:
        stub = debug_pb2_grpc.DebugStub(channel)
        try:
            answer = stub.ReplicaDigest(debug_pb2.ReplicaDigestRequest(
                topic=topic, partition=partition, positions_only=True), timeout=5)
        except grpc.RpcError as e:
            return e.code().name
        return answer.high_watermark


def test_deleted_topic_is_gone_everywhere_and_its_name_reusable(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("doomed", 2, 3)
        admin.wait_for_topic_ready("doomed")
        with Producer(bootstrap) as producer:
            for i in range(200):
                producer.send("doomed", f"old-{i}".encode(), partition=i % 2)
            producer.flush()
        admin.reset_group_offsets("billing", "doomed", to="latest")
        assert len(admin.committed_offsets("billing")) == 2
        for p in (0, 1):  # every replica holds the data before the delete
            wait_for(lambda p=p: all(_replica_state(a, "doomed", p) == 100
                                     for a in cluster.peers.values()), 30, "replicas")

        admin.delete_topic("doomed")

        # every node drops its replicas: nothing answers for the topic any more
        def gone() -> bool:
            return all(isinstance(_replica_state(a, "doomed", p), str)
                       for a in cluster.peers.values() for p in (0, 1))
        wait_for(gone, 30, "every replica of the deleted topic to go")
        # the group's committed offsets for it are dropped
        wait_for(lambda: admin.committed_offsets("billing") == {}, 30,
                 "the group's offsets of the deleted topic to be dropped")

        # the name is reusable: a new, empty topic whose offsets start at 0
        admin.create_topic("doomed", 1, 3)
        admin.wait_for_topic_ready("doomed")
        for address in cluster.peers.values():
            wait_for(lambda a=address: _replica_state(a, "doomed", 0) == 0, 30,
                     "the new topic's replicas")
        assert admin.committed_offsets("billing") == {}
        with Producer(bootstrap) as producer:
            producer.send("doomed", b"new", partition=0).result(timeout=30)
        with PartitionReader(bootstrap, "doomed", 0, "earliest") as reader:
            records = reader.poll(timeout=10)
        assert [(r.offset, r.value) for r in records] == [(0, b"new")]
