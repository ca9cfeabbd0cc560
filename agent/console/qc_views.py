"""Console handlers of the QC programme: tests, signatures, records, charts, reports, orders.

Issue 15: guided tests, electronic signatures, prescriptions and PDF reports in the console.

Every signature (a QC test, a review or approval, an alert acknowledgement, an audit-trail
review) takes the signer's password in the request body at the moment of signing, even inside
a signed-in session; the signer is the signed-in user (with access control off, a typed
configured user name). The password is checked by the QC programme (a worker thread); a
refusal is audited there and answered 403 here with its reason. Who may do what follows the
site's `[qc.signing]` roles.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
from aiohttp import web

from agent.console.auth import Principal, principal_of
from agent.console.i18n import fail, language_of
from agent.core.i18n import N_, format_datetime, parse_decimal
from agent.core.messages import Message, render_reasons
from agent.core.text import text_fault
from agent.physics.units import ACTIVITY_TO_MBQ
from agent.qc.alerts import AlertError, UnknownAlertError
from agent.qc.audit import AuditTextError
from agent.qc.errors import QCError
from agent.qc.plausibility import implausible
from agent.qc.signatures import SignatureError

if TYPE_CHECKING:
    from agent.console.backend import ConsoleBackend, QADesk
    from agent.qc.guided import TestRun

log = structlog.get_logger("isoedge.web")

MAX_TEXT = 2000
MAX_PASSWORD = 1024
MAX_BULK_ACK = 500
MAX_STEP_DIGITS = 3  # a guided test has a handful of steps
REPORT_KINDS = ("daily", "qc", "monthly", "linearity")
# Actions of the signing policy and what the console lets a role start.
ACTIONS = ("performed", "reviewed", "approved", "acknowledge_alert", "review_audit", "prescribe")


def _fail(message: str | Message, status: type[web.HTTPException] = web.HTTPBadRequest,
          *, code: str | None = None, fields: dict[str, Any] | None = None,
          **params: Any) -> NoReturn:  # fmt: skip
    fail(message, status, code=code, fields=fields, **params)


def _dumps(data: object) -> str:
    return json.dumps(data, default=str, allow_nan=False)


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (415 for anything else: also a CSRF guard)."""
    if request.content_type != "application/json":
        _fail("expected application/json", web.HTTPUnsupportedMediaType)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        _fail("expected a JSON object")
    return body


def valid_text(text: str, name: str) -> str:
    """`text` when it is valid UTF-8 without NUL; 400 otherwise.

    A lone surrogate once made the audit record fail after its change had been made.
    """
    fault = text_fault(text)
    if fault == "not utf-8":
        _fail("{field}: not valid UTF-8 text", field=name)
    if fault == "nul":
        _fail("{field}: NUL is not allowed in text", field=name)
    return text


def text_field(body: dict[str, Any], name: str, *, required: bool = False,
               limit: int = MAX_TEXT) -> str:  # fmt: skip
    """A stripped text field of a JSON body (a string, or a number written as text)."""
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
        _fail("{field}: expected text", field=name)
    text = "" if value is None else valid_text(str(value), name).strip()
    if len(text) > limit:
        _fail("{field}: too long (at most {limit} characters)", field=name, limit=limit)
    if required and not text:
        _fail("{field} is required", code="required", field=name)
    return text


