"""The Security gRPC service: users and ACLs, changed through the controller log.

Changes run at the controller leader (forwarded there from any node, like topic changes)
and are answered once this node's metadata shows them. A password is hashed at the leader
(salted PBKDF2, SCRAM-SHA-256 keys: ``_auth.scram_credential``) before it is proposed, so
the controller log and snapshots never hold it. Every change is one audit line (logger
``raftka.audit``): who, what, from where.
"""

from __future__ import annotations

import asyncio
import logging

from raftka.v1 import security_pb2, security_pb2_grpc

from ._acl import CLUSTER_NAME, AclBinding
from ._auth import scram_credential
from ._authz import CALLER
from ._controller_commands import (
    COMMAND_SIZE_BYTES_MAX,
    encode_create_acls,
    encode_delete_acls,
    encode_delete_user,
    encode_put_user,
    encode_set_quota,
)
from ._controller_state import SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, QuotaLimits
from ._errors import BrokerError, Code
from ._services import ADMIN_TIMEOUT_S, READ_YOUR_WRITES_S, _AtControllerLeader, _handler

audit = logging.getLogger("raftka.audit")
PASSWORD_LENGTH_MAX = 1024


def _name(enum, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:  # a client built from a newer .proto, or a bad one
        known = ", ".join(f"{v.name} ({v.number})" for v in enum.DESCRIPTOR.values)
        raise BrokerError(Code.INVALID_REQUEST, f"{value} is not a {enum.DESCRIPTOR.name}; "
                          f"this node knows {known}") from None


def acl_from_pb(acl: security_pb2.Acl) -> AclBinding:
    """The ACL a request names (host defaults to *, pattern to LITERAL, the cluster
    resource's name to kafka-cluster); invalid values are left for the controller."""
    try:
        rtype = _name(security_pb2.ResourceType, acl.resource_type, "RESOURCE_TYPE_")
        op = _name(security_pb2.AclOperation, acl.operation, "ACL_OPERATION_")
        perm = _name(security_pb2.AclPermission, acl.permission, "ACL_PERMISSION_")
        pattern = _name(security_pb2.PatternType, acl.pattern_type, "PATTERN_TYPE_")
    except ValueError:
        raise BrokerError(Code.INVALID_REQUEST, "an ACL field holds an unknown enum value") \
            from None
    if pattern == "UNSPECIFIED":
        pattern = "LITERAL"
    name = acl.resource_name or (CLUSTER_NAME if rtype == "CLUSTER" else "")
    return AclBinding(acl.principal, acl.host or "*", op, rtype, name, pattern, perm)


def acl_to_pb(acl: AclBinding) -> security_pb2.Acl:
    return security_pb2.Acl(
        principal=acl.principal, host=acl.host,
        operation=security_pb2.AclOperation.Value("ACL_OPERATION_" + acl.operation),
        resource_type=security_pb2.ResourceType.Value("RESOURCE_TYPE_" + acl.resource_type),
        resource_name=acl.resource_name,
        pattern_type=security_pb2.PatternType.Value("PATTERN_TYPE_" + acl.pattern_type),
        permission=security_pb2.AclPermission.Value("ACL_PERMISSION_" + acl.permission))


def _forwarded() -> bool:
    """A call another node forwarded here: that node writes its audit line."""
    caller = CALLER.get()
    return caller is not None and caller.peer_node != 0


def _who() -> str:
    caller = CALLER.get()
    if caller is None:
        return "principal=User:ANONYMOUS host=unknown"
    return f"principal={caller.principal} host={caller.host}"


class SecurityService(_AtControllerLeader, security_pb2_grpc.SecurityServicer):
    stub_class = security_pb2_grpc.SecurityStub

    async def _propose(self, context, method: str, request, what: str, command_of) -> object:
        async def local(timeout_s: float):
            command = await command_of()
            if len(command) > COMMAND_SIZE_BYTES_MAX:  # never into the log
                raise BrokerError(Code.INVALID_REQUEST, f"{what}: the change is "
                                  f"{len(command)} bytes as a controller command; at most "
                                  f"{COMMAND_SIZE_BYTES_MAX}: send fewer ACLs at a time")
            result = await self.broker.controller.propose(command, timeout_s)
            if not result.ok:
                raise BrokerError(result.code, result.message)
            return result
        return await self.at_controller_leader(context, method, request, what, local)

    @_handler
    async def CreateAcls(self, request, context):  # noqa: N802
        acls = [acl_from_pb(a) for a in request.acls]
        if not acls:
            raise BrokerError(Code.INVALID_REQUEST, "CreateAcls needs at least one ACL")

        async def command() -> bytes:
            return encode_create_acls(acls)
        await self._propose(context, "CreateAcls", request, "CreateAcls", command)
        await self.broker.wait_for_metadata(
            lambda state: set(acls) <= set(state.acls), READ_YOUR_WRITES_S)
        for acl in acls if not _forwarded() else ():
            audit.warning("event=acl_added %s acl=%r", _who(), acl.describe())
        return security_pb2.CreateAclsResponse()

    @_handler
    async def DeleteAcls(self, request, context):  # noqa: N802
        acls = [acl_from_pb(a) for a in request.acls]
        if not acls:
            raise BrokerError(Code.INVALID_REQUEST, "DeleteAcls needs at least one ACL")
        present = set(self.broker.controller.state.acls)

        async def command() -> bytes:
            return encode_delete_acls(acls)
        await self._propose(context, "DeleteAcls", request, "DeleteAcls", command)
        await self.broker.wait_for_metadata(
            lambda state: not set(acls) & set(state.acls), READ_YOUR_WRITES_S)
        deleted = [a for a in acls if a in present]
        for acl in deleted if not _forwarded() else ():
            audit.warning("event=acl_removed %s acl=%r", _who(), acl.describe())
        return security_pb2.DeleteAclsResponse(deleted=len(deleted))

    @_handler
    async def ListAcls(self, request, context):  # noqa: N802
        rtype = (_name(security_pb2.ResourceType, request.resource_type, "RESOURCE_TYPE_")
                 if request.resource_type else "")
        out = security_pb2.ListAclsResponse()
        for acl in self.broker.controller.state.acls:
            if request.principal and acl.principal != request.principal:
                continue
            if rtype and acl.resource_type != rtype:
                continue
            if request.resource_name and acl.resource_name != request.resource_name:
                continue
            out.acls.append(acl_to_pb(acl))
        return out

    @_handler
    async def CreateUser(self, request, context):  # noqa: N802
        if not request.password or len(request.password) > PASSWORD_LENGTH_MAX:
            raise BrokerError(Code.INVALID_REQUEST, f"a password has 1 to {PASSWORD_LENGTH_MAX} "
                              "characters")
        iterations = request.iterations or SCRAM_ITERATIONS_MIN
        if not SCRAM_ITERATIONS_MIN <= iterations <= SCRAM_ITERATIONS_MAX:
            raise BrokerError(Code.INVALID_REQUEST, f"iterations must be from "
                              f"{SCRAM_ITERATIONS_MIN} to {SCRAM_ITERATIONS_MAX}")

        async def command() -> bytes:
            cred = await asyncio.to_thread(scram_credential, request.name, request.password,
                                           iterations)
            return encode_put_user(cred.name, cred.mechanism, cred.iterations, cred.salt,
                                   cred.stored_key, cred.server_key, request.replace,
                                   (cred.sha512_salt, cred.sha512_stored_key,
                                    cred.sha512_server_key))
        before = self.broker.controller.state.users.get(request.name)
        await self._propose(context, "CreateUser", request, f"CreateUser {request.name}",
                            command)
        await self.broker.wait_for_metadata(
            lambda state: state.users.get(request.name) not in (None, before),
            READ_YOUR_WRITES_S)
        if not _forwarded():
            audit.warning("event=%s %s user=%r", "user_password_changed" if before else
                          "user_created", _who(), request.name)
        return security_pb2.CreateUserResponse()

    @_handler
    async def DeleteUser(self, request, context):  # noqa: N802
        async def command() -> bytes:
            return encode_delete_user(request.name)
        await self._propose(context, "DeleteUser", request, f"DeleteUser {request.name}",
                            command)
        await self.broker.wait_for_metadata(lambda state: request.name not in state.users,
                                            READ_YOUR_WRITES_S)
        if not _forwarded():
            audit.warning("event=user_deleted %s user=%r", _who(), request.name)
        return security_pb2.DeleteUserResponse()

    @_handler
    async def ListUsers(self, request, context):  # noqa: N802
        users = self.broker.controller.state.users
        return security_pb2.ListUsersResponse(users=[
            security_pb2.UserInfo(name=u.name, mechanism=u.mechanism, iterations=u.iterations)
            for _, u in sorted(users.items())])

    @_handler
    async def SetQuota(self, request, context):  # noqa: N802
        q = request.quota
        limits = QuotaLimits(q.produce_bytes_per_s, q.fetch_bytes_per_s, q.requests_per_s)

        async def command() -> bytes:
            return encode_set_quota(q.entity, *limits)
        await self._propose(context, "SetQuota", request, f"SetQuota {q.entity}", command)
        await self.broker.wait_for_metadata(
            lambda state: state.quotas.get(q.entity, QuotaLimits(0, 0, 0)) == limits,
            READ_YOUR_WRITES_S)
        if not _forwarded():
            audit.warning("event=quota_set %s entity=%r produce_bytes_per_s=%d "
                          "fetch_bytes_per_s=%d requests_per_s=%d", _who(), q.entity, *limits)
        return security_pb2.SetQuotaResponse()

    @_handler
    async def ListQuotas(self, request, context):  # noqa: N802
        quotas = self.broker.controller.state.quotas
        return security_pb2.ListQuotasResponse(quotas=[
            security_pb2.Quota(entity=e, produce_bytes_per_s=q.produce_bytes_per_s,
                               fetch_bytes_per_s=q.fetch_bytes_per_s,
                               requests_per_s=q.requests_per_s)
            for e, q in sorted(quotas.items())])

    @_handler
    async def WhoAmI(self, request, context):  # noqa: N802
        caller = CALLER.get()
        return security_pb2.WhoAmIResponse(
            principal=caller.principal if caller else "User:ANONYMOUS",
            host=caller.host if caller else "")


__all__ = ["ADMIN_TIMEOUT_S", "SecurityService", "acl_from_pb", "acl_to_pb"]
