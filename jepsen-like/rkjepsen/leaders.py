"""Which node leads a partition right now, asked of the nodes themselves (the nemesis
picks its victims with it: kill or isolate *the leader* of a key)."""

from __future__ import annotations

from rkjepsen.netcluster import NetCluster


class LeaderFinder:
    """The node that says it leads a partition, highest term first (0: none). Nodes that
    are down or paused are not asked; a node that joined during the run gets a stub on
    first use."""

    def __init__(self, cluster: NetCluster) -> None:
        self._cluster = cluster
        self._stubs: dict = {}

    def leader_of(self, topic: str, partition: int) -> int:
        import grpc

        from raftka.v1 import broker_pb2

        best = (-1, 0)
        for nid in self._cluster.alive():
            if nid in self._cluster.paused:
                continue
            stub = self._stub(nid)
            if stub is None:
                continue
            try:
                md = stub.Metadata(broker_pb2.MetadataRequest(topics=[topic]), timeout=1.0)
                info = md.topics[0].partitions[partition]
            except (grpc.RpcError, IndexError):
                continue
            if info.leader_id == nid and info.leader_term > best[0]:
                best = (info.leader_term, nid)
        return best[1]

    def _stub(self, nid: int):
        if nid not in self._stubs:
            address = self._cluster.addresses.get(nid)
            if address is None:
                return None
            import grpc

            from raftka.client import channel_options
            from raftka.v1 import broker_pb2_grpc

            self._stubs[nid] = broker_pb2_grpc.BrokerStub(
                grpc.insecure_channel(address, options=channel_options()))
        return self._stubs[nid]
