"""OPC UA driver: subscriptions with per-node sampling and deadband, batch events, security.

The driver owns one asyncua session. asyncua's own reconnect is off: when the session dies
(server restart, network cut), the driver raises `DeviceError` and the agent's supervisor
builds a fresh session and subscriptions. A closed connection is seen at once; a server that
falls silent (a cut cable, a hung process) by the driver's watchdog: the subscription asks for
a keep-alive at least every `watchdog_interval_s`, so in steady state its publish responses
prove the server alive and nothing else is sent; only after a silence longer than that does
the driver read the server's state, and a read that fails or does not come back within
`watchdog_interval_s` ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.observer import Observer
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from drivers.base import (
    DeviceError,
    Driver,
    JSONScalar,
    Quality,
    Sample,
    SampleBatch,
    SampleKind,
    utc_now,
)
from drivers.numbers import float32_value, rfc3339_z

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asyncua.common.events import Event
    from asyncua.common.node import Node
    from asyncua.common.subscription import DataChangeNotif, Subscription

    from drivers.opcua.config import OpcUaConfig, OpcUaEvents, OpcUaNode

_MAX_BURST = 1000  # samples handed over as one batch at most
# asyncua's own health probe (a read each interval) only backs ours up: the subscription's
# publish responses already prove the server alive (see the module's docstring).
_ASYNCUA_PROBE_FACTOR = 30
# A keep-alive may come this much later than its period before the server is asked.
_SILENCE_MARGIN = 1.5
_OPCUA_NULL_YEAR = 1601


def subscription_parameters(
    publishing_interval_ms: float, watchdog_interval_s: float
) -> ua.CreateSubscriptionParameters:
    """A subscription whose publish responses come at least every `watchdog_interval_s`.

    The keep-alive count is the number of publishing intervals the server may stay quiet
    before it sends an empty publish response (OPC UA Part 4, 5.13.2): asking for the
    watchdog's interval makes every quiet period end in a sign of life. The lifetime count is
    at least three keep-alives, as Part 4 requires, and generous beyond that.
    """
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = publishing_interval_ms
    keepalive = max(1, int(watchdog_interval_s * 1000 // max(publishing_interval_ms, 1.0)))
    params.RequestedMaxKeepAliveCount = keepalive
    params.RequestedLifetimeCount = max(10_000, 3 * keepalive)
    params.MaxNotificationsPerPublish = 10_000
    params.PublishingEnabled = True
    params.Priority = 0
    return params


def keepalive_period_s(params: ua.CreateSubscriptionParameters) -> float:
    """Longest quiet period of a subscription, in seconds: its interval times keep-alive count."""
    interval_ms = float(params.RequestedPublishingInterval)
    return interval_ms * max(int(params.RequestedMaxKeepAliveCount), 1) / 1000


class _SignsOfLife(Observer):
    """When the server last answered a request (a publish response, data or keep-alive, too).

    asyncua's own liveness clock (`Subscription.last_publish_at`) is reset when it recreates
    a subscription, which would hide a silent server for as long as the recreate waits.
    """

    def __init__(self) -> None:
        self.heard_at = time.monotonic()

    def on_request(self, request_type: str, duration: float, error: BaseException | None) -> None:  # noqa: ARG002 - the Observer's signature
        if error is None:
            self.heard_at = time.monotonic()


class _Lost:
    """Queue marker: the session is gone."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def quality_of(status: ua.StatusCode) -> Quality:
    """OPC UA severity bits → quality: Good → good, Uncertain → uncertain, Bad → bad."""
    if status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    # asyncua gives UTC; older versions naive datetimes, newer ones aware.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _scalar(
    value: Any, variant_type: ua.VariantType | None = None
) -> tuple[JSONScalar, str | None]:
    """A Variant's value as a JSON scalar, or None with a reason when it is not one.

    Floats at their type's precision (`drivers/numbers.py`): a `Float` (float32) as the
    shortest decimal that reads back the same, a `Double` in full; DateTime as RFC 3339 `Z`.
    """
    if value is None or isinstance(value, bool | int | str):
        return value, None
    if isinstance(value, float):
        if variant_type is ua.VariantType.Float and math.isfinite(value):
            return float32_value(value), None
        return value, None
    if isinstance(value, datetime):
        if value.year <= _OPCUA_NULL_YEAR:  # DateTime minimum means "no time" (Part 6, 5.2.2.5)
            return None, None
        return rfc3339_z(value), None
    return None, f"unsupported value type {type(value).__name__}"


