"""`/healthz` verdict and `/metrics` (Prometheus text exposition format 0.0.4).

"Healthy" means the agent is acquiring and either publishing or buffering normally:

- the agent has started and the outbox owner thread is alive (nothing durable is lost);
- the outbox is not over its quota (`high` or `full`: acquisition is being paused);
- no enabled device has been out of `online`/`degraded` (offline, connecting, paused) for
  longer than `web.health_device_grace_s`.

A broker that is down is *not* unhealthy on its own: the outbox buffers, and that is the design.
It is reported (`publishing: false`) so a monitor can still see it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.delivery.publish import LinkState

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from agent.delivery.outbox import OutboxStats
    from agent.service.runtime import Agent

HEALTHY_DEVICE_STATES = frozenset({"online", "degraded"})
DEVICE_STATES = ("starting", "connecting", "online", "degraded", "offline", "paused", "stopped")
ALERT_STATES = ("active", "active_acknowledged", "cleared_unacknowledged")
SEVERITIES = ("info", "warning", "alarm", "critical")


@dataclass(slots=True)
class HealthReport:
    """The `/healthz` body: `ok`, the reasons when not, and what was checked."""

    ok: bool = True
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        """Record one reason for being unhealthy."""
        self.ok = False
        self.reasons.append(reason)

    def as_dict(self) -> dict[str, Any]:
        """JSON body."""
        return {"status": "ok" if self.ok else "unhealthy", "reasons": self.reasons,
                "checks": self.checks}


def outbox_thread_alive(agent: Agent) -> bool:
    """True while the outbox's database thread runs (it owns every durable write)."""
    thread = getattr(agent.outbox, "_thread", None)
    return thread is not None and bool(thread.is_alive())


def check_health(agent: Agent, *, device_grace_s: float, now: float | None = None) -> HealthReport:
    """Evaluate the health rules of the module docstring."""
    now = time.time() if now is None else now
    report = HealthReport()
    started = agent.started.is_set()
    report.checks["started"] = started
    if not started:
        report.fail("agent is still starting")
    alive = outbox_thread_alive(agent)
    report.checks["outbox_thread_alive"] = alive
    if not alive:
        report.fail("outbox thread is not running: readings cannot be stored")
    quota = str(getattr(agent.outbox, "quota_state", "ok"))
    report.checks["outbox_quota"] = quota
    if quota != "ok":
        report.fail(f"outbox quota {quota}: acquisition is being paused")
    link = agent.publisher.state
    report.checks["broker"] = link.value
    report.checks["publishing"] = link is LinkState.CONNECTED
    report.checks["buffering"] = link is not LinkState.CONNECTED
    devices: dict[str, Any] = {}
    for device_id, sup in agent.supervisors.items():
        health = agent.live.devices.get(device_id)
        since = health.since if health is not None else agent.started_at
        state = sup.state.value
        duration = max(0.0, now - since)
        devices[device_id] = {"state": state, "for_s": round(duration, 1)}
        if state not in HEALTHY_DEVICE_STATES and duration > device_grace_s:
            detail = f" ({sup.detail})" if sup.detail else ""
            report.fail(f"device {device_id} {state} for {duration:.0f} s{detail}")
    report.checks["devices"] = devices
    report.checks["device_grace_s"] = device_grace_s
    return report


