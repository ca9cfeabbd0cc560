"""The device supervisor on its own, with small scripted drivers and a real pipeline/outbox."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from helpers import wait_for_condition

from agent.acquisition.pipeline import Pipeline
from agent.acquisition.state import LiveState
from agent.acquisition.supervisor import DeviceSupervisor
from agent.core.states import DeviceState
from agent.core.tasks import cancel_and_wait
from agent.delivery.outbox import Outbox
from agent.delivery.signing import generate_key_files
from drivers.base import BackoffConfig, DeviceConfigBase, DeviceError, Driver, Sample


async def forever() -> None:
    """A wait that never ends by itself (a hung instrument or library)."""
    await asyncio.Event().wait()


@dataclass
class Script:
    """What every driver built for one device does, and what it saw (shared across reconnects)."""

    connect_failures: int = 0  # the first N connects raise DeviceError
    fail_after: int | None = None  # a connection's stream raises after this many samples
    hang_connect: bool = False
    hang_samples: bool = False
    hang_closes: int = 0  # the first N closes never return
    flood: bool = False  # yield samples as fast as possible, never waiting on I/O
    connects: list[float] = field(default_factory=list)
    sample_times: list[float] = field(default_factory=list)
    closes: int = 0
    streams_ended: int = 0


class ScriptedDriver(Driver):
    type = "scripted"

    def __init__(self, config: DeviceConfigBase, script: Script) -> None:
        super().__init__(config)
        self.script = script
        self.closed = False

    async def connect(self) -> None:
        self.script.connects.append(time.monotonic())
        if self.script.hang_connect:
            await forever()
        if self.script.connect_failures > 0:
            self.script.connect_failures -= 1
            raise DeviceError("connection refused", device=self.device_id)

    async def samples(self) -> AsyncIterator[Sample]:
        script = self.script
        try:
            if script.hang_samples:
                await forever()
            for n in itertools.count(1):
                script.sample_times.append(time.monotonic())
                yield self.sample("value", float(n), "uSv/h")
                if script.fail_after is not None and n >= script.fail_after:
                    raise DeviceError("link lost", device=self.device_id)
                if not script.flood:
                    await asyncio.sleep(self.config.poll_interval_s)
        finally:
            script.streams_ended += 1

    async def close(self) -> None:
        self.closed = True
        self.script.closes += 1
        if self.script.hang_closes > 0:
            self.script.hang_closes -= 1
            await forever()


def device(
    device_id: str,
    *,
    poll: float = 0.02,
    timeout: float = 0.5,
    backoff: tuple[float, float] = (0.02, 0.16),
) -> DeviceConfigBase:
    return DeviceConfigBase(
        id=device_id,
        type="scripted",
        poll_interval_s=poll,
        timeout_s=timeout,
        backoff=BackoffConfig(initial_s=backoff[0], max_s=backoff[1]),
    )


class Rig:
    """A pipeline on a real outbox, and supervisors for scripted devices."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.live = LiveState()
        self.configs: dict[str, DeviceConfigBase] = {}
        self.pipeline = Pipeline(outbox, self.live, self.configs)
        self.history: dict[str, list[tuple[str, str | None]]] = {}
        self.supervisors: dict[str, DeviceSupervisor] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def _on_state(self, device_id: str, state: str, detail: str | None) -> None:
        self.history.setdefault(device_id, []).append((state, detail))

    def add(self, config: DeviceConfigBase, script: Script) -> DeviceSupervisor:
        self.configs[config.id] = config
        supervisor = DeviceSupervisor(
            config,
            self.pipeline,
            self.live,
            self._on_state,
            driver_factory=lambda c: ScriptedDriver(c, script),
        )
        self.supervisors[config.id] = supervisor
        return supervisor

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(s.run(), name=f"supervise-{i}") for i, s in self.supervisors.items()
        ]

    def states(self, device_id: str) -> list[str]:
        return [state for state, _ in self.history.get(device_id, [])]


@pytest.fixture
async def rig(tmp_path) -> AsyncIterator[Rig]:
    outbox = Outbox(
        tmp_path / "outbox.db",
        generate_key_files(tmp_path / "keys"),
        site="s",
        agent="a",
        topic_for=lambda s, d: f"t/{s}/{d}",
        quota_bytes=1 << 30,
        fsync="normal",
        commit_interval_ms=0,
    )
    await outbox.start()
    rig = Rig(outbox)
    try:
        yield rig
    finally:
        await cancel_and_wait(rig.tasks)
        await outbox.close()


async def wait_state(supervisor: DeviceSupervisor, state: DeviceState, timeout: float = 10) -> None:
    await wait_for_condition(lambda: supervisor.state is state, timeout=timeout, interval=0.005)


async def test_states_go_starting_connecting_online_and_offline_on_failure_then_reconnect(rig):
    script = Script(connect_failures=1, fail_after=5)
    supervisor = rig.add(device("a"), script)
    assert supervisor.state is DeviceState.STARTING
    assert rig.live.devices["a"].state == "starting"
    rig.start()
    await wait_for_condition(lambda: len(rig.history.get("a", [])) >= 7, timeout=10)
    history = rig.history["a"][:7]
    assert [s for s, _ in history] == [
        "connecting",
        "offline",
        "connecting",
        "online",
        "offline",
        "connecting",
        "online",
    ]
    assert history[1][1] == "DeviceError: connection refused"
    assert history[4][1] == "DeviceError: link lost"
    health = rig.live.devices["a"]
    assert health.errors >= 2
    assert health.reconnects >= 2
    assert health.readings >= 5  # samples reached the pipeline ...
    assert await rig.outbox.flush()
    assert (await rig.outbox.stats()).items >= 5  # ... and the outbox
    assert script.closes >= 2, "every failed driver is closed before a fresh one is built"


