"""Ingest configuration (docs/contract.md §6): TOML checked by pydantic; errors name file, key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.core.passwords import check_user_credentials
from agent.delivery.settings import BrokerEndpoint
from agent.delivery.verification import MAX_ENVELOPE_ITEMS, MAX_MESSAGE_BYTES

IdStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
GroupStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSection(BrokerEndpoint):
    """The MQTT broker (or cluster) the agents publish to."""

    group: GroupStr = Field(default="ingest", description="Shared-subscription group name.")
    client_id: str | None = Field(
        default=None,
        description="Stable MQTT client id; default: ingest-{group}-{host}-{slot}, slot taken "
        "by a lock so a restarted process resumes its own persistent session.",
    )
    session_expiry_s: int = Field(default=7 * 86400, ge=0, description="Persistent session life.")
    receive_maximum: int = Field(default=1000, ge=1, le=65535)

    @property
    def subscription(self) -> str:
        """`$share/{group}/{prefix}/+/+/#`."""
        return f"$share/{self.group}/{self.topic_prefix}/+/+/#"


class DatabaseSection(_Strict):
    """The PostgreSQL database (any server: local, managed, replicated)."""

    url: str = Field(description="postgresql://USER@HOST:PORT/DB (libpq URL)")
    batch_max_envelopes: int = Field(default=500, ge=1, le=100_000)
    batch_max_age_ms: int = Field(default=50, ge=0, le=60_000)
    writers: int = Field(
        default=2, ge=1, le=16, description="Database connections writing batches in parallel."
    )
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=5.0, gt=0, le=600)
    timescaledb: bool = Field(
        default=True, description="Use TimescaleDB hypertables when the extension is available."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"postgresql", "postgres"}:
            raise ValueError("expected postgresql://USER@HOST:PORT/DATABASE")
        return value


class RepairSection(_Strict):
    """Completeness checks and gap repair from the agents' archives."""

    check_interval_s: float = Field(default=5.0, gt=0, le=3600)
    grace_s: float = Field(default=30.0, ge=0, description="A gap this old is asked for.")
    retry_s: float = Field(default=30.0, gt=0, description="Ask again after this long.")
    max_attempts: int = Field(default=5, ge=1, description="Then the gap is permanent.")


class ShipmentsSection(_Strict):
    """Shipments reconciled across sites (central/shipments.py)."""

    tolerance_pct: float = Field(
        default=10.0, gt=0, le=100,
        description="A receipt's measured activity further than this from the shipment's,"
        " decay-corrected to the time of measurement, is an alert.",
    )
    grace_s: float = Field(
        default=6 * 3600.0, gt=0,
        description="A shipment without a receipt (or a receipt without its shipment) this"
        " long is an alert.",
    )


class InboundSection(_Strict):
    """Bounds on what the ingest accepts from the broker (docs/security.md)."""

    max_envelope_bytes: int = Field(
        default=MAX_MESSAGE_BYTES, ge=1024, le=MAX_MESSAGE_BYTES,
        description="A larger message is rejected unread (default and upper bound: the largest"
        " envelope an agent's outbox can produce, agent/delivery/verification.py).",
    )
    max_items: int = Field(default=MAX_ENVELOPE_ITEMS, ge=1, le=MAX_ENVELOPE_ITEMS)
    created_future_s: float = Field(
        default=600.0, ge=0, description="`created` further ahead of the receive time is flagged."
    )
    created_past_days: float = Field(
        default=400.0, gt=0, description="`created` older than this at receipt is flagged."
    )
    max_seq_jump: int = Field(
        default=10**10, ge=1,
        description="A new seq this far beyond the agent's stored ones raises a critical alert.",
    )
    rejected_body_bytes: int = Field(
        default=4096, ge=0, le=1024 * 1024,
        description="How much of a rejected message is kept (with the SHA-256 of the whole).",
    )
    alert_interval_s: float = Field(
        default=60.0, ge=0, description="At most one write per alert (with the count) this often."
    )
    unknown_sources_per_hour: int = Field(
        default=20, ge=1, description="Unknown site/agent names with an alert of their own."
    )


