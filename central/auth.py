"""Fleet-page access control, in the agent console's style and with its credential formats.

The same rules as the console: off only when the page listens on a loopback address and no
users are configured; otherwise HTTP basic (salted scrypt hash `scrypt$n$r$p$salt$hash`, as
`isoedge web-passwd` prints it) or a bearer token (its SHA-256), except on `/healthz`.
Successful password checks are cached so the page's polling stays cheap; repeated failures from
one address are answered with 429. (central may not import agent.console, so the checks live
here; they read the same configuration lines.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections import deque

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent.core.hosts import host_name, is_loopback
from agent.core.passwords import verify_password
from central.config import WebUser

REALM = "IsoEdge fleet"
_CACHE_TTL_S = 300.0
_FAILURE_WINDOW_S = 60.0
_FAILURE_LIMIT = 10









class Authenticator:
    """Checks basic/bearer credentials against the configured users."""

    def __init__(self, users: list[WebUser], *, listen_host: str) -> None:
        self.users = {u.name: u for u in users}
        self.enabled = bool(users) or not is_loopback(listen_host)
        self._cache: dict[str, float] = {}
        self._failures: dict[str, deque[float]] = {}

    async def _user(self, request: web.Request) -> WebUser | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            digest = hashlib.sha256(value.encode()).hexdigest()
            return next((u for u in self.users.values() if u.token_sha256
                         and hmac.compare_digest(u.token_sha256.lower(), digest)), None)
        if scheme.lower() != "basic" or not value:
            return None
        return await self._basic(value)

    async def _basic(self, value: str) -> WebUser | None:
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = self.users.get(name)
        if not sep or user is None or user.password_hash is None:
            return None
        key = hashlib.sha256(f"{name}\0{password}\0{user.password_hash}".encode()).hexdigest()
        now = time.monotonic()
        if now - self._cache.get(key, -_CACHE_TTL_S) < _CACHE_TTL_S:
            return user
        if not await asyncio.to_thread(verify_password, password, user.password_hash):
            return None
        if len(self._cache) > 64:  # noqa: PLR2004 - a handful of users, a few browsers
            self._cache.clear()
        self._cache[key] = now
        return user

    def middleware(self, public_paths: frozenset[str]) -> Middleware:
        """401 without valid credentials (except on `public_paths`); 429 after failures."""

        @web.middleware
        async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.enabled:
                if not is_loopback(host_name(request.host)):
                    return web.json_response({"error": "unexpected Host header"}, status=421)
                return await handler(request)
            if request.path in public_paths:
                return await handler(request)
            client = request.remote or "?"
            if client not in self._failures and len(self._failures) >= 1024:  # noqa: PLR2004
                self._failures.clear()  # bounded memory against address-spraying clients
            window = self._failures.setdefault(client, deque())
            while window and window[0] < time.monotonic() - _FAILURE_WINDOW_S:
                window.popleft()
            if len(window) >= _FAILURE_LIMIT:
                return web.json_response({"error": "too many failed logins"}, status=429,
                                         headers={"Retry-After": str(int(_FAILURE_WINDOW_S))})
            if await self._user(request) is None:
                if request.headers.get("Authorization"):
                    window.append(time.monotonic())
                return web.json_response(
                    {"error": "authentication required"}, status=401,
                    headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                )
            return await handler(request)

        return auth
