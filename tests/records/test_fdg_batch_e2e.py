"""[18F]FDG from the instruments to the signed records on the broker and their PDFs.

`isoedge demo` runs the simulated synthesis module (OPC UA events and values), the hot cell
(Modbus TCP), the dose calibrator (serial over a pty) and a real mosquitto; the demo's batch
task assays the product on the calibrator, signs the batch record with the release tests,
releases it as the demo QA officer and dispenses one dose. The records are read back from the
broker (JWS verified with the agent's public key), their signatures checked against their
content, and `isoedge report batch|release|dispensing` prints them.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from collector import Collector, decode_all
from helpers import REPO, cli_env, free_port, isoedge_cmd, wait_until

from agent.records.kinds import record_sha256, verify

BASE = "isoedge/v1/demo-site/edge-1"


def _demo_config(tmp_path: Path) -> Path:
    """config/demo.toml with the synthesis run 40 times faster (its EOS within a minute)."""
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    text, n = re.subn(r"options = \{ time_scale = [0-9.]+ \}", "options = { time_scale = 40.0 }",
                      text)
    assert n == 1
    path = tmp_path / "demo.toml"
    path.write_text(text, encoding="utf-8")
    shutil.copytree(REPO / "config" / "maps", tmp_path / "maps")
    return path


def _records(collector: Collector, state: Path) -> list[dict[str, Any]]:
    key = state / "keys" / "signing.pub.jwk"
    if not key.exists():
        return []
    jwk = json.loads(key.read_text())
    qc = [m for m in collector.envelopes() if m.topic == f"{BASE}/qc"]
    return [i for _t, d, _p in decode_all(qc, jwk) for i in d["items"] if "kind" in i]


def _pdf_text(path: Path) -> str:
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                         text=True, check=True, timeout=60)
    return " ".join(out.stdout.split())


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_fdg_batch_release_and_dose_from_the_instruments(tmp_path: Path, mosquitto) -> None:
    config = _demo_config(tmp_path)
    state = tmp_path / "demo"
    collector = Collector(mosquitto.port, topic=f"{BASE}/#").start()
    demo = subprocess.Popen(
        isoedge_cmd("demo", "--config", str(config), "--broker", mosquitto.url, "--state-dir",
                    str(state), "--plain", "--web", f"127.0.0.1:{free_port()}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        env=cli_env(),
    )  # fmt: skip
    try:
        def kinds() -> set[str]:
            return {r["kind"] for r in _records(collector, state)}

        wait_until(lambda: {"batch", "release", "dispensing"} <= kinds(), timeout=300,
                   interval=0.5)  # fmt: skip
        records = {r["kind"]: r for r in _records(collector, state)}
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
        collector.stop()
    assert demo.returncode == 0, output[-3000:]
    assert "demo batch failed" not in output, output[-3000:]
    _check_records(records["batch"], records["release"], records["dispensing"])
    _check_reports(tmp_path, config, state, records["batch"])


def _check_records(batch: dict, release: dict, dose: dict) -> None:
    for record in (batch, release, dose):
        assert verify(record) == [], record
        assert record["signatures"][0]["record_sha256"] == record_sha256(record)
        assert record["site"] == "demo-site" and re.fullmatch(r"[0-9a-f]{32}", record["id"])

    # The batch: events of the synthesis run, the hot cell during it, the assay, the tests.
    assert batch["batch_id"].startswith("FDG-") and batch["product"] == "[18F]FDG"
    assert [s["step"] for s in batch["steps"]][-1] == "end"
    assert batch["eos_activity_mbq"] > 1000
    assert 50 <= batch["yield_decay_corrected_pct"] <= 85
    assert batch["yield_pct"] < batch["yield_decay_corrected_pct"]
    env = {e["quantity"]: e for e in batch["environment"]}
    assert set(env) == {"pressure", "particles_0_5um", "dose_rate"}
    assert all(e["readings"] > 0 and e["min"] <= e["max"] for e in env.values())
    assert env["particles_0_5um"]["high"] == 3520  # Annex 1 grade A, in operation
    assay = batch["assay"]
    assert assay["identity"] == "pass" and 105 <= assay["half_life_min"] <= 115
    assert assay["device"] == "dosecal-1" and assay["readings"]
    tests = {t["code"]: t for t in batch["tests"]}
    assert tests["ph"]["result"] == "pass" and tests["sterility"]["result"] == "pending"
    assert batch["result"] == "pass" and batch["pending"] == ["sterility"]
    assert batch["signatures"][0]["meaning"] == "performed"
    assert batch["signatures"][0]["name"] == "Tess Technologist (demo)"

    # The release: by the QA officer, naming the batch record by id and hash.
    assert release["decision"] == "released" and release["batch_id"] == batch["batch_id"]
    assert release["record"] == batch["id"] and release["record_sha256"] == record_sha256(batch)
    assert release["signatures"][0]["meaning"] == "released"
    assert release["signatures"][0]["user"] == "qa"
    assert release["pending"] == ["sterility"] and release["procedure"]

    # The dose: from the released batch, on the released calibrator, against its prescription.
    assert dose["batch_id"] == batch["batch_id"] and dose["release"] == release["id"]
    assert dose["patient"] == {"hospital_number": "DEMO-000123"}
    assert abs(dose["deviation_pct"]) <= 10 and dose["result"] == "pass"
    assert dose["device"] == "dosecal-1" and dose["readings"]



def _check_reports(tmp_path: Path, config: Path, state: Path, batch: dict) -> None:
    texts = {}
    for kind in ("batch", "release", "dispensing"):
        out = tmp_path / f"{kind}.pdf"
        done = subprocess.run(
            isoedge_cmd("report", kind, "-c", str(config), "--state-dir", str(state), "--out",
                        str(out), "--lang", "ru"),
            capture_output=True, text=True, env=cli_env(), check=False, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        texts[kind] = _pdf_text(out)
    assert "Протоколы партий" in texts["batch"] and batch["batch_id"] in texts["batch"]
    assert "полураспада" in texts["batch"]
    assert "Стерильность" in texts["batch"]
    assert "Протоколы выпуска" in texts["release"] and "допущен" in texts["release"]
    assert "DEMO-000123" in texts["dispensing"]
