"""The publisher on its own, against a real mosquitto: order, QoS 1, PUBACK, status, outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from collector import Collector, Message
from helpers import REPO, cli_env, wait_for_condition
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.core.tasks import cancel_and_wait
from agent.delivery.outbox import Outbox
from agent.delivery.publish import LinkState, Publisher
from agent.delivery.settings import BrokerSection
from agent.delivery.signing import Signer, generate_key_files
from agent.delivery.topics import Topics
from agent.delivery.verification import KeyRegistry

TOPICS = Topics("isoedge/v1", "site-1", "agent-1")


def status(state: str) -> dict[str, str]:
    return {"agent": "agent-1", "state": state}


def broker_section(url: str, **kw) -> BrokerSection:
    options = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.3, "connect_timeout_s": 5.0,
               "publish_timeout_s": 5.0, "keepalive_s": 10}
    options.update(kw)
    return BrokerSection(url=url, **options)


class Running:
    """An outbox and a publisher running against `url`, stopped (tasks, thread) on exit."""

    def __init__(self, tmp_path: Path, url: str, signer: Signer) -> None:
        self.outbox = Outbox(tmp_path / "outbox.db", signer, site="site-1", agent="agent-1",
                             topic_for=TOPICS.for_stream, quota_bytes=64 * 1024 * 1024,
                             fsync="normal", batch_max_items=2, batch_max_age_ms=60_000,
                             commit_interval_ms=0)
        self.publisher = Publisher(broker_section(url), self.outbox, TOPICS,
                                   client_id="publisher-under-test", status=status)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.outbox.start()
        self.task = asyncio.create_task(self.publisher.run(), name="publisher-under-test")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            await cancel_and_wait([self.task])
        await self.outbox.close()

    async def submit(self, numbers: range) -> None:
        for n in numbers:
            self.outbox.submit("readings", "d1", json.dumps({"n": n}))
        assert await self.outbox.flush()

    async def backlog(self) -> int:
        return (await self.outbox.stats()).envelopes


@contextlib.contextmanager
def collecting(port: int, topic: str = "isoedge/v1/#"):
    collector = Collector(port, topic).start()
    try:
        yield collector
    finally:
        collector.stop()


@pytest.fixture
async def running(tmp_path, mosquitto, signer) -> AsyncIterator[Running]:
    async with Running(tmp_path, mosquitto.url, signer) as run:
        await run.publisher.wait_state(LinkState.CONNECTED, timeout=20)
        yield run


def first_arrivals(registry: KeyRegistry, messages: list[Message]) -> list[dict]:
    """Verified payloads of envelopes in the order they first arrived (resends dropped)."""
    seen: set[int] = set()
    out = []
    for message in messages:
        if message.topic.endswith("/status"):
            continue
        document = registry.verify(message.payload).document
        if document["seq"] not in seen:
            seen.add(document["seq"])
            out.append(document)
    return out


async def test_envelopes_go_out_in_seq_order_with_qos_1_and_leave_the_outbox_after_puback(
    running, mosquitto, registry
):
    with collecting(mosquitto.port) as collector:
        await running.submit(range(40))  # 20 envelopes of 2
        await wait_for_condition(lambda: len(collector.envelopes()) >= 20, timeout=20)

        async def drained() -> bool:
            return await running.backlog() == 0

        await wait_for_condition(drained, timeout=20)
        envelopes = collector.envelopes()
    assert {m.qos for m in envelopes} == {1}
    assert {m.topic for m in envelopes} == {TOPICS.readings("d1")}
    documents = first_arrivals(registry, envelopes)
    assert [d["seq"] for d in documents] == list(range(1, 21))
    assert [i["n"] for d in documents for i in d["items"]] == list(range(40))
    assert running.publisher.published_envelopes >= 20
    assert running.publisher.published_items >= 40


async def retained_status(port: int) -> Message:
    """What a consumer that subscribes now is given as the retained status."""
    with collecting(port, TOPICS.status) as fresh:
        await wait_for_condition(lambda: bool(fresh.snapshot()), timeout=10)
        message = fresh.snapshot()[-1]
    assert message.retain
    return message


async def test_status_is_retained_online_and_the_clean_offline_replaces_it(running, mosquitto):
    online = json.loads((await retained_status(mosquitto.port)).payload)
    assert online.items() >= status("online").items()
    await running.publisher.publish_offline("shutdown")
    offline = json.loads((await retained_status(mosquitto.port)).payload)
    assert offline.items() >= {**status("offline"), "reason": "shutdown"}.items()


PUBLISHER_CHILD = """
import asyncio, sys
from pathlib import Path
from agent.delivery.outbox import Outbox
from agent.delivery.publish import LinkState, Publisher
from agent.delivery.settings import BrokerSection
from agent.delivery.signing import Signer
from agent.delivery.topics import Topics

