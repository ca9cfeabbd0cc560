"""The MQTT side of the ingest: a shared-subscription consumer that acknowledges after commit.

paho-mqtt runs with `manual_ack=True`: a PUBLISH is PUBACKed only once the writer thread has
committed its rows, so killing the process or losing the database never loses an envelope (the
broker re-delivers what was not acknowledged when the persistent session resumes). A PUBACK is
only sent on the connection the PUBLISH came in on: after a reconnect the broker re-sends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from central.config import IngestConfig
from central.envelope import KeyRegistry, parse_topic, verify
from central.inbound import Limits, Rejected
from central.refusals import AlertLimiter, AlertNote, Rejection, printable
from central.status import parse_status
from central.store import Batch, Store, WriteResult

log = structlog.get_logger("isoedge.central.consumer")


class BrokerIncompatibleError(RuntimeError):
    """The broker cannot give the ingest QoS 1 shared subscriptions; the ingest stops."""


def broker_problem(properties: Any) -> str | None:
    """What in a CONNACK's properties rules the broker out (MQTT 5 §3.2.2.3), or None."""
    if properties is None:
        return None
    if getattr(properties, "SharedSubscriptionAvailable", 1) == 0:
        return ("the broker does not offer shared subscriptions (CONNACK Shared Subscription"
                " Available = 0); the ingest needs them (broker.group)")
    if getattr(properties, "MaximumQoS", 2) == 0:
        return ("the broker allows QoS 0 only (CONNACK Maximum QoS = 0); envelopes need QoS 1"
                " (mosquitto: max_qos; EMQX: mqtt.max_qos_allowed)")
    return None


_LOG_FIRST = 10  # internal errors logged with their traceback; then every thousandth


def _retryable(exc: BaseException) -> bool:
    """The database (or the connection) is away: retried, never a verdict on data.

    Everything else a write raises is deterministic for that batch (psycopg's DataError,
    IntegrityError, ProgramLimitExceeded ..., or a bug of ours): it goes one message at a time.
    """
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not isinstance(
        exc, psycopg.errors.ProgramLimitExceeded
    )


@dataclass(slots=True)
class _Incoming:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float


@dataclass
class IngestStats:
    """Counters for logs, the fleet page and the bench."""

    received: int = 0
    committed_envelopes: int = 0
    new_envelopes: int = 0
    readings: int = 0
    events: int = 0
    rejected: int = 0
    statuses_ignored: int = 0  # unregistered agent, not a valid status document
    statuses_unsigned: int = 0  # stored for display only: no verified evidence
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    internal_errors: int = 0
    acked: int = 0
    db_errors: int = 0
    commits: int = 0
    connected: bool = False
    db_ok: bool = False
    last_error: str | None = None
    latencies: list[float] = field(default_factory=list)


