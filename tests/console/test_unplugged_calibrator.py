"""A calibrator unplugged: offline within its timeout whatever its reconnects do, its last value
stale with its age, and /healthz counting from the last good reading."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from test_qa_day_browser import CAL
from test_web import running_agent, url

from simulators.dosecal import DoseCalibratorSimulator

TIMEOUT_S = 0.5
GRACE_S = 3.0


async def state_of(session, agent) -> dict:
    async with session.get(url(agent, "/api/state")) as r:
        body = await r.json()
    return next(d for d in body["devices"] if d["device"] == CAL)


async def healthz(session, agent) -> tuple[int, dict]:
    async with session.get(url(agent, "/healthz")) as r:
        return r.status, await r.json()


async def wait_for(check, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_unplugged_calibrator_is_offline_and_stale_within_its_timeout(tmp_path, mosquitto):
    sim = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 0.001, seed=3, noise=True)
    # The agent opens the instrument by a link that vanishes with it, as /dev/serial/by-id/...
    # does when a USB instrument is unplugged: the pseudo-terminal's own number is reused by
    # the next one opened anywhere on the machine (another test), which is not this device.
    link = tmp_path / "usb-capintec-crc15"
    link.symlink_to(await sim.start())
    devices = [{"id": CAL, "type": "capintec_crc15", "port": str(link), "poll_interval_s": 0.1,
                "timeout_s": TIMEOUT_S, "backoff": {"initial_s": 0.2, "max_s": 0.5}}]
    stopped = False
    try:
        async with (
            running_agent(tmp_path, mosquitto.url, devices=devices,
                          web={"health_device_grace_s": GRACE_S}) as agent,
            aiohttp.ClientSession() as session,
        ):
            sim.place_source("F-18", 405.069)

            async def live():
                d = await state_of(session, agent)
                return d["state"] == "online" and d["readings"] > 5 and not d["stale"]

            await wait_for(live, 30)
            assert (await healthz(session, agent))[0] == 200
            # Unplug: the instrument stops answering; the agent keeps trying to reconnect.
            link.unlink()
            await sim.stop()
            stopped = True
            unplugged = time.monotonic()

            async def offline():
                d = await state_of(session, agent)
                return d if d["state"] == "offline" and d["stale"] else None

            device = await wait_for(offline, 15)
            # Within its answer timeout (plus the time to notice, on a loaded machine).
            assert time.monotonic() - unplugged < TIMEOUT_S + 5
            # Its reconnect attempts do not make it look live again.
            await asyncio.sleep(1.0)
            later = await state_of(session, agent)
            assert later["state"] == "offline" and later["stale"]
            assert later["last_reading_age_s"] > device["last_reading_age_s"]
            # /healthz counts from the last good reading, not from the last reconnect attempt.

            async def unhealthy():
                status, body = await healthz(session, agent)
                return body if status == 503 else None

            body = await wait_for(unhealthy, GRACE_S + 10)
            first = body["checks"]["devices"][CAL]["for_s"]
            assert first >= GRACE_S
            assert any(CAL in reason for reason in body["reasons"])
            await asyncio.sleep(1.5)
            _status, again = await healthz(session, agent)
            assert again["checks"]["devices"][CAL]["for_s"] >= first + 1.0
    finally:
        if not stopped:
            await sim.stop()
