"""The boundary between instruments and the agent: `Sample`, `Driver`, device configuration."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field

# Re-exported for drivers (`X as X` is the explicit re-export mypy's strict mode asks for).
from agent.core.values import JSONScalar as JSONScalar  # noqa: PLC0414 - re-export
from agent.core.values import Quality as Quality  # noqa: PLC0414 - re-export
from agent.core.values import SampleKind as SampleKind  # noqa: PLC0414 - re-export


def utc_now() -> datetime:
    """Wall-clock time in UTC (measurement time stamps; never used for intervals)."""
    return datetime.now(UTC)


@dataclass(slots=True)
class Sample:
    """One value as the instrument gave it, before unit conversion, decay correction or QC.

    `value`/`unit` are the raw value and unit; `raw_text` is the line or frame exactly as the
    instrument sent it (bytes are given as hex), kept for data integrity (ALCOA+ "original").

    Treat a sample as immutable once yielded. It is not a frozen dataclass only because one is
    built per value on the agent's hottest path and frozen construction costs four times as
    much (docs/benchmarks.md).
    """

    device: str
    channel: str
    value: JSONScalar
    unit: str | None
    t: datetime = field(default_factory=utc_now)
    quality: Quality = Quality.GOOD
    reason: str | None = None
    raw_text: str | None = None
    nuclide: str | None = None
    kind: SampleKind = SampleKind.READING
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SampleBatch:
    """One poll or notification burst of one device, column by column.

    Every column has one entry per item. `t` is the time stamp the items share; `times`
    replaces it per item when they differ. The optional columns are None when every item
    has the default (good quality, no reason, no nuclide, a reading, no attrs), which is the
    case the pipeline handles without building per-item objects. Treat a batch as immutable
    once yielded.
    """

    device: str
    t: datetime
    channels: Sequence[str]
    values: Sequence[JSONScalar]
    units: Sequence[str | None]
    raw_texts: Sequence[str | None] | None = None
    times: Sequence[datetime] | None = None
    qualities: Sequence[Quality] | None = None
    reasons: Sequence[str | None] | None = None
    nuclides: Sequence[str | None] | None = None
    kinds: Sequence[SampleKind] | None = None
    attrs: Sequence[Mapping[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.channels)

    @property
    def plain(self) -> bool:
        """Only the default columns: good readings without nuclide, reason or attrs.

        Time stamps may differ per item (`times`: a poll of several requests).
        """
        return (
            self.qualities is None
            and self.reasons is None
            and self.nuclides is None
            and self.kinds is None
            and self.attrs is None
        )

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> SampleBatch:
        """Samples of one device as one batch (drivers whose values come one by one)."""
        first = samples[0]
        t = first.t
        batch = cls(
            first.device,
            t,
            [s.channel for s in samples],
            [s.value for s in samples],
            [s.unit for s in samples],
            [s.raw_text for s in samples],
        )
        if any(s.t is not t for s in samples):
            batch.times = [s.t for s in samples]
        if any(s.quality is not Quality.GOOD for s in samples):
            batch.qualities = [s.quality for s in samples]
        if any(s.reason is not None for s in samples):
            batch.reasons = [s.reason for s in samples]
        if any(s.nuclide is not None for s in samples):
            batch.nuclides = [s.nuclide for s in samples]
        if any(s.kind is not SampleKind.READING for s in samples):
            batch.kinds = [s.kind for s in samples]
        if any(s.attrs for s in samples):
            batch.attrs = [s.attrs for s in samples]
        return batch

    def samples(self) -> list[Sample]:
        """The batch item by item (tests, and the pipeline's path for unusual items)."""
        n = len(self.channels)
        none: list[Any] = [None] * n
        times = self.times or [self.t] * n
        qualities = self.qualities or [Quality.GOOD] * n
        kinds = self.kinds or [SampleKind.READING] * n
        attrs: Sequence[Mapping[str, Any]] = self.attrs or [{}] * n
        return [
            Sample(self.device, channel, value, unit, t, quality, reason, text, nuclide, kind,
                   attr)
            for channel, value, unit, t, quality, reason, text, nuclide, kind, attr in zip(
                self.channels, self.values, self.units, times, qualities,
                self.reasons or none, self.raw_texts or none, self.nuclides or none, kinds,
                attrs, strict=True,
            )
        ]  # fmt: skip


class DeviceError(Exception):
    """The device cannot be read right now (link down, timeout, protocol violation).

    The supervisor logs it, marks the device offline and reconnects with backoff.
    """

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device


class BackoffConfig(BaseModel):
    """Capped, jittered exponential backoff between reconnect attempts."""

    model_config = ConfigDict(extra="forbid")

    initial_s: float = Field(default=0.5, gt=0, le=60)
    max_s: float = Field(default=30.0, gt=0, le=3600)


class DeviceConfigBase(BaseModel):
    """Settings every device has; each driver subclasses this with a `type: Literal[...]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Device id, unique per agent; used in MQTT topics.",
    )
    type: str
    description: str = ""
    enabled: bool = True
    poll_interval_s: float = Field(default=1.0, gt=0, le=86400)
    timeout_s: float = Field(default=3.0, gt=0, le=300)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    reference_time: str | None = Field(
        default=None,
        pattern=r"^(\d{2}:\d{2}(:\d{2})?|\d{4}-\d{2}-\d{2}T\S+)$",
        description="Decay reference for activity readings: HH:MM (daily, UTC) or an "
        "ISO 8601 instant. Readings then carry ref_time and value_at_ref.",
    )
    priority: int = Field(
        default=1,
        ge=0,
        le=9,
        description="0 = lowest. Under outbox quota pressure, low priority devices pause first.",
    )


StatusCallback = Callable[[str, str | None], None]
T = TypeVar("T")


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncGenerator[AsyncIterator[T], None]:
    """`contextlib.aclosing` for any async iterator: an async generator is closed on exit."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class Driver(abc.ABC):
    """One device's connection. The supervisor owns it: connect, iterate batches, close.

    A driver implements `batches()` (one poll or notification burst per batch: the fast
    path) or `samples()` (one value at a time), or both; each has a default made from the
    other. They yield until the link fails, then raise `DeviceError`; the supervisor
    closes the driver, backs off and builds a fresh one. Every wait on the device must have
    a timeout (`config.timeout_s`), so a dead instrument surfaces as an error, never a hang.
    """

    type: ClassVar[str]

    def __init__(self, config: DeviceConfigBase) -> None:
        self.config = config
        self.log = structlog.get_logger("isoedge.driver").bind(
            device=config.id, driver=config.type
        )
        self._status_callback: StatusCallback | None = None

    @property
    def device_id(self) -> str:
        """The configured device id."""
        return self.config.id

    def on_status(self, callback: StatusCallback) -> None:
        """Register the supervisor's callback for partial-health reports (`degraded`, ...)."""
        self._status_callback = callback

    def report_status(self, state: str, detail: str | None = None) -> None:
        """Tell the supervisor about health short of failure, e.g. one unit id not answering."""
        if self._status_callback is not None:
            self._status_callback(state, detail)

    def sample(self, channel: str, value: JSONScalar, unit: str | None, **kw: Any) -> Sample:
        """Build a `Sample` for this device."""
        return Sample(device=self.config.id, channel=channel, value=value, unit=unit, **kw)

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the link; raise `DeviceError` when the device cannot be reached."""

    async def samples(self) -> AsyncIterator[Sample]:
        """Yield samples until the link fails (then raise `DeviceError`).

        Default: the items of `batches()` one by one.
        """
        if type(self).batches is Driver.batches:
            raise NotImplementedError(f"{type(self).__name__} implements neither batches() "
                                      "nor samples()")
        async with closing(self.batches()) as batches:
            async for batch in batches:
                for sample in batch.samples():
                    yield sample

    async def batches(self) -> AsyncIterator[SampleBatch]:
        """Yield one batch per poll or notification burst until the link fails.

        Default: every sample of `samples()` as a batch of one.
        """
        if type(self).samples is Driver.samples:
            raise NotImplementedError(f"{type(self).__name__} implements neither batches() "
                                      "nor samples()")
        async with closing(self.samples()) as samples:
            async for sample in samples:
                yield SampleBatch.from_samples([sample])

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the link. Must not raise; safe to call twice."""
