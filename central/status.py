"""The agents' retained status at the ingest: typed, and evidence only when signed.

A status is accepted only from a registered agent, only as a `StatusDocument` (pydantic, at
most 64 KiB), and what the ingest acts on (`archive`, `unsent_from`, `last_seq`,
`calibrators`) is taken only from its `evidence`: a JWS of one of that agent's registered keys
with `typ` `isoedge-status+json` naming the same site and agent (agent/delivery/evidence.py).
An unsigned or forged status is stored for display (online/offline, devices) with
`evidence.verified` false and none of those members; the store keeps the last verified evidence
(central/store.py), so it never regresses to an unsigned claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from agent.delivery.evidence import MAX_STATUS_BYTES, STATUS_TYP, Evidence, StatusDocument
from agent.delivery.verification import VerificationError
from central.envelope import KeyRegistry


@dataclass(frozen=True, slots=True)
class StatusVerdict:
    """What to store (`body` None: ignored, `reason` says why)."""

    online: bool
    body: str | None
    reason: str


def _b64url_json(text: str) -> Any:
    import base64  # noqa: PLC0415 - only here

    return orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _verify_evidence(  # noqa: PLR0911 - one return per reason it is not evidence
        doc: StatusDocument, site: str, agent: str,
                     registry: KeyRegistry) -> Evidence | str:
    """The verified evidence, or why there is none."""
    if doc.evidence is None:
        return "unsigned"
    try:
        header = _b64url_json(doc.evidence.protected)
    except (ValueError, orjson.JSONDecodeError):
        return "malformed evidence"
    if not isinstance(header, dict) or header.get("typ") != STATUS_TYP:
        return "evidence typ is not " + STATUS_TYP
    kid = header.get("kid")
    if not isinstance(kid, str) or registry.get(kid) is None:
        return "evidence key not registered for this agent"
    try:
        signed = registry.check_signature(doc.evidence.model_dump(), kid, owner=(site, agent))
    except VerificationError as exc:
        if exc.code == "foreign_key":
            return "evidence key not registered for this agent"
        return "evidence signature invalid"
    try:
        evidence = Evidence.model_validate_json(signed.payload)
    except (ValidationError, ValueError, TypeError, KeyError):
        return "evidence payload invalid"
    if (evidence.site, evidence.agent) != (site, agent):
        return "evidence names another agent"
    return evidence


def parse_status(body: bytes, site: str, agent: str, registry: KeyRegistry) -> StatusVerdict:
    """Decide on one status message; never raises."""
    if (site, agent) not in registry.agents:
        return StatusVerdict(online=False, body=None, reason="unregistered agent")
    if len(body) > MAX_STATUS_BYTES:
        return StatusVerdict(online=False, body=None, reason="status too large")
    try:
        doc = StatusDocument.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[:1]
        where = ".".join(str(p) for p in first[0]["loc"]) if first else ""
        return StatusVerdict(online=False, body=None, reason=f"invalid status {where}".strip())
    try:
        evidence = _verify_evidence(doc, site, agent, registry)
    except Exception as exc:  # a hostile status never stops the decoder: counted instead
        evidence = f"evidence check failed ({type(exc).__name__})"
    stored: dict[str, Any] = doc.model_dump(mode="json", exclude={"evidence"})
    if isinstance(evidence, Evidence):
        stored.update(evidence.model_dump(mode="json", include={
            "archive", "unsent_from", "last_seq", "calibrators"}))
        stored["evidence"] = {"verified": True, "t": evidence.t}
    else:
        stored["evidence"] = {"verified": False, "reason": evidence}
    return StatusVerdict(online=doc.state == "online", body=orjson.dumps(stored).decode(),
                         reason="ok" if isinstance(evidence, Evidence) else evidence)
