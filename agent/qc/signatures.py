"""Electronic signatures (21 CFR 11.50/11.70/11.200, EU GMP Annex 11 §14).

Signing needs the signer's password at the moment of signing, even inside a logged-in
session: the password is checked against the configured users (salted scrypt, the same hashes
as the console login). A signature shows the printed name, the UTC time and the site's local
time, and its meaning (`performed`, `reviewed`, `approved`, `released`, `rejected`); it is
bound to the record by the SHA-256 of the record's content without signatures
(`record_sha256`). Who may sign what is `[qc.signing]` (roles per meaning). A refused
signature (wrong password, role not allowed, self-approval) raises `SignatureError` and is
written to the audit trail (`asign`, `aauthenticate`, or the caller through `record_refusal`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import structlog

from agent.core.logins import LoginThrottle
from agent.core.passwords import verify_dummy, verify_password
from agent.core.reading import rfc3339
from agent.qc.records import content_hash

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from agent.qc.audit import AuditLog
    from agent.qc.programme import SigningPolicy

log = structlog.get_logger("isoedge.qc.signatures")

_FAILURE_WINDOW_S = 300.0
_FAILURE_LIMIT = 5  # wrong passwords per user per window before signing is locked


class User(Protocol):
    """A configured person (agent.console.settings.WebUser has these fields)."""

    @property
    def name(self) -> str: ...  # noqa: D102
    @property
    def role(self) -> str: ...  # noqa: D102
    @property
    def password_hash(self) -> str | None: ...  # noqa: D102
    @property
    def full_name(self) -> str | None: ...  # noqa: D102


class SignatureError(ValueError):
    """A signature refused; `reason` is one of the `REFUSALS` keys."""

    def __init__(
        self, reason: str, message: str, *, name: str = "", action: str = "", subject: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.name = name
        self.action = action
        self.subject = subject


REFUSALS = ("wrong_password", "unknown_user", "role_not_allowed", "self_approval", "locked")


def _now() -> datetime:
    return datetime.now(UTC)


class SignatureService:
    """Checks a signer's password and role, then makes the signature of a record."""

    def __init__(
        self,
        users: Sequence[User],
        policy: SigningPolicy,
        audit: AuditLog,
        zone: ZoneInfo,
        *,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.users = {u.name: u for u in users}
        self.policy = policy
        self.audit = audit
        self.zone = zone
        self._now = now
        self._throttle = LoginThrottle(
            per_account=_FAILURE_LIMIT, per_address=None, window_s=_FAILURE_WINDOW_S
        )

    def roles_allowed(self, action: str) -> list[str]:
        """Roles that may sign `action` (meaning, `acknowledge_alert`, `review_audit`...)."""
        return list(self.policy.roles_for(action))

    def _refuse(
        self, reason: str, message: str, name: str, action: str, subject: str
    ) -> NoReturn:
        log.warning("signature refused", user=name, action=action, reason=reason)
        raise SignatureError(reason, message, name=name, action=action, subject=subject)

    def record_refusal(self, exc: SignatureError) -> None:
        """Write a refused signature to the audit trail (on the event loop's thread).

        `sign()` and `authenticate()` run in worker threads (scrypt) and only raise; the
        caller records the refusal, so the live view is told on its own thread.
        """
        self.audit.record(
            "signature.refused", actor=exc.name or "?", subject=exc.subject, reason=str(exc),
            refusal=exc.reason, action_signed=exc.action,
        )  # fmt: skip

    async def asign(self, record: dict[str, Any], name: str, password: str, meaning: str,
                    **kw: Any) -> dict[str, Any]:  # fmt: skip
        """`sign()` in a worker thread; a refusal is audited here, then re-raised."""
        try:
            return await asyncio.to_thread(
                functools.partial(self.sign, record, name, password, meaning, **kw)
            )
        except SignatureError as exc:
            self.record_refusal(exc)
            raise

    async def aauthenticate(self, name: str, password: str, action: str, subject: str) -> User:
        """`authenticate()` in a worker thread; a refusal is audited here, then re-raised."""
        try:
            return await asyncio.to_thread(self.authenticate, name, password, action, subject)
        except SignatureError as exc:
            self.record_refusal(exc)
            raise

    def authenticate(self, name: str, password: str, action: str, subject: str) -> User:
        """The user, when `password` is theirs and their role may sign `action`.

        Blocking (scrypt, tens of ms): on the event loop use `aauthenticate`. A refusal
        raises SignatureError; recording it is the caller's (`record_refusal`).
        """
        user = self.users.get(name)
        # The failure slot is taken before the (slow) check, under a lock: parallel guesses
        # cannot all be checked before the first failure counts.
        slot = self._throttle.reserve(name, None)
        if slot is None:
            self._refuse(
                "locked", f"too many wrong passwords for {name}; wait a few minutes",
                name, action, subject,
            )  # fmt: skip
        if user is None or user.password_hash is None:
            verify_dummy(password or "")  # as long as a real check
            self._refuse("unknown_user", f"no user {name!r} who can sign", name, action, subject)
        if not verify_password(password or "", user.password_hash):
            self._refuse("wrong_password", "wrong password: not signed", name, action, subject)
        self._throttle.release(slot)
        if user.role not in self.policy.roles_for(action):
            self._refuse(
                "role_not_allowed",
                f"{name} ({user.role}) may not sign {action}; allowed: "
                f"{', '.join(self.policy.roles_for(action))}",
                name, action, subject,
            )  # fmt: skip
        return user

    def sign(
        self,
        record: dict[str, Any],
        name: str,
        password: str,
        meaning: str,
        *,
        forbid_signers: Sequence[str] = (),
        action: str | None = None,
        subject: str | None = None,
        digest: Callable[[dict[str, Any]], str] = content_hash,
    ) -> dict[str, Any]:
        """Authenticate and return the signature of `record` (its content hash, now).

        `forbid_signers`: names that may not sign this (the performer of a record may not
        approve it). `action`: whose roles apply (default: the meaning's). `subject`: what the
        audit trail names on a refusal (default `qc/{id}`); `digest`: the record kind's
        content hash. The signature is not added to the record: the caller does that.
        """
        subject = subject or f"qc/{record.get('id')}"
        user = self.authenticate(name, password, action or meaning, subject)
        if name in forbid_signers:
            self._refuse(
                "self_approval",
                f"{name} signed this record already; a second person must sign it ({meaning})",
                name, meaning, subject,
            )  # fmt: skip
        t = self._now()
        return {
            "name": user.full_name or user.name,
            "user": user.name,
            "role": user.role,
            "meaning": meaning,
            "t": rfc3339(t),
            "t_local": t.astimezone(self.zone).isoformat(timespec="seconds"),
            "timezone": str(self.zone),
            "record_sha256": digest(record),
        }


__all__ = ["REFUSALS", "SignatureError", "SignatureService", "User"]
