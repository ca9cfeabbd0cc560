"""Verifying signed envelopes with joserfc, a standard JOSE library, against a key registry.

The signer (agent/delivery/signing.py) stays on `cryptography`, the byte-exact producer; the
consumers (`isoedge verify`, the central ingest) verify with an independent implementation,
so a bug in one cannot hide in the other. A key's id is computed from its JWK (RFC 7638);
the `kid` in an envelope's header only selects among registered keys, it is never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from agent.delivery.signing import ALG, b64url_decode, thumbprint

# RFC 9864 names the algorithm Ed25519; older producers say EdDSA (deprecated). Both verify.
_REGISTRY = jws.JWSRegistry(algorithms=[ALG, "EdDSA"])
# joserfc refuses payloads over 128 000 bytes by default; a full envelope (batch_max_items
# readings, up to 10 000) is larger: a slow disk or a drained backlog fills batches to the cap.
_REGISTRY.max_payload_length = 16 * 1024 * 1024


class VerificationError(Exception):
    """An envelope is malformed, signed by an unknown key, or its signature is wrong."""

    def __init__(self, message: str, *, kid: str | None = None, reason: str = "invalid") -> None:
        super().__init__(message)
        self.kid = kid
        self.reason = reason  # "malformed" | "unknown_key" | "bad_signature" | "invalid"


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified envelope: its protected header, exact payload bytes and parsed payload."""

    header: dict[str, Any]
    payload: bytes
    document: dict[str, Any]
    kid: str


class KeyRegistry:
    """Public keys by their computed RFC 7638 thumbprint."""

    def __init__(self, jwks: Iterable[Mapping[str, Any]] = ()) -> None:
        self._keys: dict[str, OKPKey] = {}
        for jwk in jwks:
            self.add(jwk)

    def add(self, jwk: Mapping[str, Any]) -> str:
        """Register one public JWK; returns its computed kid."""
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "x" not in jwk:
            raise ValueError("expected an OKP Ed25519 public JWK (kty OKP, crv Ed25519, x)")
        members: dict[str, str | list[str]] = {"kty": "OKP", "crv": "Ed25519", "x": str(jwk["x"])}
        kid = thumbprint({"kty": "OKP", "crv": "Ed25519", "x": str(jwk["x"])})
        self._keys[kid] = OKPKey.import_key(members)
        return kid

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> KeyRegistry:
        """Keys from JWK files (a single JWK or a JWK Set `{"keys": [...]}`)."""
        registry = cls()
        for path in paths:
            document = json.loads(Path(path).read_text())
            for jwk in document.get("keys", [document]):
                registry.add(jwk)
        return registry

    @property
    def kids(self) -> frozenset[str]:
        """Every registered key id."""
        return frozenset(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def verify(self, body: bytes) -> Verified:
        """Check one flattened-JSON JWS; `VerificationError` says why it is refused."""
        try:
            envelope = json.loads(body)
            header = json.loads(b64url_decode(envelope["protected"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"malformed JWS: {exc}", reason="malformed") from None
        if not isinstance(header, dict):
            raise VerificationError("malformed JWS: protected header is not an object",
                                    reason="malformed")
        kid = str(header.get("kid"))
        key = self._keys.get(kid)
        if key is None:
            raise VerificationError(f"unknown kid {kid!r}", kid=kid, reason="unknown_key")
        try:
            result = jws.deserialize_json(envelope, key, registry=_REGISTRY)
        except JoseError as exc:
            raise VerificationError(f"bad signature: {exc.error}", kid=kid,
                                    reason="bad_signature") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"malformed JWS: {exc}", kid=kid, reason="malformed") from None
        payload = bytes(result.payload)
        try:
            document = json.loads(payload)
        except ValueError as exc:
            raise VerificationError(f"payload is not JSON: {exc}", kid=kid,
                                    reason="malformed") from None
        if not isinstance(document, dict):
            raise VerificationError("payload is not a JSON object", kid=kid, reason="malformed")
        return Verified(dict(result.headers()), payload, document, kid)
