"""An in-process agent with its console and the generator records configured, on a broker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector import Collector, decode_all
from helpers import free_port

from agent.core.passwords import hash_password
from agent.delivery.signing import generate_key_files
from agent.service.config import parse_config
from agent.service.runtime import Agent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

USERS = {
    "tess": ("technologist", "Tess Technologist", "tech-password-1"),
    "rita": ("radiopharmacist", "Rita Radiopharmacist", "pharm-password-1"),
    "quinn": ("qa", "Quinn QA Officer", "qa-password-1"),
}
CAL = "dosecal-1"
RECORDS: dict[str, Any] = {
    "elution": {
        "mo99_limit": "usp",
        "aluminium_limit": "ph_eur",
        "stability_floor_mbq": 0.02,
        "canisters": [{"id": "MOLY-1", "factor": 2.0, "validated": "2026-06-01",
                       "basis": "vendor factor verified with a Mo-99 source (SOP-CAL-07)"}],
    },
    "generators": [{
        "id": "TCG-49", "nuclide": "Tc-99m", "calibrator": CAL, "canister": "MOLY-1",
        "supplier": "Generator supplier", "lot": "L-2026-49", "reference_mbq": 20000.0,
        "reference_time": "2026-12-04T12:00:00Z",
    }],
}


def web_users() -> list[dict[str, Any]]:
    return [{"name": n, "role": r, "full_name": f, "password_hash": hash_password(p)}
            for n, (r, f, p) in USERS.items()]


def basic(name: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{USERS[name][2]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def url(agent: Agent, path: str) -> str:
    assert agent.web is not None
    assert agent.web.url is not None
    return agent.web.url.rstrip("/") + path


@contextlib.asynccontextmanager
async def records_agent(tmp_path: Path, broker_url: str, devices: list[dict[str, Any]],
                        records: dict[str, Any] | None = None) -> AsyncIterator[Agent]:
    """The agent with `[records]` configured and the console on a free loopback port."""
    generate_key_files(tmp_path / "keys")
    config = parse_config({
        "agent": {"site": "lab1", "id": "edge1", "state_dir": str(tmp_path / "state")},
        "broker": {"url": broker_url, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
        "signing": {"key_file": str(tmp_path / "keys" / "signing.key")},
        "web": {"listen": f"127.0.0.1:{free_port()}", "users": web_users()},
        "devices": devices,
        "records": records if records is not None else RECORDS,
    })
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent-under-test")
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def published(collector: Collector, tmp_path: Path, stream: str = "qc") -> list[dict[str, Any]]:
    """Verified items of `stream` the broker delivered."""
    jwk = json.loads((tmp_path / "keys" / "signing.pub.jwk").read_text())
    return [item for topic, doc, _p in decode_all(collector.envelopes(), jwk)
            if topic.split("/")[4:5] == [stream] for item in doc["items"]]


def pdf_text(pdf: bytes, directory: Path, name: str) -> str:
    """pdftotext of a PDF (poppler-utils)."""
    path = directory / name
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                          capture_output=True, text=True).stdout


async def sign_in(page: Any, address: str, name: str, password: str) -> None:
    """Open `address`, sign in on the login form (as tests/console/consolelogin.py does)."""
    from playwright.async_api import expect

    await page.goto(address)
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#login-name", name)
    await page.fill("#login-password", password)
    await page.click("#login-submit")
    await expect(page.locator("#sign-out")).to_be_visible()
