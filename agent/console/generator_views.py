"""Console handlers of the generator, waste and shipment records (issue 25).

The elution page starts a guided elution on a generator's calibrator, takes the operator's
go-ahead for each step (the readings then complete it), the typed Al3+ spot test and the
performer's signature (password at the moment of signing, as every signature in the console);
it lists the elution records, the Ge-68 remeasurements due, and starts one. The waste and
shipment calls follow the same pattern. Refused signatures answer 403, refused requests 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from aiohttp import web

from agent.console.auth import Principal, principal_of
from agent.console.i18n import fail
from agent.console.qc_views import (
    Signer,
    _json,
    _signature_refused,
    checked_time,
    json_body,
    number_field,
    text_field,
)
from agent.console.records_views import record_error
from agent.core.messages import Message
from agent.qc.signatures import SignatureError
from agent.records.kinds import RecordError

if TYPE_CHECKING:
    from agent.console.backend import ConsoleBackend
    from agent.records.generators import GeneratorRecords
    from agent.records.guided import GuidedRun

MAX_LIST = 200
MAX_STEP = 10


def _fail(message: str | Message, status: type[web.HTTPException] = web.HTTPBadRequest,
          *, code: str | None = None, **params: Any) -> NoReturn:  # fmt: skip
    fail(message, status, code=code, **params)


def _when(body: dict[str, Any], name: str, *, required: bool = False) -> datetime | None:
    text = text_field(body, name, required=required, limit=64)
    if not text:
        return None
    try:
        return checked_time(datetime.fromisoformat(text), name)
    except ValueError:
        _fail("{field}: expected an ISO 8601 time, e.g. {example}", field=name,
              example="2026-11-22T08:00:00Z")  # fmt: skip


def _optional_number(body: dict[str, Any], name: str) -> float | None:
    return None if body.get(name) in (None, "") else number_field(body, name)


class Confirming(Protocol):
    """A desk whose guided runs wait for the operator's go-ahead."""

    def confirm_step(self, run_id: str, index: int, *, by: str) -> GuidedRun:
        """The go-ahead for step `index` of run `run_id`."""


SignRun = Callable[..., Awaitable[dict[str, Any]]]
"""A desk's signing of one of its runs: (run id, *, name, password) → the signed record."""


def _step(request: web.Request) -> int:
    text = request.match_info["step"]
    if not text.isdigit() or int(text) > MAX_STEP:
        _fail("{field}: expected a number", field="step")
    return int(text)


