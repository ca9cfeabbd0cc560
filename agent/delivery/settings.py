"""Configuration of delivery: the broker, its TLS, the signing key and the outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from agent.core.hosts import is_loopback
from agent.core.paths import KeepRelative
from agent.core.settings import StrictSection


class TLSSection(StrictSection):
    """TLS towards the broker: CA verification always on; client certificate optional."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class BrokerEndpoint(StrictSection):
    """Where a broker is and how to log in: shared by the agent and the central ingest."""

    url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt://HOST:PORT or mqtts://")
    topic_prefix: str = "isoedge/v1"
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    tls: TLSSection | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    allow_insecure: bool = Field(
        default=False,
        description="Send credentials over plain mqtt:// to a host beyond "
        "loopback anyway; needs `insecure_reason`.",
    )
    insecure_reason: str | None = None

    @model_validator(mode="after")
    def _no_plain_credentials(self) -> BrokerEndpoint:
        credentials = self.username is not None or self.password_file is not None
        if credentials and not self.uses_tls and not is_loopback(self.host):
            if not self.allow_insecure:
                raise ValueError(
                    f"credentials would cross the network in clear text to {self.host}: use "
                    "mqtts:// (or [broker.tls]), or set allow_insecure = true with an "
                    "insecure_reason"
                )
            if not (self.insecure_reason or "").strip():
                raise ValueError("allow_insecure = true needs an insecure_reason (why)")
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise ValueError("expected mqtt://HOST:PORT or mqtts://HOST:PORT")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in broker url: {exc}") from None
        return value

    @property
    def host(self) -> str:
        """Broker host name."""
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Broker port (1883, or 8883 for mqtts, unless given)."""
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def uses_tls(self) -> bool:
        """True for mqtts:// or when a TLS section is present."""
        return urlsplit(self.url).scheme == "mqtts" or self.tls is not None


class BrokerSection(BrokerEndpoint):
    """The MQTT broker readings are published to."""

    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_inflight: int = Field(default=32, ge=1, le=1000)
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)


class SigningSection(StrictSection):
    """The Ed25519 key that signs every envelope."""

    key_file: Path = Path("/etc/isoedge/keys/signing.key")
    previous_public_keys: list[Path] = Field(
        default_factory=list, description="Public JWKs of retired keys, announced on rotation."
    )


class OutboxSection(StrictSection):
    """Durable store-and-forward settings."""

    path: Annotated[Path, KeepRelative()] = Field(
        default=Path("outbox.db"), description="Relative to agent.state_dir."
    )
    fsync: Literal["full", "normal"] = Field(
        default="full", description="full: every commit reaches the disk (safe on power loss)."
    )
    quota_mb: float = Field(default=512, gt=0)
    min_free_mb: float = Field(
        default=64,
        ge=0,
        description="Free space kept on the state directory's file system: "
        "below twice this, devices below the top priority pause; below it, all of them.",
    )
    reserve_file_mb: float = Field(
        default=4,
        ge=0,
        le=1024,
        description="Ballast file the agent gives up when the disk "
        "is full, so the database can still delete delivered envelopes (0: none).",
    )
    on_damaged: Literal["refuse", "move_aside"] = Field(
        default="refuse",
        description="A damaged state database at start: refuse to start "
        "(exit 2), or move it aside (never deleted) and start with a fresh one.",
    )
    batch_max_items: int = Field(default=500, ge=1, le=10000)
    batch_max_age_ms: int = Field(default=25, ge=0, le=60000)
    max_commit_delay_ms: int = Field(
        default=1000,
        ge=0,
        le=10_000,
        description="The most an acquired reading waits to "
        "become durable: readings arriving within it share one transaction (one fsync), "
        "sooner when 256 kB wait. A power cut loses at most what arrived within it, never "
        "anything counted as acquired or published (docs/operations.md).",
    )
    commit_interval_ms: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Older name of max_commit_delay_ms (a "
        "configuration written for an earlier version); when given it is the commit delay.",
    )
    archive_days: float = Field(
        default=7, ge=0, description="Keep sent envelopes this long for replay requests (0: none)."
    )
    archive_mb: float = Field(
        default=64, ge=0, description="Bound of the archive; within quota_mb, which comes first."
    )
    replay_per_s: float = Field(
        default=200, gt=0, le=100_000, description="Rate of re-published envelopes on replay."
    )
