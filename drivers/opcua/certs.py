"""The agent's OPC UA client certificate and key (`isoedge opcua-cert`), made with cryptography.

A server checks that the client certificate carries the application URI the client states;
the agent states `urn:isoedge:agent:<device id>` (`drivers.opcua.driver.application_uri`), so
the certificate is made per device, with that URI in its subjectAltName.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_BITS = 2048  # Basic256Sha256 allows 2048-4096 bit RSA keys
_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=True,
    data_encipherment=True,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def make_client_certificate(
    directory: Path,
    uri: str,
    *,
    name: str = "isoedge-opcua-client",
    days: int = 730,
    hostname: str | None = None,
) -> tuple[Path, Path]:
    """Write `<name>.der` (certificate) and `<name>.pem` (key, mode 0600); return both paths.

    Self-signed RSA 2048 / SHA-256, subjectAltName = the application URI and the host name,
    key usages as OPC UA Part 6 asks of an application instance certificate.
    """
    host = hostname or socket.gethostname()
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"IsoEdge agent {host}"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "IsoEdge"),
    ])  # fmt: skip
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri), x509.DNSName(host)]
    with contextlib.suppress(ValueError):  # a host name, not an address
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def certificate_uri(path: Path) -> str | None:
    """The application URI in a certificate's subjectAltName (DER or PEM), or None."""
    data = path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if data.startswith(b"-----")
        else x509.load_der_x509_certificate(data)
    )
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
