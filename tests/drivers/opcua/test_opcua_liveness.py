"""How the OPC UA driver knows its server is alive: keep-alives, not a read a second.

A closed connection is seen at once; a server that falls silent (a cut cable: no FIN, no RST,
only missing answers) only by what stops arriving. The subscription's publish responses, data
or empty keep-alives, prove the server alive; only a silence beyond the watchdog interval
costs a request.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from faults.blackhole import BlackholeProxy
from helpers import wait_for_condition
from supervised import Supervised

from agent.service.config import parse_config
from drivers.base import Quality
from drivers.opcua.driver import keepalive_period_s, subscription_parameters
from simulators.opcua import SynthesisModuleSimulator

pytestmark = pytest.mark.timeout(60)

WATCHDOG_S = 1.0


def device(sim: SynthesisModuleSimulator, url: str | None = None):
    data = sim.device_config(
        "synth-1", publishing_interval_ms=100, timeout_s=2.0, watchdog_interval_s=WATCHDOG_S
    )
    if url is not None:
        data["url"] = url
    return parse_config({"agent": {"site": "s", "id": "a"}, "devices": [data]}).devices[0]


def test_the_subscription_asks_for_a_keepalive_within_the_watchdog_interval():
    for interval_ms, watchdog_s in [(100, 1.0), (500, 1.0), (1000, 1.0), (250, 5.0), (2000, 1.0)]:
        params = subscription_parameters(interval_ms, watchdog_s)
        period = keepalive_period_s(params)
        # Never quieter than the watchdog allows, unless one publishing interval is longer.
        assert period <= max(watchdog_s, interval_ms / 1000)
        assert params.RequestedLifetimeCount >= 3 * params.RequestedMaxKeepAliveCount


async def test_a_quiet_server_is_kept_without_a_single_read(module):
    async with Supervised(device(module), backoff_s=0.5) as run:
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 3)
        module.set_stuck(True)  # no value changes: only keep-alives come
        reads_before = module.reads_served
        await asyncio.sleep(5 * WATCHDOG_S)
        assert run.errors == []
        assert run.connects == 1
        # The old watchdog read the server's state every interval; keep-alives need none.
        assert module.reads_served == reads_before
        module.set_stuck(False)
        count = len(run.channel("supply_pressure"))
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) > count)


async def test_a_server_gone_silent_ends_the_session_and_readings_resume(module):
    proxy = BlackholeProxy(module.port).start()
    try:
        url = module.url.replace(f":{module.port}/", f":{proxy.port}/")
        async with Supervised(device(module, url), backoff_s=0.5) as run:
            await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 3)
            proxy.silence()
            silenced_at = time.monotonic()
            await wait_for_condition(lambda: len(run.errors) >= 1, timeout=15)
            noticed_after = time.monotonic() - silenced_at
            assert "silent" in run.errors[0], run.errors
            # 1.5 intervals of silence, the next wake-up, then one interval for the read.
            assert noticed_after < 4 * WATCHDOG_S + 0.5, run.errors
            proxy.restore()
            count = len(run.channel("supply_pressure"))
            await wait_for_condition(
                lambda: len(run.channel("supply_pressure")) > count + 2, timeout=20
            )
        assert run.channel("supply_pressure")[-1].quality is Quality.GOOD
    finally:
        proxy.stop()
