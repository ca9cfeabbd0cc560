"""A minimal stand-in for the agent's supervisor, for driver tests without the pipeline."""

from __future__ import annotations

import asyncio
from typing import Self

from agent.tasks import cancel_and_wait
from drivers.base import DeviceError, Sample
from drivers.catalog import create_driver


class Supervised:
    """A minimal stand-in for the agent's supervisor: connect, iterate, back off, reconnect."""

    def __init__(self, config, backoff_s: float = 0.2) -> None:
        self.config = config
        self.backoff_s = backoff_s
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            driver = create_driver(self.config)
            try:
                await driver.connect()
                async for sample in driver.samples():
                    self.samples.append(sample)
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
