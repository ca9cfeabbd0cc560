"""A built-in synthetic source: values generated in-process, for benchmarks and smoke tests.

It exercises the whole agent (pipeline, outbox, signing, MQTT) without any wire protocol.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import Field

from drivers.base import DeviceConfigBase, DeviceError, Driver, SampleBatch, utc_now

MAX_BURST = 256
# At high rates values are taken in ticks, like the polls of a fast instrument: one wake-up,
# one time stamp per tick instead of a timer per value.
TICK_S = 0.01


class SyntheticConfig(DeviceConfigBase):
    """Generates `channels` values every `poll_interval_s` (or `rate_per_s` values per second)."""

    type: Literal["synthetic"]
    channels: list[str] = Field(default_factory=lambda: ["value"], min_length=1)
    unit: str = "uSv/h"
    base: float = 0.2
    amplitude: float = 0.05
    noise: float = Field(default=0.02, ge=0, description="Half-width of the triangular noise.")
    rate_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Samples per second (all channels); overrides the poll. Above 100/s they "
        "are taken in 10 ms ticks, the samples of a tick sharing one time stamp.",
    )
    mode: Literal["wave", "counter"] = Field(
        default="wave",
        description="wave: sine plus noise; counter: 1, 2, 3 ... per channel (loss tests).",
    )
    fail_after: int | None = Field(
        default=None, ge=1, description="Raise a DeviceError after this many samples (tests)."
    )


class SyntheticDriver(Driver):
    """Sine plus noise on each channel; optionally fails to exercise the supervisor."""

    type = "synthetic"

    def __init__(self, config: SyntheticConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self._count = 0

    async def connect(self) -> None:
        """Nothing to open."""

    async def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per wake-up at the configured rate, so high rates stay cheap."""
        cfg = self.cfg
        per_s = cfg.rate_per_s or len(cfg.channels) / cfg.poll_interval_s
        period = 1.0 / per_s
        # Wake when a tick's worth of values is due (at once when a value is due per tick).
        lead = max(0.0, TICK_S - period)
        next_due = time.monotonic()
        idx = 0
        n_channels = len(cfg.channels)
        counters = dict.fromkeys(cfg.channels, 0)
        units = [cfg.unit] * MAX_BURST
        rand = random.random
        while True:
            now = time.monotonic()
            if now < next_due + lead:
                await asyncio.sleep(next_due + lead - now)
            # Like a real instrument, a source that falls behind does not owe the past:
            # at most MAX_BURST values per wake-up, and the schedule restarts from now.
            behind = int((time.monotonic() - next_due) / period) + 1
            due = min(max(1, behind), MAX_BURST)
            if behind > MAX_BURST:
                next_due = time.monotonic() - period * due
            failing = False
            if cfg.fail_after is not None and self._count + due > cfg.fail_after:
                due, failing = cfg.fail_after - self._count, True
            # One time stamp and one wave phase per burst: values of a burst are taken together.
            stamp = utc_now()
            channels = [cfg.channels[(idx + k) % n_channels] for k in range(due)]
            idx += due
            self._count += due
            if cfg.mode == "counter":
                values: list[float] = []
                for channel in channels:
                    counters[channel] += 1
                    values.append(float(counters[channel]))
                texts = [f"{v:.6f}" for v in values]
                rounded = values
            else:
                wave = cfg.base + cfg.amplitude * math.sin(time.monotonic() / 60.0 * 2 * math.pi)
                # Triangular noise (sum of two uniforms): Gaussian-like and much cheaper.
                noise = cfg.noise
                values = [wave + (rand() + rand() - 1.0) * noise for _ in range(due)]
                texts = [f"{v:.6f}" for v in values]
                rounded = [round(v, 6) for v in values]
            if due:
                yield SampleBatch(cfg.id, stamp, channels, rounded, units[:due], texts)
            if failing:
                self._count = 0
                raise DeviceError("synthetic failure", device=cfg.id)
            next_due += due * period
            # Yield to the loop even when behind, so one fast source never starves others.
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Nothing to release."""
