"""Web console over real HTTP: access control, roles, acknowledgement, audit, health, metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import datetime as dt
import io
import ipaddress
import json
import re
import sqlite3
import ssl
import subprocess
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import cli_env, free_port, isoedge_cmd, wait_for_condition

from agent.console.auth import (
    Authenticator,
    check_password_hash_format,
    hash_password,
    token_sha256,
    verify_password,
)
from agent.delivery.signing import generate_key_files
from agent.service.config import ConfigError, parse_config
from agent.service.runtime import Agent
from agent.tools.cli import main as cli_main
from drivers.base import Sample

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

QA = ("alice", "alice-long-password")
VIEWER = ("victor", "victor-long-password")
VIEWER_TOKEN = "scrape-token-0123456789abcdef"  # noqa: S105 - a test credential

AREA_MONITOR = {
    "id": "area-1",
    "type": "synthetic",
    "channels": ["dose_rate"],
    "unit": "uSv/h",
    "poll_interval_s": 0.05,
}
DOSECAL = {
    "id": "dosecal-1",
    "type": "synthetic",
    "channels": ["activity"],
    "unit": "MBq",
    "base": 400.0,
    "poll_interval_s": 3600,
    "reference_time": "12:00",
}


def users() -> list[dict[str, Any]]:
    return [
        {"name": QA[0], "role": "qa", "password_hash": hash_password(QA[1])},
        {"name": VIEWER[0], "role": "viewer", "password_hash": hash_password(VIEWER[1]),
         "token_sha256": token_sha256(VIEWER_TOKEN)},
    ]


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path,
    broker_url: str,
    *,
    devices: list[dict[str, Any]] | None = None,
    web: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> AsyncIterator[Agent]:
    """An in-process agent with its web console on a free loopback port."""
    generate_key_files(tmp_path / "keys")
    config = parse_config({
        "agent": {"site": "lab1", "id": "edge1", "state_dir": str(tmp_path / "state")},
        "broker": {"url": broker_url, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
        "signing": {"key_file": str(tmp_path / "keys" / "signing.key")},
        "web": {"listen": f"127.0.0.1:{free_port()}", **(web or {})},
        "devices": devices if devices is not None else [AREA_MONITOR],
        "rules": rules or [],
        **(extra or {}),
    })
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent-under-test")
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        assert agent.web is not None
        assert agent.web.url is not None
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def basic(user: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def url(agent: Agent, path: str) -> str:
    assert agent.web is not None
    assert agent.web.url is not None
    return agent.web.url.rstrip("/") + path


def raise_alert(agent: Agent, severity: str = "alarm") -> str:
    alert = agent.alerts.raise_alert(
        "area-high", "area-1", "dose_rate", severity, "dose rate 80 uSv/h above 25 uSv/h",
        value=80.0,
    )
    return alert.id


@pytest.fixture
async def secured(tmp_path, mosquitto):
    async with (
        running_agent(tmp_path, mosquitto.url, web={"users": users()}) as agent,
        aiohttp.ClientSession() as session,
    ):
        yield agent, session


# ------------------------------------------------------------- access control
PROTECTED = [
    ("GET", "/api/state"), ("GET", "/api/stream"), ("GET", "/api/alerts"),
    ("GET", "/api/audit"), ("GET", "/api/audit.csv"), ("GET", "/metrics"), ("GET", "/api/trends"),
    ("POST", "/api/alerts/x/ack"),
]
# The page and its scripts hold no data: they are served to everyone (the page signs in).
PUBLIC_FILES = ["/", "/static/console.js"]
WRONG_CREDENTIALS = [
    basic(("alice", "wrong-password")), basic(("mallory", QA[1])), bearer("not-the-token"),
    {"Authorization": "Basic !!!notbase64"}, {"Authorization": "Digest abc"},
]


async def test_requests_without_or_with_wrong_credentials_get_401(secured):
    agent, session = secured
    for method, path in PROTECTED:
        async with session.request(method, url(agent, path), json={}) as response:
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="IsoEdge"')
    for path in PUBLIC_FILES:
        async with session.get(url(agent, path)) as response:
            assert response.status == 200, path
    for headers in WRONG_CREDENTIALS:
        async with session.get(url(agent, "/api/state"), headers=headers) as response:
            assert response.status == 401, headers


async def test_viewer_may_look_but_not_acknowledge(secured):
    agent, session = secured
    alert_id = raise_alert(agent)
    async with session.get(url(agent, "/api/state"), headers=basic(VIEWER)) as response:
        assert response.status == 200
        body = await response.json()
    me = body["me"]
    assert (me["name"], me["role"], me["authenticated"]) == ("victor", "viewer", True)
    assert me["may_acknowledge"] is False
    assert not any(me["may"].values())  # a viewer signs nothing
    async with session.post(url(agent, f"/api/alerts/{alert_id}/ack"), headers=basic(VIEWER),
                            json={"name": "victor", "reason": "seen"}) as response:
        assert response.status == 403
    # The bearer token carries the same (viewer) role.
    async with session.post(url(agent, f"/api/alerts/{alert_id}/ack"),
                            headers=bearer(VIEWER_TOKEN),
                            json={"name": "victor", "reason": "seen"}) as response:
        assert response.status == 403
    assert not agent.alerts.get(alert_id).acknowledged
    assert await agent.audit.query(action="alert.acknowledged") == []


async def test_qa_acknowledges_with_reason_and_it_is_audited(secured):
    agent, session = secured
    alert_id = raise_alert(agent)
    ack = url(agent, f"/api/alerts/{alert_id}/ack")
    async with session.post(ack, headers=basic(QA), json={"name": "alice"}) as response:
        assert response.status == 400
        assert "reason" in (await response.json())["error"]
    async with session.post(ack, headers=basic(QA),
                            json={"name": "bob", "reason": "x"}) as response:
        assert response.status == 403  # a QA officer cannot sign as someone else
    async with session.post(ack, headers=basic(QA), data="name=alice&reason=x",
                            ) as response:
        assert response.status == 415  # forms (and so cross-site form posts) are refused
    async with session.post(ack, headers={**basic(QA), "Origin": "http://evil.example"},
                            json={"name": "alice", "reason": "x"}) as response:
        assert response.status == 403
    # An acknowledgement is an electronic signature: the password again, even when signed in.
    async with session.post(ack, headers=basic(QA),
                            json={"name": "alice", "reason": "x"}) as response:
        assert response.status == 400
        assert "password" in (await response.json())["error"]
    async with session.post(ack, headers=basic(QA), json={
        "name": "alice", "reason": "x", "password": "not-her-password"}) as response:
        assert response.status == 403
        assert (await response.json())["refusal"] == "wrong_password"
    assert not agent.alerts.get(alert_id).acknowledged
    refused = await agent.audit.query(action="signature.refused")
    assert [(r["actor"], r["refusal"]) for r in refused] == [("alice", "wrong_password")]
    async with session.post(
        ack, headers=basic(QA), json={"name": "alice", "reason": "  source moved back to shield ",
                                      "password": QA[1]}
    ) as response:
        assert response.status == 200, await response.text()
        alert = (await response.json())["alert"]
    assert alert["acknowledged_by"] == "alice"
    assert alert["ack_reason"] == "source moved back to shield"
    assert alert["state"] == "active_acknowledged"
    async with session.post(ack, headers=basic(QA),
                            json={"name": "alice", "reason": "again",
                                  "password": QA[1]}) as response:
        assert response.status == 409
    async with session.post(url(agent, "/api/alerts/nope/ack"), headers=basic(QA),
                            json={"name": "alice", "reason": "x",
                                  "password": QA[1]}) as response:
        assert response.status == 404

    async with session.get(url(agent, "/api/audit?actor=alice&action=alert.acknowledged"),
                           headers=basic(VIEWER)) as response:
        rows = (await response.json())["rows"]
    assert len(rows) == 1
    assert rows[0]["subject"] == f"alert/{alert_id}"
    assert rows[0]["reason"] == "source moved back to shield"
    assert rows[0]["old"]["state"] == "active"
    assert rows[0]["new"]["state"] == "active_acknowledged"
    async with session.get(url(agent, "/api/audit.csv?actor=alice&action=alert.acknowledged"),
                           headers=basic(VIEWER)) as response:
        assert response.status == 200
        assert response.content_type == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        table = list(csv.DictReader(io.StringIO(await response.text())))
    assert [(r["event"], r["actor"], r["reason"]) for r in table] == [
        ("alert.acknowledged", "alice", "source moved back to shield")
    ]
    async with session.get(url(agent, "/api/alerts?state=acknowledged"),
                           headers=basic(VIEWER)) as response:
        listed = await response.json()
    assert [a["id"] for a in listed["alerts"]] == [alert_id]
    assert listed["open"] == 0


async def test_audit_filters_by_time(secured):
    agent, session = secured
    agent.audit.record("test.marker", actor="tester", subject="s")
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    async with session.get(url(agent, "/api/audit"), params={"since": future},
                           headers=basic(VIEWER)) as response:
        assert (await response.json())["rows"] == []
    async with session.get(url(agent, "/api/audit"), params={"until": future, "actor": "tester"},
                           headers=basic(VIEWER)) as response:
        assert [r["event"] for r in (await response.json())["rows"]] == ["test.marker"]
    async with session.get(url(agent, "/api/audit"), params={"since": "yesterday"},
                           headers=basic(VIEWER)) as response:
        assert response.status == 400


async def test_healthz_is_public_and_metrics_take_a_bearer_token(secured):
    agent, session = secured
    await wait_for_condition(lambda: agent.live.device("area-1").readings >= 3)
    raise_alert(agent, "critical")
    async with session.get(url(agent, "/healthz")) as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ok"
    assert body["checks"]["outbox_thread_alive"] is True
    assert body["checks"]["devices"]["area-1"]["state"] == "online"
    async with session.get(url(agent, "/metrics"), headers=bearer(VIEWER_TOKEN)) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples = parse_prometheus(text)
    assert samples["isoedge_readings_acquired_total"] >= 3
    assert samples['isoedge_device_readings_total{device="area-1"}'] >= 3
    assert samples['isoedge_device_state{device="area-1",state="online"}'] == 1
    assert samples['isoedge_device_errors_total{device="area-1"}'] == 0
    assert samples['isoedge_alerts_open{severity="critical",state="active"}'] == 1
    assert samples['isoedge_event_items_total{event="alert.raised"}'] == 1
    assert samples["isoedge_outbox_thread_up"] == 1
    assert "isoedge_outbox_oldest_unsent_age_seconds" in samples
    assert "isoedge_mqtt_reconnects_total" in samples
    assert samples["isoedge_healthy"] == 1
    # prometheus_client's own collectors come with it; counters carry `_total`, once.
    assert samples["process_resident_memory_bytes"] > 0
    assert any(k.startswith("isoedge_build_info{") for k in samples)
    assert not any("_total_total" in k for k in samples)
    assert "# TYPE isoedge_readings_acquired_total counter" in text


def parse_prometheus(text: str) -> dict[str, float]:
    """Strict enough to catch format slips: every family typed, every line `name{labels} value`."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    line_re = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (\S+)$')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        match = line_re.match(line)
        assert match, f"bad exposition line: {line!r}"
        assert match.group(1) in typed, f"{match.group(1)} has no TYPE line"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(4))
    assert text.endswith("\n")
    return samples


