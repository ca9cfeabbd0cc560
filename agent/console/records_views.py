"""Console handlers of the radiopharmacy's records (issue 25): lists, one record, its PDF.

Every signature takes the signer's password in the request body at the moment of signing, as
QC signatures do (`qc_views.Signer`); the records' signer checks it and audits a refusal, which
is answered 403 here. Who may do what follows `[records.signing]`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
from aiohttp import web

from agent.console.auth import Principal, principal_of
from agent.console.i18n import fail, language_of
from agent.console.qc_views import _json, _pdf, _signature_refused
from agent.records.kinds import KINDS, RecordError

if TYPE_CHECKING:
    from agent.console.backend import ConsoleBackend
    from agent.records.desk import RecordsDesk
    from agent.records.signer import SignatureError

log = structlog.get_logger("isoedge.web")

MAX_LIST = 500
RECORD_ACTIONS = ("performed", "released", "rejected", "dispense")


def _fail(message: str, status: type[web.HTTPException] = web.HTTPBadRequest,
          *, code: str | None = None, **params: Any) -> NoReturn:  # fmt: skip
    fail(message, status, code=code, **params)


def refused(exc: SignatureError) -> NoReturn:
    """A refused signature: 403 with its reason."""
    _signature_refused(exc)


def record_error(exc: RecordError) -> NoReturn:
    """A record that cannot be made as asked: 409 with why."""
    _fail(str(exc), web.HTTPConflict, code="record_refused")


class RecordsViews:
    """Handlers of the records pages (the kinds add theirs: batches, release, dispensing)."""

    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend

    @property
    def desk(self) -> RecordsDesk:
        """The records desk of the running agent."""
        return self.backend.records

    def may(self, principal: Principal, action: str) -> bool:
        """True when `principal`'s role may sign `action` of `[records.signing]`."""
        if not principal.authenticated:
            return False  # access control off: nobody can sign
        return principal.role in self.desk.signer.roles_allowed(action)

    def require(self, request: web.Request, action: str) -> Principal:
        """The request's principal, or 403 when its role may not sign `action`."""
        principal = principal_of(request)
        if not self.may(principal, action):
            roles = ", ".join(self.desk.signer.roles_allowed(action))
            _fail("your role ({role}) may not do this; needed: {roles}", web.HTTPForbidden,
                  code="role_not_allowed", role=principal.role, roles=roles)  # fmt: skip
        return principal

    def permissions(self, principal: Principal) -> dict[str, bool]:
        """What the page may offer this person."""
        return {action: self.may(principal, action) for action in RECORD_ACTIONS}

    @staticmethod
    def _kind(request: web.Request) -> str | None:
        kind = request.query.get("kind") or None
        if kind is not None and kind not in KINDS:
            _fail("{field}: expected one of {choices}", field="kind", choices=", ".join(KINDS))
        return kind

    async def list_records(self, request: web.Request) -> web.Response:
        """GET /api/records?kind=&subject=: the newest records (corrected ones left out)."""
        kind = self._kind(request)
        subject = request.query.get("subject") or None
        records = await self.desk.listing(kind, subject=subject, limit=MAX_LIST)
        return _json({
            "records": records, "timezone": str(self.desk.zone),
            "permissions": self.permissions(principal_of(request)),
        })  # fmt: skip

    async def batches(self, request: web.Request) -> web.Response:
        """GET /api/batches: batch records, newest first, with their release decisions."""
        return _json({
            "batches": await self.desk.batches(), "timezone": str(self.desk.zone),
            "permissions": self.permissions(principal_of(request)),
        })  # fmt: skip

    async def get_record(self, request: web.Request) -> web.Response:
        """GET /api/records/{record_id}: one record of any kind."""
        try:
            record = await self.desk.get(request.match_info["record_id"])
        except KeyError:
            _fail("no such record", web.HTTPNotFound)
        return _json({"record": record})

    async def report(self, request: web.Request) -> web.StreamResponse:
        """GET /api/records/report.pdf?kind=&subject=&id=: the records' PDF."""
        kind = self._kind(request)
        record_id = request.query.get("id") or None
        if record_id is not None:
            try:
                records = [await self.desk.get(record_id)]
            except KeyError:
                _fail("no such record", web.HTTPNotFound)
            kind = str(records[0].get("kind", "test"))
        else:
            if kind is None:
                _fail("{field} is required", code="required", field="kind")
            subject = request.query.get("subject") or None
            records = list(reversed(await self.desk.listing(kind, subject=subject, limit=MAX_LIST)))
        from agent.records.pdf import records_report  # noqa: PLC0415 - reportlab: when asked

        pdf = await asyncio.to_thread(
            records_report, records, kind, site=self.backend.identity.site, zone=self.desk.zone,
            lang=language_of(request),
        )  # fmt: skip
        return _pdf(pdf, f"{kind}-{record_id or 'records'}.pdf")


def add_routes(app: web.Application, views: RecordsViews) -> None:
    """The records routes."""
    r = app.router
    r.add_get("/api/records", views.list_records)
    r.add_get("/api/records/report.pdf", views.report)
    r.add_get("/api/records/{record_id}", views.get_record)
    r.add_get("/api/batches", views.batches)


__all__ = ["RecordsViews", "add_routes", "record_error", "refused"]
