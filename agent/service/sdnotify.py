"""systemd service notifications (sd_notify protocol), spoken directly over the socket.

systemd passes `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) to a
`Type=notify` service; the service sends newline-separated `KEY=VALUE` datagrams such as
`READY=1`, `STATUS=...`, `RELOADING=1`, `STOPPING=1` and `WATCHDOG=1`. With `WatchdogSec=`
systemd also sets `WATCHDOG_USEC` (and `WATCHDOG_PID`); the service must ping more often than
that or it is restarted. Outside systemd `NOTIFY_SOCKET` is unset and every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("isoedge.sdnotify")

StatusFn = Callable[[], str]


def _socket_address(value: str) -> str | None:
    """`NOTIFY_SOCKET` as a `socket.sendto` address; `@name` is the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other transports are not used on our targets


class SystemdNotifier:
    """Sends sd_notify messages to systemd; every method is a no-op outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _socket_address(raw) if raw else None
        if raw and self.address is None:
            log.warning("unsupported NOTIFY_SOCKET; notifications disabled", notify_socket=raw)
        self.watchdog_interval_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notification socket."""
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one message, e.g. `notify(READY=1, STATUS="running")`; True if it was sent.

        Failures are logged, never raised: a missing systemd must not stop acquisition.
        """
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # noqa: FBT003 - stdlib API
            self._sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc), fields=sorted(fields))
            self.close()
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        """A configuration reload has begun (systemd shows the unit as "reloading")."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                           // 1000)

    def stopping(self, status: str = "stopping") -> bool:
        """Shutdown has begun."""
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        """Free-form status shown by `systemctl status`; sent only when it changed."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """Keep-alive for `WatchdogSec=`."""
        return self.notify(WATCHDOG=1)

    async def run_watchdog(
        self,
        status: StatusFn | None = None,
        *,
        healthy: Callable[[], bool] | None = None,
        status_every_s: float = 5.0,
    ) -> None:
        """Ping the watchdog at half its interval and refresh STATUS; runs until cancelled.

        The pings come from the event loop, so a blocked loop stops them and systemd restarts
        the agent; so does `healthy()` returning False. Without a watchdog only the STATUS
        line is refreshed.
        """
        if not self.enabled:
            return
        interval = self.watchdog_interval_s
        period = min(interval / 2, status_every_s) if interval else status_every_s
        next_status = 0.0
        while True:
            if interval:
                if healthy is None or healthy():
                    self.watchdog()
                else:
                    log.error("agent unhealthy; withholding watchdog keep-alive")
            now = time.monotonic()
            if status is not None and now >= next_status:
                try:
                    self.status(status())
                except Exception as exc:  # a status bug must not stop the keep-alive
                    log.warning("status line failed", error=str(exc))
                next_status = now + status_every_s
            await asyncio.sleep(period)

    def close(self) -> None:
        """Release the socket (a later notify() opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds from `WATCHDOG_USEC`, if the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000


__all__ = ["SystemdNotifier"]
