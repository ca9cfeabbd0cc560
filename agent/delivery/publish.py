"""MQTT publisher: signed envelopes from the outbox, QoS 1.

A PUBACK marks an envelope sent (recorded with the outbox's next commit); it stays in the outbox,
byte-identical, as the replay archive until `archive_days` or `archive_mb` retires it.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core.backoff import Backoff
from agent.core.reading import rfc3339_now
from agent.delivery.evidence import sign_evidence
from agent.delivery.outbox import Envelope, Outbox, OutboxError
from agent.delivery.replay import Accepted, ReplayGate, ReplaySection
from agent.delivery.settings import BrokerSection
from agent.delivery.topics import Topics

log = structlog.get_logger("isoedge.publish")

# aiomqtt warns "There are N pending publish calls" beyond 10; a window of `max_inflight`
# concurrent QoS 1 publishes is how the publisher is meant to work, so only errors are shown.
_AIOMQTT_LOG = logging.getLogger("isoedge.mqtt")
_AIOMQTT_LOG.setLevel(logging.ERROR)

ACK_BATCH = 64  # PUBACKed envelopes handed to the outbox together ...
ACK_DELAY_S = 0.05  # ... or after this long, whichever comes first


UNSUPPORTED_PROTOCOL_CODES = frozenset({1, 0x84})
"""CONNACK codes for "unsupported protocol version": MQTT 3.1.1 return code 1, MQTT 5 reason
code 132 (0x84); how a broker that speaks only 3.1.1 refuses an MQTT 5 CONNECT."""


INCOMING_QUEUE = 256  # replay requests waiting for admission (a flood beyond is dropped)
MAX_INCOMING_PACKET = 16 * 1024  # bytes; a replay request is at most MAX_REQUEST_BYTES
_CONNACK_TIMEOUT = "Operation timed out"  # aiomqtt: connected, but no CONNACK in time


class LinkState(enum.StrEnum):
    """State of the broker connection (others wait on changes instead of sleeping)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