async def test_healthz_503_names_a_device_offline_too_long(tmp_path, mosquitto):
    failing = {**AREA_MONITOR, "id": "flaky", "fail_after": 1,
               "backoff": {"initial_s": 30, "max_s": 30}}
    async with (
        running_agent(tmp_path, mosquitto.url, devices=[failing],
                      web={"health_device_grace_s": 0.3}) as agent,
        aiohttp.ClientSession() as session,
    ):

        async def unhealthy() -> bool:
            async with session.get(url(agent, "/healthz")) as response:
                return response.status == 503

        await wait_for_condition(unhealthy, timeout=10)
        async with session.get(url(agent, "/healthz")) as response:
            body = await response.json()
    assert body["status"] == "unhealthy"
    assert any(r.startswith("device flaky offline for") for r in body["reasons"]), body
    assert "synthetic failure" in " ".join(body["reasons"])


async def test_broker_down_is_buffering_not_unhealthy(tmp_path):
    dead_broker = f"mqtt://127.0.0.1:{free_port()}"
    async with running_agent(tmp_path, dead_broker) as agent:
        await wait_for_condition(lambda: agent.live.device("area-1").readings >= 2)
        async with aiohttp.ClientSession() as session, session.get(url(agent, "/healthz")) as r:
            assert r.status == 200
            body = await r.json()
    assert body["checks"]["publishing"] is False
    assert body["checks"]["buffering"] is True


