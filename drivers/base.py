"""The boundary between instruments and the agent: `Sample`, `Driver`, device configuration."""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, Field

JSONScalar = str | int | float | bool | None


class Quality(enum.StrEnum):
    """Quality of one value, as published in a reading's `quality` field."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class SampleKind(enum.StrEnum):
    """A measured value, or a discrete event (e.g. a synthesis step change)."""

    READING = "reading"
    EVENT = "event"


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


class Driver(abc.ABC):
    """One device's connection. The supervisor owns it: connect, iterate samples, close.

    `samples()` yields until the link fails, then raises `DeviceError`; the supervisor
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

    @abc.abstractmethod
    def samples(self) -> AsyncIterator[Sample]:
        """Yield samples until the link fails (then raise `DeviceError`)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the link. Must not raise; safe to call twice."""
