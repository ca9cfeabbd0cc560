"""`isoedge demo --fleet`: three agents, private PostgreSQL and broker, two ingests, fleet page."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request

import pytest
from helpers import cli_env, free_port, isoedge_cmd, wait_until


@pytest.mark.slow
def test_fleet_demo_stores_three_agents_completely_and_serves_the_fleet_page(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        # --duration only caps it: the demo is stopped as on Ctrl-C once the page shows all three.
        isoedge_cmd("demo", "--fleet", "--duration", "150", "--state-dir", str(tmp_path),
                    "--web", f"127.0.0.1:{port}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env())
    seen: dict = {}

    def page_shows_three_agents() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/fleet", timeout=5) as r:
                seen.update(json.load(r))
        except OSError:
            return False
        return len(seen["agents"]) == 3 and all(a["readings"] > 0 for a in seen["agents"])

    try:
        wait_until(page_shows_three_agents, timeout=90, interval=0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"fleet page  http://127.0.0.1:{port}/" in out
    assert {a["site"] for a in seen["agents"]} == {"anchor-centre", "north-region", "south-region"}
    lines = re.findall(r"^  (\S+/edge-1): seq 1\.\.(\d+), (\d+) readings, gaps \[\], chain ok$",
                       out, re.MULTILINE)
    assert len(lines) == 3, out
