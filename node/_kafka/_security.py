"""Security of the Kafka listener: TLS, SASL, principals, ACLs and quotas, the same as the
gRPC door's (``node/_authz.py``): one ``NodeSecurity``, one set of users, ACLs and quotas
in the controller state, so a principal may do the same through either door.

TLS: the client port's files (``tls_cert``, ``tls_key``, ``tls_ca``); client
certificates as Kafka's ``ssl.client.auth`` says (``kafka_ssl_client_auth``: required,
requested or none). Without ``tls_cert`` the listener is plain text.

A connection's principal, rules:

1. When the node authenticates nobody (no ``authentication``), every connection is
   ``User:ANONYMOUS``.
2. A verified client certificate gives the principal through the node's
   ``principal_mapping_rules`` when ``mtls`` is on (Kafka's SSL listener); otherwise
   the connection is ``User:ANONYMOUS`` if ``allow_anonymous``, else unauthenticated.
3. SASL (``password`` on): SaslHandshake v1 then SaslAuthenticate (Kafka's SASL_SSL
   listener). Mechanisms: ``PLAIN`` (the password checked against the user's stored
   SCRAM-SHA-256 credential, as the gRPC door does) and ``SCRAM-SHA-256`` (RFC 5802/7677
   by ``scramp``, served from the stored salt, iteration count, stored key and server
   key, so the password never reaches the node) and ``SCRAM-SHA-512`` (the same from the
   user's SHA-512 keys). SaslHandshake names a mechanism before the user, so
   SCRAM-SHA-512 is offered once some user has SHA-512 keys (stored when a user is
   created or its password changed); a user whose password was set before has none and
   fails a SCRAM-SHA-512 exchange like a wrong password (it keeps PLAIN and
   SCRAM-SHA-256; changing its password adds them).
   A successful exchange replaces the principal of rule 2; a failed one is answered with
   SASL_AUTHENTICATION_FAILED and the connection is closed (as Kafka does).
4. An unauthenticated connection may send only ApiVersions, SaslHandshake and
   SaslAuthenticate; anything else closes it after one log line.

Authorization (``APIS`` below, checked by ``tests/kafka/test_security_table.py``): every
API the listener serves is listed with the ACL checks it needs. ``REQUEST`` checks deny
the whole request (its answer carries the error code at the top, nothing is done); the
others check per resource inside the handler (Produce: WRITE per topic, answered per
partition with TOPIC_AUTHORIZATION_FAILED, the rest written; Metadata: DESCRIBE per topic,
unlisted when all topics are asked for) through ``Ctx.allowed``/``Ctx.check``. An API
missing from the table is refused (fail closed). Denials go to the audit log once (the
same rate-limited ``event=denied`` line as the gRPC door's).

Quotas: every request takes one request-rate token, a Produce its frame's bytes of the
produce quota, a Fetch its answer's record bytes of the fetch quota. A client over a
quota gets its answer at once with ``throttle_time_ms`` and the connection is muted (no
request read) for that long: Kafka's behaviour since KIP-219.
"""

from __future__ import annotations

import base64
import hmac
import os
import ssl
import time
from typing import Any, Callable, Iterable

from kio.schema.errors import ErrorCode as K

from .._acl import ANONYMOUS, CLUSTER_NAME
from .._auth import PASSWORD_KEY, USERNAME_KEY
from .._authz import CALLER, Caller, NodeSecurity
from .._errors import BrokerError, Code

Check = tuple[str, str, str]
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_TOKEN_BYTES_MAX = 4096
# APIs an unauthenticated connection may send (rule 4)
PRE_AUTH_APIS = frozenset({17, 18, 36})

_DENIED = {
    "TOPIC": K.topic_authorization_failed,
    "GROUP": K.group_authorization_failed,
    "CLUSTER": K.cluster_authorization_failed,
    "TRANSACTIONAL_ID": K.transactional_id_authorization_failed,
}


def denied_code(rtype: str) -> K:
    return _DENIED[rtype]


