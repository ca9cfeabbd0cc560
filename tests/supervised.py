"""A minimal stand-in for the agent's supervisor, for driver tests without the pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Self

from agent.core.tasks import cancel_and_wait
from drivers.base import DeviceConfigBase, DeviceError, Driver, Quality, Sample, SampleBatch
from drivers.registry import create_driver


class Supervised:
    """Connect, iterate, back off, reconnect; records what the driver produced.

    `source` is a device configuration (the driver comes from the registry) or a function that
    builds a fresh driver for every connection.
    """

    def __init__(
        self, source: DeviceConfigBase | Callable[[], Driver], backoff_s: float = 0.2
    ) -> None:
        self.make_driver = source if callable(source) else (lambda: create_driver(source))
        self.backoff_s = backoff_s
        self.samples: list[Sample] = []
        self.batches: list[SampleBatch] = []
        self.statuses: list[tuple[str, str | None]] = []
        self.errors: list[str] = []
        self.connects = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            driver = self.make_driver()
            driver.on_status(lambda state, detail: self.statuses.append((state, detail)))
            try:
                await driver.connect()
                self.connects += 1
                # Like the agent's supervisor: batches, as the pipeline gets them.
                async for batch in driver.batches():
                    self.batches.append(batch)
                    self.samples.extend(batch.samples())
            except DeviceError as exc:
                self.errors.append(str(exc))
            finally:
                await driver.close()
            await asyncio.sleep(self.backoff_s)

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        # Like the agent: a cancel lost inside a library's wait_for (Python 3.11) is repeated.
        await cancel_and_wait([self.task])

    def channel(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.channel == name]

    def good(self, start: int = 0) -> list[Sample]:
        return [s for s in self.samples[start:] if s.quality is Quality.GOOD]

    def bad(self, start: int = 0) -> list[Sample]:
        return [s for s in self.samples[start:] if s.quality is Quality.BAD]
