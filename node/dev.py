"""``python -m raftka.node.dev`` (``raftka dev``): a local N-node cluster on loopback.

Starts every node as its own process, waits until the cluster is healthy (every node
answers and a controller leader is elected), prints the bootstrap addresses and each
node's Prometheus metrics URL (``--metrics-base-port``, 9301.. by default), and stops
every node (SIGTERM, then SIGKILL after a grace period) on Ctrl-C or SIGTERM.

``--tls`` makes a throwaway CA and certificates in ``<data-dir>/tls`` (``node/_certs.py``):
one per node (``raftka-node-<id>``, also valid for ``localhost`` and the host address) and
an ``admin`` client certificate. Nodes serve TLS on their client ports and mutual TLS on
peer ports (``--peer-base-port``, 8001..). ``--auth`` (implies ``--tls``) turns on
authentication (client certificates, whose CN is the user name, and passwords) and ACLs,
with ``User:admin`` as super user, and creates a password user ``dev`` with a random
password and no rights. It prints the environment for the CLI either way.
Every node also serves the Kafka protocol (``--kafka-base-port``, 9092.. by default; 0
turns it off; with ``--tls`` it speaks TLS, with ``--auth`` SASL SCRAM-SHA-256 too) and the
bootstrap string for Kafka clients is printed (``kcat -b 127.0.0.1:9092 -L``).

It also starts the web console (``python -m raftka.client.cli console``, a subprocess: the
broker never imports the client) on ``--console-port`` (8080; 0 turns it off) and prints its
URL.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from raftka.v1 import broker_pb2, broker_pb2_grpc

_credentials: grpc.ChannelCredentials | None = None  # the dev cluster's admin TLS, if any


def cluster_peers(nodes: int, host: str, base_port: int) -> dict[int, str]:
    return {i: f"{host}:{base_port + i - 1}" for i in range(1, nodes + 1)}


def node_command(node_id: int, peers: dict[int, str], data_dir: Path,
                 extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable, "-m", "raftka.node", "--id", str(node_id), "--listen", peers[node_id],
        "--peers", ",".join(f"{k}={v}" for k, v in sorted(peers.items())),
        "--data-dir", str(data_dir / f"node-{node_id}"), *(extra or []),
    ]


def ports_in_use(peers: dict[int, str], reuse: bool = False) -> list[str]:
    """Addresses of ``peers`` something listens on (``reuse``: ignore TIME_WAIT leftovers)."""
    busy = []
    for address in peers.values():
        host, _, port = address.rpartition(":")
        with socket.socket() as s:
            if reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, int(port)))
            except OSError:
                busy.append(address)
    return busy


def controller_leader(address: str, timeout_s: float = 1.0) -> int:
    """The controller leader as seen by the node at ``address`` (0 if none/unreachable)."""
    channel = (grpc.secure_channel(address, _credentials) if _credentials is not None
               else grpc.insecure_channel(address))
    with channel:
        try:
            response = broker_pb2_grpc.BrokerStub(channel).Metadata(
                broker_pb2.MetadataRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return 0
    return response.controller_id


def wait_healthy(peers: dict[int, str], timeout_s: float, procs: list[subprocess.Popen] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if procs:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"node process {dead[0].args[4]} exited with {dead[0].returncode}")
        leaders = {controller_leader(addr) for addr in peers.values()}
        if len(leaders) == 1 and 0 not in leaders:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the cluster did not become healthy within {timeout_s:.0f}s")


def make_tls(directory: Path, peers: dict[int, str], peer_peers: dict[int, str], host: str,
             auth: bool) -> tuple[dict[int, list[str]], dict[str, str]]:
    """Certificates for every node and an admin client; the node flags and client env."""
    global _credentials
    from ._certs import issue, make_ca, node_name  # noqa: PLC0415 - cryptography, on demand

    ca = make_ca(directory, name="raftka dev CA")
    ips = tuple(dict.fromkeys(["127.0.0.1", host] if _is_ip(host) else ["127.0.0.1"]))
    names = ("localhost",) if _is_ip(host) else ("localhost", host)
    admin = issue(ca, directory, "admin", "admin")
    flags: dict[int, list[str]] = {}
    peer_list = ",".join(f"{k}={v}" for k, v in sorted(peer_peers.items()))
    for i in peers:
        cert = issue(ca, directory, f"node{i}", node_name(i), (node_name(i), *names), ips)
        flags[i] = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                    "--tls-ca", str(ca.cert), "--peer-listen", peer_peers[i],
                    "--peer-peers", peer_list, "--peer-tls-cert", str(cert.cert),
                    "--peer-tls-key", str(cert.key), "--peer-tls-ca", str(ca.cert)]
        if auth:
            flags[i] += ["--tls-require-client-cert", "--authentication", "mtls,password",
                         "--super-users", "User:admin",
                         "--principal-mapping-rule", "RULE:^CN=(.*?),.*$/$1/",
                         "--principal-mapping-rule", "DEFAULT"]
    _credentials = grpc.ssl_channel_credentials(ca.cert.read_bytes(), admin.key.read_bytes(),
                                                admin.cert.read_bytes())
    env = {"RAFTKA_TLS_CA": str(ca.cert.resolve()), "RAFTKA_TLS_CERT": str(admin.cert.resolve()),
           "RAFTKA_TLS_KEY": str(admin.key.resolve())}
    return flags, env


def _is_ip(host: str) -> bool:
    import ipaddress  # noqa: PLC0415
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def create_dev_user(address: str) -> str:
    """A password user ``dev`` (random password) through the Security service, as admin."""
    import secrets  # noqa: PLC0415

    from raftka.v1 import security_pb2, security_pb2_grpc  # noqa: PLC0415

    password = secrets.token_urlsafe(12)
    assert _credentials is not None
    with grpc.secure_channel(address, _credentials) as channel:
        security_pb2_grpc.SecurityStub(channel).CreateUser(
            security_pb2.CreateUserRequest(name="dev", password=password, replace=True),
            timeout=15)
    return password


def stop_all(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftka dev", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path("raftka-data"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=7001)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--metrics-base-port", type=int, default=9301,
                        help="node N serves Prometheus metrics on this port + N - 1 "
                        "(default 9301); 0 turns metrics off")
    parser.add_argument("--kafka-base-port", type=int, default=9092,
                        help="node N serves the Kafka protocol on this port + N - 1 "
                        "(default 9092); 0 turns it off")
    parser.add_argument("--console-port", type=int, default=8080,
                        help="port of the web console (0: do not start it)")
    parser.add_argument("--tls", action="store_true",
                        help="TLS with a throwaway CA and certificates (see --help text)")
    parser.add_argument("--auth", action="store_true",
                        help="authentication and ACLs (implies --tls); User:admin is super user")
    parser.add_argument("--peer-base-port", type=int, default=8001,
                        help="with --tls: node N's peer port is this + N - 1 (default 8001)")
    args = parser.parse_args(argv)
    args.tls = args.tls or args.auth
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    peers = cluster_peers(args.nodes, args.host, args.base_port)
    metrics = ({i: f"{args.host}:{args.metrics_base_port + i - 1}" for i in peers}
               if args.metrics_base_port else {})
    kafka = ({i: f"{args.host}:{args.kafka_base_port + i - 1}" for i in peers}
             if args.kafka_base_port else {})
    kafka_flags = ["--kafka-peers", ",".join(f"{k}={v}" for k, v in sorted(kafka.items()))] \
        if kafka else []
    if kafka and args.tls:  # SASL clients need no certificate; one given is still checked
        kafka_flags += ["--kafka-ssl-client-auth", "requested"]
    busy = ports_in_use({**peers, **{-i: a for i, a in metrics.items()},
                         **{-100 - i: a for i, a in kafka.items()}}, reuse=True)
    if busy:
        print(f"raftka dev: {', '.join(busy)} already in use (another cluster running?); "
              "stop it or pick other ports with --base-port", file=sys.stderr)
        return 1
    args.data_dir.mkdir(parents=True, exist_ok=True)
    security: dict[int, list[str]] = {i: [] for i in peers}
    client_env: dict[str, str] = {}
    if args.tls:
        peer_peers = cluster_peers(args.nodes, args.host, args.peer_base_port)
        busy = ports_in_use(peer_peers, reuse=True)
        if busy:
            print(f"raftka dev: {', '.join(busy)} already in use; pick other peer ports with "
                  "--peer-base-port", file=sys.stderr)
            return 1
        security, client_env = make_tls(args.data_dir / "tls", peers, peer_peers, args.host,
                                        args.auth)
    procs = [subprocess.Popen(node_command(
        i, peers, args.data_dir, ["--log-level", args.log_level]
        + (["--metrics-listen", metrics[i]] if metrics else []) + security[i]
        + (["--kafka-listen", kafka[i], *kafka_flags] if kafka else [])))
             for i in peers]
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        wait_healthy(peers, 30.0, procs)
        bootstrap = ",".join(peers.values())
        print(f"raftka dev: {args.nodes} nodes healthy; data in {args.data_dir.resolve()}")
        print(f"bootstrap: {bootstrap}")
        print(f"  export RAFTKA_BOOTSTRAP={bootstrap}")
        if client_env:
            print(f"TLS: certificates in {(args.data_dir / 'tls').resolve()}; the CLI as "
                  f"{'User:admin (super user)' if args.auth else 'a TLS client'}:")
            for key, value in client_env.items():
                print(f"  export {key}={value}")
        if args.auth:
            password = create_dev_user(peers[1])
            print("a password user without rights (grant some with `raftka acl add`):")
            print(f"  RAFTKA_PASSWORD={password} raftka whoami --user dev")
            print("  (client certificates are required, so the admin one still opens the "
                  "connection; the password decides who you are)")
        if kafka:
            kafka_bootstrap = ",".join(kafka.values())
            if not args.tls:
                print(f"kafka bootstrap: {kafka_bootstrap}   (Kafka clients and tools, e.g. "
                      f"kcat -b {kafka_bootstrap} -L)")
            else:
                tls = (f"-X ssl.ca.location={client_env['RAFTKA_TLS_CA']} "
                       "-X ssl.endpoint.identification.algorithm=none")
                sasl = (" -X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-256 "
                        f"-X sasl.username=dev -X sasl.password={password}"
                        if args.auth else " -X security.protocol=SSL")
                print(f"kafka bootstrap: {kafka_bootstrap}   (TLS; e.g. "
                      f"kcat -b {kafka_bootstrap} -L {tls}{sasl})")
        for i, address in metrics.items():
            print(f"metrics: node {i} http://{address}/metrics")
        if metrics:
            print("  raftka top   (a live view; Prometheus and Grafana: examples/monitoring/)")
        if args.console_port:
            console_address = f"{args.host}:{args.console_port}"
            if ports_in_use({0: console_address}, reuse=True):
                print(f"raftka dev: {console_address} is in use: no web console "
                      "(pick another with --console-port)", file=sys.stderr)
            else:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "raftka.client.cli", "console", "--bootstrap",
                     bootstrap, "--listen", console_address],
                    env={**os.environ, **client_env}))
                print(f"console: http://{console_address}/")
        print("  raftka topic create demo -p 3 && echo hello | raftka produce demo && "
              "raftka consume demo --from-beginning --exit-at-end")
        print("Ctrl-C stops every node.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p for p in procs if p.poll() is not None][0]
        # the nodes come first in procs, in id order; the console (if any) last
        what = (f"node {procs.index(dead) + 1}" if procs.index(dead) < args.nodes
                else "the web console")
        print(f"raftka dev: {what} exited ({dead.returncode}); stopping the others",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        stopping = True
        return 0
    except (TimeoutError, RuntimeError) as exc:
        print(f"raftka dev: {exc}", file=sys.stderr)
        return 1
    finally:
        if stopping:
            print("raftka dev: stopping nodes", file=sys.stderr)
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
