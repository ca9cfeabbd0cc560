"""Issue 20, brokers: the publisher falls back to MQTT 3.1.1 when an MQTT 5 CONNECT is closed or
never answered (RabbitMQ 3.10's MQTT plugin closes without a CONNACK), not only on a refusal code.

The broker is a real mosquitto behind a real TCP listener that looks at each CONNECT's protocol
level: an MQTT 5 CONNECT is closed at once or left unanswered; a 3.1.1 one is passed through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiomqtt
import pytest
from collector import Collector
from helpers import wait_for_condition

from agent.core.tasks import cancel_and_wait
from agent.delivery.outbox import Outbox
from agent.delivery.publish import LinkState, Publisher
from agent.delivery.settings import BrokerSection
from agent.delivery.topics import Topics

TOPICS = Topics("isoedge/v1", "site-1", "agent-1")


class V5Refuser:
    """A TCP listener in front of a broker: MQTT 5 CONNECTs are closed or swallowed."""

    def __init__(self, upstream_port: int, mode: str) -> None:
        self.upstream_port = upstream_port
        self.mode = mode  # "close" | "silent"
        self.levels: list[int] = []
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self._stopping.set()
        self.server.close()
        for writer in self._writers:
            writer.close()
        await cancel_and_wait(list(self._tasks))
        await asyncio.gather(*self._handlers)
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        self._writers.append(writer)
        head = await reader.read(64)  # fixed header, length, "MQTT", protocol level
        self.levels.append(level := _protocol_level(head))
        if level == 5:  # MQTT 5
            if self.mode == "close":
                writer.close()
                return
            await self._stopping.wait()  # silent: never answers, until the test stops
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.append(up_writer)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (asyncio.create_task(pipe(reader, up_writer)),
                     asyncio.create_task(pipe(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def _protocol_level(head: bytes) -> int:
    """The protocol level byte of a CONNECT: after the fixed header's variable-length size."""
    at = 1
    while at < len(head) and head[at] & 0x80:
        at += 1
    at += 1 + 2 + 4  # last length byte, then the name's length (2) and "MQTT" (4)
    return head[at] if at < len(head) else 0


@pytest.mark.parametrize("mode", ["close", "silent"])
async def test_auto_falls_back_to_3_1_1_when_mqtt5_connect_is_closed_or_unanswered(
        tmp_path, mosquitto, signer, registry, mode):
    refuser = V5Refuser(mosquitto.port, mode)
    port = await refuser.start()
    outbox = Outbox(tmp_path / "outbox.db", signer, site="site-1", agent="agent-1",
                    topic_for=TOPICS.for_stream, quota_bytes=1 << 26, fsync="normal",
                    batch_max_items=1, batch_max_age_ms=60_000, commit_interval_ms=0)
    broker = BrokerSection(url=f"mqtt://127.0.0.1:{port}", protocol="auto",
                           connect_timeout_s=1.0, reconnect_initial_s=0.05, reconnect_max_s=0.3,
                           publish_timeout_s=5.0)
    publisher = Publisher(broker, outbox, TOPICS, client_id="fallback-under-test",
                          status=lambda state: {"state": state})
    collector = Collector(mosquitto.port, "isoedge/v1/site-1/agent-1/readings/#").start()
    await outbox.start()
    task = asyncio.create_task(publisher.run())
    try:
        for n in range(5):
            outbox.submit("readings", "d1", json.dumps({"n": n}))
        assert await outbox.flush()
        await publisher.wait_state(LinkState.CONNECTED, timeout=30)
        await wait_for_condition(lambda: len(collector.snapshot()) >= 5, timeout=30)
    finally:
        await cancel_and_wait([task])
        await outbox.close()
        collector.stop()
        await refuser.stop()
    assert refuser.levels[:2] == [5, 4]  # MQTT 5 first, then 3.1.1 at once
    assert publisher._protocol == aiomqtt.ProtocolVersion.V311


async def test_a_pinned_mqtt5_never_falls_back(tmp_path, mosquitto, signer):
    refuser = V5Refuser(mosquitto.port, "close")
    port = await refuser.start()
    outbox = Outbox(tmp_path / "outbox.db", signer, site="site-1", agent="agent-1",
                    topic_for=TOPICS.for_stream, quota_bytes=1 << 26, fsync="normal")
    broker = BrokerSection(url=f"mqtt://127.0.0.1:{port}", protocol="5", connect_timeout_s=0.5,
                           reconnect_initial_s=0.05, reconnect_max_s=0.1)
    publisher = Publisher(broker, outbox, TOPICS, client_id="pinned-under-test",
                          status=lambda state: {"state": state})
    await outbox.start()
    task = asyncio.create_task(publisher.run())
    try:
        await wait_for_condition(lambda: len(refuser.levels) >= 3, timeout=30)
    finally:
        await cancel_and_wait([task])
        await outbox.close()
        await refuser.stop()
    assert set(refuser.levels) == {5}
    assert publisher.state != LinkState.CONNECTED
