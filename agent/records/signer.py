"""The one place where records are signed (21 CFR 11.50/11.70/11.200, EU GMP Annex 11 §14).

`RecordSigner.sign()` asks for the signer's password at the moment of signing (in a worker
thread: scrypt), checks that the signer's role may sign with that meaning (`[records.signing]`),
refuses a signer the caller names as excluded (segregation of duties: whoever performed a batch
does not release it), binds the signature to the record's content (`record_sha256`, base64url),
and commits the record, its `qc` stream item and the audit record of the signature in one
transaction; listeners hear of them after the commit. A refusal is written to the audit trail.

It is the records' door to the one signed-action service, `agent.qc.signed_records.
SignedActions` (the same users, password hashes, lock-out, refusal audit and `qc.record.signed`
audit action as QC test records), with the roles of `[records.signing]` and the base64url
content hash of the agreed record shapes; the record kinds only ever call this class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.qc.signatures import SignatureError, SignatureService
from agent.qc.signed_records import SignedActions, Signer
from agent.records.kinds import MEANINGS, RecordError, kind_of, record_sha256

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from agent.qc.audit import AuditLog
    from agent.qc.signatures import User
    from agent.records.config import RecordSigning
    from agent.records.store import RecordStore


def _now() -> datetime:
    return datetime.now(UTC)


class RecordSigner:
    """Signs and stores records of every kind but `test` (the QC desk signs those)."""

    def __init__(
        self,
        users: Sequence[User],
        policy: RecordSigning,
        audit: AuditLog,
        store: RecordStore,
        zone: ZoneInfo,
        *,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.audit = audit
        self.store = store
        self._people = SignatureService(users, policy, audit, zone, now=now)
        self._actions = SignedActions(self._people, audit)

    def roles_allowed(self, action: str) -> list[str]:
        """Roles that may sign `action` (a meaning, or `dispense`)."""
        return self._people.roles_allowed(action)

    async def sign(
        self,
        draft: dict[str, Any],
        name: str,
        password: str,
        meaning: str,
        *,
        action: str | None = None,
        forbid_signers: Sequence[str] = (),
        comment: str = "",
    ) -> dict[str, Any]:
        """Sign `draft` and store it; returns the signed record.

        `action`: whose roles apply (default: the meaning's). Raises SignatureError (refused:
        audited) or RecordError (not a signable record; the id exists already).
        """
        if meaning not in MEANINGS:
            raise RecordError(f"unknown meaning {meaning!r}; one of {', '.join(MEANINGS)}")
        if "signatures" in draft:
            raise RecordError("a record is signed once; a correction is a new record")
        kind = kind_of(draft)
        if kind == "test" or "kind" not in draft:
            raise RecordError("QC test records are signed by the QC desk")
        record = await self._actions.sign(
            draft, Signer(name, password), meaning, store=self.store, kind=kind,
            forbid=forbid_signers, action=action, subject=f"{kind}/{draft['id']}",
            digest=record_sha256,
            details={"corrects": draft.get("corrects"), "comment": comment or None},
        )  # fmt: skip
        self.store.told(record)
        return record

    def refuse(self, exc: SignatureError) -> None:
        """Audit a refusal found outside `sign()` (e.g. a decision the record's state forbids)."""
        self._people.record_refusal(exc)


__all__ = ["RecordSigner", "SignatureError"]