async def main(url, key, db):
    topics = Topics("isoedge/v1", "site-1", "agent-1")
    outbox = Outbox(Path(db), Signer.load(Path(key)), site="site-1", agent="agent-1",
                    topic_for=topics.for_stream, quota_bytes=1 << 26)
    await outbox.start()
    publisher = Publisher(BrokerSection(url=url), outbox, topics, client_id="child-publisher",
                          status=lambda state: {"agent": "agent-1", "state": state})
    task = asyncio.create_task(publisher.run())
    await publisher.wait_state(LinkState.CONNECTED, 20)
    print("connected", flush=True)
    await task

asyncio.run(main(*sys.argv[1:]))
"""


def start_publisher_child(tmp_path: Path, url: str) -> subprocess.Popen[str]:
    generate_key_files(tmp_path / "child-keys")
    script = tmp_path / "publisher_child.py"
    script.write_text(PUBLISHER_CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), url, str(tmp_path / "child-keys" / "signing.key"),
         str(tmp_path / "child.db")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=cli_env(), cwd=REPO, text=True,
    )


async def test_last_will_marks_the_agent_offline_when_its_process_dies(
    tmp_path, mosquitto
):
    child = start_publisher_child(tmp_path, mosquitto.url)
    assert child.stdout is not None
    try:
        while (await asyncio.to_thread(child.stdout.readline)).strip() not in {"connected", ""}:
            pass
        online = json.loads((await retained_status(mosquitto.port)).payload)
        assert online.items() >= status("online").items()
        child.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
        assert await asyncio.to_thread(child.wait, 10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()

    async def offline() -> bool:
        document = json.loads((await retained_status(mosquitto.port)).payload)
        return document.items() >= status("offline").items()

    await wait_for_condition(offline, timeout=15, interval=0.2)


async def test_broker_restart_reconnects_and_delivers_the_backlog_in_order(
    running, mosquitto, registry
):
    with collecting(mosquitto.port) as collector:
        await running.submit(range(10))  # seq 1..5
        await wait_for_condition(lambda: len(first_arrivals(registry, collector.snapshot())) == 5,
                                 timeout=20)
        mosquitto.stop()
        await running.publisher.wait_state(LinkState.DISCONNECTED, timeout=20)
        await running.submit(range(10, 40))  # seq 6..20, while nobody can take them
        kept = [e.seq for e in await running.outbox.fetch(0, 1000)]
        assert set(range(6, 21)) <= set(kept), "envelopes deleted without a PUBACK"

        mosquitto.start()
        await running.publisher.wait_state(LinkState.CONNECTED, timeout=30)
        assert running.publisher.reconnects >= 1

        async def drained() -> bool:
            return await running.backlog() == 0

        await wait_for_condition(drained, timeout=30)
        await wait_for_condition(
            lambda: len(first_arrivals(registry, collector.snapshot())) == 20, timeout=20
        )
        documents = first_arrivals(registry, collector.snapshot())
    assert [d["seq"] for d in documents] == list(range(1, 21)), "out of order or lost"
    assert [i["n"] for d in documents for i in d["items"]] == list(range(40))


# ------------------------------------------------------------- the MQTT 5 fallback decision
def connack(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, identifier=code)


@pytest.mark.parametrize(
    ("protocol", "error", "falls_back"),
    [
        ("auto", MqttConnectError(connack(132)), True),  # MQTT 5 "Unsupported protocol version"
        ("auto", MqttConnectError(1), True),  # MQTT 3.1.1 "unacceptable protocol version"
        ("auto", MqttConnectError(connack(135)), False),  # not authorized
        ("auto", MqttConnectError(connack(134)), False),  # bad user name or password
        ("auto", MqttConnectError(5), False),  # 3.1.1 not authorised
        ("auto", aiomqtt.MqttError("unsupported protocol version, said the text"), False),
        ("5", MqttConnectError(connack(132)), False),  # pinned: never falls back
        ("3.1.1", MqttConnectError(1), False),
    ],
)
def test_mqtt5_fallback_is_decided_on_the_reason_code(tmp_path, protocol, error, falls_back):
    publisher = Publisher(
        BrokerSection(url="mqtt://127.0.0.1:1", protocol=protocol),
        Outbox(tmp_path / "o.db", Signer.from_private_key(_key()), site="s", agent="a",
               topic_for=TOPICS.for_stream, quota_bytes=1 << 20),
        TOPICS,
        client_id="c",
        status=status,
    )
    assert publisher._should_fall_back(error) is falls_back


def test_after_falling_back_to_3_1_1_it_does_not_fall_back_again(tmp_path):
    publisher = Publisher(
        BrokerSection(url="mqtt://127.0.0.1:1", protocol="auto"),
        Outbox(tmp_path / "o.db", Signer.from_private_key(_key()), site="s", agent="a",
               topic_for=TOPICS.for_stream, quota_bytes=1 << 20),
        TOPICS,
        client_id="c",
        status=status,
    )
    publisher._protocol = aiomqtt.ProtocolVersion.V311
    assert publisher._should_fall_back(MqttConnectError(1)) is False


def _key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()
