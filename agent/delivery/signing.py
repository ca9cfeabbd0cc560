"""Signing: Ed25519 JWS in flattened JSON serialization (RFC 7515 §7.2.2, RFC 8037, RFC 9864).

The protected header is `{"alg": "Ed25519", "kid": <RFC 7638 thumbprint>, "typ": "isoedge+json"}`.
Any standard JOSE library verifies an envelope with the public JWK alone; this project's own
consumers do so with joserfc (agent/delivery/verification.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG = "Ed25519"
TYP = "isoedge+json"
PRIVATE_KEY_NAME = "signing.key"
PUBLIC_JWK_NAME = "signing.pub.jwk"


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of `b64url`; raises ValueError on malformed input."""
    if not isinstance(text, str):
        raise TypeError("expected a base64url string")
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The OKP public JWK of an Ed25519 key (RFC 8037 §2), with its `kid`."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    return {**jwk, "kid": thumbprint(jwk), "alg": ALG, "use": "sig"}


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an OKP key: required members, sorted, no spaces."""
    members = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def public_key_from_jwk(jwk: dict[str, Any]) -> Ed25519PublicKey:
    """Load an Ed25519 public key from its JWK; ValueError when it is not one."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "x" not in jwk:
        raise ValueError("expected an OKP Ed25519 public JWK (kty OKP, crv Ed25519, x)")
    return Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))


KEY_RECOVERY = (
    "restore the key file from your backup, or create a new key with `isoedge keygen --out DIR`"
    " (the agent then announces the new public key in the audit stream as key.rotated, and the"
    " central key registry needs it)"
)


class KeyFileError(ValueError):
    """The signing key file is missing, unreadable or damaged; the message names the file."""


@dataclass(frozen=True)
class Signer:  # not slotted: functools.cached_property needs an instance __dict__
    """Signs payloads with one private key."""

    private_key: Ed25519PrivateKey
    jwk: dict[str, str]

    @property
    def kid(self) -> str:
        """Key id: the RFC 7638 thumbprint of the public key."""
        return self.jwk["kid"]

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Signer:
        """Wrap an in-memory key."""
        return cls(key, public_jwk(key.public_key()))

    @classmethod
    def load(cls, path: Path) -> Signer:
        """Load a PEM (PKCS#8) Ed25519 private key written by `isoedge keygen`.

        Raises `KeyFileError` naming the file and saying how to recover.
        """
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(
                f"{path}: cannot read the signing key ({exc.strerror}); {KEY_RECOVERY}"
            ) from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            reason = str(exc).split(". See ", 1)[0] or type(exc).__name__
            raise KeyFileError(
                f"{path}: the signing key file is damaged or not a PEM private"
                f" key ({reason}); {KEY_RECOVERY}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 private key; {KEY_RECOVERY}")
        return cls.from_private_key(key)

    def protected_header(self) -> str:
        """The encoded protected header (same for every envelope of this key)."""
        header = {"alg": ALG, "kid": self.kid, "typ": TYP}
        return b64url(json.dumps(header, separators=(",", ":")).encode())

    @functools.cached_property
    def protected(self) -> str:
        """`protected_header()`, encoded once."""
        return self.protected_header()

    def sign(self, payload: bytes) -> dict[str, str]:
        """Flattened JWS JSON object over `payload`."""
        protected = self.protected
        encoded_payload = b64url(payload)
        signing_input = f"{protected}.{encoded_payload}".encode("ascii")
        signature = self.private_key.sign(signing_input)
        return {"protected": protected, "payload": encoded_payload, "signature": b64url(signature)}

    def sign_bytes(self, payload: bytes) -> bytes:
        """The JWS as compact JSON bytes, ready to publish.

        Built by concatenation: base64url text never needs JSON escaping, and envelopes can be
        hundreds of kilobytes, so a JSON encoder's scan of every byte is pure cost here.
        """
        encoded_payload = b64url(payload)
        return jws_bytes(self.protected, encoded_payload, self.signature(encoded_payload))

    def signature(self, encoded_payload: str) -> bytes:
        """The raw Ed25519 signature over this key's protected header and `encoded_payload`."""
        return self.private_key.sign(f"{self.protected}.{encoded_payload}".encode("ascii"))


def jws_bytes(protected: str, encoded_payload: str, signature: bytes) -> bytes:
    """The flattened JWS JSON bytes of `Signer.sign_bytes`, from its parts (byte-identical)."""
    return (
        b'{"protected":"'
        + protected.encode("ascii")
        + b'","payload":"'
        + encoded_payload.encode("ascii")
        + b'","signature":"'
        + b64url(signature).encode("ascii")
        + b'"}'
    )


def generate_key_files(directory: Path, *, overwrite: bool = False) -> Signer:
    """Create `signing.key` (PEM, mode 0600) and `signing.pub.jwk` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / PRIVATE_KEY_NAME
    if key_path.exists() and not overwrite:
        raise FileExistsError(f"{key_path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 from the start: the key must never exist world-readable, even briefly.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    key_path.chmod(0o600)
    signer = Signer.from_private_key(key)
    (directory / PUBLIC_JWK_NAME).write_text(json.dumps(signer.jwk, indent=2) + "\n")
    return signer


def load_public_jwks(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by kid, from JWK files (a single JWK or a JWK Set `{"keys": [...]}`)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        document = json.loads(path.read_text())
        for jwk in document.get("keys", [document]):
            keys[thumbprint(jwk)] = public_key_from_jwk(jwk)
    return keys
