"""Web console access control: logins, sessions, basic/bearer authentication, token scopes.

Authentication is off only when the console listens on a loopback address and no users are
configured (a single-seat bench set-up). Otherwise every request except the page, its static
files, the login itself and `/healthz` needs a session cookie (people, from the login page:
idle and absolute timeouts, sign-out), HTTP basic credentials (API clients only; name +
password checked against a salted scrypt hash) or a bearer token (checked against its SHA-256;
limited to its user's scopes). Password checks are throttled per account and per address, the
failure slot taken before the check; failures are logged and audited. See docs/security.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog
from aiohttp import web

# Re-exported: the console and `isoedge web-passwd` import them from here.
from agent.core.hosts import host_name, is_loopback
from agent.core.logins import LoginThrottle
from agent.core.passwords import (
    check_password_hash_format,
    hash_password,
    verify_dummy,
    verify_password,
)
from agent.core.text import text_fault

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiohttp.typedefs import Handler, Middleware

    from agent.console.settings import WebUser

Role = Literal["viewer", "technologist", "radiopharmacist", "qa"]

REALM = "IsoEdge"
_CACHE_TTL_S = 300.0
_CACHE_SIZE = 64
_FAILURE_WINDOW_S = 60.0
_FAILURE_LIMIT = 10  # failed attempts per account, and per client address, per window: 429
_FAILURE_CLIENTS_MAX = 1024
_NAME_SHOWN = 200  # a user name is cut to this in logs and the audit trail
_PASSWORD_MAX = 1024

log = structlog.get_logger("isoedge.web")


def token_sha256(token: str) -> str:
    """Hex SHA-256 of a bearer token, as `token_sha256` in the configuration holds it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()




@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request. `authenticated` is False when access control is off."""

    name: str
    role: Role
    authenticated: bool
    method: Literal["basic", "bearer", "session", "none"]
    full_name: str = ""
    scopes: frozenset[str] = frozenset()

    def may(self, role: Role) -> bool:
        """True when this principal holds `role` (`qa` includes `viewer`)."""
        return role == "viewer" or self.role == "qa"


# Access control off (loopback, no users): full access; the acknowledging person types a name.
ANONYMOUS = Principal(name="", role="qa", authenticated=False, method="none")
# A public path (/healthz) with access control on: no identity, read-only.
_PUBLIC = Principal(name="", role="viewer", authenticated=False, method="none")
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("isoedge_principal", Principal)


class SessionCheck:
    """For a long request (the event stream): is the session it was made in still valid?"""

    __slots__ = ("sessions", "token")

    def __init__(self, sessions: Sessions, token: str) -> None:
        self.sessions = sessions
        self.token = token

    def __call__(self) -> bool:
        """True while the session lasts (not signed out, not timed out)."""
        return self.sessions.get(self.token, touch=False) is not None


STILL_VALID_KEY: web.RequestKey[SessionCheck] = web.RequestKey("isoedge_still_valid", SessionCheck)



SESSION_COOKIE = "isoedge_session"
AUTO_HEADER = "X-IsoEdge-Auto"  # the page's own background requests: no user activity
_SESSIONS_MAX = 512


@dataclass(slots=True)
class Session:
    """A signed-in browser: who, since when, last user activity (monotonic seconds)."""

    user: WebUser
    created: float
    last_active: float


class Sessions:
    """Browser sessions: a random cookie (only its SHA-256 is kept), idle and absolute limits."""

    def __init__(self, *, idle_s: float, absolute_s: float) -> None:
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    def start(self, user: WebUser) -> str:
        """A new session for `user`; returns the cookie value."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._by_digest[token_sha256(token)] = Session(user, now, now)
        while len(self._by_digest) > _SESSIONS_MAX:
            self._by_digest.popitem(last=False)  # the oldest session ends
        return token

    def get(self, token: str, *, touch: bool) -> Session | None:
        """The live session of a cookie (None: unknown, idle too long or too old)."""
        digest = token_sha256(token)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_active > self.idle_s or now - session.created > self.absolute_s:
            del self._by_digest[digest]
            return None
        if touch:
            session.last_active = now
        return session

    def end(self, token: str) -> Session | None:
        """Sign out: the cookie is worthless from now on."""
        return self._by_digest.pop(token_sha256(token), None)


