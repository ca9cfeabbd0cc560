"""The fleet page, served by the ingest (aiohttp, the agent console's stack and auth style).

Every site and agent from the retained status topics, completeness (ranges, gaps, chain), open
central alerts, calibrator release states from the `qc` stream, readings of a device over a
time range as a plot, and CSV export. Database work runs in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from aiohttp import web
from aiohttp.typedefs import Handler

from agent.core.i18n import N_, Language, catalog_json, choose, negotiate, render_page
from agent.core.messages import render, render_reasons
from central.auth import Authenticator
from central.completeness import report
from central.config import IngestConfig
from central.consumer import Consumer
from central.envelope import KeyRegistry
from central.shipments import listing as shipment_listing
from central.store import connect

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HSTS = "max-age=31536000"
MAX_PARAM = 256
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
MAX_POINTS = 20_000
QUERY_TIMEOUT_S = 30.0

CALIBRATORS_SQL = """
SELECT DISTINCT ON (site, agent, body->>'device', body->>'test')
       site, agent, body->>'device', body->>'test', body->>'result', t, id
FROM events WHERE stream = 'qc' AND body ? 'test' AND body ? 'result'
ORDER BY site, agent, body->>'device', body->>'test', t DESC
"""


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _csv_value(value: float | bool | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def _parse_time(text: str | None, default: datetime) -> datetime:
    if not text:
        return default
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise web.HTTPBadRequest(text="bad time: expected ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _param(query: Any, name: str, *, required: bool, pattern: re.Pattern[str] | None = None,
           ) -> str | None:
    """One query parameter, bounded and printable (a NUL never reaches the database): 400."""
    value = query.get(name)
    if value is None or value == "":
        if required:
            raise web.HTTPBadRequest(text=f"missing query parameter {name!r}")
        return None
    if len(query.getall(name)) > 1:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} given twice")
    if len(value) > MAX_PARAM or not value.isprintable():
        raise web.HTTPBadRequest(text=f"query parameter {name!r}: control characters or too long")
    if pattern is not None and not pattern.match(value):
        raise web.HTTPBadRequest(text=f"query parameter {name!r}: not a site/agent name")
    return str(value)


def _required(query: Any, name: str, *, pattern: re.Pattern[str] | None = None) -> str:
    value = _param(query, name, required=True, pattern=pattern)
    if value is None:  # _param raised already; for the type checker
        raise web.HTTPBadRequest(text=f"missing query parameter {name!r}")
    return value


def file_name(*parts: str) -> str:
    """A download name made of letters, digits, `_`, `.` and `-` only (no quote, no path)."""
    name = "_".join(_UNSAFE_NAME.sub("-", p) for p in parts)[:180]
    return name.lstrip(".") or "export"


def security_headers(*, tls: bool) -> Any:
    """No framing, no sniffing, a strict CSP, no referrer, no caching of API answers."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Content-Security-Policy", CSP)
        if tls:
            headers.setdefault("Strict-Transport-Security", HSTS)
        if request.path.startswith("/api/") or request.path == "/export.csv":
            headers.setdefault("Cache-Control", "no-store")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return middleware


