"""Throwaway certificates for development and tests: a CA and certificates it signs.

Used by ``raftka dev --tls`` and by the tests (certificates made at test time). Keys are
ECDSA P-256; every certificate carries the names given (DNS names and IP addresses as
subject alternative names) and is valid for both TLS server and client authentication, so
one node certificate serves its client port, its peer port and its outgoing peer
connections. Nothing here is meant for production PKI: a real deployment brings its own.

Node identity on the peer port (``node/_tls.py``): a node's certificate must name
``raftka-node-<id>`` (the default ``peer_names``) among its DNS names.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "make_ca", "issue", "node_name"]


def node_name(node_id: int) -> str:
    """The DNS name a node's certificate carries by default: ``raftka-node-<id>``."""
    return f"raftka-node-{node_id}"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files (and the CA that signed it)."""

    cert: Path
    key: Path
    ca: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory: Path, name: str = "raftka dev CA", days: int = 30) -> Issued:
    """A self-signed CA in ``directory`` (``ca.pem``, ``ca-key.pem``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    ca_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    _write(ca_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _key_pem(key), private=True)
    return Issued(ca_path, key_path, ca_path)


def issue(ca: Issued, directory: Path, file_stem: str, common_name: str,
          dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
          organization: str = "raftka", days: int = 30,
          not_before: datetime.datetime | None = None,
          not_after: datetime.datetime | None = None) -> Issued:
    """A certificate signed by ``ca`` for ``common_name`` (subject ``CN=<common_name>,
    O=<organization>``), written to ``<file_stem>.pem`` and ``<file_stem>-key.pem``.
    ``not_before``/``not_after`` override the validity (tests make expired ones)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # DER order O, CN (the usual: most general first), so the RFC 4514 form that
    # principal mapping rules see is "CN=<name>,O=<organization>"
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False,
            crl_sign=False, content_commitment=False, data_encipherment=False,
            key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_path, key_path = directory / f"{file_stem}.pem", directory / f"{file_stem}-key.pem"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _key_pem(key), private=True)
    return Issued(cert_path, key_path, ca.cert)