def number_field(body: dict[str, Any], name: str, default: float | None = None) -> float:
    """A finite number of a JSON body (400 otherwise: also integers beyond a float)."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail("{field}: expected a number", field=name)
    try:
        number = float(value)
    except OverflowError:
        _fail("{field}: out of range", field=name)
    if not math.isfinite(number):
        _fail("{field}: expected a finite number", field=name)
    return number


# What a person reads for each refusal (in their language); `refusal` keeps the code.
_REFUSAL_TEXTS = {
    "wrong_password": N_("wrong password"),
    "unknown_user": N_("{name}: no such user who can sign"),
    "role_not_allowed": N_("{name} is not allowed to sign this"),
    "self_approval": N_("{name} signed this record already: a second person must sign it"),
    "locked": N_("too many wrong passwords for {name}; wait a few minutes"),
}


def _signature_refused(exc: SignatureError) -> NoReturn:
    text = _REFUSAL_TEXTS.get(exc.reason)
    if text is None:
        _fail(str(exc), web.HTTPForbidden, code="signature_refused",
              fields={"refusal": exc.reason})
    params = {"name": exc.name or "?"} if "{name}" in text else {}
    _fail(text, web.HTTPForbidden, code="signature_refused", fields={"refusal": exc.reason},
          **params)


class Signer:
    """Who signs a request, and with which password (from the JSON body)."""

    def __init__(self, principal: Principal, body: dict[str, Any]) -> None:
        if principal.authenticated:
            typed = text_field(body, "name", limit=200)
            if typed and typed != principal.name:
                _fail("name {name} is not the signed-in user", web.HTTPForbidden, name=repr(typed))
            self.name = principal.name
        else:
            self.name = text_field(body, "name", required=True, limit=200)
        password = body.get("password")
        if not isinstance(password, str) or not password:
            _fail("your password is required to sign (electronic signature)")
        if len(password) > MAX_PASSWORD:
            _fail("password too long")
        self.password = password


def _time(text: str | None, name: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return checked_time(datetime.fromisoformat(text), name)
    except ValueError:
        _fail("{field}: expected an ISO 8601 time, e.g. {example}", field=name,
              example="2026-11-22T08:00:00Z")


MIN_YEAR, MAX_YEAR = 1970, 9998


def checked_time(value: datetime, name: str) -> datetime:
    """`value` (naive: UTC) when it converts to UTC within years MIN_YEAR..MAX_YEAR, else 400.

    `0001-01-01T00:00+14:00` parses but cannot be converted to UTC: once it made a
    prescription that broke /api/prescriptions until a restart.
    """
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not MIN_YEAR <= utc.year <= MAX_YEAR:
        _fail("{field}: a time between {low} and {high} is expected", field=name, low=MIN_YEAR,
              high=MAX_YEAR)
    return value


def constancy_chart(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Constancy deviation per setting over time; bands and 2 sd limits of its own history."""
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    tolerance: dict[str, Any] = {}
    for record in records:
        if record.get("record") != "test" or record.get("test") != "constancy":
            continue
        tolerance = record.get("tolerance") or tolerance
        for step in record.get("steps", []):
            if step.get("deviation_pct") is None or not step.get("setting"):
                continue
            by_setting[step["setting"]].append({
                "t": step.get("measured_at") or record["t"], "deviation_pct": step["deviation_pct"],
                "result": step.get("result"), "record": record["id"],
            })  # fmt: skip
    series = []
    for setting, points in sorted(by_setting.items()):
        values = [float(p["deviation_pct"]) for p in points]
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 2 else None  # noqa: PLR2004
        series.append({
            "setting": setting, "points": points, "mean": mean, "sd": sd,
            "limits_2sd": None if sd is None else [mean - 2 * sd, mean + 2 * sd],
        })  # fmt: skip
    return {
        "action_pct": tolerance.get("action_pct"),
        "fail_pct": tolerance.get("fail_pct"),
        "basis": tolerance.get("basis"),
        "series": series,
    }


