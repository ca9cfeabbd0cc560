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
from agent.console.qc_views import (
    Signer,
    _json,
    _pdf,
    _signature_refused,
    json_body,
    number_field,
    text_field,
)
from agent.core.messages import Message
from agent.records.batch import BatchError
from agent.records.dispensing import DispensingError
from agent.records.kinds import KINDS, RecordError
from agent.records.release import ReleaseError
from agent.records.signer import SignatureError as _SignatureError

if TYPE_CHECKING:
    from agent.console.backend import ConsoleBackend
    from agent.records.desk import RecordsDesk
    from agent.records.service import Records
    from agent.records.signer import SignatureError

log = structlog.get_logger("isoedge.web")

MAX_LIST = 500
RECORD_ACTIONS = ("performed", "released", "rejected", "dispense")


def _fail(message: str | Message, status: type[web.HTTPException] = web.HTTPBadRequest,
          *, code: str | None = None, **params: Any) -> NoReturn:  # fmt: skip
    fail(message, status, code=code, **params)


def refused(exc: SignatureError) -> NoReturn:
    """A refused signature: 403 with its reason."""
    _signature_refused(exc)


def record_error(exc: RecordError) -> NoReturn:
    """A record that cannot be made as asked: 409 with why."""
    _fail(exc.message, web.HTTPConflict, code="record_refused")


class RecordsViews:
    """Handlers of the records pages (the kinds add theirs: batches, release, dispensing)."""

    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend

    @property
    def records(self) -> Records:
        """The records of the running agent."""
        return self.backend.records

    @property
    def desk(self) -> RecordsDesk:
        """The records desk (lists, signer)."""
        return self.backend.records.desk

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
        """GET /api/batches: runs in progress (with release tests), batch records, decisions."""
        signed = await self.desk.batches()
        recorded = {b["record"]["batch_id"] for b in signed}
        # Each run carries its product's release tests: the page's form is built from them.
        runs = [{**r.as_dict(), "nuclide": r.product.nuclide,
                 "tests": [t.model_dump() for t in r.product.tests]}
                for r in self.records.batches.runs()
                if r.batch_id not in recorded and r.state != "aborted"]
        return _json({
            "runs": runs, "batches": signed, "timezone": str(self.desk.zone),
            "permissions": self.permissions(principal_of(request)),
        })  # fmt: skip

    async def start_assay(self, request: web.Request) -> web.Response:
        """POST /api/batches/{batch_id}/assay `{"time_scale"?}`: measure the product vial."""
        self.require(request, "performed")
        body = await json_body(request)
        scale = number_field(body, "time_scale", 1.0)
        try:
            run = self.records.batches.start_assay(request.match_info["batch_id"],
                                                   time_scale=scale)  # fmt: skip
        except BatchError as exc:
            _fail(exc.message, web.HTTPConflict, code="batch_refused")
        return _json({"run": run.as_dict()})

    async def sign_batch(self, request: web.Request) -> web.Response:
        """POST /api/batches/{batch_id}/sign `{"tests": {code: {...}}, "password"}`."""
        principal = self.require(request, "performed")
        body = await json_body(request)
        signer = Signer(principal, body)
        tests = body.get("tests")
        if not isinstance(tests, dict):
            _fail("{field}: expected an object", field="tests")
        try:
            record = await self.records.batches.sign(
                request.match_info["batch_id"], tests, signer.name, signer.password,
                text_field(body, "comment"),
            )  # fmt: skip
        except _SignatureError as exc:
            refused(exc)
        except BatchError as exc:
            _fail(exc.message, web.HTTPConflict, code="batch_refused")
        except RecordError as exc:
            _fail(exc.message, code="tests_invalid")
        log.info("batch record signed", batch=record["batch_id"], user=signer.name, via="web")
        return _json({"record": record})

    async def release_batch(self, request: web.Request) -> web.Response:
        """POST /api/batches/{batch_id}/release `{"decision", "password", "comment"}`."""
        body = await json_body(request)
        decision = text_field(body, "decision", required=True, limit=20)
        if decision not in {"released", "rejected"}:
            _fail("{field}: expected one of {choices}", field="decision",
                  choices="released, rejected")  # fmt: skip
        signer = Signer(self.require(request, decision), body)
        try:
            record = await self.records.release.decide(
                request.match_info["batch_id"], decision, name=signer.name,
                password=signer.password, comment=text_field(body, "comment"),
            )  # fmt: skip
        except _SignatureError as exc:
            refused(exc)
        except ReleaseError as exc:
            status = web.HTTPNotFound if exc.code == "unknown" else web.HTTPConflict
            _fail(exc.message, status, code=exc.code)
        log.info("batch decision signed", batch=record["batch_id"], decision=decision,
                 user=signer.name, via="web")  # fmt: skip
        return _json({"record": record})

    async def dispense(self, request: web.Request) -> web.Response:
        """POST /api/doses: one dose from a released batch (409 `batch_not_released`...).

        Body: `{"batch_id", "prescription_id", "patient_id", "volume_ml", "device", "password"}`
        and optionally `patient_name` (where the site enables it) and `comment`.
        """
        principal = self.require(request, "dispense")
        body = await json_body(request)
        signer = Signer(principal, body)
        name = text_field(body, "patient_name", limit=200) or None
        try:
            record = await self.records.dispensing.dispense(
                text_field(body, "batch_id", required=True, limit=100),
                prescription_id=text_field(body, "prescription_id", required=True, limit=200),
                patient_id=text_field(body, "patient_id", required=True, limit=64),
                patient_name=name, volume_ml=number_field(body, "volume_ml"),
                device=text_field(body, "device", required=True, limit=100),
                name=signer.name, password=signer.password, comment=text_field(body, "comment"),
            )  # fmt: skip
        except _SignatureError as exc:
            refused(exc)
        except DispensingError as exc:
            status = web.HTTPBadRequest if exc.code.startswith("bad_") else web.HTTPConflict
            _fail(exc.message, status, code=exc.code)
        log.info("dose dispensed", batch=record["batch_id"], user=signer.name, via="web")
        return _json({"record": record})

    async def label(self, request: web.Request) -> web.StreamResponse:
        """GET /api/doses/{record_id}/label.pdf: the syringe or vial label."""
        try:
            record = await self.desk.get(request.match_info["record_id"])
        except KeyError:
            _fail("no such record", web.HTTPNotFound)
        if record.get("kind") != "dispensing":
            _fail("no such record", web.HTTPNotFound)
        from agent.records.label import label_pdf  # noqa: PLC0415 - reportlab: when asked

        pdf = await asyncio.to_thread(label_pdf, record, zone=self.desk.zone,
                                      lang=language_of(request))  # fmt: skip
        return _pdf(pdf, f"label-{record['id']}.pdf")

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
        from agent.records.report import records_report  # noqa: PLC0415 - reportlab: when asked

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
    r.add_post("/api/batches/{batch_id}/assay", views.start_assay)
    r.add_post("/api/batches/{batch_id}/sign", views.sign_batch)
    r.add_post("/api/batches/{batch_id}/release", views.release_batch)
    r.add_post("/api/doses", views.dispense)
    r.add_get("/api/doses/{record_id}/label.pdf", views.label)


__all__ = ["RecordsViews", "add_routes", "record_error", "refused"]
