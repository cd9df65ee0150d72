"""Authentication: who sent a call (its principal), from a TLS client certificate or a
username and password in the call's metadata.

Principals are ``User:<name>``.

- **Certificate** (``mtls`` in ``authentication``): the subject of the verified client
  certificate as an RFC 4514 string (``CN=alice,O=raftka``) goes through
  ``principal_mapping_rules`` (Kafka's ``ssl.principal.mapping.rules``): each rule is
  ``RULE:<regex>/<replacement>/`` (optionally followed by ``L`` or ``U`` to lower- or
  upper-case the result; ``\\/`` is a literal slash; ``$1`` refers to a group) or
  ``DEFAULT`` (the whole subject). The first rule whose regex matches the whole subject
  gives the name; no match means the certificate maps to no principal (refused).
- **Password** (``password``): metadata ``raftka-username`` and ``raftka-password`` (send
  them only over TLS). Checked against the user's SCRAM-SHA-256 credential in the
  controller state (users also hold SCRAM-SHA-512 keys, for the Kafka listener's
  SCRAM-SHA-512, when their password was set since those are stored): PBKDF2-HMAC-SHA256(password, salt, iterations) gives the salted
  password; ``H(HMAC(salted, "Client Key"))`` must equal the stored key. A password is
  never stored: users hold salt, iteration count, stored key and server key (RFC 5802).
  Verifications are cached per (user, password) under a keyed hash (never the password
  itself) as long as the user's credential is unchanged, and run on a worker thread, so
  PBKDF2 runs once per credential, not per request; failures are cached briefly too.
- A password wins over a certificate when a call carries both. A call with neither is
  ``User:ANONYMOUS`` when ``allow_anonymous`` is on, else refused (AUTHENTICATION_FAILED).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import time
from collections import OrderedDict
from typing import Callable, Mapping

from cryptography import x509

from ._acl import ANONYMOUS
from ._controller_state import SCRAM_ITERATIONS_MIN, SCRAM_MECHANISM, UserCredential
from ._errors import BrokerError, Code

USERNAME_KEY = "raftka-username"
PASSWORD_KEY = "raftka-password"
SALT_BYTES = 16
CACHE_ENTRIES_MAX = 10_000
FAILURE_CACHE_S = 1.0  # a wrong password is answered from cache for this long


# ----------------------------------------------------------------------- SCRAM
def _salted(password: str, salt: bytes, iterations: int, digest: str = "sha256") -> bytes:
    return hashlib.pbkdf2_hmac(digest, password.encode("utf-8"), salt, iterations)


def _scram_keys(password: str, salt: bytes, iterations: int, digest: str) -> tuple[str, ...]:
    """RFC 5802's stored form: base64 (salt, H(HMAC(salted, "Client Key")),
    HMAC(salted, "Server Key")) with ``digest`` as H."""
    salted = _salted(password, salt, iterations, digest)
    client_key = hmac.digest(salted, b"Client Key", digest)
    server_key = hmac.digest(salted, b"Server Key", digest)
    b64 = base64.b64encode
    return (b64(salt).decode(), b64(hashlib.new(digest, client_key).digest()).decode(),
            b64(server_key).decode())


def scram_credential(name: str, password: str, iterations: int = SCRAM_ITERATIONS_MIN,
                     salt: bytes | None = None, sha512: bool = True) -> UserCredential:
    """The stored credential for ``password``: SCRAM-SHA-256 keys (PLAIN, the gRPC door,
    SCRAM-SHA-256) and, with ``sha512``, SCRAM-SHA-512 keys (the Kafka listener's
    SCRAM-SHA-512) under a salt of their own; fresh random salts unless ``salt`` is given
    (then both use it). Never the password."""
    sha256_keys = _scram_keys(password, os.urandom(SALT_BYTES) if salt is None else salt,
                              iterations, "sha256")
    sha512_keys = _scram_keys(password, os.urandom(SALT_BYTES) if salt is None else salt,
                              iterations, "sha512") if sha512 else ("", "", "")
    return UserCredential(name, SCRAM_MECHANISM, iterations, *sha256_keys, *sha512_keys)


def verify_password(user: UserCredential, password: str) -> bool:
    salted = _salted(password, base64.b64decode(user.salt), user.iterations)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    return hmac.compare_digest(stored, base64.b64decode(user.stored_key))


# ----------------------------------------------------------------------- mapping rules
_RULE = re.compile(r"RULE:((?:\\/|[^/])*)/((?:\\/|[^/])*)/([LU]?)")


class PrincipalMapper:
    """Kafka's ``ssl.principal.mapping.rules`` over an RFC 4514 subject."""

    def __init__(self, rules: list[str]) -> None:
        self._rules: list[tuple[re.Pattern[str], str, str] | None] = []  # None: DEFAULT
        for rule in rules or ["DEFAULT"]:
            rule = rule.strip()
            if rule == "DEFAULT":
                self._rules.append(None)
                continue
            m = _RULE.fullmatch(rule)
            if m is None:
                raise ValueError(f"bad principal mapping rule {rule!r}: expected "
                                 "RULE:<regex>/<replacement>/[L|U] or DEFAULT")
            try:
                pattern = re.compile(m.group(1).replace("\\/", "/"))
            except re.error as exc:
                raise ValueError(f"bad regex in principal mapping rule {rule!r}: {exc}") from None
            replacement = re.sub(r"\$(\d+)", r"\\g<\1>", m.group(2).replace("\\/", "/"))
            self._rules.append((pattern, replacement, m.group(3)))

    def map(self, subject: str) -> str | None:
        """The user name for ``subject``, or None if no rule matches."""
        for rule in self._rules:
            if rule is None:
                return subject
            pattern, replacement, case = rule
            m = pattern.fullmatch(subject)
            if m is None:
                continue
            try:
                name = m.expand(replacement)
            except (re.error, IndexError):
                continue
            return name.lower() if case == "L" else name.upper() if case == "U" else name
        return None


