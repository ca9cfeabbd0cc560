"""Key registry and envelope verification with joserfc (docs/contract.md §3).

The kid of every registered key is computed here (RFC 7638 thumbprint of the JWK); the `kid`
member of a JWK file and the `kid` of a protected header only select a candidate key, which
must then verify the signature and belong to the agent named by the topic and the payload.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from central.config import AgentKeys
from central.inbound import (
    DEFAULT_LIMITS,
    Limits,
    Rejected,
    created_flag,
    parse_jws,
    parse_payload,
)

ALGORITHMS = ["Ed25519", "EdDSA"]  # RFC 9864 name; the deprecated one is still accepted
_REGISTRY = jws.JWSRegistry(algorithms=ALGORITHMS)
__all__ = [
    "READING_COLUMNS", "STREAMS", "KeyRegistry", "RegisteredKey", "RegistryError", "Rejected",
    "Verified", "b64url_sha256", "parse_topic", "stream_of", "verify",
]

STREAMS = frozenset({"readings", "alerts", "audit", "qc"})
READING_COLUMNS = ("id", "device", "channel", "t", "value", "unit", "quality", "nuclide", "raw")


class RegistryError(Exception):
    """A public key file of the registry cannot be used (message names file and key)."""


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    """One public key of one agent."""

    site: str
    agent: str
    kid: str
    key: OKPKey


class KeyRegistry:
    """kid → key, for every agent of the configuration; several keys per agent."""

    def __init__(self, keys: list[RegisteredKey]) -> None:
        self._by_kid = {k.kid: k for k in keys}
        self.agents = sorted({(k.site, k.agent) for k in keys})

    @classmethod
    def from_config(cls, agents: list[AgentKeys], source: str = "config") -> KeyRegistry:
        """Load every JWK file; `RegistryError` names `agents[i].public_keys[j]` and the file."""
        keys: list[RegisteredKey] = []
        for i, entry in enumerate(agents):
            for j, path in enumerate(entry.public_keys):
                where = f"{source}: agents[{i}].public_keys[{j}] ({path})"
                for jwk in _read_jwks(path, where):
                    try:
                        key = OKPKey.import_key({m: jwk[m] for m in ("kty", "crv", "x")})
                    except (KeyError, ValueError, JoseError) as exc:
                        raise RegistryError(f"{where}: not an OKP Ed25519 JWK: {exc}") from None
                    if jwk.get("crv") != "Ed25519":
                        raise RegistryError(f"{where}: expected crv Ed25519")
                    keys.append(RegisteredKey(entry.site, entry.agent, key.thumbprint(), key))
        return cls(keys)

    def get(self, kid: str) -> RegisteredKey | None:
        """The registered key with this computed kid."""
        return self._by_kid.get(kid)

    def kids(self, site: str, agent: str) -> list[str]:
        """Computed kids registered for one agent."""
        return sorted(k.kid for k in self._by_kid.values() if (k.site, k.agent) == (site, agent))


def _read_jwks(path: Path, where: str) -> list[dict[str, Any]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise RegistryError(f"{where}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{where}: expected a JWK or a JWK Set object")
    found = document.get("keys", [document])
    if not isinstance(found, list) or not all(isinstance(k, dict) for k in found):
        raise RegistryError(f"{where}: `keys` must be a list of JWK objects")
    return found


def b64url_sha256(data: bytes) -> str:
    """base64url (no padding) SHA-256, the form of `prev` (docs/contract.md §3)."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True)
class Verified:
    """A verified envelope, ready to be stored."""

    site: str
    agent: str
    seq: int
    stream: str
    kid: str
    created: str
    payload_sha256: str
    prev: str
    topic: str
    items: list[dict[str, Any]]
    body: bytes = b""  # the JWS as received: the evidence kept beside the rows (or a conflict's)
    flag: str | None = None  # an implausible `created`: stored, and alerted


def parse_topic(topic: str, prefix: str) -> tuple[str, str, str] | None:
    """(site, agent, rest) of `{prefix}/{site}/{agent}/{rest}`; None for other topics."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/", 2)
    if len(parts) != 3:  # noqa: PLR2004 - site, agent, rest
        return None
    return parts[0], parts[1], parts[2]


def stream_of(rest: str) -> str | None:
    """Stream an envelope topic carries (`readings/{device}`, `alerts`, `audit`, `qc`)."""
    if rest.startswith("readings/") and len(rest) > len("readings/"):
        return "readings"
    if rest in {"alerts", "audit", "qc"}:
        return rest
    return None


def verify(body: bytes, topic: str, *, site: str, agent: str, stream: str,
           registry: KeyRegistry, limits: Limits = DEFAULT_LIMITS,
           received: float | None = None) -> Verified:
    """Verify one envelope received on `topic`; raise `Rejected` (and nothing else) otherwise.

    The typed parsers of central/inbound.py check the JWS object and its protected header
    (`typ` included) before any key is looked up, and the payload after the signature holds.
    """
    jws_obj, header = parse_jws(body, limits)
    kid = header.kid
    entry = registry.get(kid)
    if entry is None:
        raise Rejected("unknown key", kid=kid, code="unknown_key")
    if (entry.site, entry.agent) != (site, agent):
        raise Rejected(f"key registered for {entry.site}/{entry.agent}", kid=kid,
                       code="foreign_key")
    try:
        result = jws.deserialize_json(cast("Any", jws_obj), entry.key, registry=_REGISTRY)
    except JoseError as exc:
        raise Rejected(f"bad signature ({exc.error})", kid=kid, code="bad_signature") from None
    except Exception as exc:
        raise Rejected(f"malformed JWS ({type(exc).__name__})", kid=kid) from None
    payload = result.payload
    doc = parse_payload(stream, payload, kid=kid, limits=limits)
    if (doc.site, doc.agent) != (site, agent):
        raise Rejected(f"payload names {doc.site}/{doc.agent}, topic {site}/{agent}", kid=kid,
                       code="route_mismatch")
    flag = None if received is None else created_flag(doc.created_at, received, limits)
    return Verified(site, agent, doc.seq, stream, kid, doc.created, b64url_sha256(payload),
                    doc.prev, topic, doc.items, body=body, flag=flag)
