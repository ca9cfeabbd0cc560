"""One signed-action service for every record kind (21 CFR 11.50/11.70, EU GMP Annex 11 §14).

A person signs an item (a QC test, a review, an elution, a batch, a release, a dispensing...)
with their password at the moment of signing and a meaning; `SignedActions.sign` checks the
password and the role the meaning needs (`[qc.signing]`), refuses a signer the caller names
as not allowed (segregation of duties: whoever performed a record neither reviews, approves,
releases nor rejects it), makes the signature bound to the item's content hash, and hands the
signed record with the audit record of its signature to the caller's store, which commits both
in ONE transaction (`SignedStore.append`). Listeners hear of the audit record only after that
commit. A refused signature is itself audited.

Each record kind brings its own item and its own store; the service does not know the kinds:

    actions = SignedActions(signatures, audit)
    record = await actions.sign(
        item, Signer(name, password), Meaning.RELEASED, store=batch_store,
        forbid=performers(batch), kind="release", details={"batch": batch["id"]},
    )

Checks that must not race (a record approved once) go inside `async with actions.serial(key)`
together with the `sign` call. `authenticate` is the same password-and-role check for a signed
action that makes no record of its own (an alert acknowledgement).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from agent.qc.records import content_hash

if TYPE_CHECKING:
    from concurrent.futures import Future

    from agent.qc.audit import AuditLog
    from agent.qc.signatures import SignatureService, User

SIGNED_ACTION = "qc.record.signed"  # the audit action of every signature of a record


class Meaning(StrEnum):
    """What a signature means (the signature's `meaning`; `[qc.signing]` names its roles)."""

    PERFORMED = "performed"
    REVIEWED = "reviewed"
    APPROVED = "approved"
    RELEASED = "released"
    REJECTED = "rejected"


class SignedStore(Protocol):
    """Where a record kind keeps its signed records (append-only, e.g. `QCRecordStore`).

    `append` queues the record, its stream item and the audit record of its signature as one
    transaction of the state database and returns what resolves after the commit (a
    `concurrent.futures.Future`, as the state writer's, or an awaitable), or fails (then
    nothing of it is kept). It may refuse an invalid record at once (raising). The store does
    not tell the audit listeners: the service does, after the commit.
    """

    def append(  # noqa: D102
        self, record: dict[str, Any], audit_item: dict[str, Any] | None = None
    ) -> Future[Any] | Awaitable[Any]: ...


@dataclass(frozen=True)
class Signer:
    """Who signs, with the password they typed for this signature (never stored)."""

    name: str
    password: str

    def __repr__(self) -> str:  # the password never reaches a log
        return f"Signer(name={self.name!r})"


def performers(record: Mapping[str, Any]) -> list[str]:
    """The user names that signed `record` (barred from reviewing, approving, releasing it)."""
    return [str(s.get("user") or s.get("name")) for s in record.get("signatures") or ()]


class SignedActions:
    """Signs items for every record kind: password, meaning, segregation of duties, audit."""

    def __init__(self, signatures: SignatureService, audit: AuditLog) -> None:
        self.signatures = signatures
        self.audit = audit
        self._serial: dict[str, asyncio.Lock] = {}

    def serial(self, key: str) -> asyncio.Lock:
        """A lock per `key` (e.g. the record reviewed): its checks and signature run alone."""
        lock = self._serial.get(key)
        if lock is None:
            lock = self._serial[key] = asyncio.Lock()
        return lock

    async def sign(
        self,
        item: dict[str, Any],
        signer: Signer,
        meaning: Meaning | str,
        *,
        store: SignedStore,
        kind: str = "test",
        forbid: Iterable[str] = (),
        action: str | None = None,
        subject: str | None = None,
        digest: Callable[[dict[str, Any]], str] = content_hash,
        details: Mapping[str, Any] | None = None,
        audit_action: str = SIGNED_ACTION,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Sign `item` as `signer` with `meaning`; store it with its audit record; return it.

        `forbid`: user names that may not sign it (segregation of duties); `action`: whose
        roles apply when not the meaning's; `subject`: the audit subject (default
        `qc/{id}`); `digest`: the record kind's content hash; `details`: fields of the audit
        record (device, test, batch...); `audit_action`, `reason`: the audit record's action
        and reason (the signer's comment). The password is checked in a worker thread. Raises
        `SignatureError` (refused, and audited) or what the store raises.
        """
        meaning = Meaning(meaning)
        subject = subject or f"qc/{item.get('id')}"
        signature = await self.signatures.asign(
            item, signer.name, signer.password, meaning.value, forbid_signers=list(forbid),
            action=action, subject=subject, digest=digest,
        )  # fmt: skip
        record = {**item, "signatures": [signature]}
        audit_item = self.audit.entry(
            audit_action, signature["user"], subject,
            new={"result": item.get("result"), "meaning": meaning.value}, reason=reason,
            record_sha256=signature["record_sha256"], record_kind=kind, **(details or {}),
        )  # fmt: skip
        committed = store.append(record, audit_item)
        if isinstance(committed, concurrent.futures.Future):
            await asyncio.wrap_future(committed)
        else:
            await committed
        self.audit.notify(audit_item)
        return record

    async def signature(
        self, item: dict[str, Any], signer: Signer, meaning: Meaning | str, *, action: str,
        subject: str,
    ) -> dict[str, Any]:  # fmt: skip
        """The signature of `item` alone, for a record the caller stores itself.

        An audit-trail review is an entry of the audit trail, not of a record store.
        """
        return await self.signatures.asign(
            item, signer.name, signer.password, Meaning(meaning).value, action=action,
            subject=subject,
        )  # fmt: skip

    async def authenticate(self, signer: Signer, action: str, subject: str) -> User:
        """The password-and-role check of a signed action without a record of its own."""
        return await self.signatures.aauthenticate(signer.name, signer.password, action, subject)


__all__ = ["SIGNED_ACTION", "Meaning", "SignedActions", "SignedStore", "Signer", "performers"]