def certificate_subject(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).subject.rfc4514_string()


# ----------------------------------------------------------------------- authenticator
class Authenticator:
    """Turns a call's auth context and metadata into a principal (see module docstring).

    ``users`` returns the current users of the controller state (read on every miss, so a
    deleted user or a changed password takes effect at once: cached entries remember
    which credential object they were verified against)."""

    def __init__(self, mechanisms: frozenset[str], allow_anonymous: bool, mapper: PrincipalMapper,
                 users: Callable[[], Mapping[str, UserCredential]]) -> None:
        self.mechanisms = mechanisms
        self.allow_anonymous = allow_anonymous
        self._mapper = mapper
        self._users = users
        self._key = os.urandom(32)  # keys the password cache; never leaves the process
        self._verified: OrderedDict[bytes, UserCredential] = OrderedDict()
        self._failed: OrderedDict[bytes, float] = OrderedDict()
        self._cert_principals: OrderedDict[bytes, str | None] = OrderedDict()

    async def principal(self, auth_context: Mapping[str, list[bytes]],
                        metadata: Mapping[str, str]) -> str:
        """The call's principal; raises BrokerError(AUTHENTICATION_FAILED)."""
        username = metadata.get(USERNAME_KEY)
        if username is not None:
            if "password" not in self.mechanisms:
                raise BrokerError(Code.AUTHENTICATION_FAILED, "this node does not accept "
                                  "passwords; authenticate with a client certificate")
            return await self._password(username, metadata.get(PASSWORD_KEY, ""))
        pem = (auth_context.get("x509_pem_cert") or [None])[0]
        if pem is not None and "mtls" in self.mechanisms:
            name = self._cert_principal(pem)
            if name is None:
                raise BrokerError(Code.AUTHENTICATION_FAILED, "the client certificate's "
                                  "subject matches no principal mapping rule")
            return f"User:{name}"
        if self.allow_anonymous:
            return ANONYMOUS
        raise BrokerError(Code.AUTHENTICATION_FAILED, "this node requires authentication: "
                          f"{' or '.join(sorted(self._describe()))}")

    def _describe(self) -> list[str]:
        out = []
        if "mtls" in self.mechanisms:
            out.append("a TLS client certificate")
        if "password" in self.mechanisms:
            out.append("a username and password")
        return out

    def _cert_principal(self, pem: bytes) -> str | None:
        cache = self._cert_principals
        if pem in cache:
            cache.move_to_end(pem)
            return cache[pem]
        try:
            name = self._mapper.map(certificate_subject(pem)) or None
        except ValueError:
            name = None
        cache[pem] = name
        if len(cache) > CACHE_ENTRIES_MAX:
            cache.popitem(last=False)
        return name

    async def _password(self, username: str, password: str) -> str:
        key = hmac.digest(self._key, username.encode("utf-8", "replace") + b"\0"
                          + password.encode("utf-8", "replace"), "sha256")
        user = self._users().get(username)
        cached = self._verified.get(key)
        if cached is not None and cached is user:
            self._verified.move_to_end(key)
            return f"User:{username}"
        failed_at = self._failed.get(key)
        now = time.monotonic()
        if failed_at is not None and now - failed_at < FAILURE_CACHE_S:
            raise _bad_password()
        # an unknown user costs the same hashing as a wrong password: no user enumeration
        # by timing
        ok = await asyncio.to_thread(verify_password, user or _DUMMY_USER, password) \
            and user is not None
        if not ok or self._users().get(username) is not user:
            self._failed[key] = now
            if len(self._failed) > CACHE_ENTRIES_MAX:
                self._failed.popitem(last=False)
            raise _bad_password()
        self._failed.pop(key, None)
        self._verified[key] = user
        if len(self._verified) > CACHE_ENTRIES_MAX:
            self._verified.popitem(last=False)
        return f"User:{username}"


_DUMMY_USER = scram_credential("-", "-", salt=b"\0" * SALT_BYTES, sha512=False)


def _bad_password() -> BrokerError:
    return BrokerError(Code.AUTHENTICATION_FAILED, "unknown user or wrong password")