_FIRST_DATA_HANDLE = 1_000_000
_PINNED_MISMATCH = frozenset({
    "BadTcpInternalError", "BadCertificateInvalid", "BadSecurityChecksFailed",
    "BadCertificateUseNotAllowed", "BadCertificateUriInvalid",
})  # fmt: skip
_CLIENT_UNTRUSTED = frozenset({
    "BadCertificateUntrusted", "BadSecurityChecksFailed", "BadCertificateInvalid",
    "BadCertificateUriInvalid", "BadCertificateRevoked", "BadCertificateTimeInvalid",
})  # fmt: skip


def application_uri(device_id: str) -> str:
    """The OPC UA application URI of the agent's client for one device."""
    return f"urn:isoedge:agent:{device_id}"


def _monitored_item_request(
    node_id: ua.NodeId, handle: int, node_cfg: OpcUaNode
) -> ua.MonitoredItemCreateRequest:
    """Monitor a node's Value with its own sampling interval, queue and absolute deadband."""
    parameters = ua.MonitoringParameters()
    parameters.ClientHandle = handle
    parameters.SamplingInterval = ua.Double(node_cfg.sampling_interval_ms)
    parameters.QueueSize = node_cfg.queue_size
    parameters.DiscardOldest = True
    if node_cfg.deadband is not None:
        change_filter = ua.DataChangeFilter()
        change_filter.Trigger = ua.DataChangeTrigger.StatusValue
        change_filter.DeadbandType = ua.DeadbandType.Absolute
        change_filter.DeadbandValue = node_cfg.deadband
        parameters.Filter = change_filter
    item = ua.ReadValueId()
    item.NodeId = node_id
    item.AttributeId = AttributeIds.Value
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = item
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = parameters
    return request


class _Handler:
    """Subscription callbacks: turn notifications into queue items (no awaiting in here)."""

    def __init__(self, driver: OpcUaDriver) -> None:
        self.driver = driver

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:  # noqa: ARG002
        """A monitored value changed."""
        self.driver.on_data_change(data.monitored_item.Value, data.subscription_data.client_handle)

    def event_notification(self, event: Event) -> None:
        """A batch event arrived."""
        self.driver.on_event(event)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        """The server says the subscription is gone (e.g. BadShutdown, BadTimeout)."""
        code = status.Status
        if not code.is_good():
            self.driver.queue.put_nowait(_Lost(f"subscription status {code.name}"))