class GeneratorViews:
    """Handlers of the elution, waste and shipment pages."""

    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend

    @property
    def desks(self) -> GeneratorRecords:
        """The running agent's generator, waste and shipment desks."""
        return self.backend.generator_records

    def _person(self, request: web.Request, action: str = "performed") -> Principal:
        """A signed-in person whose role may sign `action` (403 otherwise)."""
        principal = principal_of(request)
        roles = self.backend.records.desk.signer.roles_allowed(action)
        if not principal.authenticated or principal.role not in roles:
            _fail("your role ({role}) may not do this; needed: {roles}", web.HTTPForbidden,
                  code="role_not_allowed", role=principal.role, roles=", ".join(roles))  # fmt: skip
        return principal

    @staticmethod
    def _run_reply(act: Callable[[], GuidedRun], status: int = 200) -> web.Response:
        """`act()` on a run, answered with the run (409 when the desk refuses)."""
        try:
            run = act()
        except RecordError as exc:
            record_error(exc)
        return _json({"run": run.as_dict()}, status=status)

    @staticmethod
    async def _record_reply(sign: Awaitable[dict[str, Any]]) -> web.Response:
        """A signing, answered with the signed record (403 refused signature, 409 refused)."""
        try:
            record = await sign
        except SignatureError as exc:
            _signature_refused(exc)
        except RecordError as exc:
            record_error(exc)
        return _json({"record": record}, status=201)

    def _confirm(self, request: web.Request, desk: Confirming) -> web.Response:
        """The operator's go-ahead for step {step} of run {run_id} of `desk`."""
        by = self._person(request).name
        return self._run_reply(
            lambda: desk.confirm_step(request.match_info["run_id"], _step(request), by=by)
        )

    async def _sign_run(self, request: web.Request, sign: SignRun) -> web.Response:
        """The performer signs run {run_id} (password in the body)."""
        signer = Signer(self._person(request), await json_body(request))
        return await self._record_reply(
            sign(request.match_info["run_id"], name=signer.name, password=signer.password)
        )

    def _permissions(self, request: web.Request) -> dict[str, bool]:
        principal = principal_of(request)
        signer = self.backend.records.desk.signer
        return {action: principal.authenticated and principal.role in signer.roles_allowed(action)
                for action in ("performed", "approved")}  # fmt: skip

    # ------------------------------------------------------------------ elutions
    async def elutions(self, request: web.Request) -> web.Response:
        """GET /api/elutions: generators, runs, records, remeasurements due."""
        desk = self.desks.elutions
        generators = [
            {"id": g.id, "nuclide": g.nuclide, "calibrator": g.calibrator,
             "canister": g.canister, "supplier": g.supplier, "lot": g.lot}
            for g in desk.generators.values()
        ]  # fmt: skip
        return _json({
            "generators": generators,
            "runs": [r.as_dict() for r in desk.runs()[:MAX_LIST]],
            "records": (await desk.history())[:MAX_LIST],
            "reminders": await desk.reminders(),
            "limits": {"mo99": desk.rules.mo99_limit, "aluminium": desk.rules.aluminium_limit},
            "timezone": str(self.backend.records.desk.zone),
            "permissions": self._permissions(request),
        })  # fmt: skip

    async def start_elution(self, request: web.Request) -> web.Response:
        """POST /api/elutions `{"generator", "volume_ml"?, "elution_time"?}`."""
        principal = self._person(request)
        body = await json_body(request)
        try:
            run = self.desks.elutions.start_elution(
                text_field(body, "generator", required=True, limit=100), by=principal.name,
                volume_ml=_optional_number(body, "volume_ml"),
                elution_time=_when(body, "elution_time"),
            )  # fmt: skip
        except RecordError as exc:
            record_error(exc)
        return _json({"run": run.as_dict()}, status=201)

    async def remeasure(self, request: web.Request) -> web.Response:
        """POST /api/elutions/remeasure `{"record"}`: the Ge-68 remeasurement of an eluate."""
        principal = self._person(request)
        body = await json_body(request)
        try:
            first = await self.backend.records.desk.get(text_field(body, "record", required=True))
        except KeyError:
            _fail("no such record", web.HTTPNotFound)
        try:
            run = self.desks.elutions.start_remeasurement(first, by=principal.name)
        except RecordError as exc:
            record_error(exc)
        return _json({"run": run.as_dict()}, status=201)

    async def elution_run(self, request: web.Request) -> web.Response:
        """GET /api/elutions/runs/{run_id}."""
        try:
            run = self.desks.elutions.run(request.match_info["run_id"])
        except RecordError:
            _fail("no such run", web.HTTPNotFound)
        return _json({"run": run.as_dict()})

    async def confirm_elution_step(self, request: web.Request) -> web.Response:
        """POST /api/elutions/runs/{run_id}/steps/{step}/confirm: the go-ahead."""
        return self._confirm(request, self.desks.elutions)

    async def aluminium(self, request: web.Request) -> web.Response:
        """POST /api/elutions/runs/{run_id}/aluminium `{"colour"}` or `{"concentration_ug_ml"}`."""
        principal = self._person(request)
        body = await json_body(request)
        colour = text_field(body, "colour", limit=10) or None
        if colour not in {None, "lighter", "equal", "darker"}:
            _fail("{field}: expected one of {choices}", field="colour",
                  choices="lighter, equal, darker")  # fmt: skip
        try:
            run = self.desks.elutions.enter_aluminium(
                request.match_info["run_id"], by=principal.name, colour=colour,  # type: ignore[arg-type]
                concentration_ug_ml=_optional_number(body, "concentration_ug_ml"),
            )  # fmt: skip
        except RecordError as exc:
            record_error(exc)
        return _json({"run": run.as_dict()})

    async def sign_elution(self, request: web.Request) -> web.Response:
        """POST /api/elutions/runs/{run_id}/sign `{"password"}`: the performer signs."""
        return await self._sign_run(request, self.desks.elutions.sign)

    async def cancel_elution(self, request: web.Request) -> web.Response:
        """POST /api/elutions/runs/{run_id}/cancel `{"reason"}`."""
        principal = self._person(request)
        reason = text_field(await json_body(request), "reason", required=True)
        try:
            run = self.desks.elutions.cancel(request.match_info["run_id"], by=principal.name,
                                             reason=reason)  # fmt: skip
        except RecordError as exc:
            record_error(exc)
        return _json({"run": run.as_dict()})

    # ------------------------------------------------------------------ waste
    async def waste(self, request: web.Request) -> web.Response:
        """GET /api/waste: containers with their latest survey, surveys of this session."""
        desk = self.desks.waste
        return _json({
            "containers": (await desk.containers())[:MAX_LIST],
            "runs": [r.as_dict() for r in desk.runs()[:MAX_LIST]],
            "monitor": None if desk.rules.monitor is None else desk.rules.monitor.model_dump(),
            "timezone": str(self.backend.records.desk.zone),
            "permissions": self._permissions(request),
        })  # fmt: skip

    async def log_container(self, request: web.Request) -> web.Response:
        """POST /api/waste/containers `{"container_id", "nuclides", "sealed_at", "password"}`."""
        body = await json_body(request)
        signer = Signer(self._person(request), body)
        nuclides = body.get("nuclides")
        if isinstance(nuclides, str):
            nuclides = [n.strip() for n in nuclides.split(",") if n.strip()]
        if not isinstance(nuclides, list) or not nuclides or not all(
                isinstance(n, str) for n in nuclides):  # fmt: skip
            _fail("{field} is required", code="required", field="nuclides")
        sealed = _when(body, "sealed_at", required=True)
        assert sealed is not None  # noqa: S101 - required above
        try:
            record = await self.desks.waste.log_container(
                text_field(body, "container_id", required=True, limit=100), nuclides, sealed,
                name=signer.name, password=signer.password,
                location=text_field(body, "location", limit=200),
            )  # fmt: skip
        except SignatureError as exc:
            _signature_refused(exc)
        except RecordError as exc:
            record_error(exc)
        return _json({"record": record}, status=201)

    async def start_survey(self, request: web.Request) -> web.Response:
        """POST /api/waste/surveys `{"container_id"}`."""
        principal = self._person(request)
        body = await json_body(request)
        try:
            run = await self.desks.waste.start_survey(
                text_field(body, "container_id", required=True, limit=100), by=principal.name
            )
        except RecordError as exc:
            record_error(exc)
        return _json({"run": run.as_dict()}, status=201)

    async def confirm_survey_step(self, request: web.Request) -> web.Response:
        """POST /api/waste/surveys/{run_id}/steps/{step}/confirm."""
        return self._confirm(request, self.desks.waste)

    async def sign_survey(self, request: web.Request) -> web.Response:
        """POST /api/waste/surveys/{run_id}/sign `{"password"}`."""
        return await self._sign_run(request, self.desks.waste.sign_survey)

    # ------------------------------------------------------------------ shipments
    async def shipments(self, request: web.Request) -> web.Response:
        """GET /api/shipments: shipments sent, receipts, receipts being assayed."""
        records = self.backend.records.desk
        return _json({
            "shipments": await records.listing("shipment", limit=MAX_LIST),
            "receipts": await records.listing("receipt", limit=MAX_LIST),
            "runs": [r.as_dict() for r in self.desks.shipments.runs()[:MAX_LIST]],
            "calibrators": sorted({d for d, _ in self.desks.shipments.calibrators}),
            "timezone": str(records.zone),
            "permissions": self._permissions(request),
        })  # fmt: skip

    async def sign_shipment(self, request: web.Request) -> web.Response:
        """POST /api/shipments: the sender approves a shipment (password in the body)."""
        body = await json_body(request)
        signer = Signer(self._person(request, "approved"), body)
        reference = _when(body, "reference_time", required=True)
        assert reference is not None  # noqa: S101 - required above
        try:
            record = await self.desks.shipments.sign_shipment(
                batch_id=text_field(body, "batch_id", required=True, limit=100),
                product=text_field(body, "product", required=True, limit=100),
                nuclide=text_field(body, "nuclide", required=True, limit=20),
                activity_mbq=number_field(body, "activity_mbq"), reference_time=reference,
                destination_site=text_field(body, "destination_site", required=True, limit=100),
                volume_ml=_optional_number(body, "volume_ml"),
                shipment_id=text_field(body, "shipment_id", limit=100) or None,
                name=signer.name, password=signer.password,
            )  # fmt: skip
        except SignatureError as exc:
            _signature_refused(exc)
        except RecordError as exc:
            record_error(exc)
        return _json({"record": record}, status=201)

    async def start_receipt(self, request: web.Request) -> web.Response:
        """POST /api/receipts: assay a delivery (the shipment's papers typed)."""
        principal = self._person(request)
        body = await json_body(request)
        reference = _when(body, "reference_time", required=True)
        assert reference is not None  # noqa: S101 - required above
        try:
            run = self.desks.shipments.start_receipt(
                shipment_id=text_field(body, "shipment_id", required=True, limit=100),
                origin_site=text_field(body, "origin_site", required=True, limit=100),
                batch_id=text_field(body, "batch_id", limit=100),
                nuclide=text_field(body, "nuclide", required=True, limit=20),
                activity_mbq=number_field(body, "activity_mbq"), reference_time=reference,
                device=text_field(body, "device", required=True, limit=100),
                by=principal.name,
            )  # fmt: skip
        except RecordError as exc:
            record_error(exc)
        return _json({"run": run.as_dict()}, status=201)

    async def confirm_receipt_step(self, request: web.Request) -> web.Response:
        """POST /api/receipts/{run_id}/steps/{step}/confirm."""
        return self._confirm(request, self.desks.shipments)

    async def sign_receipt(self, request: web.Request) -> web.Response:
        """POST /api/receipts/{run_id}/sign `{"password"}`."""
        return await self._sign_run(request, self.desks.shipments.sign_receipt)


