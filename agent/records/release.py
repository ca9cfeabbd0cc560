"""Release: a qualified person releases or rejects a batch (or an eluate), with an e-signature.

The decision is a `release` record naming the batch record it decides on (id and content hash),
signed with the meaning `released` or `rejected` by a role of `[records.signing] released` /
`rejected` (the qualified person), never by whoever performed the batch record (segregation of
duties). A batch is released only when its record passed; a test still `pending` (sterility)
is allowed only when `[records.release] sterility_pending_allowed`, and the release then cites
the site's procedure. One decision per batch: a different decision is a correction of the
release record (`corrects`), so the history stays. Nothing unreleased can be dispensed
(agent.records.dispensing asks `RecordsDesk.is_released`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from agent.core.messages import Message, msg
from agent.records.kinds import RecordError, record_sha256

if TYPE_CHECKING:
    from agent.records.desk import RecordsDesk

Decision = Literal["released", "rejected"]
SUBJECTS = {"batch": "batch_id", "elution": "eluate_id"}
"""What can be released: record kind -> the field naming the subject."""


class ReleaseError(RecordError):
    """A decision that cannot be taken (`code` says why, for the console and API)."""

    def __init__(self, code: str, message: Message | str) -> None:
        super().__init__(message)
        self.code = code


class ReleaseDesk:
    """The qualified person's decisions."""

    def __init__(self, desk: RecordsDesk) -> None:
        self.desk = desk
        self._lock = asyncio.Lock()  # two decisions on one batch cannot race

    async def subject_record(self, kind: str, subject: str) -> dict[str, Any]:
        """The effective record a decision is about (ReleaseError `unknown` if none)."""
        if kind not in SUBJECTS:
            raise ReleaseError("not_releasable", msg("error.release.not_releasable", kind=kind))
        records = await self.desk.store.current(kind, subject)
        if not records:
            raise ReleaseError("unknown", msg("error.release.unknown", kind=kind, subject=subject))
        return records[-1]

    async def decide(
        self,
        subject: str,
        decision: str,
        *,
        name: str,
        password: str,
        comment: str = "",
        kind: str = "batch",
    ) -> dict[str, Any]:
        """Release or reject `subject`: the signed release record."""
        if decision not in {"released", "rejected"}:
            raise ReleaseError("bad_decision", msg("error.release.bad_decision"))
        async with self._lock:
            first = await self.subject_record(kind, subject)
            earlier = await self.desk.release_of(subject)
            if earlier is not None:
                raise ReleaseError("decided_already", msg(
                    "error.release.rejected_already" if earlier.get("decision") == "rejected"
                    else "error.release.released_already", subject=subject, record=earlier["id"]))
            rules = self.desk.config.release
            pending = list(first.get("pending") or [])
            procedure = None
            if decision == "released":
                if first.get("result") != "pass":
                    raise ReleaseError("failed", msg(
                        "error.release.failed", subject=subject,
                        tests=", ".join(first.get("failed") or [])))
                if pending and not rules.sterility_pending_allowed:
                    raise ReleaseError("pending", msg(
                        "error.release.pending", subject=subject, tests=", ".join(pending)))
                if pending:
                    procedure = rules.sterility_pending_procedure
            field = SUBJECTS[kind]
            draft = self.desk.draft(
                "release", **{field: subject}, record=first["id"],
                record_kind=kind, record_sha256=record_sha256(first),
                product=first.get("product"), nuclide=first.get("nuclide"),
                decision=decision, pending=pending, procedure=procedure,
                expiry=first.get("expiry"), comment=comment or None,
            )  # fmt: skip
            performers = [str(s.get("user") or s.get("name")) for s in first.get("signatures", [])]
            return await self.desk.signer.sign(
                draft, name, password, decision, forbid_signers=performers, comment=comment
            )


__all__ = ["SUBJECTS", "ReleaseDesk", "ReleaseError"]
