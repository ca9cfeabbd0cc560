"""`/metrics`: the agent's figures in the Prometheus exposition format, via prometheus_client.

One collector reads the console backend at scrape time (nothing is counted twice: the agent's
own counters are the source); the standard process and platform collectors come with it.
Names follow Prometheus conventions: counters end in `_total`, units in the name (`_seconds`,
`_bytes`), states as a label with one sample at 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from agent.core.states import DeviceState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from agent.console.backend import ConsoleBackend, DeliveryView
    from agent.console.health import HealthReport
    from agent.delivery.outbox import OutboxStats

ALERT_STATES = ("active", "active_acknowledged", "cleared_unacknowledged")
SEVERITIES = ("info", "warning", "alarm", "critical")
QUOTA_STATES = ("ok", "high", "full")


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape gathered before rendering (the async parts: outbox stats, health)."""

    stats: OutboxStats | None
    health: HealthReport
    alert_counts: Mapping[tuple[str, str], int]
    now: float


def _age_of(rfc3339_text: str | None, now: float) -> float:
    if not rfc3339_text:
        return 0.0
    then = datetime.fromisoformat(rfc3339_text).astimezone(UTC)
    return max(0.0, now - then.timestamp())


def _replay_requests(delivery: DeliveryView) -> Metric:
    replay = CounterMetricFamily(
        "isoedge_replay_requests", "Replay requests by outcome (accepted, merged,"
        " refused_<reason>: docs/security.md).", labels=["outcome"])
    for outcome, count in sorted(delivery.replay_requests.items()):
        replay.add_metric([outcome], count)
    return replay


class AgentCollector(Collector):
    """Yields the agent's metric families from the backend and the current scrape."""

    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend
        self.scrape: Scrape | None = None

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        scrape = self.scrape
        if scrape is None:
            return
        backend = self.backend
        who = backend.identity
        live = backend.live.snapshot()
        delivery = backend.delivery()
        now = scrape.now
        info = InfoMetricFamily("isoedge_build", "Agent version and signing key id.")
        info.add_metric([], {"version": who.version, "kid": who.kid, "site": who.site,
                             "agent": who.agent_id})
        yield info
        yield GaugeMetricFamily("isoedge_healthy", "1 when /healthz answers 200.",
                                value=1 if scrape.health.ok else 0)
        yield GaugeMetricFamily("isoedge_uptime_seconds", "Seconds since the agent started.",
                                value=max(0.0, now - backend.started_at))
        yield CounterMetricFamily(
            "isoedge_readings_acquired", "Readings produced by the pipeline (stored).",
            value=live.counters.get("readings_acquired", 0))
        yield CounterMetricFamily("isoedge_items_published",
                                  "Readings and events PUBACKed by the broker.",
                                  value=delivery.published_items)
        yield CounterMetricFamily("isoedge_envelopes_published",
                                  "Signed envelopes PUBACKed by the broker.",
                                  value=delivery.published_envelopes)
        yield _replay_requests(delivery)
        events = CounterMetricFamily("isoedge_events", "Alert and audit events emitted.",
                                     labels=["stream"])
        for stream in ("alerts", "audit", "qc"):
            events.add_metric([stream], live.counters.get(f"{stream}_events", 0))
        yield events
        by_name = CounterMetricFamily(
            "isoedge_event_items", "Events by name (alert.raised, alert.acknowledged, ...).",
            labels=["event"])
        for key in sorted(k for k in live.counters if k.startswith("event:")):
            by_name.add_metric([key.removeprefix("event:")], live.counters[key])
        yield by_name
        released = GaugeMetricFamily(
            "isoedge_calibrator_released",
            "1 when the dose calibrator is released (today's daily QC passed), 0 on hold.",
            labels=["device"])
        for device, qc_state in sorted(backend.calibrators().items()):
            released.add_metric([device], 1 if qc_state.get("release") == "released" else 0)
        yield released
        stats = scrape.stats
        if stats is not None:
            yield GaugeMetricFamily("isoedge_outbox_envelopes",
                                    "Signed envelopes waiting for PUBACK.", value=stats.envelopes)
            yield GaugeMetricFamily("isoedge_outbox_items",
                                    "Items in envelopes waiting for PUBACK.", value=stats.items)
            yield GaugeMetricFamily("isoedge_outbox_pending_items",
                                    "Items stored but not yet cut into envelopes.",
                                    value=stats.pending_items)
            yield GaugeMetricFamily("isoedge_outbox_oldest_unsent_age_seconds",
                                    "Age of the oldest unsent envelope (0 when empty).",
                                    value=_age_of(stats.oldest_unsent, now))
            yield GaugeMetricFamily("isoedge_outbox_disk_bytes",
                                    "State database size on disk.", value=stats.disk_bytes)
            yield GaugeMetricFamily("isoedge_outbox_last_seq",
                                    "Last envelope sequence number.", value=stats.last_seq)
        yield GaugeMetricFamily("isoedge_outbox_quota_bytes", "Outbox disk quota.",
                                value=delivery.quota_bytes)
        quota = GaugeMetricFamily("isoedge_outbox_quota_state",
                                  "Outbox quota state (1 = current).", labels=["state"])
        for state in QUOTA_STATES:
            quota.add_metric([state], 1 if delivery.quota_state == state else 0)
        yield quota
        committed = CounterMetricFamily(
            "isoedge_outbox_items_committed",
            "Items committed to the state database (durable), by stream.", labels=["stream"])
        for stream, count in sorted(delivery.committed_by_stream.items()):
            committed.add_metric([stream], count)
        yield committed
        yield from _disk_families(delivery)
        yield GaugeMetricFamily("isoedge_outbox_thread_up",
                                "1 while the state database writer runs.",
                                value=1 if delivery.writer_alive else 0)
        yield GaugeMetricFamily("isoedge_mqtt_connected", "1 while connected to the broker.",
                                value=1 if delivery.connected else 0)
        yield CounterMetricFamily("isoedge_mqtt_reconnects", "Broker connection losses.",
                                  value=delivery.reconnects)
        yield from self._device_families(now)
        alerts = GaugeMetricFamily(
            "isoedge_alerts_open", "Alerts needing attention (active, or cleared, unacknowledged).",
            labels=["state", "severity"])
        for state in ALERT_STATES:
            for severity in SEVERITIES:
                alerts.add_metric([state, severity], scrape.alert_counts.get((state, severity), 0))
        yield alerts

    def _device_families(self, now_wall: float) -> Iterator[Metric]:
        del now_wall
        live = self.backend.live.snapshot()
        devices = self.backend.devices()
        readings = CounterMetricFamily("isoedge_device_readings", "Readings per device.",
                                       labels=["device"])
        errors = CounterMetricFamily("isoedge_device_errors", "Device link failures.",
                                     labels=["device"])
        reconnects = CounterMetricFamily("isoedge_device_reconnects",
                                         "Device reconnect attempts.", labels=["device"])
        state = GaugeMetricFamily("isoedge_device_state", "Device state (1 = current).",
                                  labels=["device", "state"])
        ages = GaugeMetricFamily("isoedge_device_last_reading_age_seconds",
                                 "Seconds since the device's last reading.", labels=["device"])
        now = time.monotonic()
        for device in devices:
            health = live.device(device.id)
            readings.add_metric([device.id], health.readings)
            errors.add_metric([device.id], health.errors)
            reconnects.add_metric([device.id], health.reconnects)
            for name in DeviceState:
                state.add_metric([device.id, name.value], 1 if device.state == name.value else 0)
            if health.last_reading_monotonic is not None:
                ages.add_metric([device.id], round(now - health.last_reading_monotonic, 3))
        yield from (readings, errors, reconnects, state, ages)