class LoginThrottled(Exception):  # noqa: N818 - a refusal, as aiohttp's HTTP exceptions
    """Too many failed logins for this account or from this address: not checked."""


AuditHook = Callable[[str, str, str, str], None]
"""(action, user name, client address, reason): a failed login, a session begun or ended."""


class Authenticator:
    """Checks credentials against the configured users; caches successful password checks.

    Password checks are throttled per account and per client address, a failure slot taken
    BEFORE the (slow) scrypt check; an unknown name costs the same check against a dummy hash.
    Every failure is logged and handed to `on_failure` (the agent audits it).
    """

    def __init__(
        self,
        users: Sequence[WebUser],
        *,
        listen_host: str,
        audit: AuditHook | None = None,
        secure_cookie: bool = False,
        idle_timeout_s: float = 15 * 60.0,
        session_max_s: float = 12 * 3600.0,
    ) -> None:
        self.users = {u.name: u for u in users}
        self.sessions = Sessions(idle_s=idle_timeout_s, absolute_s=session_max_s)
        self.enabled = bool(users) or not is_loopback(listen_host)
        self.audit = audit
        self.secure_cookie = secure_cookie
        self._cache: OrderedDict[str, tuple[float, WebUser]] = OrderedDict()
        self.throttle = LoginThrottle(
            per_account=_FAILURE_LIMIT, per_address=_FAILURE_LIMIT, window_s=_FAILURE_WINDOW_S,
            max_keys=_FAILURE_CLIENTS_MAX,
        )  # fmt: skip
        for user in users:
            if user.password_hash is not None:
                check_password_hash_format(user.password_hash)

    def _cache_key(self, name: str, password: str) -> str:
        # Keyed by a hash of the credentials, so a changed password never hits the cache.
        return hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()

    def _audit(self, action: str, name: str, client: str, reason: str) -> None:
        if self.audit is not None:
            try:
                self.audit(action, name[:_NAME_SHOWN] or "?", client, reason)
            except Exception:
                log.exception("login event not audited", action=action, client=client)

    def _failed(self, name: str, client: str, reason: str) -> None:
        log.warning("login failed", user=name[:_NAME_SHOWN], client=client, reason=reason)
        if reason != "throttled":
            # Audited once per failure slot: the throttle bounds how many reach the trail.
            self._audit("login.failed", name, client, reason)

    # ------------------------------------------------------------ the login page
    async def login(self, request: web.Request) -> web.Response:
        """POST /api/login `{"name", "password"}`: a session cookie (or 401/429)."""
        client = request.remote or "?"
        if request.content_type != "application/json":
            return web.json_response({"error": "expected application/json"}, status=415)
        credentials = await _credentials(request)
        if isinstance(credentials, web.Response):
            return credentials
        name, password = credentials
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            self._end(old, client, "switch user")
        try:
            user = await self.check_password(name, password, client)
        except LoginThrottled:
            return too_many_failures()
        if user is None:
            return web.json_response({"error": "wrong name or password"}, status=401)
        token = self.sessions.start(user)
        log.info("signed in", user=user.name, client=client)
        self._audit("session.started", user.name, client, "signed in on the login page")
        response = web.json_response({"name": user.name, "role": user.role,
                                      "full_name": user.full_name or user.name})  # fmt: skip
        response.set_cookie(
            SESSION_COOKIE, token, path="/", httponly=True, samesite="Strict",
            secure=self.secure_cookie,
        )  # fmt: skip
        return response

    async def session_info(self, request: web.Request) -> web.Response:
        """GET /api/session (public): is this browser signed in?

        The page asks before it loads anything, so a signed-out page shows the login form
        without a 401.
        """
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token, touch=False) if token else None
        return web.json_response({
            "access_control": self.enabled,
            "signed_in": session is not None or not self.enabled,
            "idle_timeout_min": self.sessions.idle_s / 60,
        })  # fmt: skip

    def _end(self, token: str, client: str, why: str) -> None:
        session = self.sessions.end(token)
        if session is not None:
            log.info("signed out", user=session.user.name, client=client, why=why)
            self._audit("session.ended", session.user.name, client, why)

    async def logout(self, request: web.Request) -> web.Response:
        """POST /api/logout: the session ends; the cookie is cleared."""
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self._end(token, request.remote or "?", "signed out")
        response = web.json_response({"signed_out": True})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def check_password(self, name: str, password: str, client: str) -> WebUser | None:
        """The user when `password` is theirs; None when not; LoginThrottled when over a limit."""
        user = self.users.get(name)
        key = self._cache_key(name, password)
        cached = self._cache.get(key)
        now = time.monotonic()
        if (user is not None and cached is not None and now - cached[0] < _CACHE_TTL_S
                and cached[1] is user):  # fmt: skip
            return user
        slot = self.throttle.reserve(name, client)
        if slot is None:
            self._failed(name, client, "throttled")
            raise LoginThrottled
        # scrypt takes tens of milliseconds: keep it off the event loop that does device I/O.
        # An unknown name (or one without a password) costs the same check, on a dummy hash.
        if user is None or user.password_hash is None:
            await asyncio.to_thread(verify_dummy, password)
            self._failed(name, client, "unknown user")
            return None
        if not await asyncio.to_thread(verify_password, password, user.password_hash):
            self._failed(name, client, "wrong password")
            return None
        self.throttle.release(slot)
        self._cache[key] = (now, user)
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return user

    def _check_bearer(self, token: str) -> WebUser | None:
        digest = token_sha256(token)
        found: WebUser | None = None
        for user in self.users.values():
            if user.token_sha256 is not None and hmac.compare_digest(
                user.token_sha256.lower(), digest
            ):
                found = user
        return found

    def principal(self, user: WebUser, method: Literal["basic", "bearer", "session"]) -> Principal:
        """The principal of an authenticated user."""
        return Principal(
            name=user.name, role=user.role, authenticated=True, method=method,
            full_name=user.full_name or user.name,
            scopes=frozenset(user.scopes) if method == "bearer" else frozenset(),
        )  # fmt: skip

    async def authenticate(self, request: web.Request) -> Principal | None:
        """The request's principal, or None when credentials are missing or wrong.

        LoginThrottled when a password check is refused (too many failures).
        """
        if not self.enabled:
            return ANONYMOUS
        client = request.remote or "?"
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            session = self.sessions.get(cookie, touch=AUTO_HEADER not in request.headers)
            if session is not None:
                return self.principal(session.user, "session")
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic" and value and not from_browser(request):
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                if self.throttle.reserve(None, client) is None:
                    raise LoginThrottled from None
                self._failed("?", client, "malformed basic credentials")
                return None
            name, sep, password = decoded.partition(":")
            user = await self.check_password(name, password, client) if sep else None
            return None if user is None else self.principal(user, "basic")
        if scheme.lower() == "bearer" and value:
            # A token is 256 random bits checked in constant time: a valid one is always
            # accepted; wrong ones count against the address.
            user = self._check_bearer(value)
            if user is not None:
                return self.principal(user, "bearer")
            if self.throttle.reserve(None, client) is None:
                raise LoginThrottled
            self._failed("?", client, "unknown bearer token")
        return None

    def middleware(self, public_paths: frozenset[str]) -> Middleware:
        """Middleware: 401 without valid credentials (except on `public_paths`)."""

        @web.middleware
        async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.enabled and not is_loopback(host_name(request.host)):
                # Without access control only loopback names are served: a web page whose
                # domain re-resolves to 127.0.0.1 (DNS rebinding) gets nothing.
                return web.json_response({"error": "unexpected Host header"}, status=421)
            if request.path in public_paths or request.path.startswith("/static/"):
                # The page, its scripts and the login itself hold no data.
                request[PRINCIPAL_KEY] = ANONYMOUS if not self.enabled else _PUBLIC
                return await handler(request)
            try:
                principal = await self.authenticate(request)
            except LoginThrottled:
                return too_many_failures()
            if principal is None:
                return authentication_required(request)
            if principal.method == "bearer":
                scope = token_scope(request.method, request.path)
                if scope is None or scope not in principal.scopes:
                    return web.json_response(
                        {"error": f"this token's scopes ({', '.join(sorted(principal.scopes))})"
                                  " do not allow this request"}, status=403,
                    )  # fmt: skip
            request[PRINCIPAL_KEY] = principal
            cookie = request.cookies.get(SESSION_COOKIE)
            if principal.method == "session" and cookie:
                request[STILL_VALID_KEY] = SessionCheck(self.sessions, cookie)
            return await handler(request)

        return auth_middleware