# --------------------------------------------------------- loopback, no users
async def test_loopback_without_users_needs_no_login_but_a_typed_name(tmp_path, mosquitto):
    async with running_agent(tmp_path, mosquitto.url) as agent:
        alert_id = raise_alert(agent)
        async with aiohttp.ClientSession() as session:
            async with session.get(url(agent, "/api/state")) as response:
                assert response.status == 200
                me = (await response.json())["me"]
            assert me["authenticated"] is False
            assert me["may_acknowledge"] is True
            # Nobody to sign: no QC test, review or prescription without users.
            assert not any(v for k, v in me["may"].items() if k != "acknowledge_alert")
            async with session.post(url(agent, "/api/qc/runs"),
                                    json={"device": "area-1", "test": "constancy"}) as response:
                assert response.status == 403
            ack = url(agent, f"/api/alerts/{alert_id}/ack")
            async with session.post(ack, json={"reason": "checked"}) as response:
                assert response.status == 400
                assert "name" in (await response.json())["error"]
            async with session.post(ack, json={"name": "Dr. Q", "reason": "checked"}) as r:
                assert r.status == 200
            # DNS rebinding: a foreign site name resolving to 127.0.0.1 gets nothing.
            async with session.get(url(agent, "/api/state"),
                                   headers={"Host": "attacker.example:8088"}) as response:
                assert response.status == 421
        assert agent.alerts.get(alert_id).acknowledged_by == "Dr. Q"


