"""`isoedge demo` wires a serial instrument simulator by the device's driver type (registry)."""

from __future__ import annotations

import asyncio
import tomllib

import pytest

from agent.service.config import parse_config
from agent.tools.demo import SIMULATOR_STARTERS
from drivers.base import Quality
from drivers.registry import create_driver, registry

MODELS = registry().with_simulator()


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.type)
async def test_each_sample_config_reads_good_values_from_its_demo_simulator(spec):
    # The device as the driver folder's sample.toml writes it; the demo starts the simulator
    # profile registered under the same type name and points the device at it.
    device = tomllib.loads(spec.sample_path.read_text(encoding="utf-8"))["devices"][0]
    device.update(poll_interval_s=0.1, timeout_s=1.0)
    device.pop("idle_timeout_s", None)
    stop = await SIMULATOR_STARTERS["dosecal"]({"transport": "tcp", "push_interval_s": 0.1}, device)
    try:
        assert device["port"].startswith("socket://127.0.0.1:")
        config = parse_config({"agent": {"site": "s", "id": "a"}, "devices": [device]})
        driver = create_driver(config.devices[0])
        try:
            async with asyncio.timeout(10):
                await driver.connect()
                sample = await anext(aiter(driver.samples()))
        finally:
            await driver.close()
    finally:
        await stop()
    assert sample.quality is Quality.GOOD, sample
    # Whatever the instrument measures: the channel is one its configuration declares.
    assert sample.channel in config.devices[0].channels
