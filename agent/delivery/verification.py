"""The one verifier of IsoEdge's signed messages, with joserfc, against a key registry.

`isoedge verify`, the agent's replay-request check and the central ingest (envelopes, status
evidence, `ingest verify-stored`) all verify here. The signer (agent/delivery/signing.py) stays
on `cryptography`, the byte-exact producer; the consumers verify with an independent JOSE
implementation, so a bug in one cannot hide in the other. A key's id is computed from its JWK
(RFC 7638); the `kid` of a protected header only selects among registered keys, it is never
trusted, and a key registered for one agent verifies nothing another agent publishes.

The size limits are derived from what the agent's outbox can produce (docs/contract.md §3):
an envelope's items take at most `MAX_ENVELOPE_ITEM_BYTES` of UTF-8 (the outbox cuts envelopes
there) and at most `MAX_ENVELOPE_ITEMS` items (`outbox.batch_max_items`' upper bound), so a
payload is at most `MAX_PAYLOAD_BYTES` and a published JWS at most `MAX_MESSAGE_BYTES`. A
message beyond them did not come from an agent and is refused unread.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, cast

import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from agent.delivery.signing import ALG, b64url_decode, thumbprint

if TYPE_CHECKING:
    from joserfc.errors import JoseError
    from joserfc.jwk import OKPKey

ENVELOPE_TYP = "isoedge+json"
ALGORITHMS = (ALG, "EdDSA")  # RFC 9864 names it Ed25519; older producers say EdDSA (deprecated)

# --- limits, derived from the outbox's cut -------------------------------------------------
MAX_ENVELOPE_ITEM_BYTES = 90_000  # UTF-8 bytes of an envelope's items (outbox and pipeline cut)
MAX_ENVELOPE_ITEMS = 10_000  # items per envelope (`outbox.batch_max_items` is at most this)
SEQ_MAX = 2**53 - 1  # exact in every JSON implementation; fits PostgreSQL bigint
ID_MAX = 64  # characters of a site or agent id (`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
PREV_MAX = 64  # characters of `prev` (base64url SHA-256: 43)
MAX_PROTECTED_B64 = 512  # the protected header as sent (joserfc's own bound)
SIGNATURE_B64 = 86  # an Ed25519 signature (64 bytes) in base64url


def b64url_length(n: int) -> int:
    """Characters of `n` bytes in base64url without padding."""
    return (4 * n + 2) // 3


def _largest_head() -> int:
    """Bytes of the largest envelope head the outbox writes (every member at its bound)."""
    head = {
        "v": 1,
        "site": "s" * ID_MAX,
        "agent": "a" * ID_MAX,
        "stream": "readings",
        "seq": SEQ_MAX,
        "prev": "p" * PREV_MAX,
        "created": "2026-12-31T23:59:59.999999+14:00",
        "items": [],
    }
    return len(orjson.dumps(head))


# Items, one comma between each two of them, the head.
MAX_PAYLOAD_BYTES = MAX_ENVELOPE_ITEM_BYTES + (MAX_ENVELOPE_ITEMS - 1) + _largest_head()
MAX_PAYLOAD_B64 = b64url_length(MAX_PAYLOAD_BYTES)
MAX_MESSAGE_BYTES = (
    len(b'{"protected":"","payload":"","signature":""}')
    + MAX_PROTECTED_B64
    + MAX_PAYLOAD_B64
    + SIGNATURE_B64
)


@functools.cache
def _jose() -> tuple[ModuleType, type[JoseError], type[OKPKey], Any]:
    """joserfc, imported on first use.

    An agent that never verifies (no trusted ingest key, no `isoedge verify`) loads neither
    it nor the algorithms it registers (about 2 MB of the agent's memory).
    """
    from joserfc import jws  # noqa: PLC0415
    from joserfc.errors import JoseError  # noqa: PLC0415
    from joserfc.jwk import OKPKey  # noqa: PLC0415

    registry = jws.JWSRegistry(algorithms=list(ALGORITHMS))
    registry.max_header_length = MAX_PROTECTED_B64
    registry.max_payload_length = MAX_PAYLOAD_B64
    return jws, JoseError, OKPKey, registry


_B64URL = r"^[A-Za-z0-9_-]*$"

Code = Literal[
    "too_large",
    "malformed",
    "unknown_key",
    "foreign_key",
    "bad_signature",
    "bad_header",
    "payload_invalid",
]


class VerificationError(Exception):
    """A message that does not verify: `code` says which check refused it, `reason` in words."""

    def __init__(self, reason: str, *, kid: str | None = None, code: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kid = kid
        self.code = code


class RegistryError(ValueError):
    """A public key file cannot be used (the message names the file and the key)."""


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FlattenedJws(_Model):
    """RFC 7515 §7.2.2: the form every IsoEdge message is signed in."""

    protected: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_PROTECTED_B64, pattern=_B64URL)
    ]
    payload: Annotated[str, StringConstraints(max_length=MAX_PAYLOAD_B64)]
    signature: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=_B64URL)]
    header: dict[str, Any] | None = None


class ProtectedHeader(BaseModel):
    """alg Ed25519 (or EdDSA), kid, typ (docs/contract.md §3)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    alg: Literal["Ed25519", "EdDSA"]
    kid: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_B64URL)]
    typ: str | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"][:4])
    return f"{where}: {err['msg']}"[:200]