class Publisher:
    """Owns the MQTT connection: connect, publish birth, drain the outbox, reconnect."""

    def __init__(
        self,
        broker: BrokerSection,
        outbox: Outbox,
        topics: Topics,
        *,
        client_id: str,
        status: Callable[[str], dict[str, Any]],
        replay_per_s: float = 200.0,
        replay: ReplayGate | None = None,
    ) -> None:
        self.broker = broker
        self.outbox = outbox
        self.topics = topics
        self.client_id = client_id
        self.status = status
        self.state = LinkState.DISCONNECTED
        self.state_changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._protocol = (
            aiomqtt.ProtocolVersion.V311
            if broker.protocol == "3.1.1"
            else aiomqtt.ProtocolVersion.V5
        )
        self.published_envelopes = 0
        self.published_items = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._status_dirty = asyncio.Event()
        # MQTT 3.1.1 fallback on a CONNECT closed or unanswered (_unanswered_fallback).
        self._awaiting_connack = False
        self._v5_worked = False
        self._v311_worked = False
        self.replay_interval = 1.0 / replay_per_s
        # What the archive holds and what the last replay request got, for the status.
        self.archive_info: dict[str, int] | None = None
        self.unsent_from: int | None = None
        self.replay_info: dict[str, Any] | None = None
        # Admission of replay requests (agent/delivery/replay.py); without one, none is trusted.
        self.replay_gate = replay or ReplayGate(
            ReplaySection(), site=topics.site, agent=topics.agent
        )
        self._replay_wanted = asyncio.Event()
        # Set (and replaced) each time PUBACKs are handed to the outbox: `drain` waits on it.
        self._acked = asyncio.Event()

    # ------------------------------------------------------------------ helpers
    def _set_state(self, state: LinkState) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.set()
            self.state_changed = asyncio.Event()

    async def wait_state(self, state: LinkState, timeout: float) -> None:
        """Wait until the link reaches `state`."""
        async with asyncio.timeout(timeout):
            while self.state != state:
                await self.state_changed.wait()

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.broker.uses_tls:
            return None
        tls = self.broker.tls
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls and tls.ca_file else None
        )
        if tls and tls.cert_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        return context

    def _password(self) -> str | None:
        if self.broker.password_file is None:
            return None
        return self.broker.password_file.read_text(encoding="utf-8").strip()

    def status_payload(self, state: str) -> bytes:
        """Plain-JSON status document (with what the archive holds, for the central ingest)."""
        document = self.status(state)
        document["archive"] = self.archive_info
        document["unsent_from"] = self.unsent_from
        document["last_seq"] = self.outbox.last_seq  # the fleet page's backlog: last_seq - stored
        if self.replay_info is not None:
            document["replay"] = self.replay_info
        document["replay_requests"] = self.replay_gate.status()
        document["evidence"] = self._evidence(document)
        return json.dumps(document, separators=(",", ":")).encode()

    def _evidence(self, document: dict[str, Any]) -> dict[str, str]:
        """What the ingest relies on, signed with the outbox's key (agent/delivery/evidence.py)."""
        return sign_evidence(
            self.outbox.signer,
            site=self.topics.site,
            agent=self.topics.agent,
            t=rfc3339_now(),
            archive=self.archive_info,
            unsent_from=self.unsent_from,
            last_seq=self.outbox.last_seq,
            calibrators=document.get("calibrators") or {},
        )

    def mark_status_dirty(self) -> None:
        """Ask for a fresh retained status (device states changed)."""
        self._status_dirty.set()

    # --------------------------------------------------------------------- main
    async def run(self) -> None:
        """Connect and publish until cancelled, reconnecting with capped jittered backoff."""
        backoff = Backoff(self.broker.reconnect_initial_s, self.broker.reconnect_max_s)
        while True:
            self._set_state(LinkState.CONNECTING)
            try:
                await self._session(backoff)
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if self._should_fall_back(exc):
                    log.warning("broker refused MQTT 5; falling back to 3.1.1", error=str(exc))
                    self._protocol = aiomqtt.ProtocolVersion.V311
                    continue
                if self._unanswered_fallback(exc):
                    continue
                log.warning("broker connection lost", error=str(exc), broker=self.broker.url)
            except OutboxError as exc:
                # Nothing left to publish from; the agent's outbox watch stops the agent.
                log.error(  # noqa: TRY400 - the outbox thread logged the traceback already
                    "publisher stopped: the outbox failed", error=str(exc)
                )
                self._set_state(LinkState.STOPPED)
                return
            except (OSError, TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.warning("broker unreachable", error=self.last_error, broker=self.broker.url)
            finally:
                self._client = None
            self._set_state(LinkState.DISCONNECTED)
            self.reconnects += 1
            await asyncio.sleep(backoff.next())

    def _should_fall_back(self, exc: aiomqtt.MqttError) -> bool:
        """True when a broker answered our MQTT 5 CONNECT with "unsupported protocol version"."""
        if self.broker.protocol != "auto" or self._protocol != aiomqtt.ProtocolVersion.V5:
            return False
        code = getattr(exc, "rc", None) if isinstance(exc, aiomqtt.MqttCodeError) else None
        value = getattr(code, "value", code)
        return value in UNSUPPORTED_PROTOCOL_CODES

    def _connect_properties(self) -> Properties | None:
        if self._protocol != aiomqtt.ProtocolVersion.V5:
            return None
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.MaximumPacketSize = MAX_INCOMING_PACKET
        return properties

    def _unanswered_fallback(self, exc: aiomqtt.MqttError) -> bool:
        """A CONNECT the broker closed or never answered (no CONNACK at all).

        Some brokers that speak only MQTT 3.1.1 (RabbitMQ's MQTT plugin) close the connection
        on an MQTT 5 CONNECT instead of refusing it with a code; aiomqtt then reports its own
        connect wait as timed out ("Operation timed out": the TCP connection was made, the
        CONNACK never came). With `protocol = "auto"` and no connection made yet with MQTT 5,
        the next attempt is MQTT 3.1.1 (at once); if that goes unanswered as well, the one
        after is MQTT 5 again (the broker may only be slow), with the usual backoff.
        """
        if (
            self.broker.protocol != "auto"
            or not self._awaiting_connack
            or isinstance(exc, aiomqtt.MqttCodeError)
            or str(exc) != _CONNACK_TIMEOUT
        ):
            return False
        if self._protocol == aiomqtt.ProtocolVersion.V5 and not self._v5_worked:
            log.warning(
                "the broker closed or did not answer an MQTT 5 CONNECT; trying 3.1.1",
                error=str(exc),
                broker=self.broker.url,
            )
            self._protocol = aiomqtt.ProtocolVersion.V311
            return True
        if self._protocol == aiomqtt.ProtocolVersion.V311 and not self._v311_worked:
            self._protocol = aiomqtt.ProtocolVersion.V5
        return False

    async def _session(self, backoff: Backoff) -> None:
        will = aiomqtt.Will(self.topics.status, self.status_payload("offline"), qos=1, retain=True)
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            logger=_AIOMQTT_LOG,
            username=self.broker.username,
            password=self._password(),
            protocol=self._protocol,
            will=will,
            clean_session=True if self._protocol != aiomqtt.ProtocolVersion.V5 else None,
            keepalive=self.broker.keepalive_s,
            timeout=self.broker.connect_timeout_s,
            tls_context=self._tls_context(),
            max_inflight_messages=self.broker.max_inflight,
            max_queued_outgoing_messages=self.broker.max_inflight * 4,
            # Only replay requests come in: a short queue (a flood is dropped, the ingest asks
            # again) and, with MQTT 5, no packet the agent would refuse anyway (§3.1.2.11.4).
            max_queued_incoming_messages=INCOMING_QUEUE,
            properties=self._connect_properties(),
        )
        self._awaiting_connack = True
        async with client:
            self._awaiting_connack = False
            if self._protocol == aiomqtt.ProtocolVersion.V5:
                self._v5_worked = True
            else:
                self._v311_worked = True
            self._client = client
            await self._refresh_archive_info()
            await client.subscribe(
                self.topics.replay_request, qos=1, timeout=self.broker.publish_timeout_s
            )
            await client.publish(
                self.topics.status,
                self.status_payload("online"),
                qos=1,
                retain=True,
                timeout=self.broker.publish_timeout_s,
            )
            backoff.reset()
            self._set_state(LinkState.CONNECTED)
            log.info("connected to broker", broker=self.broker.url, protocol=self._protocol.name)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pump(client), name="mqtt-pump")
                    group.create_task(self._status_loop(client), name="mqtt-status")
                    group.create_task(self._replay_loop(client), name="mqtt-replay")
                    group.create_task(self._replay_worker(client), name="mqtt-replay-worker")
            except BaseExceptionGroup as group_error:
                # Surface the first real failure (a lost connection, a PUBACK timeout).
                raise _first_leaf(group_error) from None

    async def _refresh_archive_info(self) -> None:
        found = await self.outbox.archive_range()
        self.archive_info = None if found is None else {"first_seq": found[0], "last_seq": found[1]}
        # Not yet sent (a backlog drains oldest-first beside live envelopes): a hole the
        # central ingest sees there is not lost, and is not asked for.
        self.unsent_from = await self.outbox.unsent_from()

    async def _replay_loop(self, client: aiomqtt.Client) -> None:
        """Admit replay requests (agent/delivery/replay.py); the worker answers them.

        A request is parsed, authenticated and bounded by `ReplayGate.admit`, which never
        raises: whatever arrives on the topic, this loop goes on. The message iterator also
        raises as soon as the connection drops, so an idle publisher notices a dead broker at
        once, not at its next publish (tests/delivery/test_publisher.py, broker restart).
        """
        async for message in client.messages:
            if not message.topic.matches(self.topics.replay_request):
                continue
            self._admit(message)

    def _admit(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        body = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        archive = self.archive_info
        outcome = self.replay_gate.admit(
            bytes(body),
            retained=bool(message.retain),
            archive=None if archive is None else (archive["first_seq"], archive["last_seq"]),
            last_seq=self.outbox.last_seq,
        )
        if isinstance(outcome, Accepted):
            log.info(
                "replay request accepted",
                from_seq=outcome.from_seq,
                to_seq=outcome.to_seq,
                merged=outcome.merged,
                request=outcome.request_id,
            )
            if outcome.unavailable:
                self.replay_info = {
                    "from_seq": outcome.from_seq,
                    "to_seq": outcome.to_seq,
                    "sent": 0,
                    "unavailable": outcome.unavailable,
                    "t": rfc3339_now(),
                }
            self._replay_wanted.set()
        else:
            log.warning("replay request refused", reason=outcome.reason, detail=outcome.detail)
        self.mark_status_dirty()

    async def _replay_worker(self, client: aiomqtt.Client) -> None:
        """Answer the queued ranges one at a time, rate-limited."""
        while True:
            span = self.replay_gate.take()
            if span is None:
                self._replay_wanted.clear()
                await self._replay_wanted.wait()
                continue
            try:
                await self._replay(client, *span)
            finally:
                self.replay_gate.done()

    async def _replay(self, client: aiomqtt.Client, first: int, last: int) -> None:
        """Re-publish archived envelopes first..last, byte-identical, on their own topics."""
        await self._refresh_archive_info()
        held = self.archive_info
        unavailable: list[list[int]] = []
        if held is None or last < held["first_seq"]:
            unavailable.append([first, last])
        elif first < held["first_seq"]:
            unavailable.append([first, held["first_seq"] - 1])
        sent, cursor = 0, first - 1
        next_at = time.monotonic()
        while cursor < last:
            batch = await self.outbox.archived(cursor + 1, last)
            if not batch:
                break
            for envelope in batch:
                await client.publish(
                    envelope.topic, envelope.body, qos=1, timeout=self.broker.publish_timeout_s
                )
                sent += 1
                cursor = envelope.seq
                next_at += self.replay_interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    next_at = time.monotonic()
        self.replay_info = {
            "from_seq": first,
            "to_seq": last,
            "sent": sent,
            "unavailable": unavailable,
            "t": rfc3339_now(),
        }
        log.info(
            "replay request answered",
            from_seq=first,
            to_seq=last,
            sent=sent,
            unavailable=unavailable,
        )
        self.mark_status_dirty()

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            await self._refresh_archive_info()
            await client.publish(
                self.topics.status,
                self.status_payload("online"),
                qos=1,
                retain=True,
                timeout=self.broker.publish_timeout_s,
            )
            await asyncio.sleep(1.0)  # at most one status update a second

    async def _publish_envelope(self, client: aiomqtt.Client, envelope: Envelope) -> None:
        """Publish one envelope at QoS 1 and wait for its PUBACK (MqttError past the deadline).

        Our deadline, and aiomqtt's wait without one: its own timeout is a wait_for, so a task
        and a timer more for every envelope (Python 3.11).
        """
        try:
            async with asyncio.timeout(self.broker.publish_timeout_s):
                await client.publish(envelope.topic, envelope.body, qos=1, timeout=math.inf)
        except TimeoutError:
            raise aiomqtt.MqttError(
                f"no PUBACK for seq {envelope.seq} within {self.broker.publish_timeout_s} s"
            ) from None

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Send backlog (oldest first) and live envelopes alternately; ack after PUBACK."""
        live_start = self.outbox.last_seq + 1
        backlog_cursor = 0
        live_cursor = live_start - 1
        window = asyncio.Semaphore(self.broker.max_inflight)
        acked: list[int] = []
        failures: list[BaseException] = []
        last_ack_flush = time.monotonic()

        async def send(envelope: Envelope) -> None:
            try:
                await self._publish_envelope(client, envelope)
            except BaseException as exc:
                failures.append(exc)
                raise
            finally:
                window.release()
            acked.append(envelope.seq)
            self.published_envelopes += 1
            self.published_items += envelope.n_items

        async with asyncio.TaskGroup() as group:
            while True:
                if failures:
                    raise failures[0]
                backlog = (
                    await self.outbox.fetch(backlog_cursor, 16, below_seq=live_start)
                    if backlog_cursor < live_start - 1
                    else []
                )
                # Only when the cutter has gone past what was sent: no round trip to the state
                # database's thread for nothing.
                live = (
                    await self.outbox.fetch(live_cursor, 16)
                    if self.outbox.last_seq > live_cursor
                    else []
                )
                if not backlog:
                    backlog_cursor = live_start - 1
                batch = _interleave(backlog, live)
                for envelope in batch:
                    await window.acquire()
                    group.create_task(send(envelope))
                    if envelope.seq < live_start:
                        backlog_cursor = envelope.seq
                    else:
                        live_cursor = envelope.seq
                now = time.monotonic()
                if acked and (
                    len(acked) >= ACK_BATCH or now - last_ack_flush > ACK_DELAY_S or not batch
                ):
                    done, acked[:] = list(acked), []
                    self.outbox.acknowledge(done)
                    last_ack_flush = now
                    self._acked.set()
                    self._acked = asyncio.Event()
                if not batch:
                    await self.outbox.wait_for_envelopes(0.05 if acked else 0.5)

    async def publish_offline(self, reason: str = "shutdown", *, timeout: float = 2.0) -> None:
        """Clean shutdown: replace the retained status with `offline` before disconnecting."""
        client = self._client
        if client is None or self.state != LinkState.CONNECTED:
            return
        try:
            document = {**self.status("offline"), "reason": reason}
            document["evidence"] = self._evidence(document)
            payload = json.dumps(document).encode()
            await client.publish(self.topics.status, payload, qos=1, retain=True, timeout=timeout)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("could not publish offline status", error=str(exc))

    async def drain(self, timeout: float) -> bool:
        """Wait (up to `timeout`) until the outbox has nothing left to send."""
        try:
            async with asyncio.timeout(timeout):
                while self.state == LinkState.CONNECTED:
                    # Taken before the look, so an acknowledgement meanwhile is not missed.
                    acked, changed = self._acked, self.state_changed
                    try:
                        stats = await self.outbox.stats()
                    except OutboxError:
                        return False
                    if stats.envelopes == 0 and stats.pending_items == 0:
                        return True
                    await _first_of(acked, changed)
        except TimeoutError:
            pass
        return False


async def _first_of(*events: asyncio.Event) -> None:
    """Return once any of `events` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _first_leaf(error: BaseExceptionGroup[BaseException]) -> BaseException:
    first = error.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _interleave(first: list[Envelope], second: list[Envelope]) -> list[Envelope]:
    out: list[Envelope] = []
    for index in range(max(len(first), len(second))):
        if index < len(first):
            out.append(first[index])
        if index < len(second):
            out.append(second[index])
    return out
