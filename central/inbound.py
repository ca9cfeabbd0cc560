"""Typed, size-limited parsers of what reaches the ingest (every inbound message is hostile).

The JWS object and its protected header are checked, and the signature verified, by the one
verifier all IsoEdge consumers share (agent/delivery/verification.py, with the limits derived
from the agent's outbox). Here: one parser per envelope topic (`readings`, `alerts`, `audit`,
`qc`) for the signed payload, validated by pydantic in strict mode (no
coercion: a string is never a number, `null` is never an object), with bounds on sizes, counts,
lengths and integer ranges. A parser *rejects* (`Rejected`, with a short `code` for metrics and
a reason for the record) and never raises anything else for any input; the consumer still wraps
each message in a catch-all, so a bug here costs one message, never the process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NotRequired

import orjson
from pydantic import (
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from agent.delivery.verification import (
    MAX_ENVELOPE_ITEMS,
    MAX_MESSAGE_BYTES,
    SEQ_MAX,
    VerificationError,
)

# Short, fixed rejection codes: the label of `isoedge_ingest_rejected_total` and the key of the
# central alert (a reason may name sites and sequence numbers; a code never does).
CODES = (
    "too_large", "malformed", "unknown_source", "unknown_key", "foreign_key", "bad_signature",
    "bad_header", "payload_invalid", "items_malformed", "route_mismatch", "not_storable",
    "internal_error",
)

MAX_DEPTH = 32  # nesting of an item's values (raw lines, extra members)

_B64URL = r"^[A-Za-z0-9_-]*$"


# One verdict for every refusal: the shared verifier's (agent/delivery/verification.py).
Rejected = VerificationError


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one envelope (`[inbound]` of the ingest configuration)."""

    max_envelope_bytes: int = MAX_MESSAGE_BYTES
    max_items: int = MAX_ENVELOPE_ITEMS
    created_future_s: float = 600.0
    created_past_s: float = 400 * 86400.0


DEFAULT_LIMITS = Limits()

Text = Annotated[str, StringConstraints(max_length=256)]
IdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
def _text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("a time must be RFC 3339 text")  # noqa: TRY004 - pydantic wants this
    return value


# A time: RFC 3339 text with a zone, parsed by pydantic-core (lax mode parses text; numbers,
# which it would take as Unix times, are refused before).
Time = Annotated[AwareDatetime, Strict(strict=False), BeforeValidator(_text_only)]


# The payload parsers are TypedDicts validated by pydantic in strict JSON mode: the same
# checks as models without building an object per item (a batch holds up to 10 000). A NUL is
# looked for once in the payload bytes (`\u0000`), not by a pattern on every string.
_STRICT = ConfigDict(strict=True, extra="ignore")


class ReadingItem(TypedDict):
    """A reading (docs/contract.md §3): the members the tables need, typed."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    device: Text
    channel: Text
    t: Time
    # docs/contract.md §3: a number, a boolean or a short text; anything else the record keeps in
    # `extra` (central/store.py), so it is not refused here.
    value: NotRequired[float | bool | Annotated[str, StringConstraints(max_length=4096)]
                       | dict[str, Any] | list[Any] | None]
    unit: NotRequired[Text | None]
    quality: Literal["good", "uncertain", "bad"]
    nuclide: NotRequired[Text | None]


class EventItem(TypedDict):
    """An alert or audit item: an object; `id` and `t`, where present, typed."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: NotRequired[Annotated[str, StringConstraints(min_length=1, max_length=256)] | None]
    t: NotRequired[Time | None]


class QcItem(EventItem):
    """A QC record: the members the fleet page's release states read, typed where present."""

    device: NotRequired[Text | None]
    test: NotRequired[Text | None]
    result: NotRequired[Text | None]


class _Head(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    v: Literal[1]
    site: IdText
    agent: IdText
    seq: Annotated[int, Field(ge=1, le=SEQ_MAX)]
    prev: Annotated[str, StringConstraints(max_length=64, pattern=_B64URL)]
    created: Time
    stream: Literal["readings", "alerts", "audit", "qc"]


class ReadingsPayload(_Head):
    """Payload of `…/readings/{device}`."""

    items: list[ReadingItem]


class AlertsPayload(_Head):
    """Payload of `…/alerts`."""

    items: list[EventItem]


class AuditPayload(_Head):
    """Payload of `…/audit`."""

    items: list[EventItem]


class QcPayload(_Head):
    """Payload of `…/qc`."""

    items: list[QcItem]


PARSERS: dict[str, TypeAdapter[Any]] = {
    "readings": TypeAdapter(ReadingsPayload), "alerts": TypeAdapter(AlertsPayload),
    "audit": TypeAdapter(AuditPayload), "qc": TypeAdapter(QcPayload),
}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"][:4])
    return f"{where}: {err['msg']}"[:200]


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
    """The signed payload of an envelope on a `stream` topic, typed; `Rejected` otherwise.

    pydantic validates the JSON bytes directly (strict JSON mode, in Rust: about as fast as
    parsing); the items are stored as the agent sent them, from orjson.
    """
    try:
        doc = orjson.loads(payload)  # (orjson refuses NaN, infinities and invalid UTF-8)
    except orjson.JSONDecodeError:
        raise Rejected("payload is not an envelope (not JSON)", kid=kid,
                       code="payload_invalid") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise Rejected("payload is not an envelope", kid=kid, code="payload_invalid")
    items = doc["items"]
    if len(items) > limits.max_items:
        raise Rejected(f"too many items ({len(items)})", kid=kid, code="too_large")
    if doc.get("stream") != stream:
        raise Rejected(f"payload stream {str(doc.get('stream'))[:20]!r} on a {stream} topic",
                       kid=kid, code="route_mismatch")
    try:
        envelope = PARSERS[stream].validate_python(doc)
    except ValidationError as exc:
        if any(err["loc"][:1] == ("items",) for err in exc.errors()):
            raise Rejected("items malformed (CONTRACT §3)", kid=kid,
                           code="items_malformed") from ValueError(_first_error(exc))
        raise Rejected(f"payload seq/fields invalid ({_first_error(exc)})", kid=kid,
                       code="payload_invalid") from None
    # A NUL in a member the models do not type (raw, extra members): PostgreSQL refuses it.
    if b"\\u0000" in payload and not _clean(items):
        raise Rejected("items malformed (CONTRACT §3)", kid=kid, code="items_malformed") \
            from ValueError("NUL or nesting beyond 32")
    return Payload(envelope["seq"], envelope["site"], envelope["agent"], stream,
                   envelope["prev"], str(doc["created"]), envelope["created"], items)


def created_flag(created_at: datetime, received: float, limits: Limits = DEFAULT_LIMITS,
                 ) -> str | None:
    """Why `created` is implausible against the receive time, or None when it is not."""
    now = datetime.fromtimestamp(received, UTC)
    try:
        if created_at > now + timedelta(seconds=limits.created_future_s):
            return f"created {created_at.isoformat()} is in the future of its receipt"
        if created_at < now - timedelta(seconds=limits.created_past_s):
            return f"created {created_at.isoformat()} is older than the accepted window"
    except OverflowError:
        return f"created {created_at.isoformat()} is out of range"
    return None