def ssl_context(config) -> ssl.SSLContext | None:
    """The Kafka listener's TLS (None: plain text). Raises ValueError on bad files."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key or None)
        if config.tls_ca:
            context.load_verify_locations(config.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"Kafka listener TLS: {exc}") from None
    context.verify_mode = {"required": ssl.CERT_REQUIRED, "requested": ssl.CERT_OPTIONAL,
                           "none": ssl.CERT_NONE}[config.kafka_ssl_client_auth or "none"]
    return context


# ----------------------------------------------------------------------- per connection
class Ctx:
    """One request's view of its connection's security, and what the gRPC services'
    methods read from a call's context (peer, deadline, metadata)."""

    __slots__ = ("_peer", "caller", "security", "answer_bytes")

    def __init__(self, peer: str, caller: Caller, security: NodeSecurity | None) -> None:
        self._peer = peer
        self.answer_bytes = 0  # a Fetch answer's record bytes (the fetch quota)
        self.caller = caller
        self.security = security  # None: nothing to check (no authorization, no quotas)

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple:
        return ()

    def allowed(self, op: str, rtype: str, name: str) -> bool:
        security = self.security
        return security is None or security.allowed(self.caller, op, rtype, name)

    def check(self, op: str, rtype: str, name: str, api: str) -> None:
        """Raise BrokerError(<TYPE>_AUTHORIZATION_FAILED) and write the audit line unless
        allowed."""
        if self.security is not None:
            self.security.check(self.caller, f"kafka:{api}", ((op, rtype, name),))

    def denied(self, op: str, rtype: str, name: str, api: str) -> K | None:
        """None if allowed, else the Kafka error code (the denial audited)."""
        if self.security is None:
            return None
        try:
            self.check(op, rtype, name, api)
        except BrokerError:
            return denied_code(rtype)
        return None


