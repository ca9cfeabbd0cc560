"""OPC UA simulator of an F-18 FDG synthesis module (asyncua server).

A run goes trap → elute → label → hydrolyse → purify → end of synthesis, then the module idles
and starts the next run. Pressures are in kPa, temperatures in °C, the activity detectors
along the path in MBq, and every activity follows F-18 decay from the end of bombardment.
Batch events (run start, step changes, end of synthesis with activity, time and yield) are
emitted as `SynthesisEventType` events from the Server object. `time_scale` speeds a run up
so the demo shows a whole synthesis in a couple of minutes.

No vendor information model is public (GE, Trasis, IBA, ...), so this address space is an
example; the driver is configured with node ids as data.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from agent.physics import half_life_s

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from asyncua.common.node import Node
    from asyncua.server.internal_server import InternalServer

NAMESPACE = "urn:isoedge:simulator:synthesis"
EVENT_TYPE = "SynthesisEventType"
Security = Literal["Sign", "SignAndEncrypt"] | None


@dataclass(frozen=True)
class Step:
    """One step of the sequence: how long it lasts (simulated s) and its set points."""

    name: str
    duration_s: float
    temperature_c: float
    pressure_kpa: float


FDG_STEPS: tuple[Step, ...] = (
    Step("trap", 120.0, 25.0, 105.0),
    Step("elute", 300.0, 105.0, 120.0),  # elution and azeotropic drying
    Step("label", 300.0, 85.0, 160.0),  # mannose triflate in MeCN
    Step("hydrolyse", 120.0, 40.0, 110.0),  # basic hydrolysis
    Step("purify", 240.0, 30.0, 130.0),  # SPE cartridges to the product vial
)
IDLE_S = 120.0

# (channel, browse name, unit) of every variable; node ids are "ns=N;s=Synthesis.<name>".
VARIABLES: tuple[tuple[str, str, str | None], ...] = (
    ("batch_id", "BatchId", None),
    ("step", "Step", None),
    ("reactor_temperature", "ReactorTemperature", "Cel"),
    ("reactor_pressure", "ReactorPressure", "kPa"),
    ("supply_pressure", "SupplyPressure", "kPa"),
    ("activity_trap", "ActivityTrap", "MBq"),
    ("activity_reactor", "ActivityReactor", "MBq"),
    ("activity_product", "ActivityProduct", "MBq"),
    ("eos_activity", "EOSActivity", "MBq"),
    ("yield_pct", "Yield", "%"),
)
_ACTIVITY_CHANNELS = {"activity_trap", "activity_reactor", "activity_product", "eos_activity"}


class _Users(UserManager):
    """Username/password check for the simulator (one configured user)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: InternalServer,  # noqa: ARG002 (asyncua interface)
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,  # noqa: ARG002 (asyncua interface)
    ) -> User | None:
        """Anonymous when no users are configured; otherwise the right password."""
        if not self.users:
            return User(role=UserRole.User)
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class FdgRun:
    """The physical story of one FDG synthesis, as a function of simulated time."""

    def __init__(self, rng: random.Random, start_activity_mbq: float = 60_000.0) -> None:
        self.rng = rng
        self.a0 = start_activity_mbq * rng.uniform(0.9, 1.1)
        self.decay_constant = math.log(2) / half_life_s("F-18")
        self.trap_efficiency = rng.uniform(0.95, 0.99)
        self.elution_efficiency = rng.uniform(0.93, 0.98)
        self.chemical_yield = rng.uniform(0.58, 0.72)
        self.total_s = sum(s.duration_s for s in FDG_STEPS)

    def step_at(self, t: float) -> tuple[int, Step, float]:
        """(index, step, seconds into it) at `t` seconds after the start; past the end: last."""
        elapsed = 0.0
        for index, step in enumerate(FDG_STEPS):
            if t < elapsed + step.duration_s:
                return index, step, t - elapsed
            elapsed += step.duration_s
        return len(FDG_STEPS) - 1, FDG_STEPS[-1], FDG_STEPS[-1].duration_s

    def activities(self, t: float) -> dict[str, float]:
        """Activity seen by each detector (MBq, decay-corrected to now, i.e. decayed)."""
        decay = math.exp(-self.decay_constant * t)
        index, step, into = self.step_at(t)
        frac = min(1.0, into / max(step.duration_s, 1.0))
        trapped = self.a0 * self.trap_efficiency
        in_reactor = trapped * self.elution_efficiency
        product = self.a0 * self.chemical_yield  # yield relative to the delivered activity
        trap = reactor = vial = 0.0
        if step.name == "trap":
            trap = trapped * frac
        elif step.name == "elute":
            moved = min(1.0, into / 60.0)  # elution takes the first minute
            trap, reactor = trapped * (1 - moved), in_reactor * moved
        elif step.name in {"label", "hydrolyse"}:
            trap, reactor = trapped * (1 - self.elution_efficiency), in_reactor
        elif step.name == "purify":
            trap = trapped * (1 - self.elution_efficiency)
            reactor = in_reactor * (1 - frac) + (in_reactor - product) * frac * 0.2
            vial = product * frac
        if index == len(FDG_STEPS) - 1 and t >= self.total_s:
            vial = product
        return {
            "activity_trap": trap * decay,
            "activity_reactor": reactor * decay,
            "activity_product": vial * decay,
        }

    def eos(self) -> tuple[float, float]:
        """End of synthesis: (activity in MBq at EOS, decay-corrected yield in %)."""
        activity = self.a0 * self.chemical_yield * math.exp(-self.decay_constant * self.total_s)
        return activity, self.chemical_yield * 100.0


