"""The records desk: what the runtime, the console and the CLI use of the records.

It owns the record store and the one signer, and lists, reads and corrects records of every
kind. The kinds' own modules (batch, release, dispensing, elution...) build drafts from the
instruments' readings and sign them through `signer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.messages import msg
from agent.records.guided import utc_now
from agent.records.kinds import KINDS, RecordError, draft, kind_of
from agent.records.signer import RecordSigner
from agent.records.store import RecordStore, effective

if TYPE_CHECKING:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from agent.qc.audit import AuditLog, Emit
    from agent.qc.signatures import User
    from agent.records.config import RecordsSection
    from agent.state.writer import StateWriter

log = structlog.get_logger("isoedge.records")

_CORRECTION_KEEPS = frozenset({"kind", "id", "t", "site", "corrects", "signatures"})


class RecordsDesk:
    """Records of every kind: store, signer, listing, corrections."""

    def __init__(
        self,
        config: RecordsSection,
        *,
        site: str,
        zone: ZoneInfo,
        state: StateWriter,
        audit: AuditLog,
        users: Sequence[User],
        notify: Emit | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.site = site
        self.zone = zone
        self.audit = audit
        self.now = now
        self.store = RecordStore(state, notify=notify)
        self.signer = RecordSigner(users, config.signing, audit, self.store, zone, now=now)
        self._corrections = asyncio.Lock()  # two corrections of one record cannot race

    async def open(self) -> None:
        """Create the records table (and its triggers) if missing."""
        await self.store.open()

    def draft(self, kind: str, *, corrects: str | None = None, **fields: Any) -> dict[str, Any]:
        """An unsigned record of this site, performed now."""
        return draft(kind, self.site, self.now(), corrects=corrects, **fields)

    async def listing(
        self, kind: str | None = None, *, subject: str | None = None, limit: int = 500,
        include_corrected: bool = False,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Records, newest first; corrected ones left out unless asked for."""
        if kind is not None and kind not in KINDS:
            raise RecordError(msg("error.records.unknown_kind", kind=kind))
        records = await self.store.query(kind=kind, subject=subject, limit=100_000)
        if not include_corrected:
            records = effective(records)
        return list(reversed(records))[:limit]

    async def get(self, record_id: str) -> dict[str, Any]:
        """One record of any kind (KeyError if none)."""
        return await self.store.get(record_id)

    async def release_of(self, subject: str) -> dict[str, Any] | None:
        """The latest effective release decision about a batch or eluate (None: undecided)."""
        releases = await self.store.current("release", subject)
        return releases[-1] if releases else None

    async def is_released(self, subject: str) -> bool:
        """True when a qualified person released `subject` and no later decision undid it."""
        release = await self.release_of(subject)
        return release is not None and release.get("decision") == "released"

    async def batches(self, limit: int = 100) -> list[dict[str, Any]]:
        """Batch records, newest first, each with its release decision (None: awaiting)."""
        return [
            {"record": batch, "release": await self.release_of(batch["batch_id"])}
            for batch in await self.listing("batch", limit=limit)
        ]

    async def correct(
        self,
        record_id: str,
        changes: dict[str, Any],
        *,
        name: str,
        password: str,
        meaning: str,
        reason: str,
    ) -> dict[str, Any]:
        """A correction: a new signed record with `corrects` naming the first, and a reason.

        The first record is kept as it is (append-only); lists show the correction instead.
        """
        if not reason.strip():
            raise RecordError(msg("error.correction.reason"))
        async with self._corrections:
            return await self._correct(record_id, changes, name, password, meaning, reason)

    async def _correct(  # noqa: PLR0917
        self, record_id: str, changes: dict[str, Any], name: str, password: str, meaning: str,
        reason: str,
    ) -> dict[str, Any]:  # fmt: skip
        first = await self.store.get(record_id)
        if kind_of(first) == "test":
            raise RecordError(msg("error.correction.test_record"))
        clash = _CORRECTION_KEEPS.intersection(changes)
        if clash:
            raise RecordError(msg("error.correction.keeps", fields=", ".join(sorted(clash))))
        later = await self.store.query(corrects=record_id)
        if later:
            raise RecordError(msg("error.correction.already", record=record_id,
                                  by=str(later[-1]["id"])))
        fields = {k: v for k, v in first.items() if k not in _CORRECTION_KEEPS}
        fields.update(changes)
        fields["correction_reason"] = reason
        new = self.draft(first["kind"], corrects=record_id, **fields)
        return await self.signer.sign(new, name, password, meaning, comment=reason)


__all__ = ["RecordsDesk"]