class Connection:
    """A connection's authentication state (rules 1-4)."""

    def __init__(self, listener_security: ListenerSecurity, host: str,
                 peer_cert_der: bytes | None) -> None:
        self._ls = listener_security
        self.host = host
        self.principal: str | None = None
        self.mechanism: str | None = None  # chosen by SaslHandshake
        self._scram: Any = None  # the scramp server of an exchange in progress
        self.failed = False  # a failed SASL exchange: the connection closes after it
        self._cert_der = peer_cert_der
        self.muted_until = 0.0  # monotonic time until which no request is read (quotas)
        self.raw = False  # after SaslHandshake v0: frames are bare SASL tokens

    async def start(self) -> None:
        """Rules 1-2: the principal before any SASL."""
        ls = self._ls
        authn = ls.security.authenticator if ls.security is not None else None
        if authn is None:
            self.principal = ANONYMOUS
            return
        if self._cert_der is not None and "mtls" in authn.mechanisms:
            pem = ssl.DER_cert_to_PEM_cert(self._cert_der).encode()
            try:
                self.principal = await authn.principal({"x509_pem_cert": [pem]}, {})
            except BrokerError:
                self.principal = None
            return
        if authn.allow_anonymous:
            self.principal = ANONYMOUS

    @property
    def authenticated(self) -> bool:
        return self.principal is not None

    def ctx(self, peer: str) -> Ctx:
        caller = Caller(self.principal or ANONYMOUS, self.host, 0)
        CALLER.set(caller)  # forwarded calls carry it (node/_forwarding.py)
        return Ctx(peer, caller, self._ls.checking)

    def throttle(self, ctx: Ctx, api_key: int, request_bytes: int,
                 answer_bytes: int) -> int:
        """Take the request's quota tokens; the throttle time in ms (0: within quota), the
        connection muted that long."""
        security = ctx.security
        if security is None or security.limiter is None:
            return 0
        caller = ctx.caller
        delay_s = security.throttle_s(caller, "request", 1)
        if api_key == 0:
            delay_s += security.throttle_s(caller, "produce", request_bytes)
        elif api_key == 1:
            delay_s += security.throttle_s(caller, "fetch", answer_bytes)
        if delay_s <= 0:
            return 0
        self.muted_until = max(self.muted_until, time.monotonic() + delay_s)
        return int(delay_s * 1000)

    # ------------------------------------------------------------------ SASL
    def handshake(self, mechanism: str, raw: bool = False) -> dict:
        """SaslHandshake; v0 (``raw``): the next frames are bare SASL tokens, answered
        with bare tokens (Kafka 0.10's framing), until the exchange ends."""
        offered = self._ls.offered()
        if self.mechanism is not None:
            return {"error_code": K.illegal_sasl_state, "mechanisms": list(offered)}
        if mechanism not in offered:
            return {"error_code": K.unsupported_sasl_mechanism, "mechanisms": list(offered)}
        self.mechanism = mechanism
        self.raw = raw
        return {"error_code": K.none, "mechanisms": list(offered)}

    async def raw_token(self, token: bytes) -> bytes:
        """A bare SASL token after SaslHandshake v0: the bare answer (a failure closes
        the connection, the only way v0 says so)."""
        answer = await self.authenticate(token)
        if answer["error_code"] != K.none:
            self.failed = True
        if self.mechanism is None:  # done
            self.raw = False
        return answer.get("auth_bytes") or b""

    async def authenticate(self, token: bytes) -> dict:
        """One SaslAuthenticate step; on failure the connection closes after the answer."""
        if self.mechanism is None:
            self.failed = True
            return {"error_code": K.illegal_sasl_state,
                    "error_message": "SaslAuthenticate before SaslHandshake"}
        if len(token) > SASL_TOKEN_BYTES_MAX:
            return self._fail("the SASL token is too long")
        if self.mechanism == "PLAIN":
            return await self._plain(token)
        return self._scram_step(token)

    def _fail(self, message: str) -> dict:
        self.failed = True
        return {"error_code": K.sasl_authentication_failed, "error_message": message}

    def _done(self, name: str) -> None:
        self.principal = f"User:{name}"
        self.mechanism = None  # Kafka allows re-authentication (KIP-368) with a handshake
        self._scram = None

    async def _plain(self, token: bytes) -> dict:
        parts = token.split(b"\0")
        if len(parts) != 3:
            return self._fail("a PLAIN token is authzid NUL username NUL password")
        authzid, username, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid != username:
            return self._fail("PLAIN authorization id must be empty or the username")
        authn = self._ls.security.authenticator  # type: ignore[union-attr]
        try:
            principal = await authn.principal({}, {USERNAME_KEY: username,
                                                   PASSWORD_KEY: password})
        except BrokerError as exc:
            return self._fail(f"authentication failed: {exc.message}")
        self._done(principal.partition(":")[2])
        return {"error_code": K.none, "auth_bytes": b""}

    def _scram_step(self, token: bytes) -> dict:
        from scramp import ScramException, ScramMechanism

        try:
            message = token.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail("a SCRAM message is UTF-8")
        try:
            if self._scram is None:
                keys = self._ls.scram_keys_512 if self.mechanism == "SCRAM-SHA-512" \
                    else self._ls.scram_keys
                self._scram = ScramMechanism(self.mechanism).make_server(keys)
                self._scram.set_client_first(message)
                return {"error_code": K.none,
                        "auth_bytes": self._scram.get_server_first().encode()}
            server = self._scram
            # Kafka's broker accepts a final nonce that ends with the server's (librdkafka
            # before 2.1 sends its client nonce once more in front): the proof still covers
            # the message as sent, so accepting it here weakens nothing
            echoed = next((a[2:] for a in message.split(",") if a.startswith("r=")), "")
            expected = str(server.nonce)
            if echoed != expected and echoed.endswith(expected):
                server.nonce = type(server.nonce)(echoed)
            server.set_client_final(message)
            final = server.get_server_final()
        except (ScramException, ValueError, KeyError, TypeError) as exc:
            return self._fail(f"SCRAM authentication failed: {exc}")
        name = self._ls.scram_user(self._scram, self.mechanism == "SCRAM-SHA-512")
        if name is None:
            return self._fail("unknown user or wrong password")
        self._done(name)
        return {"error_code": K.none, "auth_bytes": final.encode()}