class FleetData:
    """The queries behind the page (blocking; called through asyncio.to_thread)."""

    def __init__(self, config: IngestConfig, registry: KeyRegistry) -> None:
        self.url = config.web.database_url or config.database.url
        self.registry = registry
        # Each agent's site zone (`[[agents]] zone`, UTC if not given): its times on the page.
        self.zones = {(a.site, a.agent): a.zone for a in config.agents}
        self.site_zones: dict[str, str] = {}
        for a in config.agents:
            self.site_zones.setdefault(a.site, a.zone)

    def zone_of(self, site: Any, agent: Any = None) -> str:
        """The IANA name of the zone `site`/`agent`'s times are shown in."""
        return self.zones.get((site, agent)) or self.site_zones.get(site) or "UTC"

    def _conn(self) -> psycopg.Connection[Any]:
        conn = connect(self.url, application_name="isoedge-fleet-page")
        conn.autocommit = True
        return conn

    def snapshot(self) -> dict[str, Any]:
        """Agents, completeness, open alerts and calibrator release states."""
        with self._conn() as conn:
            completeness = {(a.site, a.agent): a for a in report(conn, self.registry.agents)}
            statuses = {
                (site, agent): (online, body, received)
                for site, agent, online, body, received in conn.execute(
                    "SELECT site, agent, online, body, received FROM agent_status"
                )
            }
            alerts = [
                {"id": i, "kind": kind, "site": site, "agent": agent, "message": message,
                 "params": {**(detail if isinstance(detail, dict) else {}), "site": site,
                            "agent": agent},
                 "count": count, "raised": _iso(raised), "updated": _iso(updated),
                 "severity": severity}
                for i, kind, site, agent, message, count, raised, updated, severity, detail
                in conn.execute(
                    "SELECT id, kind, site, agent, message, count, raised, updated, severity,"
                    " detail"
                    " FROM central_alerts WHERE cleared IS NULL ORDER BY updated DESC LIMIT 200"
                )
            ]
            calibrators = self._calibrators(conn, statuses)
            shipments = shipment_listing(conn)
            devices = [
                {"site": s, "agent": a, "device": d, "channel": c}
                for s, a, d, c in conn.execute(
                    "SELECT DISTINCT site, agent, device, channel FROM series"
                    " WHERE last_t > now() - interval '2 days' ORDER BY 1, 2, 3, 4 LIMIT 500"
                )
            ]
        agents = []
        for key in sorted(set(completeness) | {k for k in statuses if k in completeness}):
            entry = completeness[key].as_json()
            online, body, received = statuses.get(key, (False, None, None))
            last_seq = body.get("last_seq") if isinstance(body, dict) else None
            stored = entry["last_seq"] or 0
            entry.update({
                "state": (body or {}).get("state", "unknown") if body else "unknown",
                "online": bool(online),
                "status_received": _iso(received),
                "devices": (body or {}).get("devices", {}),
                "agent_last_seq": last_seq,
                "backlog": max(0, last_seq - stored) if isinstance(last_seq, int) else None,
            })
            agents.append(entry)
        for row in (*agents, *alerts, *calibrators, *devices):
            row["zone"] = self.zone_of(row.get("site"), row.get("agent"))
        for row in shipments:
            row["zone"] = self.zone_of(row.get("site"))
        return {"agents": agents, "alerts": alerts, "calibrators": calibrators,
                "shipments": shipments, "devices": devices, "t": _iso(datetime.now(UTC))}

    @staticmethod
    def _calibrators(conn: psycopg.Connection[Any],
                     statuses: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
        found: dict[tuple[str, str, str], dict[str, Any]] = {}
        for site, agent, device, test, result, t, record in conn.execute(CALIBRATORS_SQL):
            entry = found.setdefault((site, agent, device), {
                "site": site, "agent": agent, "device": device, "tests": {},
            })
            entry["tests"][test] = {"result": result, "t": _iso(t), "record": record}
        for entry in found.values():
            failed = [k for k, v in entry["tests"].items() if v["result"] != "pass"]
            entry["release"] = "on_hold" if failed else "released"
            entry["reasons"] = [[N_("{tests} not passed"), {"tests": ", ".join(failed)}]] \
                if failed else None
            entry["source"] = "qc stream"
        # The agent's own verdict (it also knows what is overdue) wins where it publishes one.
        for (site, agent), (_online, body, _r) in statuses.items():
            for device, state in ((body or {}).get("calibrators") or {}).items():
                entry = found.setdefault((site, agent, device), {
                    "site": site, "agent": agent, "device": device, "tests": {},
                })
                entry.update({"release": state.get("release"), "reason": state.get("reason"),
                              "reasons": state.get("reasons"), "source": "agent status"})
        return [found[k] for k in sorted(found)]

    def readings(self, selection: Selection) -> list[tuple[Any, ...]]:
        """Rows of one device in [start, end), oldest first, at most MAX_POINTS."""
        site, agent, device, channel, start, end = selection
        # A value is a number, a boolean or a text (docs/contract.md §3): one column each.
        sql = ("SELECT t, value, value_bool, value_text, unit, quality, channel, nuclide, id, seq"
               " FROM readings"
               " WHERE site = %s AND agent = %s AND device = %s AND t >= %s AND t < %s")
        params: list[Any] = [site, agent, device, start, end]
        if channel:
            sql += " AND channel = %s"
            params.append(channel)
        sql += " ORDER BY t LIMIT %s"
        params.append(MAX_POINTS)
        with self._conn() as conn:
            return [
                (t, number if flag is None and text is None else (flag if text is None else text),
                 *rest)
                for t, number, flag, text, *rest in conn.execute(sql, params)
            ]


def _metrics_handler(consumer: Consumer | None) -> Any:
    async def metrics(_request: web.Request) -> web.Response:
        if consumer is None:
            raise web.HTTPNotFound(text="no consumer in this process")
        from central.metrics import render  # noqa: PLC0415 - prometheus_client only when scraped

        return web.Response(body=render(consumer), content_type="text/plain", charset="utf-8")

    return metrics


Selection = tuple[str, str, str, str | None, datetime, datetime]


def _zone(row: dict[str, Any]) -> ZoneInfo:
    """The zone a row's times are shown in (the site's, validated by the config)."""
    return ZoneInfo(str(row.get("zone") or "UTC"))


def _localized(snapshot: dict[str, Any], lang: Language) -> dict[str, Any]:
    """Alert texts and release reasons (codes with parameters) rendered for this reader."""
    for alert in snapshot.get("alerts", []):
        alert["text"] = render(alert["message"], lang, _zone(alert), alert.pop("params", None))
    for cal in snapshot.get("calibrators", []):
        cal["reason"] = render_reasons(cal, lang, _zone(cal)) or None
    return snapshot


def _language(request: web.Request) -> Language:
    """The page's language: the selector's cookie, else the browser's, else English."""
    return choose(request.cookies.get("isoedge_lang"),
                  negotiate(request.headers.get("Accept-Language")))


async def _index(request: web.Request) -> web.StreamResponse:
    lang = _language(request)
    return web.Response(text=render_page(STATIC / "fleet.html", lang, None),
                        content_type="text/html", charset="utf-8",
                        headers={"Content-Language": lang, "Cache-Control": "no-store"})


async def _catalog(request: web.Request) -> web.Response:
    """GET /api/i18n: the JavaScript's catalog."""
    return web.json_response(catalog_json(choose(request.query.get("lang"), _language(request)),
                                          None))


def create_app(config: IngestConfig, registry: KeyRegistry,
               consumer: Consumer | None = None) -> web.Application:
    """The aiohttp application of the fleet page."""
    host = config.web.listen.rpartition(":")[0]
    auth = Authenticator(config.web.users, listen_host=host)
    tls = config.web.tls_cert is not None
    app = web.Application(middlewares=[security_headers(tls=tls),
                                       auth.middleware(frozenset({"/healthz"}))])
    data = FleetData(config, registry)

    async def run(fn: Any, *args: Any) -> Any:
        async with asyncio.timeout(QUERY_TIMEOUT_S):
            return await asyncio.to_thread(fn, *args)


    async def fleet(request: web.Request) -> web.Response:
        return web.json_response(_localized(await run(data.snapshot), _language(request)))

    def _selection(request: web.Request) -> Selection:
        q = request.query
        site = _required(q, "site", pattern=_ID)
        agent = _required(q, "agent", pattern=_ID)
        device = _required(q, "device")
        channel = _param(q, "channel", required=False)
        try:
            end = _parse_time(_param(q, "to", required=False),
                              datetime.now(UTC) + timedelta(minutes=1))
            start = _parse_time(_param(q, "from", required=False), end - timedelta(hours=1))
        except OverflowError:
            raise web.HTTPBadRequest(text="time out of range") from None
        return site, agent, device, channel, start, end

    async def readings(request: web.Request) -> web.Response:
        rows = await run(data.readings, _selection(request))
        return web.json_response({
            "points": [[_iso(t), value, unit, quality, channel] for t, value, unit, quality,
                       channel, *_rest in rows],
            "truncated": len(rows) >= MAX_POINTS,
        })

    async def export(request: web.Request) -> web.Response:
        selection = _selection(request)
        site, agent, device, _channel, start, _end = selection
        rows = await run(data.readings, selection)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["t", "site", "agent", "device", "channel", "value", "unit", "quality",
                         "nuclide", "id", "seq"])
        for t, value, unit, quality, chan, nuclide, rid, seq in rows:
            writer.writerow([_iso(t), site, agent, device, chan,
                             _csv_value(value), unit, quality, nuclide or "",
                             rid, seq])
        name = file_name(site, agent, device, f"{start:%Y%m%dT%H%M%S}") + ".csv"
        return web.Response(text=out.getvalue(), content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def healthz(_request: web.Request) -> web.Response:
        stats = consumer.stats if consumer else None
        ok = stats is None or (stats.connected and (stats.db_ok or stats.commits == 0))
        return web.json_response({
            "status": "ok" if ok else "degraded",
            "broker_connected": stats.connected if stats else None,
            "database_ok": stats.db_ok if stats else None,
            "envelopes_stored": stats.new_envelopes if stats else None,
        }, status=200 if ok else 503)

    app.router.add_get("/", _index)
    app.router.add_get("/api/fleet", fleet)
    app.router.add_get("/api/i18n", _catalog)
    app.router.add_get("/api/readings", readings)
    app.router.add_get("/export.csv", export)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", _metrics_handler(consumer))
    app.router.add_static("/static/", STATIC)
    return app


def tls_context(config: IngestConfig) -> ssl.SSLContext | None:
    """The server context of `web.tls_cert`/`tls_key` (TLS 1.2 or later), or None."""
    section = config.web
    if section.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    key = str(section.tls_key) if section.tls_key else None
    context.load_cert_chain(str(section.tls_cert), key)
    return context


async def start_fleet_page(config: IngestConfig, registry: KeyRegistry,
                           consumer: Consumer | None = None) -> web.AppRunner:
    """Serve the page on `web.listen` (HTTPS when a certificate is configured)."""
    host, _, port = config.web.listen.rpartition(":")
    context = tls_context(config)
    runner = web.AppRunner(create_app(config, registry, consumer), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=context).start()
    return runner
