"""Web console access control: password hashes, basic/bearer authentication, roles.

Authentication is off only when the console listens on a loopback address and no users are
configured (a single-seat bench set-up). Otherwise every request except `/healthz` needs HTTP
basic credentials (name + password, checked against a salted scrypt hash) or a bearer token
(checked against its SHA-256), and acknowledging an alert needs the `qa` role.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiohttp import web

# Re-exported: the console and `isoedge web-passwd` import them from here.
from agent.core.hosts import host_name, is_loopback
from agent.core.passwords import check_password_hash_format, hash_password, verify_password

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiohttp.typedefs import Handler, Middleware

    from agent.console.settings import WebUser

Role = Literal["viewer", "technologist", "radiopharmacist", "qa"]

REALM = "IsoEdge"
_CACHE_TTL_S = 300.0
_CACHE_SIZE = 64
_FAILURE_WINDOW_S = 60.0
_FAILURE_LIMIT = 10  # failed attempts per client address per window before 429
_FAILURE_CLIENTS_MAX = 1024


def token_sha256(token: str) -> str:
    """Hex SHA-256 of a bearer token, as `token_sha256` in the configuration holds it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()




@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request. `authenticated` is False when access control is off."""

    name: str
    role: Role
    authenticated: bool
    method: Literal["basic", "bearer", "none"]
    full_name: str = ""

    def may(self, role: Role) -> bool:
        """True when this principal holds `role` (`qa` includes `viewer`)."""
        return role == "viewer" or self.role == "qa"


# Access control off (loopback, no users): full access; the acknowledging person types a name.
ANONYMOUS = Principal(name="", role="qa", authenticated=False, method="none")
# A public path (/healthz) with access control on: no identity, read-only.
_PUBLIC = Principal(name="", role="viewer", authenticated=False, method="none")
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("isoedge_principal", Principal)



class Authenticator:
    """Checks credentials against the configured users; caches successful password checks."""

    def __init__(self, users: Sequence[WebUser], *, listen_host: str) -> None:
        self.users = {u.name: u for u in users}
        self.enabled = bool(users) or not is_loopback(listen_host)
        self._cache: OrderedDict[str, tuple[float, WebUser]] = OrderedDict()
        self._failures: dict[str, deque[float]] = {}
        for user in users:
            if user.password_hash is not None:
                check_password_hash_format(user.password_hash)

    def _cache_key(self, name: str, password: str) -> str:
        # Keyed by a hash of the credentials, so a changed password never hits the cache.
        return hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()

    async def _check_basic(self, name: str, password: str) -> WebUser | None:
        user = self.users.get(name)
        if user is None or user.password_hash is None:
            return None
        key = self._cache_key(name, password)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _CACHE_TTL_S and cached[1] is user:
            return user
        import asyncio  # noqa: PLC0415 - only needed on this slow path

        # scrypt takes tens of milliseconds: keep it off the event loop that does device I/O.
        if not await asyncio.to_thread(verify_password, password, user.password_hash):
            return None
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

    def _throttled(self, client: str) -> bool:
        window = self._failures.get(client)
        if window is None:
            return False
        cutoff = time.monotonic() - _FAILURE_WINDOW_S
        while window and window[0] < cutoff:
            window.popleft()
        return len(window) >= _FAILURE_LIMIT

    def _note_failure(self, client: str) -> None:
        if client not in self._failures and len(self._failures) >= _FAILURE_CLIENTS_MAX:
            self._failures.pop(next(iter(self._failures)))  # forget the longest-known client
        self._failures.setdefault(client, deque()).append(time.monotonic())

    async def authenticate(self, request: web.Request) -> Principal | None:
        """The request's principal, or None when credentials are missing or wrong."""
        if not self.enabled:
            return ANONYMOUS
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        user: WebUser | None = None
        method: Literal["basic", "bearer"] = "basic"
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            name, sep, password = decoded.partition(":")
            if sep:
                user = await self._check_basic(name, password)
        elif scheme.lower() == "bearer" and value:
            user, method = self._check_bearer(value), "bearer"
        if user is None:
            return None
        return Principal(
            name=user.name, role=user.role, authenticated=True, method=method,
            full_name=user.full_name or user.name,
        )

    def middleware(self, public_paths: frozenset[str]) -> Middleware:
        """Middleware: 401 without valid credentials (except on `public_paths`)."""

        @web.middleware
        async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.enabled and not is_loopback(host_name(request.host)):
                # Without access control only loopback names are served: a web page whose
                # domain re-resolves to 127.0.0.1 (DNS rebinding) gets nothing.
                return web.json_response({"error": "unexpected Host header"}, status=421)
            if request.path in public_paths:
                request[PRINCIPAL_KEY] = ANONYMOUS if not self.enabled else _PUBLIC
                return await handler(request)
            client = request.remote or "?"
            if self.enabled and self._throttled(client):
                return web.json_response(
                    {"error": "too many failed logins; try again in a minute"}, status=429,
                    headers={"Retry-After": str(int(_FAILURE_WINDOW_S))},
                )
            principal = await self.authenticate(request)
            if principal is None:
                if request.headers.get("Authorization"):
                    self._note_failure(client)
                return web.json_response(
                    {"error": "authentication required"},
                    status=401,
                    headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                )
            request[PRINCIPAL_KEY] = principal
            return await handler(request)

        return auth_middleware




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
    "Authenticator",
    "Principal",
    "check_password_hash_format",
    "hash_password",
    "principal_of",
    "require_role",
    "token_sha256",
    "verify_password",
]
