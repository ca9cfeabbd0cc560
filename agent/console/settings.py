"""Configuration of the local web console: where it listens and who may sign in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agent.core.hosts import is_loopback
from agent.core.i18n import Language
from agent.core.passwords import check_user_credentials
from agent.core.settings import StrictSection

Scope = Literal["prescriptions", "read", "metrics"]


def _least_scopes() -> list[Scope]:
    return ["metrics"]


class WebUser(StrictSection):
    """A console user; the password is stored as a salted hash (`isoedge web-passwd`)."""

    name: str
    role: Literal["viewer", "technologist", "radiopharmacist", "qa"]
    full_name: str | None = Field(
        default=None, description="Printed name on electronic signatures (default: name)."
    )
    password_hash: str | None = None
    token_sha256: str | None = None
    language: Language | None = Field(
        default=None, description="This user's console language (ru, kk, ky, en); the header's "
        "selector overrides it in one browser. Default: the site's `web.language`."
    )
    scopes: list[Scope] = Field(
        default_factory=_least_scopes,
        description="What this user's bearer token may do (least by default): `metrics` "
        "(/metrics), `read` (GET /api/* except the audit trail), `prescriptions` (the "
        "prescriptions API). A token never starts or cancels QC runs or signs.",
    )

    @model_validator(mode="after")
    def _complete_credentials(self) -> WebUser:
        check_user_credentials(self.name, self.password_hash, self.token_sha256)
        return self


class WebSection(StrictSection):
    """The local web console for QA officers."""

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> WebSection:
        host = self.listen.rpartition(":")[0].strip("[]")
        if self.enabled and host and not is_loopback(host) and self.tls_cert is None:
            if not self.allow_insecure:
                raise ValueError(
                    f"the console would listen on {self.listen} without TLS (passwords and "
                    "session cookies in clear text): set tls_cert and tls_key, or set "
                    "allow_insecure = true with an insecure_reason"
                )
            if not (self.insecure_reason or "").strip():
                raise ValueError("allow_insecure = true needs an insecure_reason (why)")
        return self

    enabled: bool = True
    listen: str = "127.0.0.1:8088"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    users: list[WebUser] = Field(default_factory=list)
    language: Language | None = Field(
        default=None, description="The site's console and report language (ru, kk, ky, en). "
        "Without it, each browser's Accept-Language decides (English when none fits)."
    )
    idle_timeout_min: float = Field(
        default=15.0, gt=0, le=24 * 60,
        description="A browser session without user activity for this long is signed out.",
    )
    session_max_h: float = Field(
        default=12.0, gt=0, le=7 * 24,
        description="A browser session ends this long after sign-in, active or not.",
    )
    allow_insecure: bool = Field(
        default=False, description="Serve the console beyond loopback without TLS anyway "
        "(passwords and session cookies in clear text); needs `insecure_reason`.",
    )
    insecure_reason: str | None = None
    health_device_grace_s: float = Field(
        default=60.0, gt=0, description="/healthz fails when an enabled device has been "
        "offline (or connecting, or paused) for longer than this."
    )
