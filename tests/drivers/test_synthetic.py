"""The built-in synthetic source that the benchmarks and loss tests rely on."""

from __future__ import annotations

import time

import pytest

from drivers.base import DeviceError, Sample
from drivers.synthetic import TICK_S, SyntheticConfig, SyntheticDriver


async def collect(config: SyntheticConfig, seconds: float) -> tuple[list[Sample], float]:
    driver = SyntheticDriver(config)
    await driver.connect()
    samples: list[Sample] = []
    start = time.monotonic()
    async for sample in driver.samples():
        samples.append(sample)
        if time.monotonic() - start >= seconds:
            break
    await driver.close()
    return samples, time.monotonic() - start


async def test_high_rate_is_kept_and_taken_in_ticks():
    config = SyntheticConfig(id="s", type="synthetic", channels=["a", "b"], rate_per_s=2000)
    samples, elapsed = await collect(config, 1.0)
    # Never ahead of its schedule (one tick of slack); behind only if the machine is starved.
    assert len(samples) <= 2000 * elapsed + 2000 * TICK_S + 1
    assert len(samples) >= 0.5 * 2000 * elapsed
    # Values of one tick share a time stamp: about one stamp per 10 ms, not one per value.
    stamps = {s.t for s in samples}
    assert len(stamps) <= elapsed / TICK_S + 2
    assert len(samples) / len(stamps) >= 5


async def test_slow_rate_gives_every_value_its_own_time_stamp():
    # Slow: a poll every 100 ms (ten ticks). At 20 ms a starved worker fell two polls behind
    # on a loaded machine and took them in one burst, with one stamp, as designed.
    config = SyntheticConfig(id="s", type="synthetic", channels=["a"], poll_interval_s=0.1)
    samples, _ = await collect(config, 0.7)
    assert len({s.t for s in samples}) == len(samples) >= 5


async def test_counter_mode_counts_per_channel_without_holes():
    config = SyntheticConfig(
        id="s", type="synthetic", channels=["a", "b", "c"], rate_per_s=3000, mode="counter"
    )
    samples, _ = await collect(config, 0.3)
    for channel in "abc":
        values = [s.value for s in samples if s.channel == channel]
        assert values == [float(v) for v in range(1, len(values) + 1)]
        assert len(values) > 50


async def test_fail_after_raises_a_device_error():
    config = SyntheticConfig(id="s", type="synthetic", rate_per_s=1000, fail_after=40)
    samples = SyntheticDriver(config).samples()
    for _ in range(40):
        await anext(samples)
    with pytest.raises(DeviceError, match="synthetic failure"):
        await anext(samples)