class SynthesisModuleSimulator:
    """An asyncua server playing FDG runs, with security and fault injection.

    `security`: None (no security), "Sign" or "SignAndEncrypt" (Basic256Sha256; needs
    `certificate` and `private_key` of the server, and `trusted_client_certificates` is
    not enforced: the simulator accepts any client certificate). `users` maps user names
    to passwords; when given, anonymous sessions are refused. `source_lag_s` makes source
    time stamps lag the server's (an instrument sampling before the server publishes).
    Call `device_config()` after `start()` (the namespace index is known then).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        security: Security = None,
        certificate: Path | None = None,
        private_key: Path | None = None,
        users: dict[str, str] | None = None,
        time_scale: float = 1.0,
        update_interval_s: float = 0.2,
        source_lag_s: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if security is not None and (certificate is None or private_key is None):
            raise ValueError("security needs the server certificate and private_key")
        self.host = host
        self.port = port
        self.security = security
        self.certificate = certificate
        self.private_key = private_key
        self.users = dict(users or {})
        self.time_scale = time_scale
        self.update_interval_s = update_interval_s
        self.source_lag_s = source_lag_s
        self.rng = random.Random(seed)
        self.namespace_index = 2
        self.batch_counter = 0
        self.run_started_at = time.monotonic()
        self.run = FdgRun(self.rng)
        self.batch_id = self._next_batch_id()
        self.step_index = -1
        self.eos_sent = False
        self.stuck = False
        self.status_override: dict[str, ua.StatusCode] = {}
        self.events_sent: list[dict[str, Any]] = []
        self.reads_served = 0  # Read service requests from clients (a client's polling shows here)
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._task: asyncio.Task[None] | None = None
        self._event_gen: Any = None
        self._started_once = False

    # ---- addresses -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The endpoint URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}/isoedge/synthesis/"

    def node_id(self, channel: str) -> str:
        """Node id string of a channel's variable."""
        name = {c: n for c, n, _ in VARIABLES}[channel]
        return f"ns={self.namespace_index};s=Synthesis.{name}"

    @property
    def event_type_id(self) -> str:
        """Node id string of the batch event type."""
        return f"ns={self.namespace_index};s=IsoEdge.{EVENT_TYPE}"

    def device_config(self, device_id: str, **extra: object) -> dict[str, Any]:
        """A device configuration (as parsed TOML) that reads this simulator."""
        nodes = []
        for channel, _, unit in VARIABLES:
            node: dict[str, Any] = {"channel": channel, "node_id": self.node_id(channel)}
            if unit is not None:
                node["unit"] = unit
            if channel in _ACTIVITY_CHANNELS:
                node["nuclide"] = "F-18"
            nodes.append(node)
        config: dict[str, Any] = {
            "id": device_id,
            "type": "opcua",
            "url": self.url,
            "nodes": nodes,
            "events": {"event_type": self.event_type_id},
        }
        config.update(extra)
        return config

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> str:
        """Start the server (and the run sequencer); returns the endpoint URL."""
        if self._server is not None:
            return self.url
        if self.port == 0:
            self.port = _free_port(self.host)
        server = Server(user_manager=_Users(self.users))
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("IsoEdge simulated FDG synthesis module")
        await server.set_application_uri("urn:isoedge:simulator:synthesis")
        if self.security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            policy = (
                ua.SecurityPolicyType.Basic256Sha256_Sign
                if self.security == "Sign"
                else ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt
            )
            server.set_security_policy([policy])
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        self.namespace_index = await server.register_namespace(NAMESPACE)
        await self._build_address_space(server)
        server.subscribe_server_callback(CallbackType.PreRead, self._count_read)
        await server.start()
        self._server = server
        if not self._started_once:
            # The first run begins when the module is switched on; restarts continue it.
            self._started_once = True
            self.run_started_at = time.monotonic()
        await self._publish(initial=True)
        self._task = asyncio.create_task(self._sequencer(), name="opcua-sim-sequencer")
        return self.url

    def _count_read(self, event: Any, dispatcher: Any) -> None:  # noqa: ARG002 - asyncua's signature
        if event.is_external:
            self.reads_served += 1

    async def _build_address_space(self, server: Server) -> None:
        ns = self.namespace_index
        module = await server.nodes.objects.add_object(
            _node_id("Synthesis", ns), ua.QualifiedName("Synthesis", ns)
        )
        for channel, name, _ in VARIABLES:
            initial: Any = "" if channel in {"batch_id", "step"} else 0.0
            self._nodes[channel] = await module.add_variable(
                _node_id(f"Synthesis.{name}", ns), ua.QualifiedName(name, ns), initial
            )
        event_type = await server.nodes.base_event_type.add_object_type(
            _node_id(f"IsoEdge.{EVENT_TYPE}", ns), ua.QualifiedName(EVENT_TYPE, ns)
        )
        properties = (
            ("EventName", ua.VariantType.String),
            ("BatchId", ua.VariantType.String),
            ("Step", ua.VariantType.String),
            ("Activity", ua.VariantType.Double),
            ("EOSTime", ua.VariantType.DateTime),
            ("Yield", ua.VariantType.Double),
        )
        for prop, variant in properties:
            await event_type.add_property(
                _node_id(f"IsoEdge.{EVENT_TYPE}.{prop}", ns),
                ua.QualifiedName(prop, ns),
                ua.get_default_value(variant),
                varianttype=variant,
            )
        self._event_gen = await server.get_event_generator(event_type, ObjectIds.Server)

    async def stop(self) -> None:
        """Stop the sequencer and the server."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            # A module that stops ends every session. asyncua keeps a session that has
            # subscriptions alive after its connection drops (for a transfer to a new channel,
            # OPC UA Part 4 6.7), and Server.stop() does not end it: its timeout and publishing
            # tasks would run on until the session timeout. With its subscriptions deleted
            # first, each session closes together with its connection.
            subscriptions = server.iserver.subscription_service
            await subscriptions.delete_subscriptions(list(subscriptions.subscriptions))
            # A session whose connection was already gone (a client behind a cut cable) has
            # no connection left to close it: end it here, or its timeout task outlives us.
            orphans = list(server.iserver._external_sessions.values())  # noqa: SLF001 - asyncua has no public list
            for session in orphans:
                with contextlib.suppress(Exception):
                    await session.close_session(delete_subs=True)
            await server.stop()

    # ---- fault injection -------------------------------------------------------------
    async def set_down(self, down: bool) -> None:
        """Server down (sessions dropped, port closed) or back up on the same URL.

        A restarted server has new session ids, so clients must recreate their session and
        subscriptions, as after a real module reboot. The run continues where it was.
        """
        if down:
            await self.stop()
        else:
            await self.start()

    def set_status(self, channel: str, status: str | None) -> None:
        """Publish a channel with a status code by name, or back to Good with None.

        E.g. "BadSensorFailure" or "UncertainLastUsableValue".
        """
        if status is None:
            self.status_override.pop(channel, None)
        else:
            self.status_override[channel] = _status(getattr(StatusCodes, status))

    def set_stuck(self, stuck: bool = True) -> None:
        """Freeze every value (a hung PLC still answering)."""
        self.stuck = stuck

    def start_new_run(self) -> None:
        """Abort the idle time (or the run) and start a new batch now."""
        self.run_started_at = time.monotonic()
        self.run = FdgRun(self.rng)
        self.batch_id = self._next_batch_id()
        self.step_index = -1
        self.eos_sent = False

    # ---- the run ---------------------------------------------------------------------
    def _next_batch_id(self) -> str:
        self.batch_counter += 1
        return f"FDG-{datetime.now(UTC):%Y%m%d}-{self.batch_counter:03d}"

    def elapsed(self) -> float:
        """Simulated seconds since the current run started."""
        return (time.monotonic() - self.run_started_at) * self.time_scale

    async def _sequencer(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval_s)
            if self.stuck:
                continue
            t = self.elapsed()
            if t >= self.run.total_s + IDLE_S:
                self.start_new_run()
            await self._publish()

    async def _publish(self, *, initial: bool = False) -> None:
        run, t, g = self.run, self.elapsed(), self.rng.gauss
        running = t < run.total_s
        index, step, into = run.step_at(t)
        values: dict[str, Any] = {"batch_id": self.batch_id}
        if running:
            values["step"] = step.name
            # First-order approach to each step's set point.
            approach = 1 - math.exp(-into / 30.0)
            previous = FDG_STEPS[index - 1] if index > 0 else FDG_STEPS[0]
            temp = previous.temperature_c + (step.temperature_c - previous.temperature_c) * approach
            values["reactor_temperature"] = temp + g(0, 0.3)
            values["reactor_pressure"] = step.pressure_kpa + g(0, 1.0)
        else:
            values["step"] = "idle"
            values["reactor_temperature"] = 25.0 + g(0, 0.3)
            values["reactor_pressure"] = 101.3 + g(0, 0.5)
        values["supply_pressure"] = 350.0 + g(0, 2.0)
        for channel, activity in run.activities(min(t, run.total_s)).items():
            decay = math.exp(-run.decay_constant * max(0.0, t - run.total_s))
            values[channel] = max(0.0, activity * decay * (1 + g(0, 0.01)))
        eos_activity, yield_pct = run.eos()
        values["eos_activity"] = eos_activity if not running else 0.0
        values["yield_pct"] = yield_pct if not running else 0.0
        await self._write(values)
        if initial:
            return
        if running and index != self.step_index:
            if self.step_index == -1 and index == 0:
                await self._emit("RunStarted", step=step.name)
            self.step_index = index
            await self._emit("StepChanged", step=step.name)
        if not running and not self.eos_sent:
            self.eos_sent = True
            eos_time = datetime.now(UTC) - timedelta(seconds=(t - run.total_s) / self.time_scale)
            await self._emit(
                "EndOfSynthesis",
                step="end",
                activity=eos_activity,
                eos_time=eos_time,
                yield_pct=yield_pct,
            )

    async def _write(self, values: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        # The instrument sampled the value a little before the server stamped it.
        sampled = now - timedelta(seconds=self.source_lag_s)
        for channel, value in values.items():
            status = self.status_override.get(channel, _status(StatusCodes.Good))
            variant = (
                ua.Variant(value, ua.VariantType.String)
                if isinstance(value, str)
                else ua.Variant(float(value), ua.VariantType.Double)
            )
            data_value = ua.DataValue(
                variant,
                StatusCode=status,
                SourceTimestamp=cast("ua.DateTime", sampled),
                ServerTimestamp=cast("ua.DateTime", now),
            )
            await self._nodes[channel].write_value(data_value)

    async def _emit(
        self,
        name: str,
        *,
        step: str,
        activity: float | None = None,
        eos_time: datetime | None = None,
        yield_pct: float | None = None,
    ) -> None:
        event = self._event_gen.event
        event.EventName = name
        event.BatchId = self.batch_id
        event.Step = step
        # Fields that do not apply to this event are sent as null variants.
        event.Activity = activity
        event.EOSTime = eos_time
        event.Yield = yield_pct
        event.Severity = 500 if name == "EndOfSynthesis" else 200
        message = f"{self.batch_id} {name} {step}"
        await self._event_gen.trigger(message=message)
        self.events_sent.append(
            {"event": name, "batch_id": self.batch_id, "step": step, "activity": activity}
        )


def _node_id(name: str, namespace: int) -> ua.NodeId:
    return ua.NodeId(ua.String(name), ua.Int16(namespace))


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `isoedge simulate opcua`."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4840, help="TCP port (0: any free port)")
    parser.add_argument("--time-scale", type=float, default=10.0, help="simulated s per real s")
    parser.add_argument("--security", choices=["Sign", "SignAndEncrypt"], default=None)
    parser.add_argument("--certificate", help="server certificate (DER/PEM), with --security")
    parser.add_argument("--private-key", help="server private key (PEM), with --security")
    parser.add_argument("--user", action="append", default=[], help="USER:PASSWORD (repeatable)")


async def run(args: argparse.Namespace) -> None:
    """Serve until cancelled, printing the endpoint."""
    from pathlib import Path  # noqa: PLC0415 (only needed by the CLI)

    users = dict(u.split(":", 1) for u in args.user)
    sim = SynthesisModuleSimulator(
        host=args.host,
        port=args.port,
        security=args.security,
        certificate=Path(args.certificate) if args.certificate else None,
        private_key=Path(args.private_key) if args.private_key else None,
        users=users,
        time_scale=args.time_scale,
    )
    url = await sim.start()
    print(  # noqa: T201 (CLI output)
        f"opcua synthesis module listening on {url} "
        f"(security {args.security or 'None'}, time scale {args.time_scale}x, "
        f"events {sim.event_type_id})",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
