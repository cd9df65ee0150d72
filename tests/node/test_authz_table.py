"""Every RPC a node registers has an authorization rule (``node/_authz.py``), so a new
service or method cannot skip the ACL check; and the ACL decision equals a simple
reference model for random ACL sets and requests (seeded, reproducible)."""

from __future__ import annotations

import random

import pytest

from raftka.node import _authz
from raftka.node._acl import (
    OPERATIONS,
    RESOURCE_TYPES,
    AclBinding,
    Authorizer,
)
from raftka.node._auth import PrincipalMapper, scram_credential, verify_password
from raftka.node._errors import Code


def _contract_methods() -> list[str]:
    """Every method of every service in the contract package raftka.v1 (a new .proto
    file with a service counts as soon as its stubs are generated)."""
    import importlib
    import pkgutil

    import raftka.v1

    methods = []
    for info in pkgutil.iter_modules(raftka.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"raftka.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return methods


def test_every_rpc_of_the_contract_has_an_authorization_rule() -> None:
    methods = _contract_methods()
    assert "/raftka.v1.Broker/Produce" in methods and len(methods) > 25
    missing = [m for m in methods if m not in _authz.RULES]
    assert not missing, (f"RPC methods without an authorization rule in node/_authz.py "
                         f"RULES (a node refuses them when security is on): {missing}")


# ------------------------------------------------------------------ reference model
def _reference(acls, supers, principal, host, op, rtype, name) -> bool:
    """Kafka's rules written out plainly (README, Security)."""
    if principal in supers:
        return True

    def matches(a: AclBinding) -> bool:
        return (a.resource_type == rtype
                and a.principal in (principal, "User:*")
                and a.host in (host, "*")
                and (name.startswith(a.resource_name) if a.pattern_type == "PREFIXED"
                     else a.resource_name in (name, "*")))

    implied = {"DESCRIBE": {"READ", "WRITE", "DELETE", "ALTER"},
               "DESCRIBE_CONFIGS": {"ALTER_CONFIGS"}}.get(op, set())
    if any(matches(a) and a.permission == "DENY" and a.operation in (op, "ALL") for a in acls):
        return False
    return any(matches(a) and a.permission == "ALLOW"
               and (a.operation in (op, "ALL") or a.operation in implied) for a in acls)


@pytest.mark.parametrize("seed", range(40))
def test_decisions_equal_the_reference_model(seed: int) -> None:
    rng = random.Random(seed)
    principals = ["User:a", "User:b", "User:c"]
    names = ["t", "te", "test", "other", "*"]
    hosts = ["10.0.0.1", "10.0.0.2"]
    ops = [o for o in OPERATIONS]
    acls = tuple(sorted({AclBinding(
        rng.choice(principals + ["User:*"]), rng.choice(hosts + ["*"]), rng.choice(ops),
        rng.choice(RESOURCE_TYPES), rng.choice(names), rng.choice(["LITERAL", "PREFIXED"]),
        rng.choice(["ALLOW", "ALLOW", "DENY"])) for _ in range(rng.randrange(0, 25))}))
    supers = frozenset(rng.sample(principals, rng.randrange(0, 2)))
    authorizer = Authorizer(supers)
    authorizer.set_acls(acls)
    for _ in range(300):
        req = (rng.choice(principals), rng.choice(hosts), rng.choice(ops[1:]),
               rng.choice(RESOURCE_TYPES), rng.choice(names[:-1]))
        assert authorizer.allowed(*req) == _reference(acls, supers, *req), (seed, req, acls)
        assert authorizer.allowed(*req) == _reference(acls, supers, *req)  # cached


def test_principal_mapping_rules() -> None:
    mapper = PrincipalMapper(["RULE:^CN=(.*?),OU=ops,.*$/$1-ops/L", "RULE:^CN=(.*?),.*$/$1/",
                              "DEFAULT"])
    assert mapper.map("CN=Alice,OU=ops,O=raftka") == "alice-ops"
    assert mapper.map("CN=bob,O=raftka") == "bob"
    assert mapper.map("O=raftka") == "O=raftka"
    assert PrincipalMapper(["RULE:^CN=(.*?),.*$/$1/U"]).map("OU=x") is None
    with pytest.raises(ValueError):
        PrincipalMapper(["RULE:nope"])


def test_scram_credentials_verify_only_the_right_password() -> None:
    cred = scram_credential("alice", "s3cret")
    assert "s3cret" not in repr(cred)
    assert verify_password(cred, "s3cret") and not verify_password(cred, "s3cre")
    assert scram_credential("alice", "s3cret").salt != cred.salt  # salted


def test_host_of_peer_strings() -> None:
    assert _authz.host_of("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert _authz.host_of("ipv6:[::1]:5000") == "::1"


def test_authenticator_passwords_certificates_and_anonymous() -> None:
    import asyncio

    from raftka.node._auth import Authenticator
    from raftka.node._certs import issue, make_ca
    from raftka.node._errors import BrokerError

    users = {"alice": scram_credential("alice", "right")}
    authn = Authenticator(frozenset({"mtls", "password"}), False,
                          PrincipalMapper(["RULE:^CN=(.*?),.*$/$1/", "DEFAULT"]),
                          lambda: users)

    async def principal(metadata, pem=None):
        return await authn.principal({"x509_pem_cert": [pem]} if pem else {}, metadata)

    async def scenario(tmp: str) -> None:
        from pathlib import Path
        ca = make_ca(Path(tmp))
        cert = issue(ca, Path(tmp), "bob", "bob").cert.read_bytes()
        assert await principal({}, cert) == "User:bob"
        good = {"raftka-username": "alice", "raftka-password": "right"}
        assert await principal(good, cert) == "User:alice"  # a password wins
        assert await principal(good) == "User:alice"  # cached now
        for bad in ({"raftka-username": "alice", "raftka-password": "wrong"},
                    {"raftka-username": "nobody", "raftka-password": "right"}, {}):
            with pytest.raises(BrokerError) as info:
                await principal(bad)
            assert info.value.code == Code.AUTHENTICATION_FAILED
        users["alice"] = scram_credential("alice", "new")  # a changed password
        with pytest.raises(BrokerError):
            await principal(good)  # the cached verification no longer counts
        del users["alice"]
        with pytest.raises(BrokerError):
            await principal({"raftka-username": "alice", "raftka-password": "new"})

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(tmp))
    anonymous = Authenticator(frozenset(), True, PrincipalMapper([]), lambda: {})
    assert asyncio.run(anonymous.principal({}, {})) == "User:ANONYMOUS"
