"""`/healthz`: is the agent acquiring and either publishing or buffering normally?

"Healthy" means the agent is acquiring and either publishing or buffering normally:

- the agent has started and the outbox owner thread is alive (nothing durable is lost);
- the outbox is not over its quota (`high` or `full`: acquisition is being paused);
- the state directory's disk has its reserve free (`outbox.min_free_mb`) and no write is
  failing for lack of space (`disk` check: `high` or `full`, acquisition is being paused);
- no enabled device is out of `online`/`degraded` (offline, connecting, paused) with its last
  good reading older than `web.health_device_grace_s` (counted from that reading, so a device
  whose reconnect attempts keep changing its state is still counted from when it went silent).

A broker that is down is *not* unhealthy on its own: the outbox buffers, and that is the design.
It is reported (`publishing: false`) so a monitor can still see it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.i18n import N_
from agent.core.states import HEALTHY_STATES

if TYPE_CHECKING:
    from agent.acquisition.state import DeviceHealth
    from agent.console.backend import ConsoleBackend


@dataclass(slots=True)
class HealthReport:
    """The `/healthz` body: `ok`, the reasons when not, and what was checked."""

    ok: bool = True
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    # Each reason as a catalog id and its parameters (the page shows it translated).
    texts: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def fail(self, reason: str, text: tuple[str, dict[str, str]] | None = None) -> None:
        """Record one reason for being unhealthy."""
        self.ok = False
        self.texts.append(text or (reason, {}))
        self.reasons.append(reason)

    def as_dict(self) -> dict[str, Any]:
        """JSON body."""
        return {"status": "ok" if self.ok else "unhealthy", "reasons": self.reasons,
                "reasons_i18n": [list(t) for t in self.texts], "checks": self.checks}


def check_health(
    backend: ConsoleBackend, *, device_grace_s: float, now: float | None = None
) -> HealthReport:
    """Evaluate the health rules of the module docstring."""
    now = time.time() if now is None else now
    report = HealthReport()
    started = backend.started
    report.checks["started"] = started
    if not started:
        report.fail(N_("agent is still starting"))
    delivery = backend.delivery()
    report.checks["outbox_thread_alive"] = delivery.writer_alive
    if not delivery.writer_alive:
        report.fail(N_("outbox thread is not running: readings cannot be stored"))
    report.checks["outbox_quota"] = delivery.quota_state
    if delivery.quota_state != "ok":
        report.fail(f"outbox quota {delivery.quota_state}: acquisition is being paused",
                    (N_("outbox quota {state}: acquisition is being paused"),
                     {"state": delivery.quota_state}))
    disk = delivery.disk
    if disk:
        report.checks["disk"] = disk
        if disk["state"] != "ok":
            cause = "a write failed for lack of space" if disk["write_failed"] else (
                f"{disk['free_bytes'] + disk['reusable_bytes']} bytes left,"
                f" reserve {disk['min_free_bytes']}"
            )
            report.fail(f"disk {disk['state']} ({cause}): acquisition is being paused",
                        (N_("disk {state} ({cause}): acquisition is being paused"),
                         {"state": disk["state"], "cause": cause}))
    report.checks["broker"] = delivery.link_state
    report.checks["publishing"] = delivery.connected
    report.checks["buffering"] = not delivery.connected
    devices: dict[str, Any] = {}
    live = backend.live.snapshot()
    for device in backend.devices():
        health = live.devices.get(device.id)
        # Counted from the last good reading (reconnect attempts change the state, not this).
        age = last_reading_age(health)
        duration = max(0.0, now - backend.started_at) if age is None else age
        devices[device.id] = {"state": device.state, "for_s": round(duration, 1),
                              "last_reading_age_s": None if age is None else round(age, 1)}
        if device.state not in HEALTHY_STATES and duration > device_grace_s:
            detail = f" ({device.detail})" if device.detail else ""
            report.fail(f"device {device.id} {device.state} for {duration:.0f} s{detail}",
                        (N_("device {device} {state} for {seconds} s{detail}"),
                         {"device": device.id, "state": device.state,
                          "seconds": f"{duration:.0f}", "detail": detail}))
    report.checks["devices"] = devices
    report.checks["device_grace_s"] = device_grace_s
    return report


def last_reading_age(health: DeviceHealth | None) -> float | None:
    """Seconds since the device's last good reading (None: none yet)."""
    if health is None or health.last_reading_monotonic is None:
        return None
    return max(0.0, time.monotonic() - health.last_reading_monotonic)