class Metrics:
    """The console's registry: the agent collector plus process, platform and GC collectors."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, backend: ConsoleBackend) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = AgentCollector(backend)
        self.registry.register(self.collector)
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(standard)

    def render(self, scrape: Scrape) -> bytes:
        """The exposition for this scrape."""
        self.collector.scrape = scrape
        try:
            return generate_latest(self.registry)
        finally:
            self.collector.scrape = None


def _disk_families(delivery: DeliveryView) -> Iterator[Metric]:
    """Free space on the state directory's file system (outbox.min_free_mb policy)."""
    disk = delivery.disk
    if not disk:
        return
    yield GaugeMetricFamily("isoedge_disk_free_bytes",
                            "Free space on the state directory's file system.",
                            value=disk["free_bytes"])
    yield GaugeMetricFamily(
        "isoedge_disk_headroom_bytes",
        "Free space plus free database pages: what the outbox can still write into.",
        value=disk["free_bytes"] + disk["reusable_bytes"])
    yield GaugeMetricFamily("isoedge_disk_min_free_bytes",
                            "Reserve kept free (outbox.min_free_mb).",
                            value=disk["min_free_bytes"])
    state = GaugeMetricFamily("isoedge_disk_state", "Free-space state (1 = current).",
                              labels=["state"])
    for name in QUOTA_STATES:
        state.add_metric([name], 1 if disk["state"] == name else 0)
    yield state
    yield CounterMetricFamily(
        "isoedge_disk_full_writes",
        "State database writes that failed for lack of space (each retried).",
        value=delivery.disk_full_total)
    yield CounterMetricFamily(
        "isoedge_acquisition_held_back_seconds",
        "Time devices waited for the outbox to commit (the bounded queue holding them back).",
        value=delivery.held_back_seconds)
