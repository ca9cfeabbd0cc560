"""Typed, size-limited parsers of what reaches the ingest (every inbound message is hostile).

One parser per envelope topic (`readings`, `alerts`, `audit`, `qc`): the JWS JSON object, its
protected header and the signed payload are validated by pydantic models in strict mode (no
coercion: a string is never a number, `null` is never an object), with bounds on sizes, counts,
lengths and integer ranges. A parser *rejects* (`Rejected`, with a short `code` for metrics and
a reason for the record) and never raises anything else for any input; the consumer still wraps
each message in a catch-all, so a bug here costs one message, never the process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

# Short, fixed rejection codes: the label of `isoedge_ingest_rejected_total` and the key of the
# central alert (a reason may name sites and sequence numbers; a code never does).
CODES = (
    "too_large", "malformed", "unknown_source", "unknown_key", "foreign_key", "bad_signature",
    "bad_header", "payload_invalid", "items_malformed", "route_mismatch", "not_storable",
    "internal_error",
)

SEQ_MAX = 2**53 - 1  # exact in every JSON implementation; fits PostgreSQL bigint
MAX_DEPTH = 32  # nesting of an item's values (raw lines, extra members)
TYP = "isoedge+json"

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
)
_B64URL = r"^[A-Za-z0-9_-]*$"


class Rejected(Exception):  # noqa: N818 - a verdict, not an error of ours
    """A message that must not be stored as data: unknown key, bad signature, malformed."""

    def __init__(self, reason: str, *, kid: str | None = None, code: str = "malformed") -> None:
        self.reason = reason
        self.kid = kid
        self.code = code
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one envelope (`[inbound]` of the ingest configuration)."""

    max_envelope_bytes: int = 16 * 1024 * 1024
    max_items: int = 10_000
    created_future_s: float = 600.0
    created_past_s: float = 400 * 86400.0


DEFAULT_LIMITS = Limits()

Text = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00]*$")]
IdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
B64Url = Annotated[str, StringConstraints(max_length=64 * 1024 * 1024, pattern=_B64URL)]


def _time(text: str) -> datetime:
    """An RFC 3339 time with a zone; ValueError otherwise (PostgreSQL takes every one of these)."""
    if not _RFC3339.match(text):
        raise ValueError("not an RFC 3339 time with a zone")
    head, dot, rest = text.partition(".")
    if dot:  # Python keeps microseconds: cut nanoseconds before parsing
        digits = re.match(r"\d+", rest)
        frac = digits.group(0) if digits else ""
        text = f"{head}.{frac[:6].ljust(6, '0')}{rest[len(frac):]}"
    return datetime.fromisoformat(text)


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FlattenedJws(_Model):
    """RFC 7515 §7.2.2: the form the agents publish (an unprotected `header` is allowed)."""

    protected: Annotated[str, StringConstraints(min_length=1, max_length=4096,
                                                pattern=_B64URL)]
    payload: B64Url
    signature: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=_B64URL)]
    header: dict[str, Any] | None = None


class ProtectedHeader(BaseModel):
    """The protected header of CONTRACT.md §3: alg Ed25519 (or EdDSA), kid, typ isoedge+json."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    alg: Literal["Ed25519", "EdDSA"]
    kid: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_B64URL)]
    typ: str


class ReadingItem(BaseModel):
    """A reading (CONTRACT.md §3): the members the tables need, typed; others kept as `extra`."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]
    device: Text
    channel: Text
    t: Annotated[str, StringConstraints(max_length=40)]
    value: float | int | None = None
    unit: Text | None = None
    quality: Literal["good", "uncertain", "bad"]
    nuclide: Text | None = None


class EventItem(BaseModel):
    """An alert, audit or QC item: an object; `id` and `t`, where present, typed."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=256,
                                         pattern=r"^[^\x00]*$")] | None = None
    t: Annotated[str, StringConstraints(max_length=40)] | None = None


class QcItem(EventItem):
    """A QC record: the members the fleet page's release states read, typed where present."""

    device: Text | None = None
    test: Text | None = None
    result: Text | None = None


