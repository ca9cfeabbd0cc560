"""Server-Sent Events: live readings, alert/audit events and device health for the page.

The hub registers one listener on `LiveState`. Readings are coalesced per (device, channel) and
sent at most every `MIN_INTERVAL_S`, so a device sampling at kHz costs the browser a few updates
a second; alert and audit events are never coalesced (a slow client that lets `MAX_EVENTS`
pile up is disconnected and reconnects, then reloads the lists).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.console.auth import STILL_VALID_KEY, principal_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.console.backend import LiveFeed

MIN_INTERVAL_S = 0.25
HEALTH_INTERVAL_S = 2.0
MAX_EVENTS = 500
MAX_STREAMS_PER_USER = 4  # a few tabs; 200 streams of one viewer once took half a core
MAX_STREAMS = 64


class _Subscriber:
    __slots__ = ("events", "overflow", "readings", "wake")

    def __init__(self) -> None:
        self.readings: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: deque[tuple[str, dict[str, Any]]] = deque()
        self.overflow = False
        self.wake = asyncio.Event()


class LiveHub:
    """Fans LiveState changes out to the connected event streams."""

    def __init__(self, live: LiveFeed, health_snapshot: Callable[[], dict[str, Any]]) -> None:
        self.live = live
        self.health_snapshot = health_snapshot
        self._subscribers: set[_Subscriber] = set()
        self._per_user: dict[str, int] = {}
        self._closing = asyncio.Event()
        self._remove: Callable[[], None] | None = None

    def attach(self) -> None:
        """Start listening to LiveState."""
        if self._remove is None:
            self._remove = self.live.subscribe(self._on_change)

    def close(self) -> None:
        """Stop listening and end every open stream."""
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()
        self._closing.set()
        for sub in self._subscribers:
            sub.wake.set()

    @property
    def clients(self) -> int:
        """Open event streams."""
        return len(self._subscribers)

    def _on_change(self, kind: str, item: dict[str, Any]) -> None:
        # Called synchronously by LiveState on the event loop: must stay cheap.
        for sub in self._subscribers:
            if kind == "reading":
                sub.readings[(str(item.get("device")), str(item.get("channel")))] = item
            elif len(sub.events) < MAX_EVENTS:
                sub.events.append((kind, item))
            else:
                sub.overflow = True
            sub.wake.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /api/stream: an endless `text/event-stream` (a few per user; 429 beyond)."""
        who = principal_of(request).name
        busy = len(self._subscribers) >= MAX_STREAMS
        if busy or self._per_user.get(who, 0) >= MAX_STREAMS_PER_USER:
            return web.json_response(
                {"error": "too many open event streams; close other console tabs"}, status=429
            )
        still_valid = request.get(STILL_VALID_KEY)
        self._per_user[who] = self._per_user.get(who, 0) + 1
        try:
            return await self._stream(request, still_valid)
        finally:
            self._per_user[who] -= 1
            if not self._per_user[who]:
                del self._per_user[who]

    async def _stream(
        self, request: web.Request, still_valid: Callable[[], bool] | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        sub = _Subscriber()
        self._subscribers.add(sub)
        loop = asyncio.get_running_loop()
        try:
            await response.write(b"retry: 2000\n\n")
            await _send(response, "health", self.health_snapshot())
            next_health = loop.time() + HEALTH_INTERVAL_S
            while not self._closing.is_set():
                timeout = max(0.0, next_health - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await sub.wake.wait()
                if self._closing.is_set() or (still_valid is not None and not still_valid()):
                    break  # shutting down, or the session ended (signed out, timed out)
                sub.wake.clear()
                if sub.overflow:
                    await _send(response, "overflow", {"dropped": True})
                    break
                while sub.events:
                    kind, item = sub.events.popleft()
                    await _send(response, kind, item)
                if sub.readings:
                    batch, sub.readings = list(sub.readings.values()), {}
                    await _send(response, "readings", {"items": batch})
                if loop.time() >= next_health:
                    await _send(response, "health", self.health_snapshot())
                    next_health = loop.time() + HEALTH_INTERVAL_S
                await asyncio.sleep(MIN_INTERVAL_S)  # coalesce bursts of readings
        except ConnectionResetError:
            pass  # the browser went away (tab closed, reload); it reconnects by itself
        finally:
            self._subscribers.discard(sub)
        return response


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    await response.write(f"event: {event}\ndata: {text}\n\n".encode())
