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
from agent.console.health import check_health, last_reading_age
from agent.console.i18n import catalog_json, fail, language_for, language_of, render_page
from agent.console.metrics import Metrics, Scrape
from agent.console.qc_views import checked_time
from agent.core.messages import templates_json
from agent.core.states import HEALTHY_STATES
from agent.qc.alerts import Alert
from agent.qc.audit import AuditLog

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.console.backend import ConsoleBackend
    from agent.console.qc_views import QCViews
    from agent.console.settings import WebSection

log = structlog.get_logger("isoedge.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
TREND_WINDOW_S = 3600.0
MAX_REASON_CHARS = 2000
MAX_NAME_CHARS = 200
AUDIT_LIMIT_DEFAULT = 500
AUDIT_LIMIT_MAX = 10000


def _bad_request(message: str, status: type[web.HTTPException] = web.HTTPBadRequest,
                 **params: Any) -> NoReturn:  # fmt: skip
    fail(message, status, **params)


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

    def __init__(self, backend: ConsoleBackend, *, device_grace_s: float, qc: QCViews,
                 section: WebSection) -> None:  # fmt: skip
        self.backend = backend
        self.section = section
        self.qc = qc
        self.device_grace_s = device_grace_s
        self.metrics_registry = Metrics(backend)

    # -------------------------------------------------------------- helpers
    def devices(self) -> list[dict[str, Any]]:
        """Health of every supervised device, as the page shows it."""
        out = []
        snapshot = self.backend.live.snapshot()
        for device in self.backend.devices():
            live = snapshot.device(device.id, device.type)
            health = live.as_dict()
            health["link_state"] = device.state
            health["state"] = device.state
            health["detail"] = device.detail
            health["description"] = device.description
            health["timeout_s"] = device.timeout_s
            # Silent past its answer timeout, a device is offline whatever its reconnect
            # attempts say ("connecting" every few seconds); its last values are stale.
            age = last_reading_age(live)
            silent = (time.time() - self.backend.started_at) if age is None else age
            if device.state not in HEALTHY_STATES and silent > device.timeout_s:
                health["state"] = "offline"
            health["stale"] = health["state"] not in HEALTHY_STATES
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
    async def index(self, request: web.Request) -> web.StreamResponse:
        """The single-page console, in the request's language."""
        lang = language_for(request, self.section)
        page = render_page(STATIC_DIR / "index.html", lang, self.backend.qc.config.zone)
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "Content-Language": lang,
                                     "Vary": "Cookie, Accept-Language"})

    async def catalog(self, request: web.Request) -> web.Response:
        """GET /api/i18n[?lang=]: the catalog, formats and site zone for the JavaScript."""
        wanted = request.query.get("lang")
        lang = language_for(request, self.section) if not wanted else language_of(request)
        if wanted:
            from agent.core.i18n import choose  # noqa: PLC0415 - only here

            lang = choose(wanted, lang)
        # With the texts of the message codes alerts, QC summaries and audit reasons carry.
        return web.json_response({**catalog_json(lang, self.backend.qc.config.zone),
                                  "codes": templates_json()},
                                 headers={"Content-Language": lang})

    async def state(self, request: web.Request) -> web.Response:
        """GET /api/state: everything the page needs on load."""
        principal = principal_of(request)
        latest = list(self.backend.live.snapshot().latest.values())
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
        latest_all = self.backend.live.snapshot().latest
        for (device, channel), points in sorted(self.backend.live.trends_since(cutoff).items()):
            latest = latest_all.get((device, channel), {})
            series.append(
                {
                    "device": device,
                    "channel": channel,
                    "unit": latest.get("unit"),
                    "points": [[round(t, 3), v] for t, v in points],
                }
            )
        return web.json_response({"window_s": TREND_WINDOW_S, "series": series})

    # -------------------------------------------------------------- alerts
    async def list_alerts(self, request: web.Request) -> web.Response:
        """GET /api/alerts[?state=open|unacknowledged|acknowledged|active|cleared|all]."""
        wanted = request.query.get("state") or "all"
        keep = ALERT_FILTERS.get(wanted)
        if keep is None:
            _bad_request("{field}: expected one of {choices}", field="state",
                         choices=", ".join(sorted(ALERT_FILTERS)))
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
        _bad_request("{field}: expected an integer", field=name)
    return max(low, min(high, value))


def _time_param(request: web.Request, name: str) -> datetime | None:
    text = (request.query.get(name) or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        _bad_request("{field}: expected an ISO 8601 time, e.g. {example}", field=name,
                     example="2026-11-22T08:00:00Z")
    # A time without zone from the browser's datetime-local field is the user's local time;
    # the page converts to UTC before sending, so a naive value here is taken as UTC.
    return checked_time(value, name)
