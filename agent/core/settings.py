"""The base of every configuration section: unknown keys are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictSection(BaseModel):
    """A configuration section that forbids unknown keys (every error then names the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
