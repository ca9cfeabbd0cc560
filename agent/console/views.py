"""HTTP handlers of the web console: page, JSON API, alert acknowledgement, audit trail."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
from aiohttp import web

from agent.console.auth import principal_of
from agent.console.health import check_health
from agent.console.metrics import Metrics, Scrape
from agent.console.qc_views import checked_time
from agent.qc.alerts import Alert
from agent.qc.audit import AuditLog

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.console.backend import ConsoleBackend
    from agent.console.qc_views import QCViews

log = structlog.get_logger("isoedge.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
TREND_WINDOW_S = 3600.0
MAX_REASON_CHARS = 2000
MAX_NAME_CHARS = 200
AUDIT_LIMIT_DEFAULT = 500
AUDIT_LIMIT_MAX = 10000


def _bad_request(message: str, status: type[web.HTTPException] = web.HTTPBadRequest) -> NoReturn:
    raise status(text=json.dumps({"error": message}), content_type="application/json")


def _dumps(data: object) -> str:
    return json.dumps(data, default=str, allow_nan=False)


ALERT_FILTERS: dict[str, Callable[[Alert], bool]] = {
    "open": lambda a: a.is_open,
    "unacknowledged": lambda a: not a.acknowledged,
    "acknowledged": lambda a: a.acknowledged,
    "active": lambda a: a.active,
    "cleared": lambda a: not a.active,
    "all": lambda _a: True,
}


class Views:
    """Request handlers bound to one agent."""

    def __init__(self, backend: ConsoleBackend, *, device_grace_s: float, qc: QCViews) -> None:
        self.backend = backend
        self.qc = qc
        self.device_grace_s = device_grace_s
        self.metrics_registry = Metrics(backend)

    # -------------------------------------------------------------- helpers
    def devices(self) -> list[dict[str, Any]]:
        """Health of every supervised device, as the page shows it."""
        out = []
        for device in self.backend.devices():
            health = self.backend.live.device(device.id, device.type).as_dict()
            health["state"] = device.state
            health["detail"] = device.detail
            health["description"] = device.description
            out.append(health)
        return out

    def health_snapshot(self) -> dict[str, Any]:
        """What the event stream sends every couple of seconds."""
        report = check_health(self.backend, device_grace_s=self.device_grace_s)
        return {
            "devices": self.devices(),
            "broker": self.backend.delivery().link_state,
            "health": report.as_dict(),
            "calibrators": self.qc.calibrators(),
            "t": time.time(),
        }

    def alert_counts(self) -> Counter[tuple[str, str]]:
        """Alerts needing attention by (state, severity); closed ones are history, not load."""
        counts: Counter[tuple[str, str]] = Counter()
        for alert in self.backend.open_alerts():
            counts[(alert.state, alert.severity)] += 1
        return counts

    # ---------------------------------------------------------------- pages
    async def index(self, _request: web.Request) -> web.StreamResponse:
        """The single-page console."""
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def state(self, request: web.Request) -> web.Response:
        """GET /api/state: everything the page needs on load."""
        principal = principal_of(request)
        latest = list(self.backend.live.latest.values())
        who = self.backend.identity
        return web.json_response(
            {
                "agent": {
                    "site": who.site,
                    "id": who.agent_id,
                    "kid": who.kid,
                    "broker_url": who.broker_url,
                    "topics": who.topic_base,
                },
                "me": {
                    "name": principal.name,
                    "role": principal.role,
                    "full_name": principal.full_name or principal.name,
                    "authenticated": principal.authenticated,
                    "may_acknowledge": self.qc.may(principal, "acknowledge_alert"),
                    "may": self.qc.permissions(principal),
                },
                "timezone": self.backend.qc.config.timezone,
                "latest": latest,
                **self.health_snapshot(),
            },
            dumps=_dumps,
        )

    async def trends(self, _request: web.Request) -> web.Response:
        """GET /api/trends: the last hour of thinned points per numeric channel."""
        cutoff = time.time() - TREND_WINDOW_S
        series = []
        live = self.backend.live
        for (device, channel), points in sorted(live.trends.items()):
            latest = live.latest.get((device, channel), {})
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
        """GET /api/alerts[?state=open|unacknowledged|acknowledged|active|cleared|all]."""
        wanted = request.query.get("state") or "all"
        keep = ALERT_FILTERS.get(wanted)
        if keep is None:
            _bad_request(f"state: expected one of {sorted(ALERT_FILTERS)}")
        limit = _int_param(request, "limit", 200, 1, 5000)
        alerts = (
            self.backend.open_alerts()
            if wanted == "open"
            else await self.backend.recent_alerts(limit)
        )
        body = {
            "alerts": [a.to_dict() for a in alerts if keep(a)],
            "open": sum(1 for a in self.backend.open_alerts() if not a.acknowledged),
        }
        return web.json_response(body, dumps=_dumps)

    # --------------------------------------------------------------- audit
    async def audit_rows(self, request: web.Request) -> list[dict[str, Any]]:
        """Audit records matching the query string filters, oldest first."""
        return await self.backend.audit_query(
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
            actor=request.query.get("actor") or None,
            action=request.query.get("action") or None,
            subject=request.query.get("subject") or None,
            limit=_int_param(request, "limit", AUDIT_LIMIT_DEFAULT, 1, AUDIT_LIMIT_MAX),
        )

    async def audit_json(self, request: web.Request) -> web.Response:
        """GET /api/audit?since=&until=&actor=&action=&subject=&limit=."""
        return web.json_response({"rows": await self.audit_rows(request)}, dumps=_dumps)

    async def audit_csv(self, request: web.Request) -> web.Response:
        """GET /api/audit.csv with the same filters: a CSV download."""
        buffer = io.StringIO()
        AuditLog.export_csv(await self.audit_rows(request), buffer)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        who = self.backend.identity
        name = f"audit-{who.site}-{who.agent_id}-{stamp}.csv"
        return web.Response(
            text=buffer.getvalue(),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # ------------------------------------------------------- health/metrics
    async def healthz(self, _request: web.Request) -> web.Response:
        """GET /healthz: 200 or 503 with the reasons (JSON)."""
        report = check_health(self.backend, device_grace_s=self.device_grace_s)
        return web.json_response(report.as_dict(), status=200 if report.ok else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        """GET /metrics: Prometheus text exposition (prometheus_client)."""
        stats = await self.backend.outbox_stats()  # None when not running: /healthz says why
        report = check_health(self.backend, device_grace_s=self.device_grace_s)
        body = self.metrics_registry.render(
            Scrape(stats=stats, health=report, alert_counts=self.alert_counts(), now=time.time())
        )
        return web.Response(
            body=body, headers={"Content-Type": self.metrics_registry.content_type,
                                "Cache-Control": "no-store"},
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
        value = datetime.fromisoformat(text)
    except ValueError:
        _bad_request(f"{name}: expected an ISO 8601 time, e.g. 2026-11-22T08:00:00Z")
    # A time without zone from the browser's datetime-local field is the user's local time;
    # the page converts to UTC before sending, so a naive value here is taken as UTC.
    return checked_time(value, name)
