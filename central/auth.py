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

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent.core.hosts import host_name, is_loopback
from agent.core.logins import LoginThrottle
from agent.core.passwords import verify_dummy, verify_password
from central.config import WebUser

REALM = "IsoEdge fleet"
_CACHE_TTL_S = 300.0
_FAILURE_WINDOW_S = 60.0
_FAILURE_LIMIT = 10  # per account, and per address, per window

log = structlog.get_logger("isoedge.central.auth")





class _Throttled(Exception):  # noqa: N818 - a refusal, not an error
    pass


class Authenticator:
    """Checks basic/bearer credentials against the configured users.

    Password checks are throttled per account and per address with the failure slot taken
    before the scrypt check; unknown names cost a check against a dummy hash; failures are
    logged.
    """

    def __init__(self, users: list[WebUser], *, listen_host: str) -> None:
        self.users = {u.name: u for u in users}
        self.enabled = bool(users) or not is_loopback(listen_host)
        self._cache: dict[str, float] = {}
        self.throttle = LoginThrottle(
            per_account=_FAILURE_LIMIT, per_address=_FAILURE_LIMIT, window_s=_FAILURE_WINDOW_S,
            max_keys=1024,
        )  # fmt: skip

    async def _user(self, request: web.Request) -> WebUser | None:
        client = request.remote or "?"
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            digest = hashlib.sha256(value.encode()).hexdigest()
            user = next((u for u in self.users.values() if u.token_sha256
                         and hmac.compare_digest(u.token_sha256.lower(), digest)), None)
            if user is None:
                if self.throttle.reserve(None, client) is None:
                    raise _Throttled
                log.warning("fleet login failed", client=client, reason="unknown bearer token")
            return user
        if scheme.lower() != "basic" or not value:
            return None
        return await self._basic(value, client)

    async def _basic(self, value: str, client: str) -> WebUser | None:
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, sep, password = "?", "", ""
        user = self.users.get(name)
        key = ""
        if sep and user is not None and user.password_hash is not None:
            key = hashlib.sha256(f"{name}\0{password}\0{user.password_hash}".encode()).hexdigest()
            if time.monotonic() - self._cache.get(key, -_CACHE_TTL_S) < _CACHE_TTL_S:
                return user
        slot = self.throttle.reserve(name[:200], client)
        if slot is None:
            log.warning("fleet login failed", user=name[:200], client=client, reason="throttled")
            raise _Throttled
        if not sep or user is None or user.password_hash is None:
            await asyncio.to_thread(verify_dummy, password)  # as long as a real check
            log.warning("fleet login failed", user=name[:200], client=client,
                        reason="unknown user")  # fmt: skip
            return None
        if not await asyncio.to_thread(verify_password, password, user.password_hash):
            log.warning("fleet login failed", user=name[:200], client=client,
                        reason="wrong password")  # fmt: skip
            return None
        self.throttle.release(slot)
        if len(self._cache) > 64:  # noqa: PLR2004 - a handful of users, a few browsers
            self._cache.clear()
        self._cache[key] = time.monotonic()
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
            try:
                user = await self._user(request)
            except _Throttled:
                return web.json_response({"error": "too many failed logins"}, status=429,
                                         headers={"Retry-After": str(int(_FAILURE_WINDOW_S))})
            if user is None:
                return web.json_response(
                    {"error": "authentication required"}, status=401,
                    headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                )
            return await handler(request)

        return auth
