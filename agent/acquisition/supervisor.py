"""One supervisor task per device: connect, stream samples, back off and retry on failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from agent.acquisition.pipeline import Pipeline
from agent.acquisition.state import LiveState
from agent.core.backoff import Backoff
from agent.core.states import DeviceState
from agent.core.tasks import cancel_and_wait
from agent.state.pressure import Pressure
from drivers.base import DeviceConfigBase, Driver
from drivers.registry import create_driver

FAIRNESS_BATCH = 64  # readings processed before yielding to the event loop

StateCallback = Callable[[str, str, str | None], None]


def pauses_under(state: Pressure, priority: int, top_priority: int) -> bool:
    """Acquisition's pause policy under storage pressure: never drop, hold the sources back.

    At "high" the devices below the top priority pause; at "full" all of them; at "ok" none.
    """
    if state == Pressure.OK:
        return False
    return state == Pressure.FULL or priority < top_priority


class DeviceSupervisor:
    """Owns one device's driver. A failing or slow device never affects another's task."""

    def __init__(
        self,
        config: DeviceConfigBase,
        pipeline: Pipeline,
        live: LiveState,
        on_state: StateCallback,
        driver_factory: Callable[[DeviceConfigBase], Driver] = create_driver,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.live = live
        self.on_state = on_state
        self.driver_factory = driver_factory
        self.state = DeviceState.STARTING
        self.detail: str | None = None
        self.log = structlog.get_logger("isoedge.supervisor").bind(
            device=config.id, driver=config.type
        )
        self._allowed = asyncio.Event()
        self._allowed.set()
        self._paused = asyncio.Event()
        self._pause_reason: str | None = None
        self.health = live.device(config.id, config.type)

    def _set_state(self, state: DeviceState, detail: str | None = None) -> None:
        if state == self.state and detail == self.detail:
            return
        self.state, self.detail = state, detail
        self.health.state, self.health.detail, self.health.since = state.value, detail, time.time()
        self.on_state(self.config.id, state.value, detail)

    def _driver_status(self, state: str, detail: str | None) -> None:
        if state not in {DeviceState.ONLINE, DeviceState.DEGRADED}:
            return  # a driver reports only what it sees of the link; the rest is ours
        wanted = DeviceState(state)
        if wanted is DeviceState.ONLINE or wanted is DeviceState.DEGRADED:
            if wanted is DeviceState.DEGRADED:
                self.log.warning("device degraded", detail=detail)
            self._set_state(wanted, detail)

    def pause(self, reason: str) -> None:
        """Stop acquiring (e.g. outbox quota) until `resume()`; the driver is closed."""
        if self._allowed.is_set():
            self.log.warning("acquisition paused", reason=reason)
            self._pause_reason = reason
            self._allowed.clear()
            self._paused.set()

    def resume(self) -> None:
        """Acquire again after `pause()`."""
        if not self._allowed.is_set():
            self.log.info("acquisition resumed")
            self._paused.clear()
            self._allowed.set()

    @property
    def paused(self) -> bool:
        """True while acquisition is paused."""
        return not self._allowed.is_set()

    async def run(self) -> None:
        """Supervise until cancelled."""
        backoff = Backoff(self.config.backoff.initial_s, self.config.backoff.max_s)
        while True:
            if not self._allowed.is_set():
                self._set_state(DeviceState.PAUSED, self._pause_reason)
                await self._allowed.wait()
            driver = self.driver_factory(self.config)
            driver.on_status(self._driver_status)
            connection = asyncio.create_task(
                self._connection(driver, backoff), name=f"device-{self.config.id}"
            )
            pause_wait = asyncio.create_task(self._wait_paused())
            try:
                await asyncio.wait({connection, pause_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait([connection, pause_wait])
                await self._close(driver)
            if not connection.cancelled() and connection.exception() is None:
                failed = connection.result()
                if failed:
                    await asyncio.sleep(backoff.next())

    async def _wait_paused(self) -> None:
        await self._paused.wait()

    async def _connection(self, driver: Driver, backoff: Backoff) -> bool:
        """Run one connection; True when it failed (so the caller backs off)."""
        self._set_state(DeviceState.CONNECTING)
        try:
            async with asyncio.timeout(max(self.config.timeout_s * 3, 5.0)):
                await driver.connect()
            self._set_state(DeviceState.ONLINE)
            self.log.info("device connected")
            count = 0
            since_yield = 0
            process = self.pipeline.process_batch
            outbox = self.pipeline.outbox
            async for batch in driver.batches():
                if count == 0:
                    backoff.reset()
                n = process(batch)
                count += n
                since_yield += n
                if since_yield >= FAIRNESS_BATCH:
                    # A driver's async generator only yields to the loop when it waits on
                    # I/O; a fast device must still let other devices, MQTT and signals
                    # run. Backpressure is checked here too: loose by one batch.
                    since_yield = 0
                    if outbox.saturated:
                        await outbox.wait_capacity()
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.health.errors += 1
            self.health.reconnects += 1
            reason = f"{type(exc).__name__}: {exc}"
            self.log.warning("device failed; will reconnect", error=reason)
            self._set_state(DeviceState.OFFLINE, reason)
            return True
        self._set_state(DeviceState.OFFLINE, "driver ended its stream")
        return True

    async def _close(self, driver: Driver) -> None:
        try:
            async with asyncio.timeout(self.config.timeout_s + 2):
                await driver.close()
        except TimeoutError:
            self.log.warning("driver close timed out", timeout_s=self.config.timeout_s + 2)
        except Exception as exc:
            self.log.warning("driver close failed", error=f"{type(exc).__name__}: {exc}")
