"""The aiohttp application and the `WebConsole` the agent owns."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from agent.console import i18n
from agent.console.auth import SESSION_COOKIE, Authenticator
from agent.console.generator_views import GeneratorViews
from agent.console.generator_views import add_routes as add_generator_routes
from agent.console.live import LiveHub
from agent.console.qc_views import QCViews, add_routes
from agent.console.records_views import RecordsViews
from agent.console.records_views import add_routes as add_record_routes
from agent.console.views import STATIC_DIR, Views
from agent.core.hosts import is_loopback
from agent.core.text import text_fault

if TYPE_CHECKING:
    from agent.console.backend import ConsoleBackend
    from agent.console.settings import WebSection

log = structlog.get_logger("isoedge.web")

# Liveness probes carry no credentials; the page and its login hold no data (static files
# under /static/ are public too).
# The page and its catalog are public: the login form is shown (translated) before sign-in.
PUBLIC_PATHS = frozenset({"/healthz", "/", "/api/login", "/api/logout", "/api/session",
                          "/api/i18n"})
SHUTDOWN_TIMEOUT_S = 1.0

HUB_KEY: web.AppKey[LiveHub] = web.AppKey("hub", LiveHub)

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` → (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"web.listen: expected HOST:PORT, got {listen!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"web.listen: bad port in {listen!r}") from None
    if not 0 <= port <= 65535:  # noqa: PLR2004 - TCP port range
        raise ValueError(f"web.listen: port out of range in {listen!r}")
    return host.strip("[]"), port


@web.middleware
async def _clean_parameters(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a path or query parameter with NUL or text that is not valid UTF-8."""
    texts = [request.path, *request.query.keys(), *request.query.values()]
    for text in texts:
        fault = text_fault(text)
        if fault == "not utf-8":
            return web.json_response({"error": "parameters must be valid UTF-8"}, status=400)
        if fault == "nul":
            return web.json_response({"error": "NUL is not allowed in parameters"}, status=400)
    return await handler(request)


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No framing, no sniffing, no caching of API answers; same-origin writes only."""
    if request.method not in {"GET", "HEAD", "OPTIONS"}:
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            return web.json_response({"error": "cross-origin request refused"}, status=403)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", _CSP)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response


def create_app(backend: ConsoleBackend, section: WebSection) -> web.Application:
    """The console application for one agent, seen through `backend`."""
    host, _port = parse_listen(section.listen)
    audit = backend.qa_desk.signatures.audit

    def audit_login(action: str, name: str, client: str, reason: str) -> None:
        audit.record(action, actor=name, subject="console", reason=reason, client=client)

    auth = Authenticator(
        section.users, listen_host=host, audit=audit_login,
        idle_timeout_s=section.idle_timeout_min * 60, session_max_s=section.session_max_h * 3600,
        secure_cookie=section.tls_cert is not None,
    )  # fmt: skip
    qc_views = QCViews(backend)
    views = Views(backend, device_grace_s=section.health_device_grace_s, qc=qc_views,
                  section=section)
    hub = LiveHub(backend.live, views.health_snapshot)
    app = web.Application(
        middlewares=[_security_headers, _clean_parameters, i18n.middleware(section),
                     auth.middleware(PUBLIC_PATHS)],
        client_max_size=64 * 1024,  # bodies: acknowledgements, signatures, prescriptions
    )
    app[HUB_KEY] = hub

    def session_user(request: web.Request) -> str | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        session = auth.sessions.get(cookie, touch=False) if cookie else None
        return session.user.name if session is not None else None

    app[i18n.SESSION_USER_KEY] = session_user
    app[i18n.ZONE_KEY] = backend.qa_desk.config.zone
    app.router.add_get("/", views.index)
    app.router.add_post("/api/login", auth.login)
    app.router.add_post("/api/logout", auth.logout)
    app.router.add_get("/api/session", auth.session_info)
    app.router.add_get("/api/state", views.state)
    app.router.add_get("/api/i18n", views.catalog)
    app.router.add_get("/api/trends", views.trends)
    app.router.add_get("/api/stream", hub.handle)
    app.router.add_get("/api/alerts", views.list_alerts)
    app.router.add_get("/api/audit", views.audit_json)
    app.router.add_get("/api/audit.csv", views.audit_csv)
    add_routes(app, qc_views)
    add_record_routes(app, RecordsViews(backend))
    add_generator_routes(app, GeneratorViews(backend))
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)

    async def _attach(_app: web.Application) -> None:
        hub.attach()

    async def _detach(_app: web.Application) -> None:
        hub.close()

    app.on_startup.append(_attach)
    app.on_shutdown.append(_detach)
    if auth.enabled and not section.users:
        log.warning("web console listens beyond loopback with no users configured: "
                    "every request will be refused", listen=section.listen)
    return app


def tls_context(section: WebSection) -> ssl.SSLContext | None:
    """Server TLS context when `tls_cert` and `tls_key` are configured."""
    if section.tls_cert is None and section.tls_key is None:
        return None
    if section.tls_cert is None or section.tls_key is None:
        raise ValueError("web: tls_cert and tls_key must be given together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(section.tls_cert), str(section.tls_key))
    return context


class WebConsole:
    """The console's HTTP(S) server; `start()` after the outbox, `stop()` at shutdown."""

    def __init__(self, backend: ConsoleBackend, section: WebSection) -> None:
        self.backend = backend
        self.section = section
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        """Bind and serve; returns the console URL. Raises OSError/ValueError on failure."""
        host, port = parse_listen(self.section.listen)
        context = tls_context(self.section)
        app = create_app(self.backend, self.section)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        # The bound address (port 0 asks the system for a free one).
        bound_port = next((int(a[1]) for a in runner.addresses if isinstance(a, tuple)), port)
        scheme = "https" if context else "http"
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{bound_port}/"
        log.info("web console listening", url=self.url,
                 auth="on" if (self.section.users or not is_loopback(host)) else "off (loopback)")
        return self.url

    async def stop(self) -> None:
        """End open event streams and close the server."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
