"""Batch → items: units, nuclide, decay correction → outbox (one row per batch) → live, QC.

A driver's batch of plain numbers (the common poll) takes a path without per-item objects;
anything unusual (quality, nuclide and decay, events, text values, NaN) goes through one
`Reading` per item. Either way the batch's items are serialised in one call and handed to
the outbox as one row, live state is updated once, and QC sees only the channels a rule
watches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, time
from typing import Any, Protocol

import orjson
import structlog

from agent.acquisition.shapes import ShapeCache
from agent.acquisition.state import LiveState
from agent.core.items import plain_items
from agent.core.reading import Reading, dumps_item, new_ids, rfc3339
from agent.delivery.outbox import Outbox
from agent.delivery.verification import MAX_ENVELOPE_ITEM_BYTES
from agent.physics.nuclides import NUCLIDES, decay_value, normalize_nuclide
from agent.physics.units import conversion, convert, is_activity_unit
from drivers.base import DeviceConfigBase, JSONScalar, Quality, Sample, SampleBatch, SampleKind

log = structlog.get_logger("isoedge.pipeline")


class ReadingObserver(Protocol):
    """What the pipeline tells QC about (agent.qc.engine.RuleEngine satisfies this)."""

    def watches(self, device: str, channel: str) -> bool:
        """True when a rule looks at this channel (only those get `Reading` objects)."""

    def on_reading(self, reading: Reading) -> None:
        """A reading was produced."""


class CalibratorQC(ReadingObserver, Protocol):
    """The calibrator hook: the QC programme and the record desks (a records ReadingFanout).

    agent.qc.desk.QADesk alone satisfies it too. Unlike the rules, it is also given the event
    samples of the channels it watches (a synthesis module's batch events).
    """

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
        rules: ReadingObserver | None = None,
    ) -> None:
        self.outbox = outbox
        self.live = live
        self.devices = devices
        self.half_life = half_life
        self.rules = rules
        self.qa_desk: CalibratorQC | None = None
        self.clock_trusted = True
        self._dumps = dumps_item
        self._conversions: dict[str, tuple[float, Callable[[float], float] | None, str]] = {}
        # Per (device, channels of a batch): the indices a QC rule or programme watches,
        # looked up once per batch shape instead of once per reading; for `_watch_owners`.
        self._watched: ShapeCache[tuple[tuple[int, bool, bool], ...]] = ShapeCache()
        self._watch_owners: tuple[object, object] = (None, None)

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
        # Only samples off the batch fast path come here (activities, odd values), so the
        # keyword call costs nothing that matters.
        reading = Reading(
            device=sample.device,
            channel=sample.channel,
            t=sample.t,
            value=value,
            unit=unit,
            quality=quality,
            raw_value=raw_value,
            raw_unit=sample.unit,
            raw_text=sample.raw_text,
            reason=reason,
            nuclide=nuclide,
            kind=sample.kind,
            clock_trusted=self.clock_trusted,
            attrs=dict(sample.attrs) if sample.attrs else {},
        )
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
        """One sample on its own (a batch of one): reading → QC → durable outbox → live state."""
        return self._process_items(sample.device, [sample])[0]

    def process_batch(self, batch: SampleBatch) -> int:
        """A driver's batch: converted, serialised in one call, one outbox row, one live update.

        Returns the number of readings. Batches larger than an envelope are split, so an
        outbox row always fits in one envelope.
        """
        n = len(batch.channels)
        limit = self.outbox.batch_max_items
        if n > limit:
            samples = batch.samples()
            for start in range(0, n, limit):
                self._process_items(batch.device, samples[start : start + limit])
            return n
        if n == 0:
            return 0
        if batch.plain:
            items = self._plain_items(batch)
            if items is not None:
                self._commit(batch.device, batch.channels, batch.values, items, None)
                return n
        self._process_items(batch.device, batch.samples())
        return n

    def _plain_items(self, batch: SampleBatch) -> list[dict[str, Any]] | None:
        """Items of a batch of good, finite numbers or booleans without nuclide; else None.

        The common case of a poll: no `Reading` objects, one unit look-up per item, the
        time stamp formatted once.
        """
        values = batch.values
        for value in values:
            kind = type(value)
            if kind is not float and kind is not int and kind is not bool:
                return None  # text or None: the general path
        if not math.isfinite(sum(values)):  # type: ignore[arg-type]
            return None  # NaN or infinity: the general path makes them bad readings
        converted = self._convert(values, batch.units)
        if converted is None:
            return None
        published, units = converted
        stamps: str | list[str] = rfc3339(batch.t)
        if batch.times is not None:  # one per request of the poll: each formatted once
            formatted: dict[datetime, str] = {}
            stamps = [formatted.get(t) or formatted.setdefault(t, rfc3339(t))
                      for t in batch.times]  # fmt: skip
        return plain_items(
            new_ids(len(values)),
            batch.device,
            batch.channels,
            t=stamps,
            values=published,
            units=units,
            raw_values=values,
            raw_units=batch.units,
            raw_texts=batch.raw_texts,
            clock_trusted=self.clock_trusted,
        )

    def _convert(
        self, values: Sequence[JSONScalar], raw_units: Sequence[str | None]
    ) -> tuple[list[float | int], list[str | None]] | None:
        """Published values and units of finite numbers; None when one leaves the float range.

        One cached look-up per item; numpy does not pay at poll sizes (tens of values).
        """
        conversions = self._conversions
        published: list[float | int] = []
        units: list[str | None] = []
        for value, unit in zip(values, raw_units, strict=True):
            if not unit or type(value) is bool:  # a state (coil, input) is not converted
                published.append(value)  # type: ignore[arg-type]
                units.append(unit)
                continue
            found = conversions.get(unit)
            if found is None:
                found = conversions[unit] = conversion(unit)
            factor, function, target = found
            if function is not None:
                published.append(function(float(value)))  # type: ignore[arg-type]
            elif factor != 1.0:
                published.append(float(value) * factor)  # type: ignore[arg-type]
            else:
                published.append(float(value))  # type: ignore[arg-type]
            units.append(target)
        if not math.isfinite(sum(published)):
            return None  # out of range after conversion: the general path says so
        return published, units

    def _process_items(self, device: str, samples: Sequence[Sample]) -> list[Reading]:
        """The general path: one `Reading` per sample (quality, nuclide, decay, attrs)."""
        readings = [self.to_reading(sample) for sample in samples]
        programme = self.qa_desk
        if programme is not None and programme.is_held(device):
            for reading in readings:
                if reading.nuclide is not None:
                    # Not for patient doses: the calibrator's daily QC failed or is overdue.
                    reading.attrs["calibrator_release"] = "on_hold"
        items = [reading.to_item() for reading in readings]
        self._commit(device, [r.channel for r in readings], [r.value for r in readings], items,
                     readings)  # fmt: skip
        return readings

    def _serialise(self, device: str, items: list[dict[str, Any]],
                   readings: list[Reading] | None) -> str:  # fmt: skip
        """The items as JSON, joined by commas (an envelope's items are a join of these)."""
        try:
            return orjson.dumps(items)[1:-1].decode("utf-8")
        except (TypeError, ValueError) as exc:
            # A driver put something unserialisable in attrs: publish the fact, not a crash.
            log.exception("unserialisable reading", device=device, error=str(exc))
        texts = []
        for index, item in enumerate(items):
            try:
                texts.append(self._dumps(item))
            except (TypeError, ValueError) as exc:
                assert readings is not None  # noqa: S101 - plain items are plain numbers
                reading = readings[index]
                reading.attrs.clear()
                reading.value, reading.quality = None, Quality.BAD
                reading.reason = f"unserialisable value: {exc}"
                items[index] = reading.to_item()
                texts.append(self._dumps(items[index]))
        return ",".join(texts)

    def _commit(
        self,
        device: str,
        channels: Sequence[str],
        values: Sequence[JSONScalar],
        items: list[dict[str, Any]],
        readings: list[Reading] | None,
    ) -> None:
        """Hand the batch to the outbox, then live state and QC."""
        text = self._serialise(device, items, readings)
        if _utf8_size(text) > MAX_ENVELOPE_ITEM_BYTES:
            if len(items) > 1:
                # One row must fit one envelope: halves of a batch of unusually long items.
                half = len(items) // 2
                for part in (slice(0, half), slice(half, None)):
                    self._commit(device, channels[part], values[part], items[part],
                                 readings[part] if readings is not None else None)  # fmt: skip
                return
            # One item beyond what any envelope may hold (and any verifier accepts): published
            # as a bad reading saying so, never as an envelope the ingest must refuse.
            reading = readings[0] if readings is not None else Reading.from_plain_item(items[0])
            size = _utf8_size(text)
            reading.attrs.clear()
            reading.value, reading.quality = None, Quality.BAD
            reading.raw_value, reading.raw_text = None, None
            reading.reason = f"reading too large to publish ({size} bytes)"
            log.warning(
                "reading too large to publish", device=device, channel=reading.channel, bytes=size
            )
            items = [reading.to_item()]
            values = [None]
            text = self._dumps(items[0])
        self.outbox.submit_batch("readings", device, len(items), text)
        self.live.on_batch(device, channels, values, items)
        if self.rules is not None or self.qa_desk is not None:
            self._to_qc(device, channels, items, readings)

    def _to_qc(
        self,
        device: str,
        channels: Sequence[str],
        items: list[dict[str, Any]],
        readings: list[Reading] | None,
    ) -> None:
        """Readings of the channels a rule or a calibrator's QC programme watches, to them."""
        qc, programme = self.rules, self.qa_desk
        for index, by_rules, by_programme in self._watched_indices(device, channels):
            rules = qc if by_rules else None
            runs = programme if by_programme else None
            reading = readings[index] if readings is not None else self._reading_of(items[index])
            if reading.kind is not SampleKind.READING:
                rules = None  # an event (a synthesis step) is no value for a rule
            if rules is not None:
                try:
                    rules.on_reading(reading)
                except Exception:
                    log.exception("QC rule evaluation failed", device=device)
            if runs is not None:
                try:
                    runs.on_reading(reading)
                except Exception:
                    log.exception("QC programme failed on a reading", device=device)

    def _watched_indices(
        self, device: str, channels: Sequence[str]
    ) -> tuple[tuple[int, bool, bool], ...]:
        """(index, watched by a rule, by the QC programme) of the watched channels only."""
        qc, programme = self.rules, self.qa_desk
        owners = self._watch_owners
        if owners[0] is not qc or owners[1] is not programme:
            self._watched.clear()  # rules or programme replaced: look up again
            self._watch_owners = (qc, programme)
        return self._watched.get(device, channels, lambda: tuple(
            (index, by_rules, by_programme)
            for index, channel in enumerate(channels)
            for by_rules, by_programme in [(
                qc is not None and qc.watches(device, channel),
                programme is not None and programme.watches(device, channel),
            )]
            if by_rules or by_programme
        ))  # fmt: skip

    @staticmethod
    def _reading_of(item: dict[str, Any]) -> Reading:
        """A `Reading` for QC from a plain item (only for channels a rule watches)."""
        return Reading.from_plain_item(item)


def _utf8_size(text: str) -> int:
    """UTF-8 bytes of `text` (encoded only when it could be near the envelope's bound)."""
    if 4 * len(text) <= MAX_ENVELOPE_ITEM_BYTES:
        return len(text)  # at most 4 bytes per code point: fits either way
    return len(text.encode("utf-8"))


__all__ = ["Pipeline", "reference_instant"]
