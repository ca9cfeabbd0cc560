"""Live state of a running agent: what the console, web page, /healthz and /metrics show."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.acquisition.shapes import ShapeCache
from agent.core.reading import rfc3339_from_epoch

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from drivers.base import JSONScalar

TREND_POINTS = 720  # per channel: one hour ...
TREND_STEP_S = 5.0  # ... at 5 s resolution


@dataclass(slots=True)
class DeviceHealth:
    """One device's supervisor state as others see it."""

    device: str
    driver: str
    state: str = "starting"
    detail: str | None = None
    since: float = field(default_factory=time.time)
    last_reading_monotonic: float | None = None
    errors: int = 0
    reconnects: int = 0
    readings: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (ages in seconds)."""
        age = (
            None
            if self.last_reading_monotonic is None
            else round(time.monotonic() - self.last_reading_monotonic, 3)
        )
        return {
            "device": self.device,
            "driver": self.driver,
            "state": self.state,
            "detail": self.detail,
            "since": rfc3339_from_epoch(self.since),
            "last_reading_age_s": age,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "readings": self.readings,
        }


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """The live state at one instant: copies, safe to keep and read (never mutated)."""

    latest: Mapping[tuple[str, str], dict[str, Any]]
    devices: Mapping[str, DeviceHealth]
    counters: Mapping[str, int]

    def device(self, device: str, driver: str = "") -> DeviceHealth:
        """A device's health (an empty record for a device not seen yet)."""
        return self.devices.get(device) or DeviceHealth(device=device, driver=driver)


class LiveState:
    """Latest readings, device health, trend buffers and counters. Single event-loop owner."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceHealth] = {}
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self._batch_keys: ShapeCache[list[tuple[str, str]]] = ShapeCache()
        self.trends: dict[tuple[str, str], deque[tuple[float, float]]] = defaultdict(
            lambda: deque(maxlen=TREND_POINTS)
        )
        self._trend_last: dict[tuple[str, str], float] = {}
        self._trend_due: dict[str, float] = {}
        self.counters: dict[str, int] = defaultdict(int)
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=200)
        self.listeners: list[Any] = []

    def snapshot(self) -> LiveSnapshot:
        """Copies of the latest readings, device health and counters, for readers."""
        return LiveSnapshot(
            latest=MappingProxyType(dict(self.latest)),
            devices=MappingProxyType({k: dataclasses.replace(v) for k, v in self.devices.items()}),
            counters=MappingProxyType(dict(self.counters)),
        )

    def trends_since(self, cutoff: float) -> dict[tuple[str, str], list[tuple[float, float]]]:
        """Trend points newer than `cutoff` (epoch seconds) per numeric channel (copies)."""
        return {key: [p for p in points if p[0] >= cutoff] for key, points in self.trends.items()}

    def subscribe(self, listener: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """Call `listener(kind, item)` on each reading and event; returns its remover.

        Listeners run on the event loop, synchronously: they must stay cheap.
        """
        self.listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self.listeners.remove(listener)

        return remove

    def device(self, device: str, driver: str = "") -> DeviceHealth:
        """Health record of a device (created on first use)."""
        health = self.devices.get(device)
        if health is None:
            health = self.devices[device] = DeviceHealth(device=device, driver=driver)
        return health

    def on_batch(
        self,
        device: str,
        channels: Sequence[str],
        values: Sequence[JSONScalar],
        items: list[dict[str, Any]],
    ) -> None:
        """One batch of a device: latest values, counters once, trend points at most each 5 s."""
        self.latest.update(zip(self._keys(device, channels), items, strict=True))
        health = self.devices.get(device) or self.device(device)
        now = time.monotonic()
        health.last_reading_monotonic = now
        health.readings += len(items)
        self.counters["readings_acquired"] += len(items)
        if now >= self._trend_due.get(device, 0.0):
            # A trend pass at most every few seconds per device, not a check per reading.
            wall = time.time()
            trend_last = self._trend_last
            soonest = now + TREND_STEP_S
            for channel, value in zip(channels, values, strict=True):
                key = (device, channel)
                last = trend_last.get(key, -TREND_STEP_S)
                if now - last < TREND_STEP_S:
                    soonest = min(soonest, last + TREND_STEP_S)
                    continue
                if isinstance(value, int | float) and not isinstance(value, bool):
                    trend_last[key] = now
                    self.trends[key].append((wall, float(value)))
            self._trend_due[device] = soonest
        if self.listeners:
            for item in items:
                for listener in self.listeners:
                    listener("reading", item)

    def _keys(self, device: str, channels: Sequence[str]) -> list[tuple[str, str]]:
        """The `latest` keys of a batch's channels, built once per batch shape."""
        return self._batch_keys.get(
            device, channels, lambda: [(device, channel) for channel in channels]
        )

    def on_event(self, stream: str, item: dict[str, Any]) -> None:
        """Remember an alert or audit event for the live views."""
        self.counters[f"{stream}_events"] += 1
        self.counters[f"event:{item.get('event')}"] += 1  # per event name, for /metrics
        self.recent_events.append({"stream": stream, **item})
        for listener in self.listeners:
            listener(stream, item)
