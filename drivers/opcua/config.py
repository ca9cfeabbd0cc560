"""Configuration of OPC UA devices: endpoint, security, monitored nodes and batch events."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.base import DeviceConfigBase

_CHANNEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NODE_ID = r"^(ns=\d+;)?[isgb]=.+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpcUaNode(_Strict):
    """One monitored variable: a channel, its node id and how it is sampled."""

    channel: str = Field(pattern=_CHANNEL)
    node_id: str = Field(pattern=_NODE_ID, description='e.g. "ns=2;s=Synthesis.ReactorTemperature"')
    unit: str | None = Field(default=None, description="Raw unit as the server publishes it.")
    nuclide: str | None = None
    sampling_interval_ms: float = Field(default=500.0, ge=0, le=3_600_000)
    deadband: float | None = Field(
        default=None, ge=0, description="Absolute deadband: report changes larger than this."
    )
    queue_size: int = Field(default=1, ge=1, le=1000)


class OpcUaEvents(_Strict):
    """Batch events of a synthesis run, read from an event type with these fields."""

    channel: str = Field(default="batch", pattern=_CHANNEL)
    source_node: str = Field(default="i=2253", pattern=_NODE_ID, description="Default: Server.")
    event_type: str = Field(pattern=_NODE_ID)
    name_field: str = "EventName"
    batch_field: str = "BatchId"
    step_field: str = "Step"
    activity_field: str = "Activity"
    activity_unit: str = "MBq"
    eos_time_field: str = "EOSTime"
    yield_field: str = "Yield"
    nuclide: str | None = "F-18"


class OpcUaSecurity(_Strict):
    """Secure channel and client certificate (Basic256Sha256)."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = Field(default=None, description="Client certificate (DER or PEM).")
    private_key: Path | None = Field(default=None, description="Client private key (PEM).")
    server_certificate: Path | None = Field(
        default=None,
        description="Pin the server certificate; without it the one the server offers is used.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.policy == "None" and self.mode != "None":
            raise ValueError("mode needs policy Basic256Sha256")
        if self.policy != "None":
            if self.mode == "None":
                raise ValueError("policy Basic256Sha256 needs mode Sign or SignAndEncrypt")
            if self.certificate is None or self.private_key is None:
                raise ValueError("policy Basic256Sha256 needs certificate and private_key")
        return self


class OpcUaConfig(DeviceConfigBase):
    """An OPC UA server (e.g. a synthesis module): subscriptions plus optional batch events."""

    type: Literal["opcua"]
    url: str = Field(description="opc.tcp://HOST:PORT/PATH")
    nodes: list[OpcUaNode] = Field(default_factory=list)
    events: OpcUaEvents | None = None
    publishing_interval_ms: float = Field(default=500.0, gt=0, le=3_600_000)
    timestamps: Literal["source", "server"] = Field(
        default="source", description="Which time stamp of a value becomes the reading's `t`."
    )
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    username: str | None = None
    password_file: Path | None = Field(
        default=None, description="File holding the password (kept out of the configuration)."
    )
    watchdog_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "Longest silence of the server before it is asked whether it is alive; a silent"
            " server is noticed within about three of these."
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError("expected opc.tcp://HOST:PORT[/PATH]")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.nodes and self.events is None:
            raise ValueError(f"device {self.id!r}: configure nodes, events or both")
        channels = [n.channel for n in self.nodes]
        if self.events is not None:
            channels.append(self.events.channel)
        duplicates = sorted({c for c in channels if channels.count(c) > 1})
        if duplicates:
            raise ValueError(f"device {self.id!r}: channels used twice: {duplicates}")
        if self.password_file is not None and self.username is None:
            raise ValueError(f"device {self.id!r}: password_file needs username")
        return self