def from_browser(request: web.Request) -> bool:
    """True for a browser's request (it sends Fetch Metadata); API clients do not.

    HTTP Basic is for API clients only: a browser signs in on the login page (a session
    cookie it can sign out of), so browsers are never offered, nor served by, Basic.
    """
    return "Sec-Fetch-Mode" in request.headers or "Sec-Fetch-Site" in request.headers


def authentication_required(request: web.Request) -> web.Response:
    """401; the Basic challenge only for API clients (a browser would pop up a dialog)."""
    headers = {} if from_browser(request) else {
        "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'
    }
    return web.json_response({"error": "authentication required"}, status=401, headers=headers)


_READ_METHODS = frozenset({"GET", "HEAD"})


def token_scope(method: str, path: str) -> str | None:
    """The scope a bearer token needs for this request; None: no token may do it.

    Tokens are for machines: the hospital system's prescriptions, Prometheus, a read-only
    dashboard. They never start, cancel or sign QC work and never read the audit trail.
    """
    if path == "/metrics":
        return "metrics" if method in _READ_METHODS else None
    if path.startswith("/api/prescriptions") or path == "/api/dispensing":
        return "prescriptions"
    if path.startswith("/api/audit") or path == "/api/stream":
        return None
    if path.startswith("/api/") and method in _READ_METHODS:
        return "read"
    return None


