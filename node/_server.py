"""Run one node: the gRPC server (client, admin, peer, health, reflection services) and
the broker behind it, until SIGTERM/SIGINT.

SIGTERM is a graceful stop: leadership is transferred away first, then the server drains.

Health (``grpc.health.v1``), per service name, so a load balancer or an orchestrator can
probe exactly what it routes:

- ``raftka.v1.RaftPeer``: SERVING once the node's Raft host runs (its log is open).
- ``raftka.v1.Broker``, ``raftka.v1.Admin``, ``raftka.v1.GroupCoordinator`` and ``""`` (the
  whole node): SERVING once, in addition, the node knows a controller leader and has applied
  the metadata it knows to be committed (``Broker.metadata_caught_up``): before that it
  cannot say which topics exist or who leads them. A node that starts into a cluster
  without a quorum stays NOT_SERVING.
- Every name is NOT_SERVING from the start until then, and again as soon as a graceful stop
  begins (before leaderships move away). Once SERVING, a name stays so while the node runs:
  health says whether to send this node requests at all; who leads a partition is what
  Metadata is for.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from raftka.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, broker_pb2_grpc
from raftka.v1 import group_pb2, group_pb2_grpc, raft_pb2, raft_pb2_grpc
from raftka.v1 import share_pb2, share_pb2_grpc
from raftka.v1 import security_pb2, security_pb2_grpc
from raftka.v1 import txn_pb2, txn_pb2_grpc
from raftka.raft import StorageCorruption
from raftka.raft.rocksdb import StorageOpenError, damaged_store_advice

from ._broker import Broker
from ._config import ConfigError, NodeConfig, from_args
from ._debug_service import add_debug_service
from ._forwarding import ControllerForwarder
from ._gc import GcWatch, tune_thresholds
from ._join import join as join_cluster
from ._group_service import GroupCoordinatorService
from ._kafka import KafkaApis, KafkaListener, kafka_ssl_context
from ._metrics import MetricsServer, NodeCollector
from ._services import AdminService, BrokerService, TxnMarkersService
from ._share_service import ShareService
from ._txn_service import TransactionCoordinatorService
from ._transport import RaftPeerService
from ._acl import Authorizer
from ._auth import Authenticator, PrincipalMapper
from ._authz import NodeSecurity, SecurityInterceptor
from ._quota import QuotaLimiter
from ._security_service import SecurityService
from ._tls import client_tls, peer_tls, warn_plain_text

log = logging.getLogger("raftka.node")

READY_POLL_S = 0.05  # how often a starting node checks whether it caught up on metadata
RAFT_SERVICE = raft_pb2.DESCRIPTOR.services_by_name["RaftPeer"].full_name
CLIENT_SERVICES = (  # SERVING once the metadata caught up; "" is the whole node
    broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    group_pb2.DESCRIPTOR.services_by_name["GroupCoordinator"].full_name,
    share_pb2.DESCRIPTOR.services_by_name["Share"].full_name,
    security_pb2.DESCRIPTOR.services_by_name["Security"].full_name,
    txn_pb2.DESCRIPTOR.services_by_name["TxnMarkers"].full_name,
    txn_pb2.DESCRIPTOR.services_by_name["TransactionCoordinator"].full_name,
    "",
)

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )


async def serve(config: NodeConfig) -> int:
    if config.join_pending:
        try:
            await join_cluster(config)
        except ConfigError as exc:
            log.error("node cannot start: %s", exc)
            return 2
    try:
        broker = Broker(config)
    except StorageOpenError as exc:  # already one line: what, where, what to do
        log.error("node %d cannot start: %s", config.node_id, exc)
        return 1
    except OSError as exc:  # creating the data directory
        log.error("node %d cannot start: cannot create data directory %s (%s); create it or "
                  "fix its owner and mode", config.node_id, config.data_dir,
                  exc.strerror or exc)
        return 1
    security = node_security(config, broker)
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=(
        [SecurityInterceptor(security, peer_port=False)] if config.secured else None))
    forwarder = ControllerForwarder(broker)  # controller writes at any node (KIP-590)
    # the Kafka listener's handlers call these services' methods (one truth, two doors)
    broker_service = BrokerService(broker, forwarder)
    admin_service = AdminService(broker, forwarder)
    broker.reassignments.controller_write = admin_service.complete_reassignment
    broker.balancer.channel_of = forwarder.channel  # log sizes from the other nodes
    groups = GroupCoordinatorService(broker)
    shares = ShareService(broker, groups)
    txns = TransactionCoordinatorService(broker, forwarder, broker_service, groups)
    broker_service.joins = txns.joins
    raft_service = RaftPeerService(config.node_id, broker.host.deliver_many, broker.racks,
                                   broker.peer_entry_formats)
    peer_server = None
    if config.peer_listen:  # Raft and forwarded calls on their own mutual-TLS port
        peer_server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[
            SecurityInterceptor(security, peer_port=True)])
        _add_services(peer_server, broker, forwarder, groups, shares, txns)
        raft_pb2_grpc.add_RaftPeerServicer_to_server(raft_service, peer_server)
    _add_services(server, broker, forwarder, groups, shares, txns)
    if peer_server is None:
        raft_pb2_grpc.add_RaftPeerServicer_to_server(raft_service, server)
    add_debug_service(server, broker)
    health_servicer = health.aio.HealthServicer()
    for name in (RAFT_SERVICE, *CLIENT_SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((
        *CLIENT_SERVICES[:-1],
        RAFT_SERVICE,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ), server)
    tls = client_tls(config)  # read and checked by config.validate()
    ports = [(server, config.listen, tls.server_credentials(config.tls_require_client_cert)
              if tls is not None else None)]
    if tls is None:
        warn_plain_text("the client port", config.listen)
    if peer_server is not None:
        peer = peer_tls(config)
        assert peer is not None
        ports.append((peer_server, config.peer_listen, peer.server_credentials(True)))
    for srv, address, credentials in ports:
        try:
            port = (srv.add_secure_port(address, credentials) if credentials is not None
                    else srv.add_insecure_port(address))
        except RuntimeError as exc:
            port = 0
            log.error("cannot listen on %s: %s", address, exc)
        if port == 0:
            log.error("cannot listen on %s; is another process using the port?", address)
            broker.db.close()
            return 2
    # Metrics first: its exporter process binds the port before the node reports healthy,
    # and a port in use stops the node before it joins the cluster.
    metrics_server = None
    if config.metrics_listen:
        metrics_server = MetricsServer(config.metrics_listen, broker.metrics,
                                       NodeCollector(broker, groups, broker.metrics))
        try:
            await metrics_server.start()
        except (OSError, ValueError) as exc:
            log.error("cannot serve metrics on %s: %s; is another process using the port?",
                      config.metrics_listen, exc)
            broker.db.close()
            return 2
    if peer_server is not None:
        await peer_server.start()
    await server.start()
    try:
        await broker.start()  # loads the controller group's log: validated, may be damaged
    except StorageCorruption as exc:
        log.error("node %d cannot start: %s (raft log store %s); %s", config.node_id, exc,
                  broker.db.path, damaged_store_advice(broker.db.path))
        if metrics_server is not None:
            await metrics_server.stop()
        await server.stop(grace=None)
        if peer_server is not None:
            await peer_server.stop(grace=None)
        await forwarder.close()
        broker.db.close()
        return 1
    groups.start()
    shares.start()
    txns.start()
    kafka = None
    if config.kafka_listen:
        kafka_apis = KafkaApis(broker, broker_service, admin_service, groups, security,
                               txns, shares)
        try:
            kafka = KafkaListener(broker, kafka_apis, kafka_ssl_context(config))
            if not config.tls_cert:
                warn_plain_text("the Kafka listener", config.kafka_listen)
            await kafka.start()
        except (OSError, ValueError) as exc:
            log.error("cannot serve the Kafka protocol on %s: %s; is another process using "
                      "the port?", config.kafka_listen, exc)
            if metrics_server is not None:
                await metrics_server.stop()
            await groups.stop()
            await shares.stop()
            await txns.close()
            await broker.stop(graceful=False)
            await server.stop(grace=None)
            if peer_server is not None:
                await peer_server.stop(grace=None)
            await forwarder.close()
            return 2
        kafka_apis.start()
    await health_servicer.set(RAFT_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    print(f"raftka node {config.node_id} serving on {config.listen}", file=sys.stderr, flush=True)
    if kafka is not None:
        print(f"raftka node {config.node_id} Kafka protocol on {kafka.address} (advertised "
              f"as {config.kafka_advertised})", file=sys.stderr, flush=True)
    if metrics_server is not None:
        print(f"raftka node {config.node_id} metrics on http://{metrics_server.address}/metrics",
              file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    readiness = loop.create_task(_report_ready(broker, health_servicer), name="readiness")
    ready_loop = broker.host.ready_loop
    done, _ = await asyncio.wait([loop.create_task(stop.wait()), ready_loop],
                                 return_when=asyncio.FIRST_COMPLETED)
    failed = ready_loop in done
    damage = ready_loop.exception() if failed else None
    if isinstance(damage, StorageCorruption):
        # the same one line as a refused start, so an operator (or the jepsen-like harness)
        # recovers it the same way instead of restarting it into the damage; said first,
        # as closing a damaged store may fail too
        log.error("node %d cannot go on: %s (raft log store %s, found while running); %s",
                  config.node_id, damage, broker.db.path, damaged_store_advice(broker.db.path))
    readiness.cancel()
    await health_servicer.enter_graceful_shutdown()  # every name NOT_SERVING, for good
    if kafka is not None:
        await kafka_apis.stop()
        await kafka.stop()
    await groups.stop()
    await shares.stop()
    await txns.close()
    if metrics_server is not None:
        await metrics_server.stop()
    try:
        await broker.stop(graceful=not failed)
    except Exception as exc:  # noqa: BLE001 - RocksDB's background error on close, after
        if not failed:        # the loop failed on the same damage: already said above
            raise
        log.warning("closing the raft log store after the failure: %s", exc)
    await server.stop(grace=1.0)
    if peer_server is not None:
        await peer_server.stop(grace=1.0)
    await forwarder.close()
    if failed:
        if not isinstance(damage, StorageCorruption):
            log.error("node %d stopped: its raft loop failed (see the error above)",
                      config.node_id)
        return 1
    return 0


def node_security(config: NodeConfig, broker: Broker) -> NodeSecurity:
    """Who is who and who may do what on this node (``_authz.py``)."""
    state = lambda: broker.controller.state  # noqa: E731 - replaced on snapshot restore
    authenticator = None
    if config.authentication or not config.allow_anonymous:
        authenticator = Authenticator(frozenset(config.authentication),
                                      bool(config.allow_anonymous),
                                      PrincipalMapper(config.principal_mapping_rules),
                                      lambda: state().users)
    authorizer = Authorizer(config.super_users) if config.authorization else None
    # the peer channels' identity: nodes that join are added to it (Broker._learn_nodes)
    return NodeSecurity(authenticator, authorizer, lambda: state().acls,
                        broker.peer_channels.identity, QuotaLimiter(lambda: state().quotas))


def _add_services(server: grpc.aio.Server, broker: Broker, forwarder: ControllerForwarder,
                  groups: GroupCoordinatorService, shares: ShareService,
                  txns: TransactionCoordinatorService) -> None:
    broker_service = BrokerService(broker, forwarder)
    broker_service.joins = txns.joins  # _txn_join.py: transactional batches join there
    broker_pb2_grpc.add_BrokerServicer_to_server(broker_service, server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(broker, forwarder), server)
    group_pb2_grpc.add_GroupCoordinatorServicer_to_server(groups, server)
    share_pb2_grpc.add_ShareServicer_to_server(shares, server)
    markers_service = TxnMarkersService(broker)
    markers_service.joins = txns.joins  # _txn_join.py rule 5: markers pre-join there
    txn_pb2_grpc.add_TxnMarkersServicer_to_server(markers_service, server)
    txn_pb2_grpc.add_TransactionCoordinatorServicer_to_server(txns, server)
    security_pb2_grpc.add_SecurityServicer_to_server(SecurityService(broker, forwarder), server)


async def _report_ready(broker: Broker, health_servicer: health.aio.HealthServicer) -> None:
    """Turn the client-facing services SERVING once the node caught up on metadata."""
    while not broker.metadata_caught_up():
        await asyncio.sleep(READY_POLL_S)
    for name in CLIENT_SERVICES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("node %d is ready: controller leader %d, metadata applied", broker.node_id,
             broker.controller.leader_id())
    if not os.environ.get("RAFTKA_NO_GC_FREEZE"):
        _freeze_startup_heap()
    GcWatch().install()


def _freeze_startup_heap() -> None:
    """Move everything alive after startup (modules, protobuf descriptors, gRPC, the
    replicas' state) out of the collector's sight: the older generations' collections,
    which walk every tracked object, then only walk what came later."""
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    try:
        config = from_args(argv)
    except ConfigError as exc:
        print(f"raftka node: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    tune_thresholds()
    try:
        import uvloop  # measured 30-50% faster for grpc.aio streams (bench/README.md)
    except ImportError:
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))
