"""Configuration of the local web console: where it listens and who may sign in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.core.i18n import Language
from agent.core.settings import StrictSection


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


class WebSection(StrictSection):
    """The local web console for QA officers."""

    enabled: bool = True
    listen: str = "127.0.0.1:8088"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    users: list[WebUser] = Field(default_factory=list)
    language: Language | None = Field(
        default=None, description="The site's console and report language (ru, kk, ky, en). "
        "Without it, each browser's Accept-Language decides (English when none fits)."
    )
    health_device_grace_s: float = Field(
        default=60.0, gt=0, description="/healthz fails when an enabled device has been "
        "offline (or connecting, or paused) for longer than this."
    )
