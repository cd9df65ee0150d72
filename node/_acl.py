"""ACLs and the authorization decision (Kafka's model), pure: no I/O, no clock.

An ACL (``AclBinding``) says: ``principal`` (``User:alice``, or ``User:*``) from ``host``
(an IP address, or ``*``) is ALLOWed or DENYed ``operation`` on resources of
``resource_type`` (TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID) named ``resource_name``,
matched LITERAL (the name exactly; ``*`` matches every name) or PREFIXED (every name that
starts with it). The ACLs live in the controller state (``_controller_state.py``), so
every node decides the same.

Decision for (principal, host, operation, resource type, name), in this order:

1. a super user is allowed everything;
2. if any matching ACL DENYs it: denied (deny wins). A DENY matches the operation itself
   or ALL;
3. if any matching ACL ALLOWs it: allowed. An ALLOW matches the operation itself, ALL,
   and the operations that imply it: READ, WRITE, DELETE and ALTER imply DESCRIBE;
   ALTER_CONFIGS implies DESCRIBE_CONFIGS (as in Kafka);
4. otherwise denied (no ACL, no access).

``Authorizer`` caches decisions per ACL set (the cache is dropped when the controller
applies an ACL change), so a request costs one dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

OPERATIONS: Final = ("ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE",
                     "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE")
RESOURCE_TYPES: Final = ("TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID")
PATTERN_TYPES: Final = ("LITERAL", "PREFIXED")
PERMISSIONS: Final = ("ALLOW", "DENY")
CLUSTER_NAME: Final = "kafka-cluster"  # the one CLUSTER resource (Kafka's name)
PRINCIPAL_TYPE: Final = "User"
ANONYMOUS: Final = "User:ANONYMOUS"
WILDCARD: Final = "*"
NAME_LENGTH_MAX: Final = 1000

# operation -> the operations whose ALLOW also allows it (besides itself and ALL)
IMPLIED_BY: Final = {
    "DESCRIBE": ("READ", "WRITE", "DELETE", "ALTER"),
    "DESCRIBE_CONFIGS": ("ALTER_CONFIGS",),
}
CACHE_ENTRIES_MAX: Final = 100_000


class AclBinding(NamedTuple):
    principal: str
    host: str
    operation: str
    resource_type: str
    resource_name: str
    pattern_type: str
    permission: str

    def describe(self) -> str:
        return (f"{self.permission} {self.principal} from {self.host} {self.operation} on "
                f"{self.resource_type}:{self.pattern_type}:{self.resource_name}")


def acl_error(acl: AclBinding) -> str | None:
    """Why ``acl`` is not a valid ACL, or None."""
    kind, sep, name = acl.principal.partition(":")
    if kind != PRINCIPAL_TYPE or not sep or not name or len(acl.principal) > NAME_LENGTH_MAX:
        return f"principal {acl.principal[:100]!r} must be User:<name> or User:*"
    if not acl.host or len(acl.host) > NAME_LENGTH_MAX:
        return "host must be an IP address or *"
    if acl.operation not in OPERATIONS:
        return f"operation {acl.operation[:50]!r} must be one of {', '.join(OPERATIONS)}"
    if acl.resource_type not in RESOURCE_TYPES:
        return f"resource type {acl.resource_type[:50]!r} must be one of " \
               f"{', '.join(RESOURCE_TYPES)}"
    if not acl.resource_name or len(acl.resource_name) > NAME_LENGTH_MAX:
        return "resource name must be 1 to 1000 characters"
    if acl.pattern_type not in PATTERN_TYPES:
        return f"pattern type {acl.pattern_type[:50]!r} must be LITERAL or PREFIXED"
    if acl.permission not in PERMISSIONS:
        return f"permission {acl.permission[:50]!r} must be ALLOW or DENY"
    if acl.resource_type == "CLUSTER" and acl.resource_name not in (CLUSTER_NAME, WILDCARD):
        return f"the CLUSTER resource is named {CLUSTER_NAME!r}"
    return None


def _name_matches(acl: AclBinding, name: str) -> bool:
    if acl.pattern_type == "PREFIXED":
        return name.startswith(acl.resource_name)
    return acl.resource_name == name or acl.resource_name == WILDCARD


def decide(acls: Iterable[AclBinding], super_users: frozenset[str], principal: str,
           host: str, operation: str, resource_type: str, name: str) -> bool:
    """The decision of the module docstring (uncached)."""
    if principal in super_users:
        return True
    allow_ops = {operation, "ALL", *IMPLIED_BY.get(operation, ())}
    allowed = False
    for acl in acls:
        if acl.resource_type != resource_type:
            continue
        if acl.principal != principal and acl.principal != "User:*":
            continue
        if acl.host != host and acl.host != WILDCARD:
            continue
        if not _name_matches(acl, name):
            continue
        if acl.permission == "DENY":
            if acl.operation == operation or acl.operation == "ALL":
                return False
        elif acl.operation in allow_ops:
            allowed = True
    return allowed


class Authorizer:
    """Decisions over the current ACL set, cached until the set changes."""

    def __init__(self, super_users: Iterable[str] = ()) -> None:
        self.super_users = frozenset(super_users)
        self._acls: tuple[AclBinding, ...] = ()
        self._by_type: dict[str, tuple[AclBinding, ...]] = {}
        self._cache: dict[tuple[str, str, str, str, str], bool] = {}

    def set_acls(self, acls: tuple[AclBinding, ...]) -> None:
        """Install the ACL set (a no-op if it is the same tuple object as before)."""
        if acls is self._acls:
            return
        self._acls = acls
        by_type: dict[str, list[AclBinding]] = {}
        for acl in acls:
            by_type.setdefault(acl.resource_type, []).append(acl)
        self._by_type = {k: tuple(v) for k, v in by_type.items()}
        self._cache = {}

    def may_write_some_topic(self, principal: str, host: str) -> bool:
        """Whether some ACL lets the principal WRITE some topic (and no ACL denies it
        every topic): Kafka's rule for InitProducerId without IDEMPOTENT_WRITE."""
        if principal in self.super_users:
            return True
        allowed = False
        for acl in self._by_type.get("TOPIC", ()):
            if acl.principal not in (principal, "User:*") or acl.host not in (host, WILDCARD):
                continue
            if acl.operation not in ("WRITE", "ALL"):
                continue
            if acl.permission == "DENY":
                if acl.pattern_type == "LITERAL" and acl.resource_name == WILDCARD:
                    return False
            else:
                allowed = True
        return allowed

    def allowed(self, principal: str, host: str, operation: str, resource_type: str,
                name: str) -> bool:
        key = (principal, host, operation, resource_type, name)
        decision = self._cache.get(key)
        if decision is None:
            decision = decide(self._by_type.get(resource_type, ()), self.super_users,
                              principal, host, operation, resource_type, name)
            if len(self._cache) >= CACHE_ENTRIES_MAX:
                self._cache = {}
            self._cache[key] = decision
        return decision
