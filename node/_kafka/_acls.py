"""Kafka's ACL APIs (DescribeAcls, CreateAcls, DeleteAcls) over the controller-stored ACLs
the gRPC Security service manages (``node/_security_service.py``): one set of ACLs, two
doors. Creations and deletions go through that service's methods (forwarded to the
controller leader, audited, answered once this node applied them).

Kafka's numeric enums (``org.apache.kafka.common.acl``/``resource``) map to our names;
the USER and DELEGATION_TOKEN resource types and the token operations have no meaning
here: a creation naming them is answered INVALID_REQUEST, a filter naming them matches
nothing. A DeleteAcls filter is resolved against this node's ACLs (the same everywhere
once applied), and the ACLs it matches are deleted in one controller command.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as K

from raftka.v1 import security_pb2

from .._acl import AclBinding, acl_error
from .._broker import Broker
from .._errors import BrokerError
from .._security_service import SecurityService, acl_to_pb
from ._errors import kafka_code

RESOURCE_TYPES = {2: "TOPIC", 3: "GROUP", 4: "CLUSTER", 5: "TRANSACTIONAL_ID"}
OPERATIONS = {2: "ALL", 3: "READ", 4: "WRITE", 5: "CREATE", 6: "DELETE", 7: "ALTER",
              8: "DESCRIBE", 9: "CLUSTER_ACTION", 10: "DESCRIBE_CONFIGS", 11: "ALTER_CONFIGS",
              12: "IDEMPOTENT_WRITE"}
PATTERNS = {3: "LITERAL", 4: "PREFIXED"}
PERMISSIONS = {2: "DENY", 3: "ALLOW"}
_ANY, _MATCH = 1, 2
_CODE_OF = {kind: {v: k for k, v in table.items()}
            for kind, table in (("rtype", RESOURCE_TYPES), ("op", OPERATIONS),
                                ("pattern", PATTERNS), ("perm", PERMISSIONS))}


def binding_of(c: Any) -> AclBinding:
    """The ACL of a CreateAcls creation; raises ValueError saying what is wrong."""
    try:
        acl = AclBinding(c.principal, c.host, OPERATIONS[c.operation],
                         RESOURCE_TYPES[c.resource_type], c.resource_name,
                         PATTERNS[getattr(c, "resource_pattern_type", 3)],
                         PERMISSIONS[c.permission_type])
    except KeyError:
        raise ValueError("resource type must be TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID; "
                         "pattern LITERAL or PREFIXED; permission ALLOW or DENY; operation "
                         "one of ALL..IDEMPOTENT_WRITE") from None
    error = acl_error(acl)
    if error is not None:
        raise ValueError(error)
    return acl


def matches(f: Any, acl: AclBinding) -> bool:
    """Kafka's AclBindingFilter: ANY matches every value; MATCH (pattern type) matches the
    ACLs that would apply to the named resource (literal, wildcard or a prefix of it)."""
    rtype = f.resource_type_filter
    if rtype != _ANY and RESOURCE_TYPES.get(rtype) != acl.resource_type:
        return False
    pattern = getattr(f, "pattern_type_filter", 3)
    name = f.resource_name_filter
    if pattern == _MATCH:
        if name is not None and not (
                (acl.pattern_type == "LITERAL" and acl.resource_name in (name, "*"))
                or (acl.pattern_type == "PREFIXED" and name.startswith(acl.resource_name))):
            return False
    else:
        if pattern != _ANY and PATTERNS.get(pattern) != acl.pattern_type:
            return False
        if name is not None and name != acl.resource_name:
            return False
    if f.principal_filter is not None and f.principal_filter != acl.principal:
        return False
    if f.host_filter is not None and f.host_filter != acl.host:
        return False
    if f.operation != _ANY and OPERATIONS.get(f.operation) != acl.operation:
        return False
    return f.permission_type == _ANY or PERMISSIONS.get(f.permission_type) == acl.permission


def _described(acl: AclBinding) -> dict:
    return {"principal": acl.principal, "host": acl.host,
            "operation": _CODE_OF["op"][acl.operation],
            "permission_type": _CODE_OF["perm"][acl.permission]}


def _denied(ctx, op: str, api: str) -> K | None:
    return ctx.denied(op, "CLUSTER", "kafka-cluster", api)


class KafkaAcls:
    def __init__(self, broker: Broker, admin: Any) -> None:
        self.broker = broker
        self.service = SecurityService(broker, admin.forwarder)

    async def describe(self, request, version, ctx, header) -> dict:
        code = _denied(ctx, "DESCRIBE", "DescribeAcls")
        if code is not None:
            return {"error_code": code, "error_message": "DESCRIBE on the cluster is needed "
                    "to list ACLs", "resources": []}
        by_resource: dict[tuple, list[dict]] = {}
        for acl in self.broker.controller.state.acls:
            if matches(request, acl):
                key = (_CODE_OF["rtype"][acl.resource_type], acl.resource_name,
                       _CODE_OF["pattern"][acl.pattern_type])
                by_resource.setdefault(key, []).append(_described(acl))
        return {"error_code": K.none, "resources": [
            {"resource_type": t, "resource_name": n, "pattern_type": p, "acls": acls}
            for (t, n, p), acls in sorted(by_resource.items())]}

    async def create(self, request, version, ctx, header) -> dict:
        code = _denied(ctx, "ALTER", "CreateAcls")
        if code is not None:
            return {"results": [{"error_code": code, "error_message": "ALTER on the cluster "
                                 "is needed to create ACLs"} for _ in request.creations]}
        results: list[dict] = []
        acls: list[AclBinding] = []
        for c in request.creations:
            try:
                acls.append(binding_of(c))
                results.append({"error_code": K.none})
            except ValueError as exc:
                results.append({"error_code": K.invalid_request, "error_message": str(exc)})
        if acls:
            try:
                await SecurityService.CreateAcls.__wrapped__(
                    self.service, security_pb2.CreateAclsRequest(
                        acls=[acl_to_pb(a) for a in acls]), ctx)
            except BrokerError as exc:
                for r in results:
                    if r["error_code"] == K.none:
                        r.update(error_code=kafka_code(exc.code), error_message=exc.message)
        return {"results": results}

    async def delete(self, request, version, ctx, header) -> dict:
        code = _denied(ctx, "ALTER", "DeleteAcls")
        if code is not None:
            return {"filter_results": [{"error_code": code, "error_message": "ALTER on the "
                                        "cluster is needed to delete ACLs",
                                        "matching_acls": []} for _ in request.filters]}
        present = self.broker.controller.state.acls
        matched = [[a for a in present if matches(f, a)] for f in request.filters]
        doomed = sorted({a for m in matched for a in m})
        error: BrokerError | None = None
        if doomed:
            try:
                await SecurityService.DeleteAcls.__wrapped__(
                    self.service, security_pb2.DeleteAclsRequest(
                        acls=[acl_to_pb(a) for a in doomed]), ctx)
            except BrokerError as exc:
                error = exc
        out = []
        for m in matched:
            if error is not None:
                out.append({"error_code": kafka_code(error.code),
                            "error_message": error.message, "matching_acls": []})
                continue
            out.append({"error_code": K.none, "matching_acls": [
                {"error_code": K.none, "resource_type": _CODE_OF["rtype"][a.resource_type],
                 "resource_name": a.resource_name,
                 "pattern_type": _CODE_OF["pattern"][a.pattern_type], **_described(a)}
                for a in m]})
        return {"filter_results": out}
