"""One verifier and one topic grammar (issue 24): the agent's outbox, `isoedge verify` and the
central ingest agree on the largest envelope (and the pipeline never hands the outbox a reading
larger than that), and every topic the agent builds is parsed back to what it was built from."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from agent.acquisition.pipeline import Pipeline
from agent.acquisition.state import LiveState
from agent.delivery import cutter
from agent.delivery import outbox as outbox_module
from agent.delivery.outbox import Outbox
from agent.delivery.settings import OutboxSection
from agent.delivery.signing import generate_key_files
from agent.delivery.topics import STREAMS, Topics, parse_topic
from agent.delivery.verification import (
    MAX_ENVELOPE_ITEM_BYTES,
    MAX_ENVELOPE_ITEMS,
    MAX_MESSAGE_BYTES,
    KeyRegistry,
    VerificationError,
)
from agent.tools.verify import Verifier
from central.config import InboundSection
from central.inbound import DEFAULT_LIMITS
from drivers.base import DeviceConfigBase, SampleBatch

SITE, AGENT = "s" * 64, "a" * 64  # the longest ids an agent may have


def test_the_limits_are_one_set_shared_by_the_outbox_the_agent_and_the_ingest():
    assert outbox_module.MAX_ENVELOPE_ITEM_BYTES is MAX_ENVELOPE_ITEM_BYTES
    assert cutter.MAX_ENVELOPE_ITEM_BYTES is MAX_ENVELOPE_ITEM_BYTES
    upper = [m.le for m in OutboxSection.model_fields["batch_max_items"].metadata
             if hasattr(m, "le")]
    assert upper == [MAX_ENVELOPE_ITEMS]
    inbound = InboundSection()
    assert inbound.max_envelope_bytes == DEFAULT_LIMITS.max_envelope_bytes == MAX_MESSAGE_BYTES
    assert inbound.max_items == DEFAULT_LIMITS.max_items == MAX_ENVELOPE_ITEMS
    # Far below the 16 MiB the ingest once accepted "because envelopes are larger".
    assert 100_000 < MAX_MESSAGE_BYTES < 140_000


async def test_the_largest_envelopes_the_outbox_cuts_verify_and_one_byte_more_does_not(
        tmp_path):
    signer = generate_key_files(tmp_path / "keys", overwrite=True)
    box = Outbox(tmp_path / "outbox.db", signer, site=SITE, agent=AGENT,
                 topic_for=lambda stream, device: f"isoedge/v1/{SITE}/{AGENT}/{stream}/{device}",
                 quota_bytes=2**30, batch_max_items=MAX_ENVELOPE_ITEMS,
                 batch_max_age_ms=60_000)
    await box.start()
    try:
        # Both bounds at once: 10 000 one-item rows of 9 bytes (90 000 bytes and 9 999
        # commas), then rows of long items that only the byte bound cuts.
        for i in range(MAX_ENVELOPE_ITEMS):
            box.submit_batch("readings", "d", 1, json.dumps({"n": i % 10}, separators=(",", ":"))
                             .ljust(9))
        long_item = json.dumps({"text": "й" * 2_000}, ensure_ascii=False)  # 2 bytes a letter
        for _ in range(100):
            box.submit_batch("readings", "d", 1, long_item)
        assert await box.flush(timeout=60)
        envelopes = await box.fetch(0, 100)
    finally:
        await box.close()
    registry = KeyRegistry.for_agents([(SITE, AGENT, [tmp_path / "keys/signing.pub.jwk"])])
    verifier = Verifier(registry)
    sizes = []
    for envelope in envelopes:
        sizes.append(len(envelope.body))
        assert len(envelope.body) <= MAX_MESSAGE_BYTES
        signed = registry.check(envelope.body, owner=(SITE, AGENT))
        assert len(json.loads(signed.payload)["items"]) == envelope.n_items
        verifier.add(f"isoedge/v1/{SITE}/{AGENT}/readings/d", envelope.body)
    assert verifier.report()["ok"] and verifier.envelopes == len(envelopes)
    assert max(sizes) > 0.95 * MAX_MESSAGE_BYTES, "the bound is tight, not generous"
    # A message one byte beyond the bound is refused unread, by the same code everywhere.
    too_big = envelopes[0].body + b" " * (MAX_MESSAGE_BYTES - len(envelopes[0].body) + 1)
    with pytest.raises(VerificationError) as refused:
        registry.check(too_big)
    assert refused.value.code == "too_large"
    verifier.add("isoedge/v1/x/y/readings/d", too_big)
    assert verifier.report()["bad_signature_count"] == 1


@pytest.mark.parametrize("stream", STREAMS)
def test_every_topic_the_agent_builds_parses_back(stream):
    topics = Topics("isoedge/v1", "lab-1", "edge.2")
    built = topics.for_stream(stream, "dc-1")
    parsed = parse_topic(built, "isoedge/v1")
    assert parsed is not None
    assert (parsed.site, parsed.agent, parsed.stream) == ("lab-1", "edge.2", stream)
    assert parsed.device == ("dc-1" if stream == "readings" else "")
    assert parse_topic(topics.status, "isoedge/v1").kind == "status"  # type: ignore[union-attr]
    assert parse_topic(topics.replay_request,
                       "isoedge/v1").kind == "replay_request"  # type: ignore[union-attr]


@pytest.mark.parametrize("topic", [
    "isoedge/v1/lab/edge/readings/", "isoedge/v1/lab/edge/readings", "isoedge/v1/lab/edge",
    "isoedge/v1//edge/qc", "isoedge/v1/lab//qc", "isoedge/v2/lab/edge/qc", "other/lab/edge/qc",
    "isoedge/v1/lab/edge/qc/extra", "isoedge/v1/lab/edge/replay/answer",
])
def test_topics_the_agent_never_builds_are_not_parsed(topic):
    assert parse_topic(topic, "isoedge/v1") is None


async def test_a_reading_too_large_for_any_envelope_is_published_as_a_bad_reading(tmp_path):
    signer = generate_key_files(tmp_path / "keys", overwrite=True)
    box = Outbox(tmp_path / "outbox.db", signer, site="lab", agent="edge",
                 topic_for=lambda stream, device: f"isoedge/v1/lab/edge/{stream}/{device}",
                 quota_bytes=2**30, batch_max_age_ms=60_000)
    config = DeviceConfigBase(id="plc-1", type="scripted", poll_interval_s=1.0)
    pipeline = Pipeline(box, LiveState(), {"plc-1": config})
    await box.start()
    try:
        now = datetime.now(UTC)
        # A plain poll whose raw line is huge, and a text value of 2-byte letters.
        pipeline.process_batch(SampleBatch("plc-1", now, ["a", "b", "c"], [1.5, 2.5, 3.5],
                                           [None, None, None], [None, "x" * 100_000, None]))
        pipeline.process_batch(SampleBatch("plc-1", now, ["d", "e"], ["й" * 60_000, "ok"],
                                           [None, None]))
        assert await box.flush(timeout=30)
        envelopes = await box.fetch(0, 100)
    finally:
        await box.close()
    registry = KeyRegistry.for_agents([("lab", "edge", [tmp_path / "keys/signing.pub.jwk"])])
    items = {}
    for envelope in envelopes:
        assert len(envelope.body) <= MAX_MESSAGE_BYTES
        signed = registry.check(envelope.body, owner=("lab", "edge"))
        items.update({i["channel"]: i for i in json.loads(signed.payload)["items"]})
    assert sorted(items) == ["a", "b", "c", "d", "e"]
    assert (items["a"]["value"], items["c"]["value"], items["e"]["value"]) == (1.5, 3.5, "ok")
    for channel in ("b", "d"):
        assert items[channel]["quality"] == "bad" and items[channel]["value"] is None
        assert items[channel]["reason"].startswith("reading too large to publish")
