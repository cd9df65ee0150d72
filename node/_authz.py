"""Authentication and authorization of every call, in one place: a gRPC server interceptor
over a table from RPC method to the ACL checks it needs.

``RULES`` maps every method a node serves (full name ``/raftka.v1.Broker/Produce``) to a
``Rule``: the (operation, resource type, resource name) triples a request needs, all of
which must be allowed (``checks``); for a client-streaming call, the checks of each item
(``per_item``); a response ``filter`` for listings (a principal sees only what it may
DESCRIBE); ``public`` for health and reflection. A method that is not in the table is
refused (fail closed), and ``tests/node/test_authz_table.py`` fails when a registered
service has a method without a rule, so a new service cannot forget its checks.

``SecurityInterceptor`` (installed on the client port when authentication or authorization
is configured, and always on the peer port):

1. authenticates the call (``_auth.Authenticator``): AUTHENTICATION_FAILED if it must and
   cannot. On the peer port the caller must be a cluster member (its certificate names a
   configured node); a call a member makes for its caller (a forwarded controller write,
   a share coordinator asked across nodes) carries that caller's principal and host
   (``raftka-forwarded-principal``/``-host``), trusted there only and authorized again for
   that principal; a member's call without them is its own (a node dead-lettering records,
   or one whose client port authenticates nobody) and is not checked against ACLs.
2. authorizes it (``_acl.Authorizer`` over the controller state's ACLs): a denied check
   ends the call with PERMISSION_DENIED and ``<TYPE>_AUTHORIZATION_FAILED`` naming the
   operation and resource before the handler runs, so nothing is written. A denied item
   of ProduceStream reaches the handler as ``Denied`` and is answered in-band with the
   error (the stream stays open), so the handler never writes it; an item a quota held
   back arrives as ``Held`` (its answer carries ``throttle_time_ms``).
3. sets ``CALLER`` (principal, host, peer node) for the handler (audit lines, WhoAmI,
   the Raft stream's sender check).

Quotas (``_quota.py``): a rule's ``quota`` names the direction and how to size a
request (produce: held before the handler, ProduceStream: before the item is read on) or
an answer (fetch: held before it is sent); unary answers carry ``throttle_time_ms``.

Audit (logger ``raftka.audit``, WARNING, ``key=value``): one line per denied request
(``event=denied``), at most ``AUDIT_DENIALS_PER_S`` per second with a count of the
suppressed ones, and one per security change (``_security_service.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, NamedTuple

import grpc

from ._acl import CLUSTER_NAME, Authorizer
from ._auth import Authenticator
from ._quota import QuotaLimiter
from ._errors import BrokerError, Code, abort_with
from ._tls import PeerIdentity

audit = logging.getLogger("raftka.audit")

FORWARDED_PRINCIPAL_KEY = "raftka-forwarded-principal"
FORWARDED_HOST_KEY = "raftka-forwarded-host"
AUDIT_DENIALS_PER_S = 20

Check = tuple[str, str, str]  # (operation, resource type, resource name)


class Caller(NamedTuple):
    principal: str
    host: str
    peer_node: int  # the cluster member on the other end of a peer-port call, else 0
    trusted: bool = False  # a member acting for itself (its own internal calls): no ACLs


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("raftka_caller",
                                                                        default=None)
# JoinCluster on the peer port: the node id the caller's verified peer certificate is made
# out to (0: not a peer-port join). The handler requires the join to be for that id.
JOINER: contextvars.ContextVar[int] = contextvars.ContextVar("raftka_joiner", default=0)
# seconds the request-rate quota held the current request (admit -> throttle_time_ms)
held_s: contextvars.ContextVar[float] = contextvars.ContextVar("raftka_held_s", default=0.0)


@dataclass(frozen=True)
class Denied:
    """A ProduceStream item the caller may not send; the handler answers it with ``error``."""

    item: Any
    error: BrokerError


@dataclass(frozen=True)
class Held:
    """A ProduceStream item a quota held back ``throttle_time_ms`` before it was read on;
    the handler puts that into its answer."""

    item: Any
    throttle_time_ms: int


@dataclass(frozen=True)
class Rule:
    checks: Callable[[Any], Iterable[Check]] = lambda request: ()
    per_item: bool = False  # client streaming: ``checks`` apply to every item
    filter: Callable[[Any, Callable[[str, str, str], bool]], None] | None = None
    public: bool = False  # no authentication (health, reflection)
    peers_only: bool = False  # only cluster members, on the peer port (Raft)
    # ("produce", size of a request or stream item) or ("fetch", size of an answer)
    quota: tuple[str, Callable[[Any], int]] | None = None


def _topic(op: str) -> Callable[[Any], Iterable[Check]]:
    return lambda r: ((op, "TOPIC", r.topic),)


def _named_topic(op: str) -> Callable[[Any], Iterable[Check]]:
    return lambda r: ((op, "TOPIC", r.name),)


def _cluster(op: str) -> Callable[[Any], Iterable[Check]]:
    return lambda r: ((op, "CLUSTER", CLUSTER_NAME),)


def _group(op: str, topics_op: str | None = None,
           topics: Callable[[Any], Iterable[str]] = lambda r: ()) -> Callable[[Any], Iterable[Check]]:
    def checks(r: Any) -> Iterable[Check]:
        yield (op, "GROUP", r.group_id)
        if topics_op:
            for t in sorted(set(topics(r))):
                yield (topics_op, "TOPIC", t)
    return checks


def _filter_metadata(response: Any, allowed: Callable[[str, str, str], bool]) -> None:
    keep = [t for t in response.topics if allowed("DESCRIBE", "TOPIC", t.name)]
    del response.topics[:]
    response.topics.extend(keep)


def _filter_names(response: Any, allowed: Callable[[str, str, str], bool]) -> None:
    keep = [n for n in response.names if allowed("DESCRIBE", "TOPIC", n)]
    del response.names[:]
    response.names.extend(keep)


def _filter_groups(response: Any, allowed: Callable[[str, str, str], bool]) -> None:
    keep = [g for g in response.groups if allowed("DESCRIBE", "GROUP", g.group_id)]
    del response.groups[:]
    response.groups.extend(keep)


def _txn_id(op: str, topics_op: str | None = None,
            topics: Callable[[Any], Iterable[str]] = lambda r: (),
            group: Callable[[Any], str] | None = None) -> Callable[[Any], Iterable[Check]]:
    """Kafka's transaction ACLs: ``op`` on the TRANSACTIONAL_ID, plus ``topics_op`` on each
    topic named and READ on the group named (TxnOffsetCommit, AddOffsetsToTxn)."""
    def checks(r: Any) -> Iterable[Check]:
        yield (op, "TRANSACTIONAL_ID", r.transactional_id)
        if topics_op:
            for t in sorted(set(topics(r))):
                yield (topics_op, "TOPIC", t)
        if group is not None:
            yield ("READ", "GROUP", group(r))
    return checks


def _filter_transactions(response: Any, allowed: Callable[[str, str, str], bool]) -> None:
    keep = [t for t in response.transactions
            if allowed("DESCRIBE", "TRANSACTIONAL_ID", t.transactional_id)]
    del response.transactions[:]
    response.transactions.extend(keep)


def _produce_checks(r: Any) -> Iterable[Check]:
    """WRITE on the topic; naming a transactional id (its leader then joins the partition
    to that id's transaction: ``_txn_join.py``) is AddPartitionsToTxn's WRITE on it too."""
    if r.transactional_id:
        return (("WRITE", "TOPIC", r.topic), ("WRITE", "TRANSACTIONAL_ID", r.transactional_id))
    return (("WRITE", "TOPIC", r.topic),)


def _metadata_checks(r: Any) -> Iterable[Check]:
    return [("DESCRIBE", "TOPIC", t) for t in r.topics]  # listed: each; else filtered


def _create_topic_checks(r: Any) -> Iterable[Check]:
    return (("CREATE", "TOPIC", r.name),)


_B, _A, _G = "/raftka.v1.Broker/", "/raftka.v1.Admin/", "/raftka.v1.GroupCoordinator/"
_S, _SH = "/raftka.v1.Security/", "/raftka.v1.Share/"
_T = "/raftka.v1.TransactionCoordinator/"
_PUBLIC = Rule(public=True)

RULES: dict[str, Rule] = {
    # Broker
    _B + "Produce": Rule(_produce_checks, quota=("produce", lambda r: r.ByteSize())),
    _B + "ProduceStream": Rule(lambda item: _produce_checks(item.request),
                               per_item=True, quota=("produce", lambda i: i.ByteSize())),
    _B + "Fetch": Rule(_topic("READ"), quota=("fetch", lambda r: r.ByteSize())),
    _B + "FetchStream": Rule(_topic("READ"), quota=("fetch", lambda r: r.ByteSize())),
    _B + "ListOffsets": Rule(_topic("DESCRIBE")),
    _B + "Metadata": Rule(_metadata_checks, filter=_filter_metadata),
    _B + "InitProducerId": Rule(_cluster("IDEMPOTENT_WRITE")),
    # Admin
    _A + "CreateTopic": Rule(_create_topic_checks),
    _A + "DeleteTopic": Rule(_named_topic("DELETE")),
    _A + "ListTopics": Rule(filter=_filter_names),
    _A + "DescribeTopic": Rule(_named_topic("DESCRIBE")),
    _A + "DescribeCluster": Rule(_cluster("DESCRIBE")),
    _A + "DescribeNodeStats": Rule(_cluster("DESCRIBE")),
    _A + "AddPartitions": Rule(_named_topic("ALTER")),
    _A + "AlterTopicConfigs": Rule(_named_topic("ALTER_CONFIGS")),
    _A + "DescribeTopicConfigs": Rule(_named_topic("DESCRIBE_CONFIGS")),
    # Cluster operations (Kafka: AlterPartitionReassignments needs ALTER on the cluster)
    _A + "ReassignPartition": Rule(_cluster("ALTER")),
    _A + "CancelReassignment": Rule(_cluster("ALTER")),
    _A + "CompleteReassignment": Rule(_cluster("CLUSTER_ACTION")),
    _A + "ListReassignments": Rule(_cluster("DESCRIBE")),
    _A + "AlterReplicationFactor": Rule(_cluster("ALTER")),
    _A + "SetReassignmentThrottle": Rule(_cluster("ALTER_CONFIGS")),
    _A + "DecommissionNode": Rule(_cluster("ALTER")),
    _A + "ListNodes": Rule(_cluster("DESCRIBE")),
    _A + "JoinCluster": Rule(_cluster("CLUSTER_ACTION")),  # Kafka: BrokerRegistration
    _A + "DescribeBalancer": Rule(_cluster("DESCRIBE")),
    _A + "SetBalancer": Rule(_cluster("ALTER")),
    _A + "DescribeReplicaSizes": Rule(_cluster("CLUSTER_ACTION")),  # the balancer's poll
    # GroupCoordinator
    _G + "FindCoordinator": Rule(_group("DESCRIBE")),
    _G + "Heartbeat": Rule(_group("READ", "READ", lambda r: r.topics)),
    _G + "CommitOffsets": Rule(_group("READ", "READ", lambda r: (e.topic for e in r.offsets))),
    _G + "FetchOffsets": Rule(_group("DESCRIBE", "DESCRIBE",
                                     lambda r: (tp.topic for tp in r.partitions))),
    _G + "ListGroups": Rule(filter=_filter_groups),
    _G + "DescribeGroup": Rule(_group("DESCRIBE")),
    _G + "ResetOffsets": Rule(_group("READ", "READ", lambda r: (e.topic for e in r.offsets))),
    _G + "DeleteGroup": Rule(_group("DELETE")),
    # Share groups (KIP-932's rules: READ on the group and on the topics it reads)
    _SH + "ShareGroupHeartbeat": Rule(_group("READ", "READ", lambda r: r.topics)),
    _SH + "DescribeShareGroup": Rule(_group("DESCRIBE")),
    _SH + "ShareFetch": Rule(_group("READ", "READ", lambda r: (r.topic,)),
                             quota=("fetch", lambda r: r.ByteSize())),
    _SH + "ShareAcknowledge": Rule(_group("READ", "READ", lambda r: (r.topic,))),
    _SH + "DescribeSharePartition": Rule(_group("DESCRIBE", "DESCRIBE", lambda r: (r.topic,))),
    _SH + "InitializeSharePartition": Rule(_group("READ", "READ", lambda r: (r.topic,))),
    # Transactions (txn.proto; Kafka's rules: WRITE on the transactional id, WRITE on
    # the topics added, READ on the group whose offsets are committed; listings filtered)
    _T + "FindCoordinator": Rule(_txn_id("DESCRIBE")),
    _T + "InitTransactions": Rule(_txn_id("WRITE")),
    _T + "AddPartitionsToTxn": Rule(_txn_id("WRITE", "WRITE",
                                            lambda r: (t.topic for t in r.topics))),
    _T + "AddOffsetsToTxn": Rule(_txn_id("WRITE", group=lambda r: r.group_id)),
    _T + "TxnOffsetCommit": Rule(_txn_id("WRITE", "READ", lambda r: (o.topic for o in r.offsets),
                                         group=lambda r: r.group_id)),
    _T + "EndTxn": Rule(_txn_id("WRITE")),
    _T + "ListTransactions": Rule(filter=_filter_transactions),
    _T + "DescribeTransactions": Rule(lambda r: [("DESCRIBE", "TRANSACTIONAL_ID", t)
                                                 for t in r.transactional_ids]),
    _T + "AbortTransaction": Rule(_txn_id("ALTER")),
    # markers: a coordinator (cluster member) or an operator's tool (Kafka: CLUSTER_ACTION)
    "/raftka.v1.TxnMarkers/WriteTxnMarkers": Rule(_cluster("CLUSTER_ACTION")),
    # a partition leader joining its partition to a transaction (_txn_join.py)
    _T + "JoinTxn": Rule(_cluster("CLUSTER_ACTION")),
    # Security
    _S + "CreateAcls": Rule(_cluster("ALTER")),
    _S + "DeleteAcls": Rule(_cluster("ALTER")),
    _S + "ListAcls": Rule(_cluster("DESCRIBE")),
    _S + "CreateUser": Rule(_cluster("ALTER")),
    _S + "DeleteUser": Rule(_cluster("ALTER")),
    _S + "ListUsers": Rule(_cluster("DESCRIBE")),
    _S + "SetQuota": Rule(_cluster("ALTER_CONFIGS")),
    _S + "ListQuotas": Rule(_cluster("DESCRIBE_CONFIGS")),
    _S + "WhoAmI": Rule(),  # authenticated, nothing else
    # Debug: replica digests read partition contents of any topic
    "/raftka.v1.Debug/ReplicaDigest": Rule(_cluster("CLUSTER_ACTION")),
    # Raft between nodes
    "/raftka.v1.RaftPeer/Stream": Rule(peers_only=True),
    # Standard services
    "/grpc.health.v1.Health/Check": _PUBLIC,
    "/grpc.health.v1.Health/Watch": _PUBLIC,
    "/grpc.health.v1.Health/List": _PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": _PUBLIC,
}

_ERROR_OF = {
    "TOPIC": Code.TOPIC_AUTHORIZATION_FAILED,
    "GROUP": Code.GROUP_AUTHORIZATION_FAILED,
    "CLUSTER": Code.CLUSTER_AUTHORIZATION_FAILED,
    "TRANSACTIONAL_ID": Code.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


def host_of(peer: str) -> str:
    """The IP address of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest or peer


class _AuditLimiter:
    def __init__(self) -> None:
        self._second = 0
        self._count = 0
        self._suppressed = 0

    def allow(self) -> bool:
        now = int(time.monotonic())
        if now != self._second:
            if self._suppressed:
                audit.warning("event=denied_suppressed count=%d", self._suppressed)
            self._second, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count > AUDIT_DENIALS_PER_S:
            self._suppressed += 1
            return False
        return True


class NodeSecurity:
    """What the interceptor needs: who is who, who may do what."""

    def __init__(self, authenticator: Authenticator | None, authorizer: Authorizer | None,
                 acls: Callable[[], Any], identity: PeerIdentity | None,
                 limiter: QuotaLimiter | None = None) -> None:
        self.limiter = limiter  # None: no quotas
        self.authenticator = authenticator  # None: everyone is User:ANONYMOUS
        self.authorizer = authorizer  # None: every authenticated call is allowed
        self._acls = acls
        self.identity = identity  # peer-port member check; None without a peer port
        self._limiter = _AuditLimiter()

    def allowed(self, caller: Caller, op: str, rtype: str, name: str) -> bool:
        if self.authorizer is None or caller.trusted:
            return True
        authorizer = self.authorizer
        authorizer.set_acls(self._acls())
        if authorizer.allowed(caller.principal, caller.host, op, rtype, name):
            return True
        # InitProducerId: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (Kafka 3)
        return (op == "IDEMPOTENT_WRITE" and rtype == "CLUSTER"
                and authorizer.may_write_some_topic(caller.principal, caller.host))

    def throttle_s(self, caller: Caller, direction: str, size_bytes: int) -> float:
        """How long to hold this request or answer (0: within the principal's quota)."""
        if self.limiter is None or caller.peer_node:  # forwarded: counted where received
            return 0.0
        return self.limiter.delay_s(caller.principal, direction, size_bytes)

    def check(self, caller: Caller, method: str, checks: Iterable[Check]) -> None:
        for op, rtype, name in checks:
            if not self.allowed(caller, op, rtype, name):
                if self._limiter.allow():
                    audit.warning("event=denied principal=%s host=%s operation=%s "
                                  "resource=%s:%s method=%s", caller.principal, caller.host,
                                  op, rtype, name, method)
                raise BrokerError(_ERROR_OF[rtype], f"{caller.principal} is not authorized to "
                                  f"{op} {rtype} {name!r}")


class SecurityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, security: NodeSecurity, peer_port: bool) -> None:
        self._security = security
        self._peer_port = peer_port
        # method -> (the registered handler, its wrapped form): built once per method
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        rule = RULES.get(method)
        if rule is not None and rule.public and not self._peer_port:
            wrapped = handler
        else:
            wrapped = _wrap(handler,
                            lambda request, context: self._enter(method, rule, context),
                            rule, self._security, method)
        if len(self._wrapped) < 1000:  # methods are few; unknown names are not kept
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def _enter(self, method: str, rule: Rule | None, context) -> Caller:
        """Authenticate the call and set CALLER; raises BrokerError."""
        if rule is None:
            raise BrokerError(Code.CLUSTER_AUTHORIZATION_FAILED,
                              f"{method} has no authorization rule on this node; refused")
        security = self._security
        metadata = {k: v for k, v in (context.invocation_metadata() or ())
                    if isinstance(v, str)}
        auth_context = context.auth_context() or {}
        host = host_of(context.peer() or "")
        if self._peer_port:
            node = security.identity.node_of(auth_context) if security.identity else 0
            forwarded = "raftka-forwarded-by" in metadata  # _forwarding.FORWARDED_BY_KEY
            if (method == _A + "JoinCluster" and security.identity is not None
                    and not (node and forwarded)):
                # A joining node is no member yet: a certificate of the peer CA made out to
                # a node name is its proof (the CA signs certificates for cluster machines
                # only). The handler holds it to that id; it acts as a member's own call.
                # (A member forwarding a join it took is a member's own call, below.)
                joiner = node or security.identity.claimed_id(auth_context)
                if joiner:
                    JOINER.set(joiner)
                    caller = Caller(f"User:{security.identity.name_of(joiner)}", host, node,
                                    trusted=True)
                    CALLER.set(caller)
                    return caller
            if not node:
                raise BrokerError(Code.AUTHENTICATION_FAILED, "the peer port serves cluster "
                                  "members only: the certificate names no configured node")
            if rule.peers_only:
                caller = Caller(f"User:node-{node}", host, node)
            elif FORWARDED_PRINCIPAL_KEY in metadata:  # a call a member makes for its caller
                caller = Caller(metadata[FORWARDED_PRINCIPAL_KEY],
                                metadata.get(FORWARDED_HOST_KEY, host), node)
            else:  # a member's own call (dead-lettering, or a node that checks nobody)
                caller = Caller(f"User:{security.identity.name_of(node)}", host, node,
                                trusted=True)
        else:
            if rule.peers_only and security.identity is not None:
                raise BrokerError(Code.AUTHENTICATION_FAILED, "Raft traffic goes to the "
                                  "peer port")
            authn = security.authenticator
            principal = (await authn.principal(auth_context, metadata) if authn is not None
                         else "User:ANONYMOUS")
            caller = Caller(principal, host, 0)
        CALLER.set(caller)
        return caller