def linearity_chart(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest linearity record: activity vs time (for a log axis), fit and residuals."""
    latest = [r for r in records if r.get("record") == "test" and r.get("linearity")]
    if not latest:
        return None
    record = latest[-1]
    lin = record["linearity"]
    return {
        "record": record["id"],
        "t": record["t"],
        "result": record.get("result"),
        "nuclide": lin.get("nuclide"),
        "tolerance": record.get("tolerance"),
        "half_life_fit_h": lin["half_life_fit_s"] / 3600,
        "half_life_table_h": lin["half_life_table_s"] / 3600,
        "half_life_deviation_pct": lin.get("half_life_deviation_pct"),
        "failing_points": lin.get("failing_points", []),
        "points": [
            {
                "elapsed_h": p.get("elapsed_s", 0.0) / 3600,
                "measured_mbq": p["measured_mbq"],
                "fit_mbq": p["fit_mbq"],
                "deviation_pct": p["deviation_pct"],
                "result": p["result"],
            }
            for p in lin["points"]
        ],
    }


class QCViews:
    """Handlers of the QC pages and the prescriptions API."""

    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend

    @property
    def desk(self) -> QADesk:
        """The QC programme."""
        return self.backend.qa_desk

    # ------------------------------------------------------------ permissions
    def may(self, principal: Principal, action: str) -> bool:
        """True when `principal`'s role may do `action` of the signing policy."""
        if not principal.authenticated:
            # Access control off (loopback bench, no users): nobody can sign, so no QC test,
            # review or prescription; an alert is acknowledged with a typed name (unsigned).
            return action == "acknowledge_alert"
        return principal.role in self.desk.signatures.roles_allowed(action)

    def permissions(self, principal: Principal) -> dict[str, bool]:
        """What the page may offer this person."""
        return {action: self.may(principal, action) for action in ACTIONS}

    def _require(self, request: web.Request, action: str) -> Principal:
        principal = principal_of(request)
        if not self.may(principal, action):
            roles = ", ".join(self.desk.signatures.roles_allowed(action))
            _fail("your role ({role}) may not do this; needed: {roles}", web.HTTPForbidden,
                  code="role_not_allowed", role=principal.role, roles=roles)
        return principal

    # ------------------------------------------------------------------ state
    def calibrators(self) -> dict[str, dict[str, Any]]:
        """Release state of every calibrator (header, event stream)."""
        return self.backend.calibrators()

    async def qc_state(self, request: web.Request) -> web.Response:
        """GET /api/qc/state: calibrators, their tests, runs in progress, permissions."""
        principal = principal_of(request)
        calibrators = []
        for device in self.desk.devices:
            programme = self.desk.programme(device)
            tests = [k for k in ("background", "constancy", "accuracy", "geometry", "linearity")
                     if programme.test(k) is not None]  # fmt: skip
            runs = [r.as_dict() for r in self.desk.runs(device)[:10]]
            calibrators.append({
                "device": device, "release": self.desk.release(device), "tests": tests,
                "daily": programme.daily_tests, "runs": runs,
            })  # fmt: skip
        panel = self.backend.simulator_panel
        return _json({
            "timezone": self.desk.config.timezone,
            "calibrators": calibrators,
            "may": self.permissions(principal),
            # A held calibrator may measure one dose after a signed override (site's choice).
            "held_override": self.desk.config.held_override,
            # The demo only: its simulated calibrators under the console's hands.
            "simulator": None if panel is None else panel.state(),
        })  # fmt: skip

    async def simulator(self, request: web.Request) -> web.Response:
        """POST /api/demo/simulator `{"device", "action", "source"?, "nuclide"?}` (demo only)."""
        panel = self.backend.simulator_panel
        if panel is None:
            _fail("no simulator here (only `isoedge demo` has one)", web.HTTPNotFound)
        self._require(request, "performed")
        body = await json_body(request)
        try:
            state = panel.act(text_field(body, "device", required=True, limit=200),
                              text_field(body, "action", required=True, limit=40),
                              source=text_field(body, "source", limit=200) or None,
                              nuclide=text_field(body, "nuclide", limit=40) or None)  # fmt: skip
        except ValueError as exc:
            _fail(str(exc), web.HTTPConflict)
        return _json({"simulator": state})

    # ------------------------------------------------------------------- runs
    async def start_run(self, request: web.Request) -> web.Response:
        """POST /api/qc/runs `{"device", "test"}` (technologist)."""
        principal = self._require(request, "performed")
        body = await json_body(request)
        device = text_field(body, "device", required=True, limit=200)
        test = text_field(body, "test", required=True, limit=40)
        by = principal.name or text_field(body, "name", required=True, limit=200)
        scale = number_field(body, "time_scale", 1.0)
        try:
            run = self.desk.start_test(device, test, by=by, time_scale=scale)
        except QCError as exc:
            _fail(exc.message, web.HTTPConflict)
        except AuditTextError as exc:
            _fail(str(exc))
        log.info("QC test started", device=device, test=test, user=by, via="web")
        return _json({"run": self._run_dict(run)}, status=201)

    def _run_dict(self, run: TestRun) -> dict[str, Any]:
        data = run.as_dict()
        programme = self.desk.programme(run.device)
        spec = programme.test(run.test)
        tolerance = getattr(spec, "tolerance", None)
        data["tolerance"] = None if tolerance is None else tolerance.as_record()
        if run.test == "background" and programme.background is not None:
            data["tolerance"] = {"max_mbq": programme.background.max_mbq,
                                 "basis": programme.background.basis}  # fmt: skip
        data["settle_readings"] = programme.settle_readings
        return data

    def _get_run(self, request: web.Request) -> TestRun:
        try:
            return self.desk.run(request.match_info["run_id"])
        except QCError as exc:
            _fail(exc.message, web.HTTPNotFound)

    async def get_run(self, request: web.Request) -> web.Response:
        """GET /api/qc/runs/{id}: steps, what the calibrator shows now, results."""
        return _json({"run": self._run_dict(self._get_run(request))})

    async def cancel_run(self, request: web.Request) -> web.Response:
        """POST /api/qc/runs/{id}/cancel `{"reason"}`."""
        principal = self._require(request, "performed")
        body = await json_body(request)
        run = self._get_run(request)
        by = principal.name or text_field(body, "name", required=True, limit=200)
        try:
            run = self.desk.cancel_run(run.id, by=by, reason=text_field(body, "reason",
                                                                        required=True))
        except QCError as exc:
            _fail(exc.message, web.HTTPConflict)
        except AuditTextError as exc:
            _fail(str(exc))
        return _json({"run": self._run_dict(run)})

    async def confirm_step(self, request: web.Request) -> web.Response:
        """POST /api/qc/runs/{id}/steps/{index}/confirm: "chamber empty — measure" (audited)."""
        principal = self._require(request, "performed")
        body = await json_body(request)  # JSON only, as every write (also a CSRF guard)
        run = self._get_run(request)
        by = principal.name or text_field(body, "name", required=True, limit=200)
        index = request.match_info["index"]
        if not (index.isascii() and index.isdigit() and len(index) <= MAX_STEP_DIGITS):
            _fail("a step is a number")
        try:
            run = self.desk.confirm_step(run.id, int(index), by=by)
        except QCError as exc:
            _fail(exc.message, web.HTTPConflict)
        except AuditTextError as exc:
            _fail(str(exc))
        log.info("QC step confirmed", run=run.id, step=index, user=by, via="web")
        return _json({"run": self._run_dict(run)})

    async def finish_run(self, request: web.Request) -> web.Response:
        """POST /api/qc/runs/{id}/finish: analyse a linearity run with the points it has."""
        self._require(request, "performed")
        await json_body(request)  # JSON only, as every write (also a CSRF guard)
        run = self._get_run(request)
        try:
            run = self.desk.finish_linearity(run.id)
        except QCError as exc:
            _fail(exc.message, web.HTTPConflict)
        return _json({"run": self._run_dict(run)})

    async def sign_run(self, request: web.Request) -> web.Response:
        """POST /api/qc/runs/{id}/sign `{"password"}`: the performer's electronic signature."""
        principal = self._require(request, "performed")
        body = await json_body(request)
        signer = Signer(principal, body)
        run = self._get_run(request)
        try:
            record = await self.desk.sign_run(run.id, signer.name, signer.password,
                                              text_field(body, "comment"))
        except SignatureError as exc:
            _signature_refused(exc)
        except QCError as exc:
            _fail(exc.message, web.HTTPConflict)
        log.info("QC record signed", record=record["id"], user=signer.name, via="web")
        return _json({"record": record, "run": self._run_dict(self.desk.run(run.id))})

    # ---------------------------------------------------------------- records
    async def list_records(self, request: web.Request) -> web.Response:
        """GET /api/qc/records?device=&test=&since=&until=: tests with their reviews."""
        records = await self.desk.records(
            device=request.query.get("device") or None,
            since=_time(request.query.get("since"), "since"),
            until=_time(request.query.get("until"), "until"),
        )
        test = request.query.get("test") or None
        reviews: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            if r.get("record") == "review":
                reviews[r["reviews"]["id"]].append(r)
        tests = [
            {**r, "reviewed_by": reviews.get(r["id"], [])}
            for r in records
            if r.get("record") == "test" and (test is None or r.get("test") == test)
        ]
        tests.reverse()  # newest first
        return _json({"records": tests, "timezone": self.desk.config.timezone})

    async def review_record(self, request: web.Request) -> web.Response:
        """POST /api/qc/records/{id}/review `{"password", "meaning", "comment"}`."""
        body = await json_body(request)
        meaning = text_field(body, "meaning") or "reviewed"
        if meaning not in {"reviewed", "approved"}:
            _fail("meaning must be 'reviewed' or 'approved'")
        principal = self._require(request, meaning)
        signer = Signer(principal, body)
        try:
            record = await self.desk.review(
                request.match_info["record_id"], signer.name, signer.password, meaning,
                text_field(body, "comment"),
            )  # fmt: skip
        except SignatureError as exc:
            _signature_refused(exc)
        except QCError as exc:
            missing = exc.message.code == "error.qc.no_record"
            _fail(exc.message, web.HTTPNotFound if missing else web.HTTPConflict)
        return _json({"record": record}, status=201)

    async def charts(self, request: web.Request) -> web.Response:
        """GET /api/qc/charts?device=: constancy control chart and linearity plot data."""
        device = request.query.get("device") or None
        if device is None and self.desk.devices:
            device = self.desk.devices[0]
        records = await self.desk.records(device=device)
        return _json({
            "device": device, "constancy": constancy_chart(records),
            "linearity": linearity_chart(records),
        })  # fmt: skip

    # ---------------------------------------------------------------- reports
    async def report(self, request: web.Request) -> web.StreamResponse:
        """GET /api/qc/report.pdf?kind=daily|qc|monthly|linearity&device=&date=&record=."""
        kind = request.query.get("kind") or "daily"
        if kind not in REPORT_KINDS:
            _fail("{field}: expected one of {choices}", field="kind",
                  choices=", ".join(REPORT_KINDS))
        desk = self.desk
        zone = desk.config.zone
        device = request.query.get("device") or (desk.devices[0] if desk.devices else None)
        if device is None or device not in desk.devices:
            _fail("{field}: expected one of {choices}", web.HTTPNotFound, field="device",
                  choices=", ".join(desk.devices))
        text = request.query.get("date") or datetime.now(zone).date().isoformat()
        try:
            day = date.fromisoformat(text[:10])
        except ValueError:
            _fail("date: expected YYYY-MM-DD")
        site = self.backend.identity.site
        lang = language_of(request)
        records = await desk.records(device=device)
        release = {device: desk.release(device)}
        from agent.qc import reports  # noqa: PLC0415 - reportlab/matplotlib: only when asked

        if kind == "daily":
            pdf = await asyncio.to_thread(reports.daily_sheet, records, device, day, site=site,
                                          zone=zone, lang=lang)  # fmt: skip
            name = f"qc-daily-{device}-{day.isoformat()}.pdf"
        elif kind == "monthly":
            pdf = await asyncio.to_thread(reports.monthly_summary, records, device, day.year,
                                          day.month, site=site, zone=zone, lang=lang)  # fmt: skip
            name = f"qc-monthly-{device}-{day:%Y-%m}.pdf"
        elif kind == "linearity":
            pdf, name = await self._linearity_report(request, records, site)
        else:
            pdf = await asyncio.to_thread(
                reports.qc_report, records, site=site, zone=zone, period=device,
                release=release, lang=lang,
            )  # fmt: skip
            name = f"qc-{device}.pdf"
        return _pdf(pdf, name)

    async def _linearity_report(
        self, request: web.Request, records: list[dict[str, Any]], site: str
    ) -> tuple[bytes, str]:
        from agent.qc import reports  # noqa: PLC0415

        wanted = request.query.get("record")
        found = [r for r in records if r.get("linearity") and (wanted in {None, r["id"]})]
        if not found:
            _fail("no linearity record", web.HTTPNotFound)
        record = found[-1]
        reviews = [r for r in records if (r.get("reviews") or {}).get("id") == record["id"]]
        pdf = await asyncio.to_thread(reports.linearity_report, record, reviews, site=site,
                                      zone=self.desk.config.zone,
                                      lang=language_of(request))  # fmt: skip
        return pdf, f"qc-linearity-{record['device']}-{record['id']}.pdf"

    async def audit_report(self, request: web.Request) -> web.StreamResponse:
        """GET /api/audit/report.pdf?since=&until=: the audit-trail extract with its reviews."""
        until = _time(request.query.get("until"), "until") or datetime.now(UTC)
        since = _time(request.query.get("since"), "since") or until - timedelta(days=1)
        items = await self.backend.audit_query(
            since=since, until=until, actor=None, action=None, subject=None, limit=100_000
        )
        reviews = [i for i in items if i.get("event") == "audit.reviewed"]
        from agent.qc import reports  # noqa: PLC0415

        lang, zone = language_of(request), self.desk.config.zone
        pdf = await asyncio.to_thread(
            reports.audit_extract, items, site=self.backend.identity.site,
            period=f"{format_datetime(since, lang, zone)} — {format_datetime(until, lang, zone)}",
            zone=zone, reviews=reviews, lang=lang,
        )  # fmt: skip
        return _pdf(pdf, f"audit-{since:%Y%m%dT%H%M%SZ}.pdf")

    # ------------------------------------------------------------ signatures
    async def acknowledge(self, request: web.Request) -> web.Response:
        """POST /api/alerts/{id}/ack `{"reason", "password"}`: a signed acknowledgement.

        With access control off (loopback bench, no users) there is nobody to sign: the
        acknowledgement takes a typed name and reason, as before, and is not a signature.
        """
        principal = self._require(request, "acknowledge_alert")
        body = await json_body(request)
        reason = text_field(body, "reason")
        alert_id = request.match_info["alert_id"]
        if not principal.authenticated and not body.get("password"):
            name = text_field(body, "name", limit=200)
            if not name or not reason:
                _fail("a name and a reason are required to acknowledge an alert")
            call = self.backend.acknowledge_alert(alert_id, name, reason)
        else:
            if not reason:
                _fail("a reason is required to acknowledge an alert")
            signer = Signer(principal, body)
            name = signer.name
            call = self.desk.acknowledge_alert(alert_id, signer.name, signer.password, reason)
        try:
            alert = await call
        except SignatureError as exc:
            _signature_refused(exc)
        except UnknownAlertError as exc:
            _fail(str(exc), web.HTTPNotFound)
        except AlertError as exc:
            _fail(str(exc), web.HTTPConflict)
        log.info("alert acknowledged", alert=alert_id, user=name, rule=alert.rule, via="web",
                 auth=principal.method, client=request.remote)  # fmt: skip
        return _json({"alert": alert.to_dict()})

    async def acknowledge_many(self, request: web.Request) -> web.Response:
        """POST /api/alerts/ack `{"ids": [...], "reason", "password"}`: one signature for all."""
        principal = self._require(request, "acknowledge_alert")
        body = await json_body(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            _fail("{field}: expected a list of alert ids", field="ids")
        if len(ids) > MAX_BULK_ACK:
            _fail("{field}: at most {limit} at once", field="ids", limit=MAX_BULK_ACK)
        reason = text_field(body, "reason")
        if not reason:
            _fail("a reason is required to acknowledge an alert")
        signer = Signer(principal, body)
        try:
            done, refused = await self.desk.acknowledge_alerts(
                list(dict.fromkeys(ids)), signer.name, signer.password, reason)
        except SignatureError as exc:
            _signature_refused(exc)
        log.info("alerts acknowledged", count=len(done), refused=len(refused), user=signer.name,
                 via="web", auth=principal.method, client=request.remote)  # fmt: skip
        return _json({"alerts": [a.to_dict() for a in done], "refused": refused})

    async def shelve(self, request: web.Request) -> web.Response:
        """POST /api/alerts/{id}/shelve `{"minutes", "reason", "password"}`."""
        principal = self._require(request, "acknowledge_alert")
        body = await json_body(request)
        reason = text_field(body, "reason")
        if not reason:
            _fail("a reason is required to shelve an alarm")
        try:
            minutes = parse_decimal(body.get("minutes"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            _fail("{field}: expected a number (e.g. {example})", field="minutes", example="60")
        signer = Signer(principal, body)
        alert_id = request.match_info["alert_id"]
        try:
            alert = await self.desk.shelve_alert(alert_id, signer.name, signer.password, reason,
                                                 minutes)  # fmt: skip
        except SignatureError as exc:
            _signature_refused(exc)
        except UnknownAlertError as exc:
            _fail(str(exc), web.HTTPNotFound)
        except AlertError as exc:
            _fail(str(exc), web.HTTPConflict)
        return _json({"alert": alert.to_dict()})

    async def review_audit(self, request: web.Request) -> web.Response:
        """POST /api/audit/review `{"since", "until", "password", "comment"}` (qa)."""
        principal = self._require(request, "review_audit")
        body = await json_body(request)
        since = _time(text_field(body, "since", required=True), "since")
        until = _time(text_field(body, "until"), "until") or datetime.now(UTC)
        assert since is not None  # noqa: S101 - required above
        if until <= since:
            _fail("until must be after since")
        signer = Signer(principal, body)
        try:
            item = await self.desk.review_audit(
                since, until, signer.name, signer.password, text_field(body, "comment")
            )
        except SignatureError as exc:
            _signature_refused(exc)
        return _json({"review": item}, status=201)

    # ---------------------------------------------------------- prescriptions
    async def list_prescriptions(self, _request: web.Request) -> web.Response:
        """GET /api/prescriptions: every prescription with its dispensing records."""
        dosage = self.backend.dosage
        dispensing = await dosage.dispensing()
        by_rx: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in dispensing:
            by_rx[d["prescription"]].append(d)
        items = [
            {**rx.to_dict(), "dispensing": by_rx.get(rx.id, [])}
            for rx in dosage.prescriptions.all()
        ]
        return _json({"prescriptions": items, "dispensing": dispensing[-200:]})

    async def get_prescription(self, request: web.Request) -> web.Response:
        """GET /api/prescriptions/{id}: one prescription and its dispensing records."""
        dosage = self.backend.dosage
        rx_id = request.match_info["rx_id"]
        try:
            rx = dosage.prescriptions.get(rx_id)
        except KeyError:
            _fail("no prescription {id}", web.HTTPNotFound, id=repr(rx_id))
        return _json({"prescription": {**rx.to_dict(),
                                       "dispensing": await dosage.dispensing(rx_id)}})  # fmt: skip

    async def create_prescription(self, request: web.Request) -> web.Response:
        """POST /api/prescriptions `{"id", "nuclide", "activity", "unit", "scheduled", ...}`."""
        return await self._save_prescription(request, None)

    async def change_prescription(self, request: web.Request) -> web.Response:
        """PUT /api/prescriptions/{id}: change it; `reason` is required."""
        return await self._save_prescription(request, request.match_info["rx_id"])

    async def _save_prescription(self, request: web.Request, rx_id: str | None) -> web.Response:
        principal = self._require(request, "prescribe")
        body = await json_body(request)
        dosage = self.backend.dosage
        actor = principal.name or text_field(body, "name", required=True, limit=200)
        reason = text_field(body, "reason", required=rx_id is not None)
        if rx_id is not None:
            try:
                dosage.prescriptions.get(rx_id)
            except KeyError:
                _fail("no prescription {id}", web.HTTPNotFound, id=repr(rx_id))
        ident = rx_id or text_field(body, "id", required=True, limit=200)
        # A number, or a text as typed: "370,5" is 370.5 (a decimal comma), never 3705.
        try:
            activity = parse_decimal(body.get("activity"))  # type: ignore[arg-type]
        except (ValueError, TypeError, OverflowError):
            _fail("{field}: expected a number (e.g. {example})", code="not_a_number",
                  field="activity", example="370,5")
        scheduled = _time(text_field(body, "scheduled", required=True), "scheduled")
        assert scheduled is not None  # noqa: S101 - required above
        unit = text_field(body, "unit") or "MBq"
        reason = self._plausible(body, text_field(body, "nuclide", required=True, limit=40),
                                 activity, unit, reason)
        try:
            rx = dosage.add_prescription(
                ident, text_field(body, "nuclide", required=True, limit=40), activity,
                unit, scheduled,
                device=text_field(body, "device", limit=200) or None,
                note=text_field(body, "note"), actor=actor, reason=reason,
                replace=rx_id is not None,
            )  # fmt: skip
        except ValueError as exc:
            status = web.HTTPConflict if "exists" in str(exc) else web.HTTPBadRequest
            _fail(str(exc), status)
        log.info("prescription saved", prescription=rx.id, user=actor, auth=principal.method)
        return _json({"prescription": rx.to_dict()}, status=200 if rx_id else 201)

    def _plausible(self, body: dict[str, Any], nuclide: str, activity: float, unit: str,
                   reason: str) -> str:  # fmt: skip
        """The audit reason; 409 `implausible_activity` until one beyond the range is confirmed."""
        factor = ACTIVITY_TO_MBQ.get(unit)
        if factor is None:
            return reason  # the dosage check refuses the unit with its own message
        limit = implausible(nuclide, activity * factor, self.desk.config.activity_limits)
        if limit is None:
            return reason
        confirmation = text_field(body, "confirm_reason")
        shown, low, high = f"{activity * factor:g}", f"{limit.min_mbq:g}", f"{limit.max_mbq:g}"
        if body.get("confirm_implausible") is not True or not confirmation:
            _fail("{activity} MBq is outside the plausible range for {nuclide} ({low}-{high} "
                  "MBq): check the value, or confirm it with a reason", web.HTTPConflict,
                  code="implausible_activity",
                  fields={"min_mbq": limit.min_mbq, "max_mbq": limit.max_mbq},
                  activity=shown, nuclide=nuclide, low=low, high=high)
        note = (f"activity {activity * factor:g} MBq beyond the plausible "
                f"{limit.min_mbq:g}-{limit.max_mbq:g} MBq for {nuclide}, confirmed: {confirmation}")
        return f"{reason}; {note}" if reason else note

    async def delete_prescription(self, request: web.Request) -> web.Response:
        """DELETE /api/prescriptions/{id} `{"reason"}`: withdraw it (audited)."""
        principal = self._require(request, "prescribe")
        body = await json_body(request)
        actor = principal.name or text_field(body, "name", required=True, limit=200)
        try:
            self.backend.dosage.remove_prescription(
                request.match_info["rx_id"], actor=actor,
                reason=text_field(body, "reason", required=True),
            )  # fmt: skip
        except KeyError:
            _fail("no prescription {id}", web.HTTPNotFound, id=repr(request.match_info["rx_id"]))
        except ValueError as exc:
            _fail(str(exc))
        return _json({"removed": request.match_info["rx_id"]})

    async def arm_prescription(self, request: web.Request) -> web.Response:
        """POST /api/prescriptions/{id}/arm `{"device"}`: the next measurement is this dose."""
        principal = self._require(request, "performed")
        body = await json_body(request)
        device = text_field(body, "device", required=True, limit=200)
        if device not in {d.id for d in self.backend.devices()}:
            _fail("no device {id}", web.HTTPNotFound, id=repr(device))
        by = principal.name or text_field(body, "name", required=True, limit=200)
        rx_id = request.match_info["rx_id"]
        try:
            self.backend.dosage.prescriptions.get(rx_id)
        except KeyError:
            _fail("no prescription {id}", web.HTTPNotFound, id=repr(rx_id))
        if device in self.desk.devices and self.desk.release(device).get("release") != "released":
            # No patient dose is measured on a held calibrator (docs/qa-guide.md), unless the
            # site allows a signed override with a reason (`[qc] held_override`).
            status = self.desk.release(device)
            override = body.get("override")
            if not isinstance(override, dict):
                _fail("{device} is ON HOLD ({reason}): measure this dose on a released "
                      "calibrator", web.HTTPConflict, code="calibrator_on_hold",
                      fields={"release": status.get("release"), "since": status.get("since"),
                              "override_allowed": self.desk.config.held_override},
                      device=device, reason=render_reasons(status, language_of(request),
                                                           self.desk.config.zone))
            if not self.desk.config.held_override:
                _fail("this site does not allow measuring on a calibrator ON HOLD",
                      web.HTTPConflict, code="override_not_allowed")
            signer = Signer(principal, override)
            try:
                await self.desk.override_hold(device, rx_id, signer.name, signer.password,
                                              text_field(override, "reason", required=True))
            except SignatureError as exc:
                _signature_refused(exc)
            except QCError as exc:
                _fail(exc.message, web.HTTPConflict, code="override_refused")
            log.warning("hold overridden", device=device, prescription=rx_id, user=signer.name,
                        via="web")
        try:
            self.backend.dosage.arm_prescription(device, request.match_info["rx_id"], by)
        except KeyError:
            _fail("no prescription {id}", web.HTTPNotFound, id=repr(request.match_info["rx_id"]))
        return _json({"armed": request.match_info["rx_id"], "device": device})

    async def dispensing(self, _request: web.Request) -> web.Response:
        """GET /api/dispensing: dispensing records, newest first."""
        records = await self.backend.dosage.dispensing()
        return _json({"dispensing": list(reversed(records))})


def _pdf(pdf: bytes, name: str) -> web.Response:
    return web.Response(
        body=pdf, content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip


def add_routes(app: web.Application, views: QCViews) -> None:
    """The QC and prescription routes."""
    r = app.router
    r.add_get("/api/qc/state", views.qc_state)
    r.add_post("/api/qc/runs", views.start_run)
    r.add_get("/api/qc/runs/{run_id}", views.get_run)
    r.add_post("/api/demo/simulator", views.simulator)
    r.add_post("/api/qc/runs/{run_id}/cancel", views.cancel_run)
    r.add_post("/api/qc/runs/{run_id}/finish", views.finish_run)
    r.add_post("/api/qc/runs/{run_id}/steps/{index}/confirm", views.confirm_step)
    r.add_post("/api/qc/runs/{run_id}/sign", views.sign_run)
    r.add_get("/api/qc/records", views.list_records)
    r.add_post("/api/qc/records/{record_id}/review", views.review_record)
    r.add_get("/api/qc/charts", views.charts)
    r.add_get("/api/qc/report.pdf", views.report)
    r.add_get("/api/audit/report.pdf", views.audit_report)
    r.add_post("/api/audit/review", views.review_audit)
    r.add_post("/api/alerts/ack", views.acknowledge_many)
    r.add_post("/api/alerts/{alert_id}/ack", views.acknowledge)
    r.add_post("/api/alerts/{alert_id}/shelve", views.shelve)
    r.add_get("/api/prescriptions", views.list_prescriptions)
    r.add_post("/api/prescriptions", views.create_prescription)
    r.add_get("/api/prescriptions/{rx_id}", views.get_prescription)
    r.add_put("/api/prescriptions/{rx_id}", views.change_prescription)
    r.add_delete("/api/prescriptions/{rx_id}", views.delete_prescription)
    r.add_post("/api/prescriptions/{rx_id}/arm", views.arm_prescription)
    r.add_get("/api/dispensing", views.dispensing)


__all__ = [
    "QCViews",
    "add_routes",
    "checked_time",
    "constancy_chart",
    "linearity_chart",
    "valid_text",
]