class WebUser(_Strict):
    """A fleet-page user, stored like the agent console's (`isoedge web-passwd`)."""

    name: str
    role: str = "viewer"
    password_hash: str | None = None
    token_sha256: str | None = None

    @model_validator(mode="after")
    def _complete_credentials(self) -> WebUser:
        check_user_credentials(self.name, self.password_hash, self.token_sha256)
        return self


class WebSection(_Strict):
    """The fleet page served by the ingest."""

    enabled: bool = False
    listen: str = "127.0.0.1:8090"
    users: list[WebUser] = Field(default_factory=list)
    database_url: str | None = Field(
        default=None,
        description="A read replica for the page's queries (default: database.url); the page "
        "only reads, so a streaming replica a few seconds behind serves it.",
    )

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"postgresql", "postgres"}:
            raise ValueError("expected postgresql://USER@HOST:PORT/DATABASE")
        return value

    tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain): the page is then served over HTTPS"
        " only (TLS 1.2 or newer); with `tls_key`, both or neither, as the agent console's.",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of `tls_cert`.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> WebSection:
        if (self.tls_key is None) != (self.tls_cert is None):
            raise ValueError("tls_cert and tls_key: both or neither")
        return self


class SigningSection(_Strict):
    """The ingest's own Ed25519 key (`isoedge keygen`): it signs replay requests.

    Agents answer only requests signed by a key in their `replay.trusted_keys` (the
    `signing.pub.jwk` next to this key). Without it, the ingest asks for no replay.
    """

    key_file: Path


class AgentKeys(_Strict):
    """One agent of the key registry: its kids are computed from these JWKs."""

    site: IdStr
    agent: IdStr
    public_keys: list[Path] = Field(min_length=1)
    # The site's time zone (IANA name): the fleet page shows this agent's times in it, with
    # its name. UTC when not given.
    zone: str = "UTC"

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Asia/Almaty)") \
                from None
        return value


class IngestConfig(_Strict):
    """The whole `ingest run` configuration."""

    broker: BrokerSection = BrokerSection()
    database: DatabaseSection
    repair: RepairSection = RepairSection()
    shipments: ShipmentsSection = ShipmentsSection()
    inbound: InboundSection = InboundSection()
    web: WebSection = WebSection()
    signing: SigningSection | None = None
    agents: list[AgentKeys] = Field(default_factory=list)


class ConfigError(Exception):
    """An invalid ingest configuration; the message names file, key path and what was expected."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def parse_config(data: dict[str, Any], source: str) -> IngestConfig:
    """Validate parsed TOML; `ConfigError` lists every problem as `FILE: key.path: message`."""
    try:
        return IngestConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{source}: {_key_path(tuple(err['loc'])) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(problems) from None


def load_config(path: str | Path) -> IngestConfig:
    """Read, validate and resolve relative paths against the file's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    config = parse_config(data, str(path))
    base = path.parent

    def rel(value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else base / value

    agents = [
        a.model_copy(update={"public_keys": [rel(p) for p in a.public_keys]})
        for a in config.agents
    ]
    broker = config.broker
    if broker.tls is not None:
        tls = broker.tls.model_copy(
            update={k: rel(getattr(broker.tls, k)) for k in ("ca_file", "cert_file", "key_file")}
        )
        broker = broker.model_copy(update={"tls": tls})
    if broker.password_file is not None:
        broker = broker.model_copy(update={"password_file": rel(broker.password_file)})
    signing = config.signing
    if signing is not None:
        signing = signing.model_copy(update={"key_file": rel(signing.key_file)})
    web_section = config.web.model_copy(update={
        k: rel(getattr(config.web, k)) for k in ("tls_cert", "tls_key")
    })
    return config.model_copy(update={"agents": agents, "broker": broker, "signing": signing,
                                     "web": web_section})
