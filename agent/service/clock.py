"""Wall-clock supervision: detect jumps (NTP step, RTC reset) and say when time can be trusted.

Every reading carries the wall-clock time `t`, so a wrong clock silently corrupts the record.
A Raspberry Pi has no battery-backed RTC: it boots with the time it had at the last shutdown
(fake-hwclock) or 1970, and NTP later steps it, possibly by months. The monitor compares, once
per `check_interval_s`, how far the wall clock moved with how far an elapsed-time clock moved
(CLOCK_BOOTTIME, which counts suspend too, so a suspend is not a jump). A difference beyond
`jump_threshold_s` is a jump: it is written to the audit stream (`clock.jump`) and the clock is
untrusted, so readings carry `"clock": "untrusted"`, until the clock has been stable for
`stable_after_s` or NTP confirms a synchronisation after the jump. A wall clock before
`not_before` (earlier than this software can have been installed) is untrusted from the start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.reading import rfc3339

if TYPE_CHECKING:
    from agent.service.config import ClockSection

log = structlog.get_logger("isoedge.clock")

EventFn = Callable[[str, dict[str, Any]], None]
TrustFn = Callable[[bool], None]
NtpSyncFn = Callable[[float], bool]

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
"""systemd-timesyncd touches this file on every successful synchronisation."""


def elapsed_clock() -> float:
    """Seconds on a clock that never jumps and keeps counting during suspend."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux
        return time.monotonic()


def timesyncd_synced_since(wall: float, *, slack_s: float, flag: Path = TIMESYNC_FLAG) -> bool:
    """True if systemd-timesyncd reported a synchronisation at or after wall time `wall`.

    The flag file's mtime is a wall time written by the synchronised clock; it must lie between
    the jump (less `slack_s`, as the step itself precedes our detection) and now. A manual step
    backwards leaves an mtime in the future, which is rejected.
    """
    try:
        mtime = flag.stat().st_mtime
    except OSError:
        return False
    return wall - slack_s <= mtime <= time.time() + 1.0


def _iso(wall: float) -> str:
    try:
        return rfc3339(datetime.fromtimestamp(wall, UTC))
    except (OverflowError, OSError, ValueError):
        return repr(wall)


class ClockMonitor:
    """Watches the wall clock; reports jumps and trust changes through callbacks.

    `wall` and `elapsed` are injectable so tests can jump a fake clock without touching the
    real one. `check()` is synchronous and does one comparison; `run()` calls it periodically.
    """

    def __init__(
        self,
        settings: ClockSection,
        *,
        on_event: EventFn,
        on_trust: TrustFn,
        wall: Callable[[], float] = time.time,
        elapsed: Callable[[], float] = elapsed_clock,
        ntp_synced_since: NtpSyncFn | None = None,
    ) -> None:
        self.settings = settings
        self.on_event = on_event
        self.on_trust = on_trust
        self.wall = wall
        self.elapsed = elapsed
        self.ntp_synced_since = ntp_synced_since or (
            lambda w: timesyncd_synced_since(w, slack_s=self.settings.check_interval_s + 1.0)
        )
        self.trusted = True
        self.reason: str | None = None
        self.jumps = 0
        self._last: tuple[float, float] | None = None  # (wall, elapsed) at the previous check
        self._untrusted_since: float | None = None  # elapsed clock
        self._stable_since: float | None = None  # elapsed clock of the last jump
        self._jump_wall: float | None = None  # wall time just after the last jump

    @property
    def not_before(self) -> float:
        """`settings.not_before` as epoch seconds (midnight UTC)."""
        day: date = self.settings.not_before
        return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()

    def start(self) -> None:
        """First look at the clock: untrusted if it is before `not_before`."""
        wall, elapsed = self.wall(), self.elapsed()
        self._last = (wall, elapsed)
        if wall < self.not_before:
            self._stable_since = elapsed
            self._distrust(
                elapsed,
                "before_not_before",
                "clock.untrusted",
                wall=_iso(wall),
                not_before=self.settings.not_before.isoformat(),
            )

    def check(self) -> None:
        """Compare wall-clock and elapsed-time progress since the previous check."""
        wall, elapsed = self.wall(), self.elapsed()
        if self._last is None:
            self.start()
            return
        last_wall, last_elapsed = self._last
        self._last = (wall, elapsed)
        expected = last_wall + (elapsed - last_elapsed)
        jump = wall - expected
        if abs(jump) > self.settings.jump_threshold_s:
            self.jumps += 1
            self._stable_since = elapsed
            self._jump_wall = wall
            log.warning("wall clock jumped", jump_s=round(jump, 6), old=_iso(expected),
                        new=_iso(wall))
            self._distrust(
                elapsed,
                "jump",
                "clock.jump",
                old=_iso(expected),
                new=_iso(wall),
                jump_s=round(jump, 6),
                threshold_s=self.settings.jump_threshold_s,
            )
            return
        if not self.trusted:
            self._maybe_restore(wall, elapsed)

    def _maybe_restore(self, wall: float, elapsed: float) -> None:
        if wall < self.not_before:
            return
        stable_since = elapsed if self._stable_since is None else self._stable_since
        reason: str | None = None
        if elapsed - stable_since >= self.settings.stable_after_s:
            reason = "stable"
        elif (
            self.settings.trust_ntp_sync
            and self._jump_wall is not None
            and self.ntp_synced_since(self._jump_wall)
        ):
            reason = "ntp_synchronized"
        if reason is None:
            return
        untrusted_for = elapsed - (self._untrusted_since or elapsed)
        self.trusted, self.reason, self._untrusted_since = True, None, None
        log.info("wall clock trusted again", reason=reason, untrusted_for_s=round(untrusted_for, 3))
        self.on_trust(True)  # noqa: FBT003 - callback takes the new trust state
        self.on_event(
            "clock.trusted",
            {"reason": reason, "wall": _iso(wall), "untrusted_for_s": round(untrusted_for, 3)},
        )

    def _distrust(self, elapsed: float, reason: str, event: str, **fields: str | float) -> None:
        if self.trusted:
            self._untrusted_since = elapsed
            self.trusted = False
            self.on_trust(False)  # noqa: FBT003 - see above
        self.reason = reason
        self.on_event(event, {**fields, "trusted": False})

    async def run(self) -> None:
        """Check every `check_interval_s` until cancelled."""
        if self._last is None:
            self.start()
        while True:
            await asyncio.sleep(self.settings.check_interval_s)
            try:
                self.check()
            except Exception:  # a callback bug must not end clock supervision
                log.exception("clock check failed")


def clock_status(monitor: ClockMonitor) -> dict[str, Any]:
    """What status documents show about the clock."""
    return {"trusted": monitor.trusted, "reason": monitor.reason, "jumps": monitor.jumps}


__all__ = ["ClockMonitor", "clock_status", "elapsed_clock", "timesyncd_synced_since"]
