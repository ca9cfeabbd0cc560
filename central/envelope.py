"""Key registry and envelope verification with joserfc (CONTRACT.md §3).

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

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from central.config import AgentKeys

ALGORITHMS = ["Ed25519", "EdDSA"]  # RFC 9864 name; the deprecated one is still accepted
_REGISTRY = jws.JWSRegistry(algorithms=ALGORITHMS)
STREAMS = frozenset({"readings", "alerts", "audit", "qc"})
READING_COLUMNS = ("id", "device", "channel", "t", "value", "unit", "quality", "nuclide", "raw")


class RegistryError(Exception):
    """A public key file of the registry cannot be used (message names file and key)."""


class Rejected(Exception):  # noqa: N818 - a verdict, not an error of ours
    """An envelope that must not be stored as data: unknown key, bad signature, malformed."""

    def __init__(self, reason: str, *, kid: str | None = None) -> None:
        self.reason = reason
        self.kid = kid
        super().__init__(reason)


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
    """base64url (no padding) SHA-256, the form of `prev` (CONTRACT.md §3)."""
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
    body: bytes = b""  # the JWS as received: the evidence kept beside the rows


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


def _parse_jws(body: bytes) -> tuple[dict[str, Any], str]:
    try:
        jws_obj = orjson.loads(body)
        header = orjson.loads(_b64url_decode(jws_obj["protected"]))
        kid = header.get("kid")
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise Rejected("malformed JWS") from None
    if not isinstance(kid, str):
        raise Rejected("no kid in the protected header")
    return jws_obj, kid


def _items_well_formed(items: list[Any], *, readings: bool) -> bool:
    """Every item an object; a reading with the members the tables need, as strings."""
    if not readings:
        return all(isinstance(it, dict) for it in items)
    for it in items:
        if not isinstance(it, dict):
            return False
        try:
            if not (isinstance(it["id"], str) and isinstance(it["device"], str)
                    and isinstance(it["channel"], str) and isinstance(it["t"], str)
                    and isinstance(it["quality"], str)):
                return False
        except KeyError:
            return False
    return True


def _check_payload(seq: Any, items: Any, fields: tuple[Any, ...],
                   route: tuple[str, str, str], kid: str) -> None:
    site, agent, stream = route
    if not isinstance(seq, int) or seq < 1 or not isinstance(items, list):
        raise Rejected("payload seq/items invalid", kid=kid)
    if (fields[0], fields[1]) != (site, agent):
        raise Rejected(f"payload names {fields[0]}/{fields[1]}, topic {site}/{agent}", kid=kid)
    if fields[2] != stream:
        raise Rejected(f"payload stream {fields[2]} on a {stream} topic", kid=kid)
    if not _items_well_formed(items, readings=stream == "readings"):
        raise Rejected("items malformed (CONTRACT §3)", kid=kid)
    if not isinstance(fields[3], str) or not isinstance(fields[4], str):
        raise Rejected("payload prev/created not strings", kid=kid)


def verify(body: bytes, topic: str, *, site: str, agent: str, stream: str,
           registry: KeyRegistry) -> Verified:
    """Verify one envelope received on `topic`; raise `Rejected` with the reason."""
    jws_obj, kid = _parse_jws(body)
    entry = registry.get(kid)
    if entry is None:
        raise Rejected("unknown key", kid=kid)
    if (entry.site, entry.agent) != (site, agent):
        raise Rejected(f"key registered for {entry.site}/{entry.agent}", kid=kid)
    try:
        result = jws.deserialize_json(cast("Any", jws_obj), entry.key, registry=_REGISTRY)
    except JoseError as exc:
        raise Rejected(f"bad signature ({exc.error})", kid=kid) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise Rejected(f"malformed JWS: {exc}", kid=kid) from None
    payload = result.payload
    try:
        doc = orjson.loads(payload)
        seq = doc["seq"]
        fields = (doc["site"], doc["agent"], doc["stream"], doc["prev"], doc["created"])
        items = doc["items"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise Rejected("payload is not an envelope", kid=kid) from None
    _check_payload(seq, items, fields, (site, agent, stream), kid)
    return Verified(site, agent, seq, stream, kid, fields[4], b64url_sha256(payload), fields[3],
                    topic, items, body)