class ListenerSecurity:
    """The node-wide part: which mechanisms, the users' keys, what to check."""

    def __init__(self, security: NodeSecurity | None, secured: bool,
                 users: Callable[[], Any]) -> None:
        self.security = security if secured else None
        authn = self.security.authenticator if self.security is not None else None
        self.mechanisms: tuple[str, ...] = SASL_MECHANISMS \
            if authn is not None and "password" in authn.mechanisms else ()
        # ACLs and quotas only where the gRPC door checks them too (a secured node)
        self.checking = self.security
        self._users = users
        self._dummy = (os.urandom(16), os.urandom(32), os.urandom(32), 4096)
        self._dummy_512 = (os.urandom(16), os.urandom(64), os.urandom(64), 4096)

    def offered(self) -> tuple[str, ...]:
        """The SASL mechanisms to offer now: SCRAM-SHA-512 only once some user has
        SHA-512 keys (rule 3)."""
        if "SCRAM-SHA-512" not in self.mechanisms or any(
                u.sha512_salt for u in self._users().values()):
            return self.mechanisms
        return tuple(m for m in self.mechanisms if m != "SCRAM-SHA-512")

    def scram_keys(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        """scramp's auth_fn: (salt, stored key, server key, iterations) of ``username``;
        an unknown user gets random keys, so the exchange fails at the proof like a wrong
        password (no user enumeration)."""
        user = self._users().get(_sasl_name(username))
        if user is None:
            return self._dummy
        b64 = base64.b64decode
        return b64(user.salt), b64(user.stored_key), b64(user.server_key), user.iterations

    def scram_keys_512(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        """``scram_keys`` for SCRAM-SHA-512: a user without SHA-512 keys (its password
        was set before they were stored) gets random ones, as an unknown user does."""
        user = self._users().get(_sasl_name(username))
        if user is None or not user.sha512_salt:
            return self._dummy_512
        b64 = base64.b64decode
        return (b64(user.sha512_salt), b64(user.sha512_stored_key),
                b64(user.sha512_server_key), user.iterations)

    def scram_user(self, server: Any, sha512: bool = False) -> str | None:
        """The user a finished exchange proved, if its credential still exists (a user
        deleted during the exchange is refused)."""
        first = server.client_first_bare  # n=<name>,r=<nonce>
        for attr in first.split(","):
            if attr.startswith("n="):
                name = _sasl_name(attr[2:])
                user = self._users().get(name)
                if user is None:
                    return None
                stored = base64.b64decode(user.sha512_stored_key if sha512
                                          else user.stored_key)
                if not stored:
                    return None
                return name if hmac.compare_digest(stored, server.stored_key) else None
        return None


def _sasl_name(value: str) -> str:
    """RFC 5802 saslname: ``=2C`` is a comma, ``=3D`` an equals sign."""
    return value.replace("=2C", ",").replace("=3D", "=")


# ----------------------------------------------------------------------- the API table
REQUEST = "request"  # denial answers the whole request
IN_HANDLER = "in handler"  # per resource, inside the handler
PUBLIC = "public"  # before authentication (ApiVersions, SASL)


def _group_checks(op: str) -> Callable[[Any, int], Iterable[Check]]:
    return lambda r, v: ((op, "GROUP", r.group_id),)


def _consumer_group_heartbeat(r: Any, v: int) -> Iterable[Check]:
    yield ("READ", "GROUP", r.group_id)
    for t in sorted(set(r.subscribed_topic_names or ())):
        yield ("READ", "TOPIC", t)


def _share_group_heartbeat(r: Any, v: int) -> Iterable[Check]:
    yield ("READ", "GROUP", r.group_id)
    for t in sorted(set(r.subscribed_topic_names or ())):
        yield ("READ", "TOPIC", t)


def _share_group(r: Any, v: int) -> Iterable[Check]:
    return (("READ", "GROUP", r.group_id or ""),)


def _init_producer_id(r: Any, v: int) -> Iterable[Check]:
    if r.transactional_id is None:
        return (("IDEMPOTENT_WRITE", "CLUSTER", CLUSTER_NAME),)
    return (("WRITE", "TRANSACTIONAL_ID", r.transactional_id),)


def _offset_delete(r: Any, v: int) -> Iterable[Check]:
    yield ("DELETE", "GROUP", r.group_id)
    for t in sorted({t.name for t in r.topics}):
        yield ("READ", "TOPIC", t)


def _cluster(op: str) -> Callable[[Any, int], Iterable[Check]]:
    return lambda r, v: ((op, "CLUSTER", CLUSTER_NAME),)


def _txn(op: str, group: bool = False) -> Callable[[Any, int], Iterable[Check]]:
    def checks(r: Any, v: int) -> Iterable[Check]:
        yield (op, "TRANSACTIONAL_ID", r.transactional_id)
        if group:
            yield ("READ", "GROUP", r.group_id)
    return checks


# api key: (kind, request-level checks or a description of the handler's)
APIS: dict[int, tuple[str, Any]] = {
    0: (IN_HANDLER, "WRITE TOPIC per topic (WRITE TRANSACTIONAL_ID when transactional)"),
    1: (IN_HANDLER, "READ TOPIC per topic"),
    2: (IN_HANDLER, "DESCRIBE TOPIC per topic"),
    3: (IN_HANDLER, "DESCRIBE TOPIC per topic; all topics: only the allowed are listed"),
    8: (IN_HANDLER, "READ GROUP, READ TOPIC per topic"),
    9: (IN_HANDLER, "DESCRIBE GROUP, DESCRIBE TOPIC per topic"),
    10: (IN_HANDLER, "DESCRIBE GROUP or TRANSACTIONAL_ID per key"),
    11: (REQUEST, _group_checks("READ")),
    12: (REQUEST, _group_checks("READ")),
    13: (REQUEST, _group_checks("READ")),
    14: (REQUEST, _group_checks("READ")),
    15: (IN_HANDLER, "DESCRIBE GROUP per group"),
    16: (IN_HANDLER, "only the groups the principal may DESCRIBE are listed"),
    17: (PUBLIC, None),
    18: (PUBLIC, None),
    19: (IN_HANDLER, "CREATE CLUSTER or CREATE TOPIC per topic"),
    20: (IN_HANDLER, "DELETE TOPIC per topic"),
    22: (REQUEST, _init_producer_id),
    24: (IN_HANDLER, "WRITE TRANSACTIONAL_ID, WRITE TOPIC per topic"),
    25: (REQUEST, _txn("WRITE", group=True)),
    26: (REQUEST, _txn("WRITE")),
    28: (IN_HANDLER, "WRITE TRANSACTIONAL_ID, READ GROUP, READ TOPIC per topic"),
    29: (IN_HANDLER, "DESCRIBE CLUSTER"),
    30: (IN_HANDLER, "ALTER CLUSTER"),
    31: (IN_HANDLER, "ALTER CLUSTER"),
    32: (IN_HANDLER, "DESCRIBE_CONFIGS TOPIC per topic, DESCRIBE_CONFIGS CLUSTER for brokers"),
    36: (PUBLIC, None),
    37: (IN_HANDLER, "ALTER TOPIC per topic"),
    42: (IN_HANDLER, "DELETE GROUP per group"),
    44: (IN_HANDLER, "ALTER_CONFIGS TOPIC per topic"),
    47: (REQUEST, _offset_delete),
    60: (REQUEST, _cluster("DESCRIBE")),
    68: (REQUEST, _consumer_group_heartbeat),
    76: (REQUEST, _share_group_heartbeat),
    77: (IN_HANDLER, "DESCRIBE GROUP per group"),
    78: (REQUEST, _share_group),  # and READ TOPIC per topic in the handler
    79: (REQUEST, _share_group),  # and READ TOPIC per topic in the handler
}


def request_denial(api_key: int, request: Any, version: int, ctx: Ctx,
                   api: str) -> dict | None:
    """The answer to a request a REQUEST rule denies (None: go on). Raises KeyError for an
    API the table does not list (fail closed)."""
    kind, rule = APIS[api_key]
    if kind != REQUEST or ctx.security is None:
        return None
    for op, rtype, name in rule(request, version):
        code = ctx.denied(op, rtype, name, api)
        if code is not None:
            return {"error_code": code, "error_message": f"{ctx.caller.principal} is not "
                    f"authorized to {op} {rtype} {name!r}",
                    "producer_id": -1, "producer_epoch": -1, "member_id": "",
                    "member_epoch": -1, "generation_id": -1}
    return None