class OpcUaDriver(Driver):
    """One session to an OPC UA server; yields a Sample per data change and per batch event."""

    type: ClassVar[str] = "opcua"

    def __init__(self, config: OpcUaConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.queue: asyncio.Queue[Sample | _Lost] = asyncio.Queue(maxsize=10_000)
        self._client: Client | None = None
        self._nodes_by_handle: dict[int, OpcUaNode] = {}
        self._lost: str | None = None
        self._subscription: Subscription | None = None
        self._signs_of_life = _SignsOfLife()

    # ---- connection ------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the session and create the subscription; `DeviceError` on any failure."""
        cfg = self.cfg
        client = Client(
            cfg.url,
            timeout=cfg.timeout_s,
            watchdog_intervall=cfg.watchdog_interval_s * _ASYNCUA_PROBE_FACTOR,
            auto_reconnect=False,
        )
        client.session_timeout = max(10_000, int(cfg.watchdog_interval_s * 10_000))
        client.connection_lost_callback = self._connection_lost
        self._signs_of_life = _SignsOfLife()
        client.uaclient.observer = self._signs_of_life
        self._client = client
        try:
            await self._configure_identity(client)
            async with asyncio.timeout(cfg.timeout_s * 3):
                await client.connect()
            async with asyncio.timeout(cfg.timeout_s * 3):
                await self._subscribe(client)
        except DeviceError:
            raise
        except (TimeoutError, OSError, UaError, ConnectionError, AssertionError) as exc:
            # asyncua fails with a bare AssertionError when it cannot parse the server's
            # refusal of the secure channel (an untrusted client certificate).
            reason = self.describe_failure(exc)
            if cfg.security.server_certificate is not None and await self._pinned_mismatch():
                reason = (
                    "server certificate does not match the pinned one "
                    f"({cfg.security.server_certificate}): the server offers another [{exc!r}]"
                )
            raise DeviceError(f"cannot open OPC UA session to {cfg.url}: {reason}") from exc
        self.log.info(
            "opcua connected",
            url=cfg.url,
            security=f"{cfg.security.policy}/{cfg.security.mode}",
            nodes=len(cfg.nodes),
            events=cfg.events is not None,
        )

    def describe_failure(self, exc: BaseException) -> str:
        """A connect failure named for what it is (certificates), else the exception itself."""
        security = self.cfg.security
        code = getattr(exc, "code", None)
        name = ua.StatusCode(ua.UInt32(code)).name if isinstance(code, int) else ""
        if security.policy == "None":
            return repr(exc)
        if security.server_certificate is not None and name in _PINNED_MISMATCH:
            return (
                f"server certificate does not match the pinned one "
                f"({security.server_certificate}) [{name}]"
            )
        if isinstance(exc, AssertionError) or name in _CLIENT_UNTRUSTED:
            return (
                "the server does not trust this client certificate: give it "
                f"{security.certificate} (application URI {self.application_uri}) and trust it "
                f"in the server's certificate store [{name or type(exc).__name__}]"
            )
        return repr(exc)

    async def _pinned_mismatch(self) -> bool:
        """True when the server's endpoints offer a certificate other than the pinned one.

        Asked without security (GetEndpoints is open to any client, OPC UA Part 4 5.4.4);
        False when that cannot be told (server unreachable, unreadable file).
        """
        pinned_path = self.cfg.security.server_certificate
        if pinned_path is None:
            return False
        try:
            data = await asyncio.to_thread(pinned_path.read_bytes)
            pinned = (
                x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
                if data.startswith(b"-----")
                else data
            )
            probe = Client(self.cfg.url, timeout=self.cfg.timeout_s)
            async with asyncio.timeout(self.cfg.timeout_s * 2):
                endpoints = await probe.connect_and_get_server_endpoints()
        except Exception:
            return False
        offered = {bytes(e.ServerCertificate) for e in endpoints if e.ServerCertificate}
        return bool(offered) and pinned not in offered

    @property
    def application_uri(self) -> str:
        """The application URI the client certificate must carry (`isoedge opcua-cert`)."""
        return application_uri(self.cfg.id)

    async def _configure_identity(self, client: Client) -> None:
        cfg = self.cfg
        client.application_uri = self.application_uri
        if cfg.username is not None:
            client.set_user(cfg.username)
            if cfg.password_file is not None:
                try:
                    password = cfg.password_file.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise DeviceError(f"cannot read password_file: {exc.strerror}") from exc
                client.set_password(password)
        security = cfg.security
        if security.policy == "Basic256Sha256":
            mode = (
                ua.MessageSecurityMode.Sign
                if security.mode == "Sign"
                else ua.MessageSecurityMode.SignAndEncrypt
            )
            assert security.certificate is not None  # noqa: S101 (validated by the config)
            assert security.private_key is not None  # noqa: S101
            server_cert = str(security.server_certificate) if security.server_certificate else None
            async with asyncio.timeout(cfg.timeout_s * 2):
                await client.set_security(
                    SecurityPolicyBasic256Sha256,
                    str(security.certificate),
                    str(security.private_key),
                    server_certificate=server_cert,
                    mode=mode,
                )

    async def _subscribe(self, client: Client) -> None:
        cfg = self.cfg
        subscription = await client.create_subscription(
            subscription_parameters(cfg.publishing_interval_ms, cfg.watchdog_interval_s),
            _Handler(self),
        )
        self._subscription = subscription
        requests = []
        # Client handles are ours to choose. asyncua numbers the event item it adds below from
        # 201 up, so ours start far above that.
        for handle, node_cfg in enumerate(cfg.nodes, start=_FIRST_DATA_HANDLE):
            node = client.get_node(node_cfg.node_id)
            requests.append(_monitored_item_request(node.nodeid, handle, node_cfg))
            self._nodes_by_handle[handle] = node_cfg
        if requests:
            results = await subscription.create_monitored_items(requests)
            for node_cfg, result in zip(cfg.nodes, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    # A node the server does not know is a configuration problem worth a bad
                    # reading (visible on the dashboard), not a reason to drop the session.
                    self.queue.put_nowait(
                        self.sample(
                            node_cfg.channel,
                            None,
                            node_cfg.unit,
                            quality=Quality.BAD,
                            reason=result.name,
                            raw_text=f"{node_cfg.node_id}: {result.name}",
                            nuclide=node_cfg.nuclide,
                        )
                    )
        if cfg.events is not None:
            await subscription.subscribe_events(
                cfg.events.source_node, cfg.events.event_type, queuesize=100
            )

    async def _connection_lost(self, exc: Exception) -> None:
        self._lost = f"session lost: {exc!r}"
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_Lost(self._lost))

    # ---- samples ---------------------------------------------------------------------
    async def batches(self) -> AsyncIterator[SampleBatch]:
        """Yield each notification burst as one batch; `DeviceError` once the session is gone.

        A burst is what the queue holds when the first notification is taken: the data
        changes of one publish response arrive together.
        """
        client = self._client
        if client is None:
            raise DeviceError("batches() before connect()", device=self.cfg.id)
        queue = self.queue
        while True:
            try:
                async with asyncio.timeout(self.cfg.watchdog_interval_s):
                    item = await queue.get()
            except TimeoutError:
                await self._check_alive(client)
                continue
            if isinstance(item, _Lost):
                raise DeviceError(item.reason, device=self.cfg.id)
            burst = [item]
            lost: _Lost | None = None
            while len(burst) < _MAX_BURST and not queue.empty():
                more = queue.get_nowait()
                if isinstance(more, _Lost):
                    lost = more
                    break
                burst.append(more)
            yield SampleBatch.from_samples(burst)
            if lost is not None:
                raise DeviceError(lost.reason, device=self.cfg.id)

    async def _check_alive(self, client: Client) -> None:
        """`DeviceError` when the session is gone or the server is silent and does not answer.

        Publish responses (data or keep-alive) are the server's sign of life; only a silence
        beyond the subscription's keep-alive period costs a request.
        """
        if self._lost is not None:
            raise DeviceError(self._lost, device=self.cfg.id)
        subscription = self._subscription
        silence_limit = _SILENCE_MARGIN * max(
            self.cfg.watchdog_interval_s,
            keepalive_period_s(subscription.parameters) if subscription is not None else 0.0,
        )
        if time.monotonic() - self._signs_of_life.heard_at < silence_limit:
            return
        try:
            async with asyncio.timeout(self.cfg.watchdog_interval_s):
                await client.nodes.server_state.read_value()
        except (TimeoutError, OSError, UaError, ConnectionError) as exc:
            self._lost = (
                f"server silent for over {silence_limit:.1f} s and its state not readable"
                f" within {self.cfg.watchdog_interval_s:.1f} s: {exc!r}"
            )
            raise DeviceError(self._lost, device=self.cfg.id) from exc

    def on_data_change(self, data_value: ua.DataValue, client_handle: int | None) -> None:
        """Build a Sample from one data change notification."""
        node_cfg = self._nodes_by_handle.get(client_handle or -1)
        if node_cfg is None:
            return
        status = data_value.StatusCode or ua.StatusCode()
        quality = quality_of(status)
        source, server = _utc(data_value.SourceTimestamp), _utc(data_value.ServerTimestamp)
        preferred = source if self.cfg.timestamps == "source" else server
        t = preferred or source or server or utc_now()
        variant_value = data_value.Value.Value if data_value.Value is not None else None
        variant_type = data_value.Value.VariantType if data_value.Value is not None else None
        value, problem = _scalar(variant_value, variant_type)
        reason = None
        if quality is Quality.BAD:
            value, reason = None, status.name
        elif problem is not None:
            value, quality, reason = None, Quality.BAD, problem
        elif quality is Quality.UNCERTAIN:
            reason = status.name
        text = f"{node_cfg.node_id} = {variant_value!r} [{status.name}]"
        sample = self.sample(
            node_cfg.channel,
            value,
            node_cfg.unit,
            t=t,
            quality=quality,
            reason=reason,
            raw_text=text,
            nuclide=node_cfg.nuclide,
        )
        self._put(sample)

    def on_event(self, event: Event) -> None:
        """Build an EVENT Sample from one batch event."""
        events = self.cfg.events
        if events is None:
            return
        fields = event.get_event_props_as_fields_dict()
        self._put(self._event_sample(events, {k: v.Value for k, v in fields.items()}))

    def _event_sample(self, events: OpcUaEvents, fields: dict[str, Any]) -> Sample:
        name = fields.get(events.name_field) or "event"
        attrs: dict[str, Any] = {"event": str(name)}
        mapping = {
            "batch_id": events.batch_field,
            "step": events.step_field,
            "eos_activity": events.activity_field,
            "eos_time": events.eos_time_field,
            "yield_pct": events.yield_field,
        }
        for key, field_name in mapping.items():
            value, _ = _scalar(fields.get(field_name))
            if value is not None and value != "":
                attrs[key] = value
        if "eos_activity" in attrs:
            attrs["eos_activity_unit"] = events.activity_unit
        message = fields.get("Message")
        text = message.Text if isinstance(message, ua.LocalizedText) else None
        t = _utc(fields.get("Time")) if isinstance(fields.get("Time"), datetime) else None
        return self.sample(
            events.channel,
            str(name),
            None,
            t=t or utc_now(),
            kind=SampleKind.EVENT,
            raw_text=text or str(name),
            nuclide=events.nuclide,
            attrs=attrs,
        )

    def _put(self, sample: Sample) -> None:
        try:
            self.queue.put_nowait(sample)
        except asyncio.QueueFull:
            # The consumer is stuck far behind; dropping the newest keeps memory bounded and
            # the supervisor's view honest (the log says so).
            self.log.warning("opcua queue full, dropping sample", channel=sample.channel)

    async def close(self) -> None:
        """Close the session (bounded wait; never raises)."""
        client, self._client = self._client, None
        self._subscription = None
        if client is None:
            return
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                await client.disconnect()
        except Exception as exc:  # a dead server cannot say goodbye
            self.log.debug("opcua disconnect failed", error=repr(exc))
