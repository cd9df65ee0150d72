"""Health check of one Raftka node over the standard gRPC health protocol (grpc.health.v1),
for container HEALTHCHECKs and other probes that cannot speak gRPC themselves.

    python healthcheck.py [HOST:PORT] [SERVICE]

HOST:PORT defaults to $RAFTKA_HEALTH_ADDRESS, else 127.0.0.1:7001; SERVICE to "" (the whole
node: SERVING once it knows a controller leader and has applied the committed metadata).
TLS when $RAFTKA_TLS_CA names a CA bundle (with $RAFTKA_TLS_CERT/$RAFTKA_TLS_KEY for mutual
TLS). Exit 0 when SERVING, 1 otherwise (NOT_SERVING, unknown service, unreachable), with one
line saying which.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def _channel(address: str) -> grpc.Channel:
    ca = os.environ.get("RAFTKA_TLS_CA")
    if not ca:
        return grpc.insecure_channel(address)

    def read(name: str) -> bytes | None:
        path = os.environ.get(name)
        return open(path, "rb").read() if path else None
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(
        read("RAFTKA_TLS_CA"), read("RAFTKA_TLS_KEY"), read("RAFTKA_TLS_CERT")))


def main(argv: list[str]) -> int:
    address = argv[1] if len(argv) > 1 else os.environ.get("RAFTKA_HEALTH_ADDRESS",
                                                           "127.0.0.1:7001")
    service = argv[2] if len(argv) > 2 else ""
    with _channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            print(f"{address} {service or '(node)'}: {exc.code().name}: {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{address} {service or '(node)'}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
