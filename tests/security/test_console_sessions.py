"""Browser sessions: a login page with a cookie (HttpOnly, SameSite=Strict, Secure under TLS),
sign-out, idle and absolute timeouts; HTTP Basic for API clients only; a few event streams per
user (issue 20: "HTTP Basic has no logout and no idle timeout", "200 event streams")."""

from __future__ import annotations

import asyncio
import ssl
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
from helpers import wait_for_condition
from test_web import QA, VIEWER, basic, running_agent, self_signed_cert, url, users

from agent.console.app import HUB_KEY

BROWSER = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}  # what a page's fetch sends


def _cookie(response: aiohttp.ClientResponse) -> Any:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie"):
        jar.load(header)
    return jar["isoedge_session"]


async def _login(session: aiohttp.ClientSession, agent, who: tuple[str, str], **kw: Any
                 ) -> aiohttp.ClientResponse:  # fmt: skip
    async with session.post(url(agent, "/api/login"), json={"name": who[0], "password": who[1]},
                            headers=BROWSER, **kw) as response:
        await response.read()
        return response


async def _state(session: aiohttp.ClientSession, agent, headers: dict[str, str] | None = None,
                 **kw: Any) -> int:  # fmt: skip
    async with session.get(url(agent, "/api/state"), headers={**BROWSER, **(headers or {})},
                           **kw) as response:
        return response.status


async def test_login_cookie_logout_and_basic_only_for_api_clients(tmp_path, mosquitto):
    async with running_agent(tmp_path, mosquitto.url, web={"users": users()}) as agent, \
            _jar_session() as session:
        # A browser gets no Basic challenge (no dialog) and is not served by Basic.
        async with session.get(url(agent, "/api/state"), headers=BROWSER) as response:
            assert response.status == 401
            assert "WWW-Authenticate" not in response.headers
        assert await _state(session, agent, basic(QA)) == 401
        async with session.get(url(agent, "/api/state"), headers=basic(QA)) as response:
            assert response.status == 200  # an API client (no Fetch Metadata) may use Basic
        async with session.get(url(agent, "/api/session"), headers=BROWSER) as response:
            assert (await response.json())["signed_in"] is False

        wrong = await _login(session, agent, (QA[0], "not-it"))
        assert wrong.status == 401
        response = await _login(session, agent, QA)
        assert response.status == 200
        cookie = _cookie(response)
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain HTTP on loopback (the test); Secure under TLS
        assert cookie["path"] == "/"
        assert await _state(session, agent) == 200
        async with session.post(url(agent, "/api/logout"), headers=BROWSER, json={}) as out:
            assert out.status == 200
        # The old cookie is worthless even when a client keeps sending it.
        session.cookie_jar.update_cookies({"isoedge_session": cookie.value})
        assert await _state(session, agent) == 401
        events = [r["event"] for r in await agent.audit.query(subject="console", limit=100)]
        assert events == ["login.failed", "session.started", "session.ended"]


async def test_idle_and_absolute_timeouts(tmp_path, mosquitto):
    web = {"users": users(), "idle_timeout_min": 0.02, "session_max_h": 0.001}  # 1.2 s, 3.6 s
    async with running_agent(tmp_path, mosquitto.url, web=web) as agent, \
            _jar_session() as session:
        await _login(session, agent, QA)
        # The page's own background requests do not keep an idle session alive.
        start = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - start < 1.6:
            if await _state(session, agent, {"X-IsoEdge-Auto": "1"}) == 401:
                break
            await asyncio.sleep(0.2)
        assert await _state(session, agent) == 401
        # A user who keeps working is still signed out at the absolute limit.
        await _login(session, agent, QA)
        statuses = []
        start = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - start < 5.0:
            statuses.append(await _state(session, agent))
            await asyncio.sleep(0.3)
        assert statuses[0] == 200
        assert statuses[-1] == 401


async def test_session_cookie_is_secure_under_tls(tmp_path, mosquitto):
    cert, key = self_signed_cert(tmp_path)
    web = {"tls_cert": str(cert), "tls_key": str(key), "users": users()}
    async with running_agent(tmp_path, mosquitto.url, web=web) as agent, \
            _jar_session() as session:
        response = await _login(session, agent, QA,
                                ssl=ssl.create_default_context(cafile=str(cert)))
        assert response.status == 200
        assert _cookie(response)["secure"] is True


async def test_event_streams_are_limited_per_user_and_end_with_the_session(tmp_path, mosquitto):
    async with running_agent(tmp_path, mosquitto.url, web={"users": users()}) as agent, \
            _jar_session() as viewer, _jar_session() as qa:
        await _login(viewer, agent, VIEWER)
        await _login(qa, agent, QA)
        streams = []
        try:
            for _ in range(4):
                response = await viewer.get(url(agent, "/api/stream"), headers=BROWSER)
                assert response.status == 200
                streams.append(response)
            async with viewer.get(url(agent, "/api/stream"), headers=BROWSER) as extra:
                assert extra.status == 429
            async with qa.get(url(agent, "/api/stream"), headers=BROWSER) as other:
                assert other.status == 200  # another user is not starved
            hub = agent.web._runner.app[HUB_KEY]
            await wait_for_condition(lambda: hub.clients == 4)
            async with viewer.post(url(agent, "/api/logout"), headers=BROWSER, json={}):
                pass
            # Signed out: the open streams end (within a health interval).
            await wait_for_condition(lambda: hub.clients == 0, timeout=10)
        finally:
            for response in streams:
                response.close()


def _jar_session() -> aiohttp.ClientSession:
    # aiohttp keeps no cookies of IP-address hosts unless told to (the console is 127.0.0.1).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
