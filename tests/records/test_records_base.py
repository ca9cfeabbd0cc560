"""The records base: signing in one place, append-only storage, corrections, stream, PDF."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from qc_harness import PASSWORDS
from records_harness import RecordsBench

from agent.qc.records import canonical_json
from agent.records.kinds import RecordError, kind_of, record_sha256, verify
from agent.records.report import records_report
from agent.records.signer import SignatureError
from agent.records.store import read_records

REPO = Path(__file__).resolve().parents[2]


def _b64sha(item: dict) -> str:
    content = {k: v for k, v in item.items() if k != "signatures"}
    raw = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False).encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _batch(bench: RecordsBench, batch_id: str = "FDG-20261205-001") -> dict:
    draft = bench.desk.draft("batch", batch_id=batch_id, product="[18F]FDG", nuclide="F-18",
                             eos_activity_mbq=41234.5, result="pass")
    return await bench.desk.signer.sign(draft, "tess", "tech-pass", "performed")


async def test_signed_record_is_stored_published_and_audited(tmp_path: Path) -> None:
    async with RecordsBench(tmp_path) as bench:
        record = await _batch(bench)
        # The agreed shape: common fields, a signature bound by base64url SHA-256.
        assert record["kind"] == "batch" and record["site"] == "site-a"
        assert len(record["id"]) == 32 and record["t"].endswith("Z")
        signature = record["signatures"][0]
        assert signature["meaning"] == "performed" and signature["name"] == "Tess Tech"
        assert signature["record_sha256"] == _b64sha(record) == record_sha256(record)
        assert verify(record) == []
        # On the qc stream, in the same transaction as the row and the audit record.
        items = await bench.stream("qc")
        assert [i["id"] for i in items] == [record["id"]]
        assert items[0] == record
        audit = [i for i in await bench.stream("audit") if i["event"] == "qc.record.signed"]
        assert audit[0]["subject"] == f"batch/{record['id']}"
        assert audit[0]["record_sha256"] == signature["record_sha256"]
        assert audit[0]["record_kind"] == "batch" and audit[0]["new"]["meaning"] == "performed"
        # The live view heard of it after the commit.
        assert ("qc", record) in bench.state.heard.items
        assert await bench.desk.get(record["id"]) == record
        # A changed content no longer matches its signature.
        assert verify({**record, "eos_activity_mbq": 1.0})


async def test_refusals_are_audited_and_nothing_is_stored(tmp_path: Path) -> None:
    async with RecordsBench(tmp_path) as bench:
        draft = bench.desk.draft("batch", batch_id="B1", product="[18F]FDG")
        with pytest.raises(SignatureError) as wrong:
            await bench.desk.signer.sign(draft, "tess", "nope", "performed")
        assert wrong.value.reason == "wrong_password"
        release = bench.desk.draft("release", batch_id="B1", decision="released")
        with pytest.raises(SignatureError) as role:
            await bench.desk.signer.sign(release, "rita", "pharm-pass", "released")
        assert role.value.reason == "role_not_allowed"
        with pytest.raises(SignatureError) as own:
            await bench.desk.signer.sign(release, "quinn", "qa-pass", "released",
                                         forbid_signers=["quinn"])
        assert own.value.reason == "self_approval"
        with pytest.raises(RecordError):
            await bench.desk.signer.sign({**release, "kind": "test"}, "quinn", "qa-pass",
                                         "approved")
        assert await bench.stream("qc") == []
        refusals = [i for i in await bench.stream("audit") if i["event"] == "signature.refused"]
        assert sorted(i["refusal"] for i in refusals) == ["role_not_allowed", "self_approval",
                                                          "wrong_password"]


async def test_append_only_and_corrections(tmp_path: Path) -> None:
    async with RecordsBench(tmp_path) as bench:
        first = await _batch(bench)
        await bench.state.settle()
        db = bench.db()
        try:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute("UPDATE records SET body = '{}'")
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute("DELETE FROM records")
        finally:
            db.close()
        with pytest.raises(RecordError, match="reason"):
            await bench.desk.correct(first["id"], {"eos_activity_mbq": 40000.0}, name="tess",
                                     password=PASSWORDS["tess"], meaning="performed", reason=" ")
        fixed = await bench.desk.correct(
            first["id"], {"eos_activity_mbq": 40000.0}, name="rita", password=PASSWORDS["rita"],
            meaning="performed", reason="typed activity was the uncorrected one",
        )
        assert fixed["corrects"] == first["id"] and fixed["id"] != first["id"]
        assert fixed["eos_activity_mbq"] == 40000.0 and fixed["batch_id"] == first["batch_id"]
        assert verify(fixed) == []
        # Both are kept; the listing shows the correction in place of the first.
        assert [r["id"] for r in await bench.desk.listing("batch", include_corrected=True)] == [
            fixed["id"], first["id"]]
        assert [r["id"] for r in await bench.desk.listing("batch")] == [fixed["id"]]
        with pytest.raises(RecordError, match="corrected already"):
            await bench.desk.correct(first["id"], {"result": "fail"}, name="rita",
                                     password=PASSWORDS["rita"], meaning="performed", reason="again")
        with pytest.raises(RecordError, match="cannot change"):
            await bench.desk.correct(fixed["id"], {"site": "elsewhere"}, name="rita",
                                     password=PASSWORDS["rita"], meaning="performed", reason="x")


async def test_release_state_and_test_records_read_as_kind_test(tmp_path: Path) -> None:
    async with RecordsBench(tmp_path) as bench:
        batch = await _batch(bench, "B7")
        assert not await bench.desk.is_released("B7")
        release = bench.desk.draft("release", batch_id="B7", record=batch["id"],
                                   decision="released")
        await bench.desk.signer.sign(release, "quinn", "qa-pass", "released")
        assert await bench.desk.is_released("B7")
        rows = await bench.desk.batches()
        assert rows[0]["record"]["id"] == batch["id"]
        assert rows[0]["release"]["decision"] == "released"
    # A QC test record of the QC desk (no `kind`, hex hash) reads as kind `test`.
    legacy = {"id": "t1", "record": "test", "device": "dc", "test": "constancy",
              "t": "2026-12-05T08:00:00.000000Z", "result": "pass"}
    legacy["signatures"] = [{"name": "Tess", "meaning": "performed", "t": legacy["t"],
                             "record_sha256": hashlib.sha256(canonical_json(legacy)).hexdigest()}]
    assert kind_of(legacy) == "test" and verify(legacy) == []


def _pdftotext(path: Path) -> str:
    tool = shutil.which("pdftotext")
    assert tool, "poppler-utils (pdftotext) is needed"
    out = subprocess.run([tool, "-layout", str(path), "-"], capture_output=True, check=True,
                         text=True, timeout=60)
    return " ".join(out.stdout.split())


async def test_pdf_and_report_cli(tmp_path: Path) -> None:
    async with RecordsBench(tmp_path) as bench:
        record = await _batch(bench, "FDG-PDF-1")
        await bench.state.settle()
    records = read_records(tmp_path / "outbox.db", kind="batch")
    assert [r["id"] for r in records] == [record["id"]]
    pdf = tmp_path / "direct.pdf"
    pdf.write_bytes(records_report(records, "batch", site="site-a", zone=None, lang="ru"))
    text = await asyncio.to_thread(_pdftotext, pdf)
    assert "Протоколы партий" in text and "FDG-PDF-1" in text
    assert record["signatures"][0]["record_sha256"][:16] in text
    out = tmp_path / "batch.pdf"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "report", "batch", "--state-dir", str(tmp_path),
         "--out", str(out), "--lang", "kk"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 records" in done.stdout
    text = await asyncio.to_thread(_pdftotext, out)
    assert "Партия хаттамалары" in text and "FDG-PDF-1" in text
