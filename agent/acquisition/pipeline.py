"""Sample → Reading: units, nuclide, decay correction → QC → outbox (and live state)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time
from typing import Any, Protocol

import structlog

from agent.acquisition.state import LiveState
from agent.core.reading import Reading, dumps_item
from agent.delivery.outbox import Outbox
from agent.physics.nuclides import NUCLIDES, decay_value, normalize_nuclide
from agent.physics.units import convert, is_activity_unit
from drivers.base import DeviceConfigBase, JSONScalar, Quality, Sample, SampleKind

log = structlog.get_logger("isoedge.pipeline")


class ReadingObserver(Protocol):
    """What the pipeline tells QC about (agent.qc.QCEngine satisfies this)."""

    def on_reading(self, reading: Reading) -> None:
        """A reading was produced."""


class CalibratorQC(ReadingObserver, Protocol):
    """The dose-calibrator QC programme (agent.qc.manager.QCManager satisfies this)."""

    def is_held(self, device: str) -> bool:
        """The calibrator is on hold: its activity readings are flagged."""


HalfLifeFn = Callable[[str], float]


def default_half_life(nuclide: str) -> float:
    """Half-life (s) from the built-in table."""
    return NUCLIDES[nuclide].half_life_s


def reference_instant(spec: str, t: datetime) -> datetime:
    """The decay reference for a reading taken at `t`: `HH:MM` is that time on t's UTC day."""
    if "T" in spec:
        ref = datetime.fromisoformat(spec)
        return ref if ref.tzinfo else ref.replace(tzinfo=UTC)
    clock = time.fromisoformat(spec)
    day = t.astimezone(UTC).date()
    return datetime.combine(day, clock, tzinfo=UTC)


class Pipeline:
    """Turns driver samples into published readings. Cheap, synchronous, one per agent."""

    def __init__(
        self,
        outbox: Outbox,
        live: LiveState,
        devices: Mapping[str, DeviceConfigBase],
        *,
        half_life: HalfLifeFn = default_half_life,
        qc: ReadingObserver | None = None,
    ) -> None:
        self.outbox = outbox
        self.live = live
        self.devices = devices
        self.half_life = half_life
        self.qc = qc
        self.qc_programme: CalibratorQC | None = None
        self.clock_trusted = True
        self._dumps = dumps_item

    def to_reading(self, sample: Sample) -> Reading:
        """Convert units, normalise the nuclide, decay-correct; never raises on odd values."""
        # Runs once per value: the common case (a finite float with a unit) takes few branches.
        value: JSONScalar = sample.value
        raw_value = value
        quality, reason, unit = sample.quality, sample.reason, sample.unit
        if isinstance(value, float) and not math.isfinite(value):
            raw_value = None
            quality, reason = Quality.BAD, reason or f"non-finite value {value!r}"
        if quality is Quality.BAD:
            value = None
        elif unit and isinstance(value, int | float) and not isinstance(value, bool):
            converted, unit = convert(float(value), unit)
            value = converted if math.isfinite(converted) else None
            if value is None:
                quality, reason = Quality.BAD, "value out of range after unit conversion"
        nuclide = (sample.nuclide.strip() or None) if sample.nuclide is not None else None
        if nuclide is not None:
            known = normalize_nuclide(nuclide)
            if known is None:
                if quality is Quality.GOOD:
                    quality = Quality.UNCERTAIN
                reason = reason or f"unknown nuclide {nuclide!r}: not in the nuclide table"
            else:
                nuclide = known
        reading = Reading(
            sample.device,
            sample.channel,
            sample.t,
            value,
            unit,
            quality,
            raw_value,
            sample.unit,
            sample.raw_text,
            reason,
            nuclide,
            None,
            None,
            sample.kind,
            self.clock_trusted,
            dict(sample.attrs) if sample.attrs else {},
        )  # positional: keyword arguments double the cost of this call
        if nuclide is not None:
            self._decay_correct(reading)
        return reading

    def _decay_correct(self, reading: Reading) -> None:
        config = self.devices.get(reading.device)
        if (
            config is None
            or config.reference_time is None
            or reading.nuclide is None
            or reading.nuclide not in NUCLIDES
            or not is_activity_unit(reading.raw_unit)
            or not isinstance(reading.value, float)
        ):
            return
        ref = reference_instant(config.reference_time, reading.t)
        elapsed = (ref - reading.t).total_seconds()
        reading.ref_time = ref
        reading.value_at_ref = decay_value(reading.value, elapsed, self.half_life(reading.nuclide))

    def process(self, sample: Sample) -> Reading:
        """Full path for one sample: reading → QC → durable outbox → live state."""
        reading = self.to_reading(sample)
        programme = self.qc_programme
        if programme is not None and reading.nuclide is not None and programme.is_held(
            reading.device
        ):
            # Not for patient doses: the calibrator's daily QC failed or is overdue.
            reading.attrs["calibrator_release"] = "on_hold"
        item = reading.to_item()
        try:
            text = self._dumps(item)
        except (TypeError, ValueError) as exc:
            # A driver put something unserialisable in attrs: publish the fact, not a crash.
            log.exception("unserialisable reading", device=sample.device, error=str(exc))
            reading.attrs.clear()
            reading.value, reading.quality = None, Quality.BAD
            reading.reason = f"unserialisable value: {exc}"
            item = reading.to_item()
            text = self._dumps(item)
        self.outbox.submit("readings", reading.device, text)
        self.live.on_reading(reading, item)
        if self.qc is not None and reading.kind is SampleKind.READING:
            try:
                self.qc.on_reading(reading)
            except Exception:
                log.exception("QC rule evaluation failed", device=reading.device)
        if programme is not None and reading.kind is SampleKind.READING:
            try:
                programme.on_reading(reading)
            except Exception:
                log.exception("QC programme failed on a reading", device=reading.device)
        return reading

    def emit_event(self, stream: str, item: dict[str, Any]) -> None:
        """Alerts and audit events (already built by `agent.core.reading.event_item`)."""
        self.outbox.submit(stream, "", self._dumps(item))
        self.live.on_event(stream, item)


__all__ = ["Pipeline", "reference_instant"]
