"""Configuration models of QC rules: a discriminated union keyed by rule `type`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class RuleBase(BaseModel):
    """Settings every rule has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    type: str
    severity: Literal["info", "warning", "alarm", "critical"] = "warning"
    device: str | None = None
    channel: str | None = None
    description: str = ""


class ThresholdRule(RuleBase):
    """Value above `high` or below `low`, with hysteresis and a minimum duration."""

    type: Literal["threshold"]
    high: float | None = None
    low: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)
    min_duration_s: float = Field(default=0.0, ge=0)


class DeviceOfflineRule(RuleBase):
    """The device has been offline for longer than `after_s`."""

    type: Literal["device_offline"]
    after_s: float = Field(default=30.0, ge=0)


RuleConfig = Annotated[ThresholdRule | DeviceOfflineRule, Field(discriminator="type")]
"""Union of every rule type, discriminated by `type`."""
