"""Wall-clock jump detection with an injected clock (the real one is never touched)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, date, datetime

from helpers import free_port, wait_for_condition

from agent.delivery.signing import generate_key_files
from agent.service.clock import ClockMonitor, timesyncd_synced_since
from agent.service.config import ClockSection, load_config
from agent.service.runtime import Agent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


class FakeClocks:
    """A wall clock that can be stepped and an elapsed clock that only moves forward."""

    def __init__(self, wall: float = NOW) -> None:
        self.wall_now = wall
        self.elapsed_now = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.elapsed_now += seconds

    def step_wall(self, seconds: float) -> None:
        self.wall_now += seconds


def _monitor(clocks: FakeClocks, ntp: bool = False, **settings):
    events: list[tuple[str, dict]] = []
    trust: list[bool] = []
    monitor = ClockMonitor(
        ClockSection(**settings),
        on_event=lambda name, fields: events.append((name, fields)),
        on_trust=trust.append,
        wall=lambda: clocks.wall_now,
        elapsed=lambda: clocks.elapsed_now,
        ntp_synced_since=lambda _wall: ntp,
    )
    monitor.start()
    return monitor, events, trust


def test_drift_below_threshold_is_not_a_jump():
    clocks = FakeClocks()
    monitor, events, trust = _monitor(clocks)
    for _ in range(10):
        clocks.advance(1.0)
        clocks.step_wall(0.15)  # a slewing or slightly fast clock: 1.5 s over 10 checks
        monitor.check()
    assert events == []
    assert trust == []
    assert monitor.trusted


def test_forward_jump_is_reported_and_trust_returns_after_a_stable_period():
    clocks = FakeClocks()
    monitor, events, trust = _monitor(clocks, stable_after_s=60)
    clocks.advance(1.0)
    clocks.step_wall(3600.0)  # NTP steps the clock by an hour
    monitor.check()
    assert trust == [False]
    name, fields = events[0]
    assert name == "clock.jump"
    assert fields["jump_s"] == 3600.0
    assert fields["old"] == "2026-03-01T12:00:01.000000Z"
    assert fields["new"] == "2026-03-01T13:00:01.000000Z"
    assert fields["trusted"] is False
    for _ in range(59):
        clocks.advance(1.0)
        monitor.check()
    assert not monitor.trusted, "still inside the stable period"
    clocks.advance(1.0)
    monitor.check()
    assert monitor.trusted
    assert trust == [False, True]
    assert events[-1][0] == "clock.trusted"
    assert events[-1][1]["reason"] == "stable"
    assert events[-1][1]["untrusted_for_s"] == 60.0


def test_backward_jump_and_a_second_jump_restart_the_stable_period():
    clocks = FakeClocks()
    monitor, events, trust = _monitor(clocks, stable_after_s=10, jump_threshold_s=2.0)
    clocks.advance(1.0)
    clocks.step_wall(-2.5)
    monitor.check()
    assert events[0][1]["jump_s"] == -2.5
    for _ in range(5):
        clocks.advance(1.0)
        monitor.check()
    clocks.step_wall(30.0)
    clocks.advance(1.0)
    monitor.check()
    assert [e[0] for e in events] == ["clock.jump", "clock.jump"]
    assert trust == [False], "already untrusted: no second trust change"
    for _ in range(9):
        clocks.advance(1.0)
        monitor.check()
    assert not monitor.trusted
    clocks.advance(1.0)
    monitor.check()
    assert monitor.trusted
    assert monitor.jumps == 2


def test_clock_before_build_date_is_untrusted_until_corrected():
    clocks = FakeClocks(wall=datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC).timestamp())
    monitor, events, trust = _monitor(clocks, stable_after_s=5)
    assert trust == [False]
    assert events[0][0] == "clock.untrusted"
    assert events[0][1]["not_before"] == "2025-01-01"
    for _ in range(20):  # stable, but still 1970: stays untrusted
        clocks.advance(1.0)
        monitor.check()
    assert not monitor.trusted
    clocks.step_wall(NOW - clocks.wall_now)  # NTP finally steps it
    clocks.advance(1.0)
    monitor.check()
    assert events[-1][0] == "clock.jump"
    for _ in range(5):
        clocks.advance(1.0)
        monitor.check()
    assert monitor.trusted
    assert monitor.reason is None


def test_custom_not_before():
    clocks = FakeClocks()
    monitor, _events, _trust = _monitor(clocks, not_before=date(2027, 1, 1))
    assert not monitor.trusted
    assert monitor.reason == "before_not_before"


def test_ntp_confirmation_restores_trust_at_once_unless_disabled():
    for trust_ntp, expected in ((True, True), (False, False)):
        clocks = FakeClocks()
        monitor, events, _trust = _monitor(
            clocks, ntp=True, stable_after_s=300, trust_ntp_sync=trust_ntp
        )
        clocks.advance(1.0)
        clocks.step_wall(120.0)
        monitor.check()
        assert not monitor.trusted, "the jump itself is never trusted"
        clocks.advance(1.0)
        monitor.check()
        assert monitor.trusted is expected
        if expected:
            assert events[-1] == ("clock.trusted", events[-1][1])
            assert events[-1][1]["reason"] == "ntp_synchronized"


def test_timesyncd_flag_must_be_touched_after_the_jump(tmp_path):
    flag = tmp_path / "synchronized"
    jump_wall = time.time() - 10
    assert not timesyncd_synced_since(jump_wall, slack_s=2, flag=flag), "no file: not synced"
    flag.touch()
    os.utime(flag, (jump_wall - 60, jump_wall - 60))
    assert not timesyncd_synced_since(jump_wall, slack_s=2, flag=flag), "synced before the jump"
    os.utime(flag, (jump_wall - 1, jump_wall - 1))
    assert timesyncd_synced_since(jump_wall, slack_s=2, flag=flag), "step then touch"
    os.utime(flag, (time.time() + 3600, time.time() + 3600))
    assert not timesyncd_synced_since(jump_wall, slack_s=2, flag=flag), "mtime in the future"


async def test_agent_marks_readings_untrusted_after_a_jump(tmp_path):
    generate_key_files(tmp_path / "keys")
    path = tmp_path / "isoedge.toml"
    path.write_text(
        f'[agent]\nsite = "lab"\nid = "edge1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
        f'[signing]\nkey_file = "{tmp_path / "keys" / "signing.key"}"\n'
        '[clock]\ncheck_interval_s = 0.05\nstable_after_s = 0.5\ntrust_ntp_sync = false\n'
        '[[devices]]\nid = "cal1"\ntype = "synthetic"\npoll_interval_s = 0.02\n'
    )
    agent = Agent(load_config(path), config_path=path)
    offset = 0.0
    agent.clock.wall = lambda: time.time() + offset
    seen: list[tuple[str, dict]] = []
    agent.live.listeners.append(lambda stream, item: seen.append((stream, item)))
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        await wait_for_condition(lambda: any(s == "reading" for s, _ in seen), timeout=10)
        assert all("clock" not in i for s, i in seen if s == "reading")
        offset = -7200.0  # RTC reset / NTP step: two hours back
        await wait_for_condition(
            lambda: any(i.get("event") == "clock.jump" for s, i in seen if s == "audit"), 5
        )
        jump = next(i for s, i in seen if s == "audit" and i.get("event") == "clock.jump")
        assert -7200.5 < jump["jump_s"] < -7199.5
        mark = len(seen)
        await wait_for_condition(
            lambda: any(s == "reading" for s, _ in seen[mark:]), timeout=5
        )
        untrusted = [i for s, i in seen[mark:] if s == "reading"]
        assert untrusted[0]["clock"] == "untrusted"
        await wait_for_condition(
            lambda: any(i.get("event") == "clock.trusted" for s, i in seen if s == "audit"), 5
        )
        assert agent.pipeline.clock_trusted
        assert "clock trusted" in agent.service_status()
        mark = len(seen)
        await wait_for_condition(lambda: any(s == "reading" for s, _ in seen[mark:]), 5)
        assert all("clock" not in i for s, i in seen[mark:] if s == "reading")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 15)
