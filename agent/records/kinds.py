"""Record kinds, their common fields and their content hash (the agreed item shapes).

Every record item has `kind`, `id` (uuid4 hex), `t` (RFC 3339 UTC with microseconds, when
performed), `site`, optional `corrects` (the id of the record it corrects) and `signatures`:
`{"name", "meaning", "t", "record_sha256"}` (more fields allowed: user, role, site time).
`record_sha256` is the base64url (unpadded) SHA-256 of the canonical JSON of the item without
`signatures` (sorted keys, separators `,` `:`, UTF-8 as is). QC test records made before the
kinds existed have no `kind`: they read as `kind: "test"`; test records keep the hex hashes of
CONTRACT §5.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime
from typing import Any, Final, Literal, get_args

from agent.core.messages import Message
from agent.core.reading import rfc3339
from agent.qc.records import canonical_json, content_of

Kind = Literal["test", "elution", "batch", "release", "dispensing", "shipment", "receipt", "waste"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)
Meaning = Literal["performed", "reviewed", "approved", "released", "rejected"]
MEANINGS: Final[tuple[str, ...]] = get_args(Meaning)


class RecordError(ValueError):
    """A record that cannot be made or stored (unsigned, hash mismatch, unknown kind...).

    `message` is the text as data (a code of `agent.core.messages.TEMPLATES` and its
    parameters): the console renders it in the reader's language; `str()` is its English text.
    """

    def __init__(self, message: Message | str) -> None:
        self.message = message if isinstance(message, Message) else Message(message)
        super().__init__(str(self.message))


def new_id() -> str:
    """A record id: uuid4 hex."""
    return uuid.uuid4().hex


def kind_of(item: dict[str, Any]) -> str:
    """The item's kind; QC test records made before kinds existed are `test`."""
    kind = item.get("kind")
    return kind if isinstance(kind, str) else "test"


def record_sha256(item: dict[str, Any]) -> str:
    """base64url (no padding) SHA-256 of the item's canonical JSON without `signatures`."""
    digest = hashlib.sha256(canonical_json(content_of(item))).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _legacy_hex(item: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content_of(item))).hexdigest()


def draft(kind: str, site: str, t: datetime, *, corrects: str | None = None,
          **fields: Any) -> dict[str, Any]:  # fmt: skip
    """The unsigned content of a new record: the common fields, then the kind's own."""
    if kind not in KINDS:
        raise RecordError(f"unknown record kind {kind!r}; one of {', '.join(KINDS)}")
    if t.tzinfo is None:
        raise RecordError("a record's time must be timezone-aware")
    item: dict[str, Any] = {"kind": kind, "id": new_id(), "t": rfc3339(t), "site": site}
    if corrects is not None:
        item["corrects"] = corrects
    for key in fields:
        if key in item or key == "signatures":
            raise RecordError(f"field {key!r} is common to every record")
    item.update(fields)
    return item


def verify(item: dict[str, Any]) -> list[str]:
    """Problems with a record's form and signatures (empty when it is a valid signed record)."""
    problems: list[str] = []
    kind = kind_of(item)
    if kind not in KINDS:
        problems.append(f"unknown kind {kind!r}")
    problems.extend(f"no {key}" for key in ("id", "t") if not isinstance(item.get(key), str)
                    or not item.get(key))  # fmt: skip
    signatures = item.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        return [*problems, "no signature"]
    # QC test records (and their reviews) are bound by the hex hash of CONTRACT §5.
    expected = {record_sha256(item)} if kind != "test" else {record_sha256(item), _legacy_hex(item)}
    for index, signature in enumerate(signatures):
        if not isinstance(signature, dict):
            problems.append(f"signature {index} is not an object")
            continue
        if signature.get("meaning") not in MEANINGS:
            problems.append(f"signature {index}: unknown meaning {signature.get('meaning')!r}")
        if signature.get("record_sha256") not in expected:
            problems.append(f"signature {index} ({signature.get('name')}) does not match content")
    return problems


__all__ = [
    "KINDS",
    "MEANINGS",
    "Kind",
    "Meaning",
    "RecordError",
    "draft",
    "kind_of",
    "new_id",
    "record_sha256",
    "verify",
]
