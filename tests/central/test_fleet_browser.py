"""The fleet page in headless Chromium (Playwright): agents from their retained status, a gap,
open alerts, calibrator release states from the qc stream, a shipment reconciled across two
sites, a plot of a device, CSV export.

Real pieces: mosquitto, PostgreSQL, `isoedge ingest run` serving the page with basic auth,
Debian's Chromium. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from helpers import REPO, free_port, wait_until
from ingestproc import IngestProcess, query, write_ingest_config
from playwright.sync_api import expect, sync_playwright
from synth import Publisher, SynthAgent, now
from test_shipments import expected, receipt, shipment

from agent.console.auth import hash_password

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "physicist-at-the-centre"  # noqa: S105 - a test user's password


@pytest.fixture
def chromium_available():
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium)")


def qc_item(device: str, test: str, result: str) -> dict:
    return {"id": f"qc-{device}-{test}-{result}", "device": device, "test": test, "t": now(),
            "result": result, "deviation_pct": 1.2 if result == "pass" else 7.5,
            "tolerance": {"action_pct": 5, "fail_pct": 10, "basis": "IPEM 91"}}


def test_fleet_page_shows_agents_gaps_alerts_calibrators_plot_and_exports_csv(  # noqa: PLR0915
        tmp_path, mosquitto, postgres, chromium_available):
    north = SynthAgent("north", "edge-n1", tmp_path / "k1")
    south = SynthAgent("south", "edge-s1", tmp_path / "k2")
    port = free_port()
    config = write_ingest_config(
        tmp_path / "ingest.toml", mosquitto.url, postgres.url,
        [(a.site, a.agent, [a.jwk_path]) for a in (north, south)],
        extra=(f'[repair]\ncheck_interval_s = 0.5\ngrace_s = 1\nretry_s = 60\n'
               f'[web]\nenabled = true\nlisten = "127.0.0.1:{port}"\n'
               f'[[web.users]]\nname = "physicist"\nrole = "viewer"\n'
               f'password_hash = "{hash_password(PASSWORD)}"\n'),
        zones={"north": "Asia/Almaty"},  # south: none given, so UTC
    )
    ingest = IngestProcess(config).start()
    publisher = Publisher(mosquitto.port)
    try:
        for agent in (north, south):
            publisher.publish(f"isoedge/v1/{agent.site}/{agent.agent}/status", orjson.dumps({
                "state": "online", "site": agent.site, "agent": agent.agent, "t": now(),
                "devices": {"dc-1": {"state": "online", "detail": None}}, "last_seq": 30,
            }), retain=True)
        wait_until(lambda: _n(postgres.url, "agent_status") == 2, timeout=30)
        for i in range(30):
            for agent in (north, south):
                topic, body = agent.envelope(n_items=10)
                if not (agent is south and i in (10, 11)):  # south loses 11..12
                    publisher.publish(topic, body)
        publisher.publish(*north.envelope("qc", items=[qc_item("dc-1", "constancy", "pass")]))
        publisher.publish(*south.envelope("qc", items=[qc_item("dc-1", "constancy", "fail")]))
        # A shipment north → south, assayed at south 20 % below its decay-corrected activity.
        shipped_at = datetime.now(UTC) - timedelta(hours=1)
        publisher.publish(*north.envelope("qc", items=[shipment(
            north, "SHP-N-1", "south", activity=4000.0, reference=shipped_at, t=shipped_at)]))
        assayed = datetime.now(UTC)
        publisher.publish(*south.envelope("qc", items=[receipt(
            south, "SHP-N-1", "north", measured=0.8 * expected(4000.0, shipped_at, assayed),
            measured_at=assayed, claimed_expected=1.0)]))
        publisher.wait_acked()
        wait_until(lambda: _n(postgres.url, "envelopes") == 62, timeout=30)
        wait_until(lambda: _n(postgres.url, "central_alerts") >= 1, timeout=30)

        with pytest.raises(urllib.error.HTTPError) as refused:  # no credentials, no page
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/fleet", timeout=10)
        assert refused.value.code == 401
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # The browser in a third zone: the page shows each site's own.
            context = browser.new_context(
                http_credentials={"username": "physicist", "password": PASSWORD},
                accept_downloads=True, viewport={"width": 1400, "height": 1100},
                timezone_id="America/New_York")
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{port}/")
            rows = page.locator("#agents tbody tr")
            expect(rows).to_have_count(2, timeout=15_000)
            north_row = page.locator('#agents tr[data-agent="north/edge-n1"]')
            south_row = page.locator('#agents tr[data-agent="south/edge-s1"]')
            expect(north_row).to_contain_text("online")
            expect(north_row.locator(".gaps")).to_have_text("none")
            expect(south_row.locator(".gaps")).to_have_text("11..12", timeout=15_000)
            expect(page.locator("#alerts tbody")).to_contain_text(
                "south/edge-s1: envelopes 11..12 missing", timeout=15_000)
            _times_in_the_sites_zones(page, north_row, south_row)
            cal = page.locator("#calibrators tbody tr")
            expect(cal).to_have_count(2)
            expect(cal.nth(0)).to_contain_text("released")
            expect(cal.nth(1)).to_contain_text("ON HOLD")
            expect(cal.nth(1)).to_contain_text("constancy not passed")
            shipped = page.locator('#shipments tr[data-shipment="north/SHP-N-1"]')
            expect(shipped).to_have_attribute("data-state", "out_of_tolerance", timeout=15_000)
            expect(shipped).to_contain_text("out of tolerance")
            expect(shipped).to_contain_text("-20.00 %")
            page.select_option("#device", "north|edge-n1|dc-1|activity")
            page.click("#query button")
            expect(page.locator("#plot path.line")).to_have_count(1, timeout=15_000)
            expect(page.locator("#plot-info")).to_contain_text("300 readings")
            page.screenshot(path=str(ARTIFACTS / "fleet-page.png"), full_page=True)
            with page.expect_download() as download_info:
                page.click("#csv")
            csv_path = tmp_path / "export.csv"
            download_info.value.save_as(csv_path)
            lines = csv_path.read_text().splitlines()
            assert lines[0] == "t,site,agent,device,channel,value,unit,quality,nuclide,id,seq"
            assert len(lines) == 301
            assert all(",north,edge-n1,dc-1,activity," in line for line in lines[1:])
            # The page in Kyrgyz (the browser's language), its JavaScript too.
            ky = browser.new_context(
                http_credentials={"username": "physicist", "password": PASSWORD},
                locale="ky-KG", extra_http_headers={"Accept-Language": "ky-KG,ky;q=0.9"})
            ky_page = ky.new_page()
            ky_page.goto(f"http://127.0.0.1:{port}/")
            assert ky_page.get_attribute("html", "lang") == "ky"
            expect(ky_page.locator("h2").first).to_have_text("Агенттер")
            expect(ky_page.locator('#agents tr[data-agent="north/edge-n1"] .gaps')).to_have_text(
                "жок", timeout=15_000)
            expect(ky_page.locator("#calibrators tbody tr").nth(1)).to_contain_text("УРУКСАТ ЖОК")
            expect(ky_page.locator('#shipments tr[data-shipment="north/SHP-N-1"]')).to_contain_text(
                "уруксат чегинен тышкары")
            ky.close()
            assert errors == []
            browser.close()
        ids = {line.split(",")[9] for line in lines[1:]}
        assert ids == {r[0] for r in query(postgres.url, "SELECT id FROM readings WHERE agent = 'edge-n1'")}
    finally:
        publisher.close()
        ingest.stop_quietly()


def _times_in_the_sites_zones(page, north_row, south_row) -> None:
    """Each agent's last-seen time in its site's zone with the zone's name."""
    fleet = page.evaluate("fetch('/api/fleet').then((r) => r.json())")
    last = {a["site"]: a["last_seen"] for a in fleet["agents"]}
    assert {a["site"]: a["zone"] for a in fleet["agents"]} == {"north": "Asia/Almaty",
                                                               "south": "UTC"}
    for row, site, zone in ((north_row, "north", "Asia/Almaty"), (south_row, "south", "UTC")):
        cell = row.locator("td.when")
        expect(cell).to_contain_text(zone)
        shown = re.search(r"(\d{1,2}):(\d{2}):(\d{2})\s*([AP]M)", cell.inner_text())
        assert shown, cell.inner_text()
        local = datetime.fromisoformat(last[site]).astimezone(ZoneInfo(zone))
        hour = int(shown.group(1)) % 12 + (12 if shown.group(4) == "PM" else 0)
        assert (hour, int(shown.group(2))) == (local.hour, local.minute), (cell.inner_text(), local)
    expect(page.locator("#calibrators tbody tr").nth(0)).to_contain_text("Asia/Almaty")


def _n(url: str, table: str) -> int:
    try:
        return int(query(url, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608
    except Exception:
        return 0