def _take_slot(group: str) -> tuple[int, Any]:
    """The first free instance slot of this host and group (an flock, released on exit)."""
    directory = Path(tempfile.gettempdir()) / f"isoedge-ingest-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    for slot in range(1, 257):
        handle = (directory / f"{group}-{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return slot, handle
    raise RuntimeError(f"no free ingest slot for group {group} in {directory}")


class Consumer:
    """Owns one MQTT client (paho network thread) and one writer thread."""

    def __init__(self, config: IngestConfig, registry: KeyRegistry) -> None:
        self.config = config
        self.registry = registry
        self.broker = config.broker
        self.prefix = config.broker.topic_prefix
        self.stats = IngestStats()
        inbound = config.inbound
        self.limits = Limits(max_envelope_bytes=inbound.max_envelope_bytes,
                             max_items=inbound.max_items,
                             created_future_s=inbound.created_future_s,
                             created_past_s=inbound.created_past_days * 86400.0)
        self._alerts = AlertLimiter(inbound.alert_interval_s, inbound.unknown_sources_per_hour)
        self._known = frozenset(registry.agents)
        self._queue: queue.SimpleQueue[_Incoming | None] = queue.SimpleQueue()
        self._generation = 0
        self._gen_lock = threading.Lock()
        self._stopping = threading.Event()
        self._writers: list[threading.Thread] = []
        self._decoder: threading.Thread | None = None
        # Decoded batches waiting for a writer (one per database connection): verification of
        # the next batches runs while the database works on these, and memory stays bounded.
        n_writers = config.database.writers
        self._decoded: queue.Queue[tuple[int, Batch, list[_Incoming]] | None] = queue.Queue(
            n_writers + 1
        )
        # Batches are numbered as decoded and acknowledged strictly in that order (PUBACKs go
        # in the order the PUBLISHes came, MQTT 5 §4.6), whichever writer commits first.
        self._next_ack = 0
        self._ack_turn = threading.Condition()
        self._stats_lock = threading.Lock()
        self._slot_handle: Any = None
        self.keep_latencies = False
        self.failed: BaseException | None = None
        if self.broker.client_id:
            self.client_id = self.broker.client_id
        else:
            slot, self._slot_handle = _take_slot(self.broker.group)
            self.client_id = f"ingest-{self.broker.group}-{socket.gethostname()}-{slot}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._subscribe_mid: int | None = None
        self.client.reconnect_delay_set(1, 5)
        self.client.max_inflight_messages_set(100)
        if self.broker.username:
            password = (
                self.broker.password_file.read_text(encoding="utf-8").strip()
                if self.broker.password_file
                else None
            )
            self.client.username_pw_set(self.broker.username, password)
        if self.broker.uses_tls:
            tls = self.broker.tls
            context = ssl.create_default_context(
                cafile=str(tls.ca_file) if tls and tls.ca_file else None
            )
            if tls and tls.cert_file:
                key = str(tls.key_file) if tls.key_file else None
                context.load_cert_chain(str(tls.cert_file), key)
            self.client.tls_set_context(context)
        self.connected = threading.Event()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect (asynchronously; paho retries) and start the writer thread."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.broker.session_expiry_s
        props.ReceiveMaximum = self.broker.receive_maximum
        self._decoder = threading.Thread(target=self._decode_loop, name="ingest-decoder",
                                         daemon=True)
        self._writers = [
            threading.Thread(target=self._write_loop, name=f"ingest-writer-{i}", daemon=True)
            for i in range(self.config.database.writers)
        ]
        self._decoder.start()
        for writer in self._writers:
            writer.start()
        self.client.connect_async(
            self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s,
            clean_start=False, properties=props,
        )
        self.client.loop_start()
        log.info("ingest consumer started", client_id=self.client_id,
                 subscription=self.broker.subscription, broker=self.broker.url)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (commit and ack it if the database allows), then disconnect."""
        self._stopping.set()
        self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in (self._decoder, *self._writers):
            if thread is not None:
                thread.join(max(0.1, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        if self._slot_handle is not None:
            self._slot_handle.close()
            self._slot_handle = None

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish a plain message (replay requests), QoS 1."""
        self.client.publish(topic, payload, qos=1)

    # ---------------------------------------------------------------- paho thread
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the ingest", reason=str(reason))
            return
        if (problem := broker_problem(props)) is not None:
            self._incompatible(client, problem)
            return
        with self._gen_lock:
            self._generation += 1
        status_topic = f"{self.prefix}/+/+/status"
        # Shared subscriptions get no retained messages (MQTT 5 §4.8.2): the retained status of
        # every agent comes through a plain subscription to the status topics.
        _rc, self._subscribe_mid = client.subscribe([
            (self.broker.subscription, SubscribeOptions(qos=1)),
            (status_topic, SubscribeOptions(qos=1)),
        ])
        self.stats.connected = True
        self.connected.set()
        log.info("ingest connected", client_id=self.client_id, broker=self.broker.url)

    def _on_subscribe(self, client: mqtt.Client, _u: Any, mid: int, codes: list[Any],
                      _p: Any) -> None:
        """Both subscriptions must be granted QoS 1 (a failure code or QoS 0: stop, say why)."""
        if mid != self._subscribe_mid:
            return
        names = (self.broker.subscription, f"{self.prefix}/+/+/status")
        for name, code in zip(names, codes, strict=False):
            value = getattr(code, "value", code)
            if getattr(code, "is_failure", False) or value != 1:
                self._incompatible(client, f"the broker answered the subscription {name} with"
                                   f" {code} (SUBACK reason code {value}); the ingest needs"
                                   " QoS 1 (check the broker's ACL and max QoS)")
                return
        log.info("ingest subscribed", subscription=names[0], qos=1)

    def _incompatible(self, client: mqtt.Client, problem: str) -> None:
        self.failed = BrokerIncompatibleError(problem)
        log.error("broker unusable for the ingest; stopping", problem=problem,
                  broker=self.broker.url)
        self._stopping.set()
        client.disconnect()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._gen_lock:
            self._generation += 1  # acks of the old connection must not go on the new one
        self.stats.connected = False
        self.connected.clear()
        log.warning("ingest disconnected from broker", reason=str(reason))

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        self._queue.put(_Incoming(self._generation, message.mid, message.qos, message.topic,
                                  bytes(message.payload), time.time()))

    # ---------------------------------------------------------------- writer thread
    def _take_batch(self) -> list[_Incoming] | None:
        db = self.config.database
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + db.batch_max_age_ms / 1000.0
        while len(batch) < db.batch_max_envelopes:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _classify(self, messages: list[_Incoming]) -> tuple[Batch, list[_Incoming]]:
        """Verify each message; whatever one message does, it costs that message only."""
        batch = Batch()
        ackable: list[_Incoming] = []
        for m in messages:
            ackable.append(m)  # rejected or accepted, every message is acknowledged once written
            try:
                self._classify_one(m, batch)
            except Exception as exc:
                # A bug of ours met by one message: refuse the message, count it, say so.
                with self._stats_lock:
                    self.stats.internal_errors += 1
                parsed = parse_topic(m.topic, self.prefix)
                site, agent = (parsed.site, parsed.agent) if parsed else (None, None)
                self._reject(batch, m, site, agent, Rejected(
                    f"internal error ({type(exc).__name__})", code="internal_error"))
                errors = self.stats.internal_errors
                if errors <= _LOG_FIRST or errors % 1000 == 0:
                    log.exception("message refused after an internal error", topic=m.topic[:200],
                                  errors=errors)
        return batch, ackable

    def _status(self, batch: Batch, payload: bytes, site: str, agent: str) -> None:
        """A status: typed, of a registered agent, evidence only when signed (central/status)."""
        verdict = parse_status(payload, site, agent, self.registry)
        if verdict.body is None:
            self.stats.statuses_ignored += 1
            log.info("status ignored", site=site[:64], agent=agent[:64], reason=verdict.reason)
            return
        if verdict.reason != "ok":
            self.stats.statuses_unsigned += 1
        batch.statuses.append((site, agent, verdict.online, verdict.body))

    def _classify_one(self, m: _Incoming, batch: Batch) -> None:
        parsed = parse_topic(m.topic, self.prefix)
        if parsed is None:
            return  # not a topic an agent publishes (agent/delivery/topics.py)
        site, agent, stream = parsed.site, parsed.agent, parsed.stream
        if parsed.kind == "status":
            self._status(batch, m.payload, site, agent)
            return
        if stream is None:
            return  # replay requests and other plain topics are not data
        if (site, agent) not in self._known:
            self._reject(batch, m, site, agent, Rejected(
                "unknown source (no such agent in the key registry)", code="unknown_source"))
            return
        try:
            verified = verify(m.payload, m.topic, site=site, agent=agent, stream=stream,
                              registry=self.registry, limits=self.limits, received=m.received)
        except Rejected as exc:
            self._reject(batch, m, site, agent, exc)
            return
        batch.envelopes.append(verified)
        if verified.flag is not None:
            self._alert(batch, AlertNote(
                "implausible_envelope", site, agent, "created", "central.clock",
                {"seq": verified.seq, "created": verified.created, "flag": verified.flag}))

    def _reject(self, batch: Batch, m: _Incoming, site: str | None, agent: str | None,
                exc: Rejected) -> None:
        kid = None if exc.kid is None else printable(exc.kid, 200)
        batch.rejections.append(Rejection(m.topic, site, agent, kid, exc.reason, m.payload,
                                          exc.code))
        with self._stats_lock:
            by_code = self.stats.rejected_by_code
            by_code[exc.code] = by_code.get(exc.code, 0) + 1
        if exc.code == "unknown_source":
            self._alert(batch, AlertNote(
                "unknown_source", printable(site), printable(agent), "", "central.unknown_source",
                {"topic": printable(m.topic, 200)}), new_source=True)
            return
        self._alert(batch, AlertNote(
            "rejected_envelope", printable(site), printable(agent),
            printable(exc.reason.split(" (")[0], 100),
            "central.rejected",
            {"topic": printable(m.topic, 200), "kid": kid, "code": exc.code,
             "reason": printable(exc.reason, 300)},
            severity="critical" if exc.code == "internal_error" else "warning"))

    def _alert(self, batch: Batch, note: AlertNote, *, new_source: bool = False) -> None:
        due = self._alerts.note(note, new_source=new_source)
        if due is not None:
            batch.alerts.append(due)

    def _decode_loop(self) -> None:
        """Take messages off the paho queue in batches and verify them."""
        number = 0
        try:
            while self.failed is None:
                messages = self._take_batch()
                if messages is None:
                    return
                if messages:
                    batch, ackable = self._classify(messages)
                    self._put_decoded((number, batch, ackable))
                    number += 1
        except Exception as exc:
            self.failed = exc
            log.exception("ingest decoder failed; stopping")
            self._stopping.set()
        finally:
            for _writer in self._writers:
                self._put_decoded(None)

    def _put_decoded(self, item: tuple[int, Batch, list[_Incoming]] | None) -> None:
        while True:
            try:
                self._decoded.put(item, timeout=0.5)
            except queue.Full:
                if self._stopping.is_set() and not any(w.is_alive() for w in self._writers):
                    return
                continue
            return

    def _write_loop(self) -> None:
        try:
            self._write_batches()
        except Exception as exc:
            self.failed = exc
            log.exception("ingest writer failed; stopping")
            self._stopping.set()

    def _write_batches(self) -> None:
        inbound = self.config.inbound
        store = Store(self.config.database.url, rejected_body_bytes=inbound.rejected_body_bytes,
                      max_seq_jump=inbound.max_seq_jump)
        delay = self.config.database.retry_initial_s
        try:
            while True:
                decoded = self._decoded.get()
                if decoded is None:
                    return
                number, batch, ackable = decoded
                while True:
                    try:
                        if batch:
                            result = self._write(store, batch)
                            with self._stats_lock:
                                self.stats.new_envelopes += result.envelopes_new
                                self.stats.readings += result.readings
                                self.stats.events += result.events
                                self.stats.rejected += result.rejected
                                self.stats.commits += 1
                        self.stats.db_ok = True
                        delay = self.config.database.retry_initial_s
                        break
                    except psycopg.Error as exc:
                        self.stats.db_errors += 1
                        self.stats.db_ok = False
                        self.stats.last_error = str(exc).strip()[:300]
                        store.close()
                        log.warning("database write failed; retrying", error=self.stats.last_error,
                                    retry_s=delay)
                        if self._stopping.wait(delay):
                            return  # not committed, not acknowledged: the broker re-delivers
                        delay = min(delay * 2, self.config.database.retry_max_s)
                with self._ack_turn:
                    while self._next_ack != number:
                        if self._stopping.is_set():
                            return  # an earlier batch was never committed: ack nothing after it
                        self._ack_turn.wait(0.5)
                    with self._stats_lock:
                        self.stats.committed_envelopes += len(batch.envelopes)
                    self._ack(ackable)
                    self._next_ack += 1
                    self._ack_turn.notify_all()
        finally:
            store.close()

    def _write(self, store: Store, batch: Batch) -> Any:
        try:
            return store.write(batch)
        except Exception as exc:
            if _retryable(exc):
                raise  # the database is away: the caller retries the whole batch
            # A verified envelope the database (or our code) cannot take: say, a time out of
            # range, an index row too big. Store the others, refuse that one as data.
            log.warning("batch refused; writing its messages one by one",
                        error=f"{type(exc).__name__}: {str(exc).strip()[:200]}")
            return self._write_one_by_one(store, batch)

    def _write_one_by_one(self, store: Store, batch: Batch) -> Any:
        total = None
        for envelope in batch.envelopes:
            single = Batch(envelopes=[envelope])
            try:
                result = store.write(single)
            except Exception as exc:
                if _retryable(exc):
                    raise
                single = Batch(rejections=[Rejection(
                    envelope.topic, envelope.site, envelope.agent, envelope.kid,
                    f"not storable ({printable(str(exc).strip(), 100)})", envelope.body,
                    "not_storable",
                )])
                with self._stats_lock:
                    by_code = self.stats.rejected_by_code
                    by_code["not_storable"] = by_code.get("not_storable", 0) + 1
                try:
                    result = store.write(single)
                except Exception as again:
                    if _retryable(again):
                        raise
                    log.warning("an unstorable envelope's rejection was dropped",
                                error=f"{type(again).__name__}: {str(again).strip()[:200]}")
                    result = WriteResult(0, 0, 0, 0)
            total = result if total is None else type(result)(
                total.envelopes_new + result.envelopes_new, total.readings + result.readings,
                total.events + result.events, total.rejected + result.rejected)
        rejected = 0
        for rest in [Batch(rejections=[r]) for r in batch.rejections] + [
            Batch(statuses=[s]) for s in batch.statuses
        ] + [Batch(alerts=[a]) for a in batch.alerts]:
            try:
                rejected += store.write(rest).rejected
            except Exception as exc:
                if _retryable(exc):
                    raise
                log.warning("a status, rejection or alert the database cannot take was dropped",
                            error=f"{type(exc).__name__}: {str(exc).strip()[:200]}")
        if total is None:
            return WriteResult(0, 0, 0, rejected)
        return WriteResult(total.envelopes_new, total.readings, total.events,
                           total.rejected + rejected)

    def _ack(self, messages: list[_Incoming]) -> None:
        now = time.time()
        with self._gen_lock:
            generation = self._generation
        for m in messages:
            if m.qos == 0:
                continue
            if m.generation != generation:
                continue  # that connection is gone; the broker re-sends on the new one
            with contextlib.suppress(Exception):
                self.client.ack(m.mid, m.qos)
                self.stats.acked += 1
            if self.keep_latencies:
                self.stats.latencies.append(now - m.received)