def too_many_failures() -> web.Response:
    """429 with Retry-After: a password check refused by the throttle."""
    return web.json_response(
        {"error": "too many failed logins; try again in a minute"}, status=429,
        headers={"Retry-After": str(int(_FAILURE_WINDOW_S))},
    )  # fmt: skip


def principal_of(request: web.Request) -> Principal:
    """The principal the auth middleware attached to `request`."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise web.HTTPUnauthorized
    return principal


def require_role(request: web.Request, role: Role) -> Principal:
    """The request's principal; 403 when it lacks `role`."""
    principal = principal_of(request)
    if not principal.may(role):
        raise web.HTTPForbidden(
            text=f'{{"error": "the {role} role is required"}}', content_type="application/json"
        )
    return principal


__all__ = [
    "ANONYMOUS",
    "AUTO_HEADER",
    "SESSION_COOKIE",
    "Authenticator",
    "LoginThrottled",
    "Principal",
    "Session",
    "Sessions",
    "authentication_required",
    "check_password_hash_format",
    "from_browser",
    "hash_password",
    "principal_of",
    "require_role",
    "token_scope",
    "token_sha256",
    "too_many_failures",
    "verify_password",
]


async def _credentials(request: web.Request) -> tuple[str, str] | web.Response:
    """The name and password of a login body, or the 400 that refuses it."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    name = body.get("name") if isinstance(body, dict) else None
    password = body.get("password") if isinstance(body, dict) else None
    # A lone surrogate or a NUL cannot be logged or audited (SQLite refuses it): it once made
    # a failed login answer 500 instead of being refused.
    if (not isinstance(name, str) or not isinstance(password, str) or not name
            or text_fault(name) or text_fault(password)):
        return web.json_response({"error": "a name and a password are required"}, status=400)
    if len(name) > _NAME_SHOWN or len(password) > _PASSWORD_MAX:
        return web.json_response({"error": "name or password too long"}, status=400)
    return name, password