def test_access_control_is_on_beyond_loopback_or_with_users():
    assert not Authenticator([], listen_host="127.0.0.1").enabled
    assert not Authenticator([], listen_host="::1").enabled
    assert not Authenticator([], listen_host="localhost").enabled
    assert Authenticator([], listen_host="0.0.0.0").enabled
    assert Authenticator([], listen_host="192.168.1.20").enabled
    config = parse_config({"agent": {"site": "s", "id": "a"},
                           "web": {"users": [{"name": "q", "role": "qa",
                                              "password_hash": hash_password("pw-pw-pw-pw")}]}})
    assert Authenticator(config.web.users, listen_host="127.0.0.1").enabled


# ------------------------------------------------------------- page and data
async def test_state_shows_decay_corrected_dose_calibrator_sample(tmp_path, mosquitto):
    async with running_agent(tmp_path, mosquitto.url, devices=[AREA_MONITOR, DOSECAL]) as agent:
        measured = dt.datetime.now(dt.UTC).replace(microsecond=0)
        agent.pipeline.process(Sample(device="dosecal-1", channel="activity", value=400.0,
                                      unit="MBq", nuclide="F18", t=measured, raw_text="400.0 MBq"))
        async with aiohttp.ClientSession() as session:
            async with session.get(url(agent, "/api/state")) as response:
                state = await response.json()
            async with session.get(url(agent, "/")) as response:
                page = await response.text()
                assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    item = next(i for i in state["latest"] if i["device"] == "dosecal-1")
    assert item["nuclide"] == "F-18"
    ref = dt.datetime.fromisoformat(item["ref_time"])
    elapsed = (ref - measured).total_seconds()
    assert item["value_at_ref"] == pytest.approx(400.0 * 2 ** (-elapsed / 6586.2), rel=1e-3)
    assert '<script src="/static/console.js"' in page
    assert {d["device"] for d in state["devices"]} == {"area-1", "dosecal-1"}