class _ThrottledWrites:
    """A server-streaming call's context whose ``write`` holds each answer back while the
    caller is over its quota (FetchStream); everything else is the real context's."""

    def __init__(self, context: Any, security: NodeSecurity, caller: Caller, direction: str,
                 size: Callable[[Any], int]) -> None:
        self._context = context
        self._security = security
        self._caller = caller
        self._direction = direction
        self._size = size

    async def write(self, message: Any) -> None:
        delay_s = self._security.throttle_s(self._caller, self._direction, self._size(message))
        if delay_s:
            await asyncio.sleep(delay_s)
            if hasattr(message, "throttle_time_ms"):
                message.throttle_time_ms = int(delay_s * 1000)
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _wrap(handler: grpc.RpcMethodHandler, enter, rule: Rule | None, security: NodeSecurity,
          method: str) -> grpc.RpcMethodHandler:
    """``handler`` with authentication and the rule's checks in front of it."""

    async def admit(request: Any, context) -> Caller | None:
        try:
            caller = await enter(request, context)
            if rule is not None and not rule.per_item and not rule.peers_only:
                security.check(caller, method, rule.checks(request))
        except BrokerError as exc:
            await abort_with(context, exc)
            return None  # not reached: abort raises
        if caller is not None:  # the request-rate quota: held before it is handled
            delay_s = security.throttle_s(caller, "request", 1)
            if delay_s:
                await asyncio.sleep(delay_s)
                held_s.set(delay_s)
        return caller

    def allowed_for(caller: Caller) -> Callable[[str, str, str], bool]:
        return lambda op, rtype, name: security.allowed(caller, op, rtype, name)

    kw = dict(request_deserializer=handler.request_deserializer,
              response_serializer=handler.response_serializer)
    if handler.unary_unary:
        inner = handler.unary_unary

        quota = rule.quota if rule is not None else None

        async def unary_unary(request, context):
            held_s.set(0.0)
            caller = await admit(request, context)
            delay_s = held_s.get()
            if quota is not None and caller is not None and quota[0] == "produce":
                produce_s = security.throttle_s(caller, "produce", quota[1](request))
                if produce_s:
                    await asyncio.sleep(produce_s)  # before anything is written
                    delay_s += produce_s
            response = await inner(request, context)
            if rule is not None and rule.filter is not None and caller is not None:
                rule.filter(response, allowed_for(caller))
            if quota is not None and caller is not None and quota[0] == "fetch":
                fetch_s = security.throttle_s(caller, "fetch", quota[1](response))
                if fetch_s:
                    await asyncio.sleep(fetch_s)
                    delay_s += fetch_s
            if delay_s and hasattr(response, "throttle_time_ms"):
                response.throttle_time_ms = int(delay_s * 1000)
            return response
        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
    if handler.unary_stream:
        inner_us = handler.unary_stream
        if inspect.isasyncgenfunction(inner_us):
            async def unary_stream_gen(request, context):
                await admit(request, context)
                async for response in inner_us(request, context):
                    yield response
            return grpc.unary_stream_rpc_method_handler(unary_stream_gen, **kw)

        async def unary_stream(request, context):
            caller = await admit(request, context)
            if rule is not None and rule.quota is not None and caller is not None:
                context = _ThrottledWrites(context, security, caller, *rule.quota)
            return await inner_us(request, context)
        return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)

    def items(request_iterator: AsyncIterator[Any], caller: Caller) -> AsyncIterator[Any]:
        if rule is None or not rule.per_item:
            return request_iterator

        quota = rule.quota

        async def checked() -> AsyncIterator[Any]:
            async for item in request_iterator:
                try:
                    security.check(caller, method, rule.checks(item))
                except BrokerError as exc:
                    yield Denied(item, exc)
                    continue
                if quota is not None:  # not reading on holds the client back (flow control)
                    delay_s = security.throttle_s(caller, quota[0], quota[1](item)) + \
                        security.throttle_s(caller, "request", 1)
                    if delay_s:
                        await asyncio.sleep(delay_s)
                        yield Held(item, int(delay_s * 1000))
                        continue
                yield item
        return checked()

    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator, context):
            caller = await admit(None, context)
            return await inner_su(items(request_iterator, caller), context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
    inner_ss = handler.stream_stream
    if inspect.isasyncgenfunction(inner_ss):
        async def stream_stream_gen(request_iterator, context):
            caller = await admit(None, context)
            async for response in inner_ss(items(request_iterator, caller), context):
                yield response
        return grpc.stream_stream_rpc_method_handler(stream_stream_gen, **kw)

    async def stream_stream(request_iterator, context):
        caller = await admit(None, context)
        return await inner_ss(items(request_iterator, caller), context)
    return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)