# ------------------------------------------------------------------------ metrics
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class MetricsWriter:
    """Builds a Prometheus text exposition: HELP/TYPE once per family, then samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        """One metric family with labelled samples."""
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            suffix = f"{{{label_text}}}" if label_text else ""
            self._lines.append(f"{name}{suffix} {_number(value)}")

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        """A family with one unlabelled sample."""
        self.family(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self._lines) + "\n"


def _age_of(rfc3339_text: str | None, now: float) -> float:
    if not rfc3339_text:
        return 0.0
    then = datetime.fromisoformat(rfc3339_text).astimezone(UTC)
    return max(0.0, now - then.timestamp())


def render_metrics(
    agent: Agent,
    stats: OutboxStats | None,
    alert_counts: Mapping[tuple[str, str], int],
    health: HealthReport,
    *,
    now: float | None = None,
) -> str:
    """The whole `/metrics` body."""
    now = time.time() if now is None else now
    live = agent.live
    out = MetricsWriter()
    out.family("isoedge_build_info", "gauge", "Agent version and signing key id.",
               [({"version": _version(), "kid": agent.signer.kid,
                  "site": agent.config.agent.site, "agent": agent.config.agent.id}, 1)])
    out.single("isoedge_healthy", "gauge", "1 when /healthz answers 200.", 1 if health.ok else 0)
    out.single("isoedge_uptime_seconds", "gauge", "Seconds since the agent started.",
               max(0.0, now - agent.started_at))
    out.single("isoedge_readings_acquired_total", "counter",
               "Readings produced by the pipeline (stored in the outbox).",
               live.counters.get("readings_acquired", 0))
    out.single("isoedge_items_published_total", "counter",
               "Readings and events PUBACKed by the broker.", agent.publisher.published_items)
    out.single("isoedge_envelopes_published_total", "counter",
               "Signed envelopes PUBACKed by the broker.", agent.publisher.published_envelopes)
    out.family("isoedge_events_total", "counter", "Alert and audit events emitted, by stream.",
               [({"stream": s}, live.counters.get(f"{s}_events", 0)) for s in ("alerts", "audit")])
    events = sorted(k.removeprefix("event:") for k in live.counters if k.startswith("event:"))
    out.family("isoedge_event_items_total", "counter",
               "Alert and audit events by name (alert.raised, alert.acknowledged, ...).",
               [({"event": e}, live.counters[f"event:{e}"]) for e in events])
    if stats is not None:
        out.single("isoedge_outbox_envelopes", "gauge", "Signed envelopes waiting for PUBACK.",
                   stats.envelopes)
        out.single("isoedge_outbox_items", "gauge", "Items in envelopes waiting for PUBACK.",
                   stats.items)
        out.single("isoedge_outbox_pending_items", "gauge",
                   "Items stored but not yet cut into envelopes.", stats.pending_items)
        out.single("isoedge_outbox_oldest_unsent_age_seconds", "gauge",
                   "Age of the oldest unsent envelope (0 when empty).",
                   _age_of(stats.oldest_unsent, now))
        out.single("isoedge_outbox_disk_bytes", "gauge", "Outbox database size.",
                   stats.disk_bytes)
        out.single("isoedge_outbox_last_seq", "counter", "Last envelope sequence number.",
                   stats.last_seq)
    out.single("isoedge_outbox_quota_bytes", "gauge", "Outbox disk quota.",
               agent.outbox.quota_bytes)
    out.family("isoedge_outbox_quota_state", "gauge", "Outbox quota state (1 = current).",
               [({"state": s}, 1 if getattr(agent.outbox, "quota_state", "ok") == s else 0)
                for s in ("ok", "high", "full")])
    out.single("isoedge_outbox_thread_up", "gauge", "1 while the outbox thread runs.",
               1 if outbox_thread_alive(agent) else 0)
    out.single("isoedge_mqtt_connected", "gauge", "1 while connected to the broker.",
               1 if agent.publisher.state is LinkState.CONNECTED else 0)
    out.single("isoedge_mqtt_reconnects_total", "counter", "Broker connection losses.",
               agent.publisher.reconnects)
    devices = sorted(agent.supervisors)
    healths = {d: live.device(d) for d in devices}
    out.family("isoedge_device_readings_total", "counter", "Readings per device.",
               [({"device": d}, healths[d].readings) for d in devices])
    out.family("isoedge_device_errors_total", "counter", "Device link failures.",
               [({"device": d}, healths[d].errors) for d in devices])
    out.family("isoedge_device_reconnects_total", "counter", "Device reconnect attempts.",
               [({"device": d}, healths[d].reconnects) for d in devices])
    out.family("isoedge_device_state", "gauge", "Device state (1 = current).",
               [({"device": d, "state": s}, 1 if agent.supervisors[d].state.value == s else 0)
                for d in devices for s in DEVICE_STATES])
    ages: list[tuple[Mapping[str, str], float]] = []
    for d in devices:
        last = healths[d].last_reading_monotonic
        if last is not None:
            ages.append(({"device": d}, round(time.monotonic() - last, 3)))
    out.family("isoedge_device_last_reading_age_seconds", "gauge",
               "Seconds since the device's last reading.", ages)
    out.family("isoedge_alerts_open", "gauge",
               "Alerts needing attention (active, or cleared but unacknowledged).",
               [({"state": st, "severity": sv}, alert_counts.get((st, sv), 0))
                for st in ALERT_STATES for sv in SEVERITIES])
    return out.text()


def _version() -> str:
    from agent import __version__  # noqa: PLC0415 - avoids an import cycle at module load

    return __version__