def add_routes(app: web.Application, views: GeneratorViews) -> None:
    """The generator, waste and shipment routes."""
    r = app.router
    r.add_get("/api/elutions", views.elutions)
    r.add_post("/api/elutions", views.start_elution)
    r.add_post("/api/elutions/remeasure", views.remeasure)
    r.add_get("/api/elutions/runs/{run_id}", views.elution_run)
    r.add_post("/api/elutions/runs/{run_id}/steps/{step}/confirm", views.confirm_elution_step)
    r.add_post("/api/elutions/runs/{run_id}/aluminium", views.aluminium)
    r.add_post("/api/elutions/runs/{run_id}/sign", views.sign_elution)
    r.add_post("/api/elutions/runs/{run_id}/cancel", views.cancel_elution)
    r.add_get("/api/waste", views.waste)
    r.add_post("/api/waste/containers", views.log_container)
    r.add_post("/api/waste/surveys", views.start_survey)
    r.add_post("/api/waste/surveys/{run_id}/steps/{step}/confirm", views.confirm_survey_step)
    r.add_post("/api/waste/surveys/{run_id}/sign", views.sign_survey)
    r.add_get("/api/shipments", views.shipments)
    r.add_post("/api/shipments", views.sign_shipment)
    r.add_post("/api/receipts", views.start_receipt)
    r.add_post("/api/receipts/{run_id}/steps/{step}/confirm", views.confirm_receipt_step)
    r.add_post("/api/receipts/{run_id}/sign", views.sign_receipt)


__all__ = ["GeneratorViews", "add_routes"]
