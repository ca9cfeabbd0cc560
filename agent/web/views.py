"""HTTP handlers of the web console: page, JSON API, alert acknowledgement, audit trail."""

from __future__ import annotations

import dataclasses
import inspect
import io
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from agent.web.auth import principal_of, require_role
from agent.web.health import check_health, render_metrics

if TYPE_CHECKING:
    from agent.runtime import Agent

log = structlog.get_logger("isoedge.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
TREND_WINDOW_S = 3600.0
MAX_REASON_CHARS = 2000
MAX_NAME_CHARS = 200
AUDIT_LIMIT_DEFAULT = 500
AUDIT_LIMIT_MAX = 10000


async def _maybe(value: Any) -> Any:
    """Await `value` when the alert/audit store returned a coroutine."""
    return await value if inspect.isawaitable(value) else value


def as_plain(obj: Any) -> dict[str, Any]:
    """An alert (dataclass, pydantic model or dict) as a JSON-friendly dict."""
    if isinstance(obj, dict):
        data = dict(obj)
    elif hasattr(obj, "as_dict"):
        data = dict(obj.as_dict())
    elif hasattr(obj, "to_dict"):
        data = dict(obj.to_dict())
    elif hasattr(obj, "model_dump"):
        data = dict(obj.model_dump(mode="json"))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = dataclasses.asdict(obj)
    else:
        data = dict(vars(obj))
    return {k: _jsonable(v) for k, v in data.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and type(value).__module__ != "builtins":  # enums
        return value.value
    return value


def _bad_request(message: str, status: type[web.HTTPException] = web.HTTPBadRequest) -> None:
    raise status(text=_json_text({"error": message}), content_type="application/json")


def _json_text(data: Any) -> str:
    import json  # noqa: PLC0415 - tiny helper

    return json.dumps(data, default=str)


class Views:
    """Request handlers bound to one agent."""

    def __init__(self, agent: Agent, *, device_grace_s: float) -> None:
        self.agent = agent
        self.device_grace_s = device_grace_s

    # -------------------------------------------------------------- helpers
    @property
    def alerts(self) -> Any | None:
        """The agent's AlertManager, when QC is part of this build."""
        return getattr(self.agent, "alerts", None)

    @property
    def audit(self) -> Any | None:
        """The agent's AuditLog, when present."""
        return getattr(self.agent, "audit", None)

    def devices(self) -> list[dict[str, Any]]:
        """Health of every supervised device, as the page shows it."""
        out = []
        for device_id, sup in sorted(self.agent.supervisors.items()):
            health = self.agent.live.device(device_id, sup.config.type).as_dict()
            health["state"] = sup.state.value
            health["detail"] = sup.detail
            health["description"] = sup.config.description
            out.append(health)
        return out

    def health_snapshot(self) -> dict[str, Any]:
        """What the event stream sends every couple of seconds."""
        report = check_health(self.agent, device_grace_s=self.device_grace_s)
        return {
            "devices": self.devices(),
            "broker": self.agent.publisher.state.value,
            "health": report.as_dict(),
            "t": time.time(),
        }

    async def alert_counts(self) -> Counter[tuple[str, str]]:
        """Alerts by (state, severity)."""
        counts: Counter[tuple[str, str]] = Counter()
        if self.alerts is None:
            return counts
        for alert in await _maybe(self.alerts.all_alerts(limit=10000)):
            data = as_plain(alert)
            counts[(str(data.get("state")), str(data.get("severity")))] += 1
        return counts

    # ---------------------------------------------------------------- pages
    async def index(self, request: web.Request) -> web.StreamResponse:
        """The single-page console."""
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def state(self, request: web.Request) -> web.Response:
        """GET /api/state: everything the page needs on load."""
        principal = principal_of(request)
        latest = list(self.agent.live.latest.values())
        return web.json_response(
            {
                "agent": {
                    "site": self.agent.config.agent.site,
                    "id": self.agent.config.agent.id,
                    "kid": self.agent.signer.kid,
                    "broker_url": self.agent.config.broker.url,
                    "topics": self.agent.topics.base,
                },
                "me": {
                    "name": principal.name,
                    "role": principal.role,
                    "authenticated": principal.authenticated,
                    "may_acknowledge": principal.may("qa"),
                },
                "features": {"alerts": self.alerts is not None, "audit": self.audit is not None},
                "latest": latest,
                **self.health_snapshot(),
            },
            dumps=_json_text,
        )

    async def trends(self, request: web.Request) -> web.Response:
        """GET /api/trends: the last hour of thinned points per numeric channel."""
        cutoff = time.time() - TREND_WINDOW_S
        series = []
        for (device, channel), points in sorted(self.agent.live.trends.items()):
            latest = self.agent.live.latest.get((device, channel), {})
            series.append(
                {
                    "device": device,
                    "channel": channel,
                    "unit": latest.get("unit"),
                    "points": [[round(t, 3), v] for t, v in points if t >= cutoff],
                }
            )
        return web.json_response({"window_s": TREND_WINDOW_S, "series": series})

    # -------------------------------------------------------------- alerts
    async def list_alerts(self, request: web.Request) -> web.Response:
        """GET /api/alerts[?state=open|acknowledged|cleared][&limit=N]."""
        if self.alerts is None:
            return web.json_response({"available": False, "alerts": []})
        limit = _int_param(request, "limit", 200, 1, 5000)
        wanted = request.query.get("state")
        alerts = [as_plain(a) for a in await _maybe(self.alerts.all_alerts(limit=limit))]
        if wanted:
            alerts = [a for a in alerts if a.get("state") == wanted]
        return web.json_response({"available": True, "alerts": alerts}, dumps=_json_text)

    async def acknowledge(self, request: web.Request) -> web.Response:
        """POST /api/alerts/{id}/ack with JSON `{"name": ..., "reason": ...}` (qa role)."""
        principal = require_role(request, "qa")
        if self.alerts is None:
            _bad_request("alerts are not available in this agent", web.HTTPNotFound)
        if request.content_type != "application/json":
            # Also a CSRF guard: a cross-site HTML form cannot send application/json.
            _bad_request("expected application/json", web.HTTPUnsupportedMediaType)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            _bad_request("expected a JSON object with name and reason")
        typed_name = str(body.get("name") or "").strip()
        reason = str(body.get("reason") or "").strip()
        # With access control on, the acknowledging person is the authenticated user; the
        # typed name must match it (a deliberate re-statement, as for a signature).
        if principal.authenticated and typed_name and typed_name != principal.name:
            _bad_request(f"name {typed_name!r} does not match the signed-in user", web.HTTPForbidden)
        name = principal.name if principal.authenticated else typed_name
        if not name:
            _bad_request("a name is required to acknowledge an alert")
        if not reason:
            _bad_request("a reason is required to acknowledge an alert")
        if len(name) > MAX_NAME_CHARS or len(reason) > MAX_REASON_CHARS:
            _bad_request("name or reason too long")
        alert_id = request.match_info["alert_id"]
        assert self.alerts is not None
        existing = await _maybe(self.alerts.get(alert_id))
        if existing is None:
            _bad_request(f"no alert {alert_id!r}", web.HTTPNotFound)
        before = as_plain(existing)
        if before.get("state") != "open":
            _bad_request(f"alert {alert_id} is {before.get('state')}, not open", web.HTTPConflict)
        try:
            alert = await _maybe(self.alerts.acknowledge(alert_id, name, reason))
        except (ValueError, KeyError, LookupError) as exc:
            _bad_request(str(exc).strip("'\""), web.HTTPConflict)
        after = as_plain(alert)
        log.info("alert acknowledged", alert=alert_id, user=name, rule=after.get("rule"),
                 via="web", auth=principal.method, client=request.remote)
        return web.json_response({"alert": after}, dumps=_json_text)

    # --------------------------------------------------------------- audit
    async def audit_rows(self, request: web.Request) -> list[dict[str, Any]]:
        """Rows of the audit trail matching the query string filters."""
        if self.audit is None:
            return []
        since = _time_param(request, "since")
        until = _time_param(request, "until")
        actor = request.query.get("actor") or None
        action = request.query.get("action") or None
        subject = request.query.get("subject") or None
        limit = _int_param(request, "limit", AUDIT_LIMIT_DEFAULT, 1, AUDIT_LIMIT_MAX)
        rows = await _maybe(
            self.audit.query(
                since=since, until=until, actor=actor, action=action, subject=subject,
                limit=limit,
            )
        )
        return [as_plain(r) for r in rows]

    async def audit_json(self, request: web.Request) -> web.Response:
        """GET /api/audit?since=&until=&actor=&action=&subject=&limit=."""
        rows = await self.audit_rows(request)
        return web.json_response(
            {"available": self.audit is not None, "rows": rows}, dumps=_json_text
        )

    async def audit_csv(self, request: web.Request) -> web.Response:
        """GET /api/audit.csv with the same filters: a CSV download."""
        if self.audit is None:
            _bad_request("the audit trail is not available in this agent", web.HTTPNotFound)
        assert self.audit is not None
        rows = await self.audit_rows(request)
        buffer = io.StringIO()
        await _maybe(self.audit.export_csv(rows, buffer))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        site, agent_id = self.agent.config.agent.site, self.agent.config.agent.id
        return web.Response(
            text=buffer.getvalue(),
            content_type="text/csv",
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="audit-{site}-{agent_id}-{stamp}.csv"'
            },
        )

    # ------------------------------------------------------- health/metrics
    async def healthz(self, request: web.Request) -> web.Response:
        """GET /healthz: 200 or 503 with the reasons (JSON)."""
        report = check_health(self.agent, device_grace_s=self.device_grace_s)
        return web.json_response(report.as_dict(), status=200 if report.ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        """GET /metrics: Prometheus text format."""
        stats = None
        try:
            stats = await self.agent.outbox.stats()
        except RuntimeError:
            pass  # outbox not running: its families are left out and /healthz says why
        report = check_health(self.agent, device_grace_s=self.device_grace_s)
        body = render_metrics(self.agent, stats, await self.alert_counts(), report)
        return web.Response(
            text=body, content_type="text/plain", charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        _bad_request(f"{name}: expected an integer")
    return max(low, min(high, value))


def _time_param(request: web.Request, name: str) -> datetime | None:
    text = (request.query.get(name) or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _bad_request(f"{name}: expected an ISO 8601 time, e.g. 2026-11-22T08:00:00Z")
    # A time without zone from the browser's datetime-local field is the user's local time;
    # the page converts to UTC before sending, so a naive value here is taken as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