async def test_event_stream_pushes_readings_and_alert_events(tmp_path, mosquitto):
    seen: dict[str, Any] = {}
    async with (
        running_agent(tmp_path, mosquitto.url) as agent,
        aiohttp.ClientSession() as session,
        session.get(url(agent, "/api/stream"),
                    timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raised = False
        async for event, data in sse_events(response):
            seen.setdefault(event, data)
            if event == "readings" and not raised:
                raise_alert(agent)
                raised = True
            if {"health", "readings", "alerts"} <= seen.keys():
                break
    assert seen["readings"]["items"][0]["device"] == "area-1"
    assert seen["health"]["devices"][0]["device"] == "area-1"
    assert seen["alerts"]["event"] == "alert.raised"


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    event, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            yield event, json.loads(data)
            event, data = "message", ""


# -------------------------------------------------------------------- TLS
async def test_tls_when_configured(tmp_path, mosquitto):
    cert, key = self_signed_cert(tmp_path)
    async with running_agent(tmp_path, mosquitto.url,
                             web={"tls_cert": str(cert), "tls_key": str(key),
                                  "users": users()}) as agent:
        assert agent.web is not None
        assert agent.web.url is not None
        assert agent.web.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            async with session.get(url(agent, "/api/state"), ssl=context,
                                   headers=basic(VIEWER)) as response:
                assert response.status == 200
            plain = url(agent, "/api/state").replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with session.get(plain, headers=basic(VIEWER)) as response:
                    await response.read()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "web.crt", directory / "web.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --------------------------------------------------------------- passwords
def test_password_hash_round_trip_and_format():
    encoded = hash_password("correct horse battery staple")
    check_password_hash_format(encoded)
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert salt
    assert digest
    assert verify_password("correct horse battery staple", encoded)
    assert not verify_password("correct horse battery stapler", encoded)
    assert not verify_password("x", "scrypt$16384$8$1$bad")
    assert not verify_password("x", "bcrypt$whatever")
    assert hash_password("same-password") != hash_password("same-password")  # random salt
    with pytest.raises(ValueError, match="scrypt"):
        check_password_hash_format("plain-text-password")


def test_web_passwd_cli_prints_a_usable_hash():
    done = subprocess.run(isoedge_cmd("web-passwd", "--stdin"), input="a long passphrase\n",
                          capture_output=True, text=True, env=cli_env(), timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert verify_password("a long passphrase", done.stdout.strip())


def test_web_passwd_refuses_short_passwords_and_makes_tokens(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli_main(["web-passwd", "--stdin"]) == 2
    assert "shorter than 10" in capsys.readouterr().err
    assert cli_main(["web-passwd", "--token"]) == 0
    raw, config_line = capsys.readouterr().out.strip().splitlines()
    assert len(raw) >= 40
    assert config_line == f'token_sha256 = "{token_sha256(raw)}"'


def test_bad_password_hash_in_config_is_refused():
    # Refused by the configuration model itself (check-config), naming the user.
    with pytest.raises(ConfigError, match=r"user 'q'.*scrypt"):
        parse_config({"agent": {"site": "s", "id": "a"}, "web": {"users": [
            {"name": "q", "role": "qa", "password_hash": "hunter2"}]}})


async def test_a_console_that_fails_to_stop_does_not_keep_the_state_database_open(
    tmp_path, mosquitto
):
    generate_key_files(tmp_path / "keys")
    config = parse_config({
        "agent": {"site": "lab1", "id": "edge1", "state_dir": str(tmp_path / "state")},
        "broker": {"url": mosquitto.url},
        "signing": {"key_file": str(tmp_path / "keys" / "signing.key")},
        "web": {"listen": f"127.0.0.1:{free_port()}"},
        "devices": [AREA_MONITOR],
    })
    agent = Agent(config)
    assert agent.web is not None
    real_stop = agent.web.stop

    async def failing_stop() -> None:
        await real_stop()
        raise RuntimeError("console stop failed")

    agent.web.stop = failing_stop  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.started.wait(), 10)
    alert_id = raise_alert(agent, "alarm")
    stop.set()
    with pytest.raises(RuntimeError, match="console stop failed"):
        await asyncio.wait_for(task, 15)
    # The outbox was still flushed and closed: the alert it held is on disk, its thread gone.
    assert not agent.outbox.alive
    db = sqlite3.connect(tmp_path / "state" / "outbox.db")
    try:
        stored = db.execute("SELECT COUNT(*) FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    finally:
        db.close()
    assert stored == (1,)
