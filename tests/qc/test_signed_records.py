"""The one signed-action service every record kind uses: password and role at signing, the
meaning (incl. `released`/`rejected`), segregation of duties, the record and the audit record of
its signature in one transaction (listeners told after it), on a real state database."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import tomllib

import pytest
from qc_harness import PASSWORDS, PROGRAMME, users
from statestore import StateStore

from agent.core.reading import dumps_item
from agent.qc.audit import AuditLog
from agent.qc.programme import QCSection
from agent.qc.records import QCRecordStore, RecordError, canonical_json, content_of
from agent.qc.signatures import SignatureError, SignatureService
from agent.qc.signed_records import (
    SIGNED_ACTION,
    Meaning,
    SignedActions,
    Signer,
    performers,
)

CONFIG = QCSection.model_validate(tomllib.loads(PROGRAMME))


@pytest.fixture
async def desk(tmp_path):
    state = await StateStore(tmp_path).open()
    store = QCRecordStore(state.database, notify=state.heard)
    await store.open()
    signatures = SignatureService(users(), CONFIG.signing, state.audit, CONFIG.zone)
    state.records = store
    state.actions = SignedActions(signatures, state.audit)
    yield state
    await state.close()


def _item(record_id: str = "b1", **fields) -> dict:
    return {"id": record_id, "record": "test", "device": "dc1", "test": "batch",
            "t": "2026-12-05T09:00:00.000000Z", "result": "pass", **fields}


def _audit_rows(path, action):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT actor, subject FROM audit WHERE action = ?",
                          (action,)).fetchall()
    finally:
        db.close()


async def test_performed_then_released_by_a_second_person_in_one_transaction(desk):
    performed = await desk.actions.sign(
        _item(), Signer("rita", PASSWORDS["rita"]), Meaning.PERFORMED, store=desk.records,
        kind="batch", details={"device": "dc1"},
    )
    assert performers(performed) == ["rita"]
    release = _item("r1", releases=performed["id"])
    # The performer may not release their own batch; a technologist may not release at all.
    with pytest.raises(SignatureError) as own:
        await desk.actions.sign(release, Signer("rita", PASSWORDS["rita"]), Meaning.RELEASED,
                                store=desk.records, forbid=performers(performed))
    assert own.value.reason in {"self_approval", "role_not_allowed"}
    with pytest.raises(SignatureError) as role:
        await desk.actions.sign(release, Signer("tess", PASSWORDS["tess"]), Meaning.RELEASED,
                                store=desk.records)
    assert role.value.reason == "role_not_allowed"
    with pytest.raises(SignatureError) as wrong:
        await desk.actions.sign(release, Signer("quinn", "nope"), Meaning.REJECTED,
                                store=desk.records)
    assert wrong.value.reason == "wrong_password"
    await desk.settle()
    assert len(_audit_rows(desk.path, "signature.refused")) == 3  # each refusal audited
    seen_before = len([i for s, i in desk.heard.items if i.get("event") == SIGNED_ACTION])

    released = await desk.actions.sign(
        release, Signer("quinn", PASSWORDS["quinn"]), Meaning.RELEASED, store=desk.records,
        forbid=performers(performed), kind="release",
    )
    signature = released["signatures"][0]
    assert (signature["meaning"], signature["user"], signature["role"]) == (
        "released", "quinn", "qa")
    # Committed when sign returns: the record and its audit record, read from outside.
    assert ("quinn", "qc/r1") in _audit_rows(desk.path, SIGNED_ACTION)
    assert (await desk.records.get("r1"))["signatures"] == [signature]
    told = [i for s, i in desk.heard.items if s == "audit" and i.get("event") == SIGNED_ACTION]
    assert len(told) == seen_before + 1
    assert told[-1]["new"] == {"result": "pass", "meaning": "released"}
    assert told[-1]["record_kind"] == "release"


async def test_a_store_refusing_the_record_keeps_no_audit_record_and_tells_no_one(desk):
    signer = Signer("tess", PASSWORDS["tess"])
    await desk.actions.sign(_item("dup"), signer, "performed", store=desk.records)
    await desk.settle()
    heard = len(desk.heard.items)
    with pytest.raises(RecordError):
        await desk.actions.sign(_item("dup", result="fail"), signer, "performed",
                                store=desk.records)
    await desk.settle()
    assert _audit_rows(desk.path, SIGNED_ACTION) == [("tess", "qc/dup")]
    assert desk.heard.items[heard:] == []


async def test_a_record_kind_brings_its_own_hash_and_subject(desk):
    def b64(item):
        digest = hashlib.sha256(canonical_json(content_of(item))).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    class KindStore:
        """A record kind's own store with an async commit (here: only the audit record)."""

        def __init__(self):
            self.appended = []

        async def _commit(self, audit_item):
            await desk.outbox.state.transact_async(
                lambda db: AuditLog.insert(db, audit_item),
                [("audit", "", dumps_item(audit_item))],
            )

        def append(self, record, audit_item=None):
            self.appended.append((record, audit_item))
            return self._commit(audit_item)

    store = KindStore()
    item = {"kind": "elution", "id": "e1", "t": "2026-12-05T09:00:00.000000Z"}
    record = await desk.actions.sign(
        item, Signer("rita", PASSWORDS["rita"]), Meaning.PERFORMED, store=store,
        kind="elution", subject="elution/e1", digest=b64, audit_action="records.signed",
        reason="first elution of the week",
    )
    assert record["signatures"][0]["record_sha256"] == b64(item)
    assert store.appended[0][1]["subject"] == "elution/e1"
    # Committed when sign returns (the awaitable was awaited), then told.
    assert _audit_rows(desk.path, "records.signed") == [("rita", "elution/e1")]
    told = [i for s, i in desk.heard.items if s == "audit" and i.get("event") == "records.signed"]
    assert [i["reason"] for i in told] == ["first elution of the week"]


def test_meanings_and_their_default_roles():
    assert [m.value for m in Meaning] == [
        "performed", "reviewed", "approved", "released", "rejected"]
    assert CONFIG.signing.roles_for("released") == ["qa"]
    assert CONFIG.signing.roles_for("rejected") == ["qa"]
    assert "password" not in repr(Signer("quinn", "secret")) and "secret" not in repr(
        Signer("quinn", "secret"))
