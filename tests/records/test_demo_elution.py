"""`isoedge demo` performs and signs one Tc-99m elution; `isoedge report elution` prints it."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from collector import Collector, decode_all
from helpers import REPO, cli_env, free_port, isoedge_cmd, wait_until

from agent.records.kinds import verify


def _elutions(collector: Collector, state: Path) -> list[dict[str, Any]]:
    key = state / "keys" / "signing.pub.jwk"
    if not key.exists():
        return []
    jwk = json.loads(key.read_text())
    qc = [m for m in collector.envelopes() if m.topic.endswith("/qc")]
    return [i for _t, d, _p in decode_all(qc, jwk) for i in d["items"]
            if i.get("kind") == "elution"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_signs_one_tc99m_elution_and_report_elution_prints_it(tmp_path: Path,
                                                                   mosquitto: Any) -> None:
    collector = Collector(mosquitto.port, topic="isoedge/v1/demo-site/edge-1/#").start()
    state = tmp_path / "demo"
    demo = subprocess.Popen(
        isoedge_cmd("demo", "--duration", "150", "--broker", mosquitto.url, "--state-dir",
                    str(state), "--plain", "--web", f"127.0.0.1:{free_port()}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        env=cli_env(),
    )  # fmt: skip
    try:
        wait_until(lambda: _elutions(collector, state), timeout=150)
        items = _elutions(collector, state)
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=30)
        collector.stop()
    assert demo.returncode == 0, output[-3000:]
    assert len(items) == 1
    record = items[0]
    assert verify(record) == []
    assert record["generator_id"] == "TCG-DEMO-1"
    assert record["result"] == "pass"
    assert record["held"] is False
    assert record["signatures"][0]["name"] == "Tess Technologist (demo)"
    out = tmp_path / "elution.pdf"
    report = subprocess.run(
        isoedge_cmd("report", "elution", "-c", str(REPO / "config/demo.toml"), "--state-dir",
                    str(state), "--out", str(out)),
        capture_output=True, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], check=True,
                          capture_output=True, text=True).stdout
    assert "Generator elution records" in text
    assert record["eluate_id"] in text
    assert "Mo-99/Tc-99m (kBq/MBq)" in text