def parse_jws(
    body: bytes, *, typ: str | None = ENVELOPE_TYP, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[dict[str, Any], ProtectedHeader]:
    """The JWS object and its typed protected header; `VerificationError` for anything else.

    `typ` None accepts any (or no) `typ`; the caller then checks it.
    """
    if len(body) > max_bytes:
        raise VerificationError(
            f"too large ({len(body)} bytes, at most {max_bytes})", code="too_large"
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise VerificationError("malformed JWS (not JSON)") from None
    if not isinstance(document, dict):
        raise VerificationError("malformed JWS (not an object)")
    try:
        found = FlattenedJws.model_validate(document)
    except ValidationError as exc:
        raise VerificationError(f"malformed JWS ({_first_error(exc)})") from None
    try:
        header_doc = orjson.loads(b64url_decode(found.protected))
    except (ValueError, orjson.JSONDecodeError):
        raise VerificationError("malformed JWS (protected header)") from None
    try:
        header = ProtectedHeader.model_validate(header_doc)
    except ValidationError as exc:
        kid = header_doc.get("kid") if isinstance(header_doc, dict) else None
        if not isinstance(kid, str) or not kid:
            raise VerificationError("no kid in the protected header") from None
        raise VerificationError(
            f"bad protected header ({_first_error(exc)})", code="bad_header", kid=kid[:128]
        ) from None
    if typ is not None and header.typ != typ:
        raise VerificationError(
            f"bad protected header (typ {str(header.typ)[:40]!r}, expected {typ})",
            code="bad_header",
            kid=header.kid,
        )
    return document, header


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    """One public key; `site`/`agent` name its agent when the registry knows it."""

    site: str | None
    agent: str | None
    kid: str
    key: OKPKey


@dataclass(frozen=True, slots=True)
class Signed:
    """A message whose signature holds: protected header, exact payload bytes, the key."""

    header: dict[str, Any]
    payload: bytes
    kid: str
    key: RegisteredKey
    # The flattened JWS's members as received (`protected`, `payload`, `signature`, ...): what
    # the ingest keeps as evidence without parsing the message again.
    members: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified message with its payload parsed as a JSON object."""

    header: dict[str, Any]
    payload: bytes
    document: dict[str, Any]
    kid: str


class KeyRegistry:
    """Public keys by their computed RFC 7638 thumbprint, optionally bound to an agent."""

    def __init__(self, keys: Iterable[Mapping[str, Any] | RegisteredKey] = ()) -> None:
        self._keys: dict[str, RegisteredKey] = {}
        self.agents: list[tuple[str, str]] = []  # (site, agent) of every key bound to one
        for key in keys:
            if isinstance(key, RegisteredKey):
                self._register(key)
            else:
                self.add(key)

    def _register(self, entry: RegisteredKey) -> None:
        self._keys[entry.kid] = entry
        owner = (entry.site, entry.agent)
        if owner[0] is not None and owner[1] is not None and owner not in self.agents:
            self.agents = sorted([*self.agents, (owner[0], owner[1])])

    def add(
        self, jwk: Mapping[str, Any], *, site: str | None = None, agent: str | None = None
    ) -> str:
        """Register one public JWK (of `site`/`agent` when given); returns its computed kid."""
        if (
            jwk.get("kty") != "OKP"
            or jwk.get("crv") != "Ed25519"
            or not isinstance(jwk.get("x"), str)
        ):
            raise ValueError("expected an OKP Ed25519 public JWK (kty OKP, crv Ed25519, x)")
        members = {"kty": "OKP", "crv": "Ed25519", "x": str(jwk["x"])}
        kid = thumbprint(members)
        okp_key = _jose()[2]
        self._register(RegisteredKey(site, agent, kid, okp_key.import_key(cast("Any", members))))
        return kid

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> Self:
        """Keys from JWK files (a single JWK or a JWK Set `{"keys": [...]}`), of no agent."""
        registry = cls()
        for path in paths:
            for jwk in read_jwks(Path(path), str(path)):
                registry.add(jwk)
        return registry

    @classmethod
    def for_agents(
        cls, entries: Iterable[tuple[str, str, Iterable[Path]]], source: str = "config"
    ) -> Self:
        """Keys of named agents: `(site, agent, [JWK files])`; `RegistryError` names the file."""
        registry = cls()
        for i, (site, agent, paths) in enumerate(entries):
            for j, path in enumerate(paths):
                where = f"{source}: agents[{i}].public_keys[{j}] ({path})"
                for jwk in read_jwks(Path(path), where):
                    try:
                        registry.add(jwk, site=site, agent=agent)
                    except (ValueError, _jose()[1]) as exc:
                        raise RegistryError(f"{where}: not an OKP Ed25519 JWK: {exc}") from None
        return registry

    @property
    def kids(self) -> frozenset[str]:
        """Every registered key id."""
        return frozenset(self._keys)

    def kids_of(self, site: str, agent: str) -> list[str]:
        """The key ids registered for one agent."""
        return sorted(k.kid for k in self._keys.values() if (k.site, k.agent) == (site, agent))

    def get(self, kid: str) -> RegisteredKey | None:
        """The registered key with this computed kid."""
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def check_signature(
        self, jws_obj: Mapping[str, Any], kid: str, *, owner: tuple[str, str] | None = None
    ) -> Signed:
        """Verify an already parsed flattened JWS with the key `kid` (of `owner` when given)."""
        entry = self.get(kid)
        if entry is None:
            raise VerificationError("unknown key", kid=kid, code="unknown_key")
        if owner is not None and (entry.site, entry.agent) != owner:
            raise VerificationError(
                f"key registered for {entry.site}/{entry.agent}", kid=kid, code="foreign_key"
            )
        jws, jose_error, _, registry = _jose()
        try:
            result = jws.deserialize_json(cast("Any", dict(jws_obj)), entry.key, registry=registry)
        except jose_error as exc:
            code = "too_large" if "exceeds" in str(exc.error) else "bad_signature"
            raise VerificationError(f"bad signature ({exc.error})", kid=kid, code=code) from None
        except Exception as exc:
            raise VerificationError(f"malformed JWS ({type(exc).__name__})", kid=kid) from None
        return Signed(dict(result.headers()), bytes(result.payload), kid, entry, jws_obj)

    def check(
        self,
        body: bytes,
        *,
        typ: str | None = ENVELOPE_TYP,
        owner: tuple[str, str] | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> Signed:
        """Parse (typed, bounded) and verify one message; `VerificationError` says why not."""
        jws_obj, header = parse_jws(body, typ=typ, max_bytes=max_bytes)
        return self.check_signature(jws_obj, header.kid, owner=owner)

    def verify(
        self, body: bytes, *, typ: str | None = None, max_bytes: int = MAX_MESSAGE_BYTES
    ) -> Verified:
        """`check`, then the payload as a JSON object (`isoedge verify`, replay requests)."""
        signed = self.check(body, typ=typ, max_bytes=max_bytes)
        try:
            document = orjson.loads(signed.payload)
        except orjson.JSONDecodeError as exc:
            raise VerificationError(
                f"payload is not JSON: {exc}", kid=signed.kid, code="payload_invalid"
            ) from None
        if not isinstance(document, dict):
            raise VerificationError(
                "payload is not a JSON object", kid=signed.kid, code="payload_invalid"
            )
        return Verified(signed.header, signed.payload, document, signed.kid)


def read_jwks(path: Path, where: str) -> list[dict[str, Any]]:
    """The JWKs of a JWK or JWK Set file; `RegistryError` says what is wrong with it."""
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
