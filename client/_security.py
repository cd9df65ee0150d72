"""Client credentials: TLS (CA bundle, client certificate) and a username/password, as one
reusable piece that builds gRPC channels (sync and asyncio alike).

``ClientSecurity`` turns its settings into one ``grpc.ChannelCredentials``: TLS with the
given CA bundle (the system's roots without one) and, when given, a client certificate and
key; a username/password rides on every call as call credentials (metadata
``raftka-username`` / ``raftka-password``, which gRPC sends only over TLS: a password never
travels in plain text). ``channel()`` / ``aio_channel()`` open a channel with it; every
client (``Admin``, ``Producer``, ``Consumer``, the readers, and their ``raftka.aio``
twins) takes one as ``security=`` and builds its channels through
``_cluster.make_channel`` / ``aio_channel``.

Environment (the CLI's defaults): ``RAFTKA_TLS_CA``, ``RAFTKA_TLS_CERT``,
``RAFTKA_TLS_KEY``, ``RAFTKA_TLS_SERVER_NAME``, ``RAFTKA_USERNAME``, ``RAFTKA_PASSWORD``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import grpc

__all__ = ["Acl", "ClientSecurity", "PLAINTEXT", "Quota", "UserDescription"]

USERNAME_KEY = "raftka-username"
PASSWORD_KEY = "raftka-password"


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class ClientSecurity:
    """How a client connects: ``ca`` (PEM CA bundle file; implies TLS), ``cert`` and
    ``key`` (a client certificate for mutual TLS), ``server_name`` (the name to check the
    node's certificate against instead of the address's host), ``tls`` (TLS with the
    system's roots when no ``ca`` is given), ``username``/``password``."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls or self.ca or self.cert or self.username)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientSecurity:
        """Settings from ``RAFTKA_*`` variables, each overridden by a non-None keyword."""
        env = os.environ if environ is None else environ
        values = {
            "ca": env.get("RAFTKA_TLS_CA") or None, "cert": env.get("RAFTKA_TLS_CERT") or None,
            "key": env.get("RAFTKA_TLS_KEY") or None,
            "server_name": env.get("RAFTKA_TLS_SERVER_NAME") or None,
            "username": env.get("RAFTKA_USERNAME") or None,
            "password": env.get("RAFTKA_PASSWORD") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel credentials (None: plain text). Raises ValueError for unreadable
        files or a certificate without its key."""
        if not self.uses_tls:
            return None
        if bool(self.cert) != bool(self.key):
            raise ValueError("a client certificate needs its key (and the key its certificate)")
        creds = grpc.ssl_channel_credentials(_read(self.ca, "CA bundle"),
                                             _read(self.key, "client key"),
                                             _read(self.cert, "client certificate"))
        if self.username:
            metadata = ((USERNAME_KEY, self.username), (PASSWORD_KEY, self.password or ""))

            def plugin(context: Any, callback: Any) -> None:
                callback(metadata, None)
            creds = grpc.composite_channel_credentials(
                creds, grpc.metadata_call_credentials(plugin, name="raftka-password"))
        return creds

    def _options(self, options: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        if self.server_name:
            return [*options, ("grpc.ssl_target_name_override", self.server_name)]
        return options

    def channel(self, address: str, options: list[tuple[str, Any]]) -> grpc.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.insecure_channel(address, options=options)
        return grpc.secure_channel(address, creds, options=self._options(options))

    def aio_channel(self, address: str, options: list[tuple[str, Any]],
                    **kwargs: Any) -> grpc.aio.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.aio.insecure_channel(address, options=options, **kwargs)
        return grpc.aio.secure_channel(address, creds, options=self._options(options), **kwargs)


PLAINTEXT = ClientSecurity()


class Acl(NamedTuple):
    """An ACL (Kafka's model; README, Security). ``operation``: ALL, READ, WRITE, CREATE,
    DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
    IDEMPOTENT_WRITE; ``resource_type``: TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID;
    ``pattern_type``: LITERAL (``*`` = every name) or PREFIXED; ``permission``: ALLOW or
    DENY (deny wins)."""

    principal: str
    operation: str
    resource_type: str
    resource_name: str
    pattern_type: str = "LITERAL"
    permission: str = "ALLOW"
    host: str = "*"

    def to_pb(self) -> Any:
        from raftka.v1 import security_pb2 as pb
        try:
            return pb.Acl(
                principal=self.principal, host=self.host,
                operation=pb.AclOperation.Value("ACL_OPERATION_" + self.operation.upper()),
                resource_type=pb.ResourceType.Value("RESOURCE_TYPE_" + self.resource_type.upper()),
                resource_name=self.resource_name,
                pattern_type=pb.PatternType.Value("PATTERN_TYPE_" + self.pattern_type.upper()),
                permission=pb.AclPermission.Value("ACL_PERMISSION_" + self.permission.upper()))
        except ValueError as exc:
            raise ValueError(f"bad ACL {self}: {exc}") from None

    @classmethod
    def from_pb(cls, acl: Any) -> Acl:
        from raftka.v1 import security_pb2 as pb
        return cls(acl.principal, pb.AclOperation.Name(acl.operation).removeprefix("ACL_OPERATION_"),
                   pb.ResourceType.Name(acl.resource_type).removeprefix("RESOURCE_TYPE_"),
                   acl.resource_name,
                   pb.PatternType.Name(acl.pattern_type).removeprefix("PATTERN_TYPE_"),
                   pb.AclPermission.Name(acl.permission).removeprefix("ACL_PERMISSION_"),
                   acl.host)

    def describe(self) -> str:
        return (f"{self.permission} {self.principal} from {self.host} {self.operation} on "
                f"{self.resource_type}:{self.pattern_type}:{self.resource_name}")


class UserDescription(NamedTuple):
    name: str
    mechanism: str
    iterations: int


class Quota(NamedTuple):
    """Bytes per second ``entity`` (``User:<name>``, or ``<default>`` for every principal
    without its own) may produce to / fetch from each node, and requests per second it may
    send to each; 0 = no limit."""

    entity: str
    produce_bytes_per_s: int = 0
    fetch_bytes_per_s: int = 0
    requests_per_s: int = 0