class _Payload(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    v: Literal[1]
    site: IdText
    agent: IdText
    seq: Annotated[int, Field(ge=1, le=SEQ_MAX)]
    prev: Annotated[str, StringConstraints(max_length=64, pattern=_B64URL)]
    created: Annotated[str, StringConstraints(max_length=40)]


class ReadingsPayload(_Payload):
    """Payload of `…/readings/{device}`."""

    stream: Literal["readings"]
    items: list[ReadingItem]


class AlertsPayload(_Payload):
    """Payload of `…/alerts`."""

    stream: Literal["alerts"]
    items: list[EventItem]


class AuditPayload(_Payload):
    """Payload of `…/audit`."""

    stream: Literal["audit"]
    items: list[EventItem]


class QcPayload(_Payload):
    """Payload of `…/qc`."""

    stream: Literal["qc"]
    items: list[QcItem]


PARSERS: dict[str, type[_Payload]] = {
    "readings": ReadingsPayload, "alerts": AlertsPayload, "audit": AuditPayload, "qc": QcPayload,
}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"][:4])
    return f"{where}: {err['msg']}"[:200]


def parse_jws(body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any],
                                                                     ProtectedHeader]:
    """The JWS object and its protected header; `Rejected` for anything else."""
    if len(body) > limits.max_envelope_bytes:
        raise Rejected(f"too large ({len(body)} bytes)", code="too_large")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Rejected("malformed JWS (not JSON)") from None
    if not isinstance(document, dict):
        raise Rejected("malformed JWS (not an object)")
    try:
        jws = FlattenedJws.model_validate(document)
    except ValidationError as exc:
        raise Rejected(f"malformed JWS ({_first_error(exc)})") from None
    try:
        header_doc = orjson.loads(b64url_decode(jws.protected))
        header = ProtectedHeader.model_validate(header_doc)
    except ValidationError as exc:  # (a ValueError too: caught first)
        kid = header_doc.get("kid") if isinstance(header_doc, dict) else None
        if not isinstance(kid, str) or not kid:
            raise Rejected("no kid in the protected header") from None
        raise Rejected(f"bad protected header ({_first_error(exc)})", code="bad_header",
                       kid=kid[:128]) from None
    except (ValueError, orjson.JSONDecodeError):
        raise Rejected("malformed JWS (protected header)") from None
    if header.typ != TYP:
        raise Rejected(f"bad protected header (typ {header.typ[:40]!r}, expected {TYP})",
                       code="bad_header", kid=header.kid)
    return document, header


def b64url_decode(text: str) -> bytes:
    """base64url without padding (RFC 7515 §2)."""
    import base64  # noqa: PLC0415 - tiny, and keeps the module's imports about parsing

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _clean(value: Any, depth: int = 0) -> bool:  # noqa: PLR0911 - one return per JSON type
    """No NUL in any string (PostgreSQL text and jsonb refuse it), finite numbers, bounded depth."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, bool | int) or value is None:
        return True
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all("\x00" not in k and _clean(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_clean(v, depth + 1) for v in value)
    return False


@dataclass(frozen=True, slots=True)
class Payload:
    """A validated payload; `items` are the original objects (stored as sent)."""

    seq: int
    site: str
    agent: str
    stream: str
    prev: str
    created: str
    created_at: datetime
    items: list[dict[str, Any]]


def parse_payload(stream: str, payload: bytes, *, kid: str,
                  limits: Limits = DEFAULT_LIMITS) -> Payload:
    """The signed payload of an envelope on a `stream` topic, typed; `Rejected` otherwise."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise Rejected("payload is not an envelope (not JSON)", kid=kid,
                       code="payload_invalid") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise Rejected("payload is not an envelope", kid=kid, code="payload_invalid")
    items = doc["items"]
    if len(items) > limits.max_items:
        raise Rejected(f"too many items ({len(items)})", kid=kid, code="too_large")
    # The envelope fields first, so a wrong seq or stream is named as such, not as an item.
    head = {k: v for k, v in doc.items() if k != "items"}
    try:
        envelope = _Payload.model_validate(head)
    except ValidationError as exc:
        raise Rejected(f"payload seq/fields invalid ({_first_error(exc)})", kid=kid,
                       code="payload_invalid") from None
    if doc.get("stream") != stream:
        raise Rejected(f"payload stream {str(doc.get('stream'))[:20]!r} on a {stream} topic",
                       kid=kid, code="route_mismatch")
    try:
        PARSERS[stream].model_validate(doc)
        created_at = _time(envelope.created)
        for it in items:
            if it.get("t") is not None:
                _time(it["t"])
    except (ValidationError, ValueError, OverflowError) as exc:
        detail = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)[:100]
        raise Rejected("items malformed (CONTRACT §3)", kid=kid, code="items_malformed") \
            from ValueError(detail)
    if not _clean(items):
        raise Rejected("items malformed (CONTRACT §3)", kid=kid, code="items_malformed") \
            from ValueError("NUL, non-finite number or nesting beyond 32")
    return Payload(envelope.seq, envelope.site, envelope.agent, stream, envelope.prev,
                   envelope.created, created_at, items)


def created_flag(created_at: datetime, received: float, limits: Limits = DEFAULT_LIMITS,
                 ) -> str | None:
    """Why `created` is implausible against the receive time, or None when it is not."""
    now = datetime.fromtimestamp(received, UTC)
    if created_at > now + timedelta(seconds=limits.created_future_s):
        return f"created {created_at.isoformat()} is in the future of its receipt"
    if created_at < now - timedelta(seconds=limits.created_past_s):
        return f"created {created_at.isoformat()} is older than the accepted window"
    return None