async def test_reconnects_back_off_capped_and_connect_again(rig):
    initial, cap = 0.02, 0.16
    script = Script(connect_failures=12)
    supervisor = rig.add(device("a", backoff=(initial, cap)), script)
    rig.start()
    await wait_state(supervisor, DeviceState.ONLINE)
    assert len(script.connects) == 13
    gaps = [b - a for a, b in itertools.pairwise(script.connects)]
    assert min(gaps) >= initial / 2 * 0.9, f"no backoff: {gaps}"
    # Capped: however many failures, no wait is longer than max_s (plus scheduling slack).
    assert max(gaps) <= cap + 0.5, f"backoff beyond its cap: {gaps}"
    assert sum(gaps) <= 12 * cap + 2.0  # uncapped, the last waits alone would be 20 s and more
    await wait_for_condition(lambda: len(script.sample_times) >= 3)


async def test_a_hung_or_flooding_device_never_delays_another_devices_samples(rig):
    poll = 0.02
    steady = Script()
    rig.add(device("steady", poll=poll), steady)
    hung_connect = rig.add(device("hung-connect", timeout=0.2), Script(hang_connect=True))
    hung_stream = rig.add(device("hung-stream"), Script(hang_samples=True))
    flood = Script(flood=True)
    rig.add(device("flood"), flood)
    rig.start()
    await wait_state(hung_stream, DeviceState.ONLINE)
    await wait_for_condition(lambda: len(flood.sample_times) > 10_000, timeout=20)
    start = len(steady.sample_times)
    await wait_for_condition(lambda: len(steady.sample_times) >= start + 60, timeout=10)
    window = steady.sample_times[start:]
    span = window[-1] - window[0]
    gaps = [b - a for a, b in itertools.pairwise(window)]
    # The steady device keeps its cadence while the flood pushes thousands of samples a second
    # and two others hang in connect and in their stream.
    assert len(flood.sample_times) > 10_000
    assert "online" not in rig.states("hung-connect")
    assert hung_connect.state in {DeviceState.CONNECTING, DeviceState.OFFLINE}
    assert hung_stream.state is DeviceState.ONLINE
    # Bounds leave room for a loaded machine; a starved device would have no samples at all.
    assert len(window) >= 0.4 * span / poll, f"{len(window)} samples in {span:.2f} s"
    assert max(gaps) < 1.0, f"steady device delayed by {max(gaps):.3f} s"
    median = sorted(gaps)[len(gaps) // 2]
    assert median < poll * 3, f"median interval {median:.3f} s for a {poll} s poll"


async def test_pause_closes_the_driver_and_resume_reconnects(rig):
    script = Script()
    clock = Script()
    supervisor = rig.add(device("a"), script)
    rig.add(device("clock"), clock)
    rig.start()
    await wait_state(supervisor, DeviceState.ONLINE)
    await wait_for_condition(lambda: len(script.sample_times) >= 3)

    supervisor.pause("outbox quota high")
    assert supervisor.paused
    await wait_state(supervisor, DeviceState.PAUSED)
    assert supervisor.detail == "outbox quota high"
    assert rig.live.devices["a"].state == "paused"
    assert script.closes == 1
    assert script.streams_ended == 1
    paused_samples, paused_connects = len(script.sample_times), len(script.connects)
    # While paused nothing is read: measured against another device's ten next samples.
    ticks = len(clock.sample_times)
    await wait_for_condition(lambda: len(clock.sample_times) >= ticks + 10)
    assert (len(script.sample_times), len(script.connects)) == (paused_samples, paused_connects)

    supervisor.resume()
    assert not supervisor.paused
    await wait_state(supervisor, DeviceState.ONLINE)
    assert rig.states("a")[-3:] == ["paused", "connecting", "online"]
    await wait_for_condition(lambda: len(script.sample_times) >= paused_samples + 3)
    assert len(script.connects) == paused_connects + 1


async def test_a_driver_close_that_hangs_is_bounded_by_its_timeout(rig):
    timeout_s = 0.2
    bound = timeout_s + 2  # the supervisor's close timeout
    script = Script(fail_after=3, hang_closes=1)
    clock = Script()
    supervisor = rig.add(device("a", timeout=timeout_s, backoff=(0.02, 0.05)), script)
    rig.add(device("clock"), clock)
    rig.start()
    await wait_for_condition(lambda: "offline" in rig.states("a"), timeout=10)
    failed = time.monotonic()
    ticks = len(clock.sample_times)
    await wait_for_condition(lambda: len(script.connects) >= 2, timeout=bound + 5)
    reconnected = time.monotonic() - failed
    assert script.closes >= 1
    assert bound * 0.9 <= reconnected <= bound + 2.0, f"reconnected after {reconnected:.2f} s"
    # The hung close held only its own device: the other one kept sampling meanwhile.
    assert len(clock.sample_times) - ticks >= 0.2 * reconnected / 0.02
    await wait_state(supervisor, DeviceState.ONLINE)
