"""`isoedge demo`: every simulator, a private broker, the agent and a live console view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import time
import tomllib
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from agent.core.hosts import is_loopback
from agent.core.log import configure_logging
from agent.delivery.signing import PRIVATE_KEY_NAME, PUBLIC_JWK_NAME, generate_key_files
from agent.service.config import ConfigError, load_config, parse_config, resolve_paths
from agent.service.runtime import Agent
from agent.tools.demo_records import demo_elution
from agent.tools.mosquitto import Mosquitto
from agent.tools.sim_panel import DemoSimulatorPanel

log = structlog.get_logger("isoedge.demo")

StopFn = Callable[[], Awaitable[None]]
SimulatorStarter = Callable[[dict[str, Any], dict[str, Any]], Awaitable[StopFn]]
"""Start a simulator with `options`, point the device config dict at it, return its stop()."""

SIMULATOR_STARTERS: dict[str, SimulatorStarter] = {}

DEMO_USERS = (
    ("tech", "tech-demo", "technologist"),
    ("pharmacist", "pharm-demo", "radiopharmacist"),
    ("qa", "qa-demo", "qa"),
    ("qa2", "qa2-demo", "qa"),
)
"""The demo users of config/demo.toml (name, password, role): printed by the banner."""
DEMO_TECHNOLOGIST = ("tech", "tech-demo")
DOSECAL_SIMULATORS: dict[str, Any] = {}
SYNTHESIS_SIMULATORS: dict[str, Any] = {}
"""Synthesis module simulators the demo started, by device id (the demo batch restarts a run)."""
"""Dose calibrator simulators the demo started, by device id (the demo QC drives them)."""


def simulator_starter(kind: str) -> Callable[[SimulatorStarter], SimulatorStarter]:
    """Register how the demo starts simulator `kind` and wires a device to it."""

    def register(fn: SimulatorStarter) -> SimulatorStarter:
        SIMULATOR_STARTERS[kind] = fn
        return fn

    return register


def _demo_web(web: dict[str, Any], listen: str) -> dict[str, Any]:
    """The demo's [web] on `listen`; beyond loopback without TLS on purpose (demo users)."""
    web = {**web, "listen": listen}
    if not is_loopback(listen.rpartition(":")[0].strip("[]")) and "tls_cert" not in web:
        web["allow_insecure"] = True
        web["insecure_reason"] = "isoedge demo --web: demo users with published passwords"
    return web


def default_demo_config() -> Path:
    """config/demo.toml of this checkout (or of the current directory)."""
    here = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
    return here if here.exists() else Path("config/demo.toml")


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of `isoedge demo`."""
    if getattr(args, "fleet", False):
        from agent.tools.fleet_demo import run_fleet_demo  # noqa: PLC0415 - PostgreSQL only here

        return run_fleet_demo(args)
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    live_view = not args.plain and sys.stdout.isatty()
    if live_view:
        # Logs go to a file so they do not scribble over the live view.
        configure_logging("info", (state_dir / "demo.log").open("a", encoding="utf-8"), json=True)
    else:
        configure_logging("info")
    config_path = Path(args.config) if args.config else default_demo_config()
    try:
        load_config(config_path)  # validate the file as written before anything starts
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        return asyncio.run(_demo(args, config_path, state_dir, live_view=live_view))
    except KeyboardInterrupt:
        return 0


async def _demo(  # noqa: PLR0915 - simulators, broker, agent and the demo's tasks
    args: argparse.Namespace, config_path: Path, state_dir: Path, *, live_view: bool
) -> int:
    keys = state_dir / "keys"
    if not (keys / PRIVATE_KEY_NAME).exists():
        generate_key_files(keys)
    broker: Mosquitto | None = None
    broker_url = args.broker
    if broker_url is None:
        broker = Mosquitto(state_dir / "broker")
        await asyncio.to_thread(broker.start)
        broker_url = broker.url
    stops: list[StopFn] = []
    try:
        text = await asyncio.to_thread(config_path.read_text, encoding="utf-8")
        data = tomllib.loads(text)
        data["agent"]["state_dir"] = str(state_dir / "state")
        data.setdefault("broker", {})["url"] = broker_url
        data.setdefault("signing", {})["key_file"] = str(keys / PRIVATE_KEY_NAME)
        data["web"] = _demo_web(data.get("web", {}), args.web)
        devices = {d["id"]: d for d in data.get("devices", [])}
        for sim in data.get("demo", {}).get("simulators", []):
            starter = SIMULATOR_STARTERS.get(sim["kind"])
            if starter is None:
                log.warning("no demo starter for simulator kind", kind=sim["kind"])
                continue
            stops.append(await starter(sim.get("options", {}), devices[sim["device"]]))
        _demo_qc_history(data)
        config = resolve_paths(parse_config(data, str(config_path)), config_path.parent)
        agent = _demo_agent(config, config_path)
        header = _print_banner(config, broker_url, keys, args, state_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with asyncio.TaskGroup() as group:
            runner = group.create_task(agent.run(stop), name="agent")
            view = group.create_task(_live_view(agent, live_view, header), name="live-view")
            qc_task = group.create_task(_demo_calibrator_day(agent), name="demo-qc")
            batch_task = group.create_task(_demo_batch(agent), name="demo-batch")
            timer = None
            if args.duration is not None:
                timer = group.create_task(_stop_after(stop, args.duration), name="demo-timer")
            await stop.wait()
            qc_task.cancel()
            batch_task.cancel()
            if timer is not None:
                timer.cancel()  # Ctrl-C before the duration: the group must not wait for it
            await runner
            view.cancel()
        _print_summary(agent)
    finally:
        for stop_fn in reversed(stops):
            with contextlib.suppress(Exception):
                await stop_fn()
        if broker is not None:
            broker.stop()
    return 0


def _demo_agent(config: Any, config_path: Path) -> Agent:
    """The agent of the demo: its simulated calibrators under the console's hands."""
    agent = Agent(config, config_path=config_path)
    agent.simulator_panel = DemoSimulatorPanel(agent.qa_desk, DOSECAL_SIMULATORS)
    return agent


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()


def _print_banner(
    config: Any, broker_url: str, keys: Path, args: argparse.Namespace, state_dir: Path
) -> list[str]:
    base = f"{config.broker.topic_prefix}/{config.agent.site}/{config.agent.id}"
    lines = [
        "IsoEdge demo",
        f"  broker        {broker_url}",
        (
            f"  topics        {base}/readings/<device>  {base}/alerts  {base}/audit  {base}/qc"
            f"  {base}/status"
        ),
        f"  web console   http://{args.web}/",
        f"  public key    {keys / PUBLIC_JWK_NAME}",
        f"  state         {state_dir}",
        (
            f"  verify        isoedge verify --broker {broker_url} --key {keys / PUBLIC_JWK_NAME}"
            " --duration 10"
        ),
        (
            f"  subscribe     mosquitto_sub -L {broker_url}/{base}/# -v"
            if shutil.which("mosquitto_sub")
            else "  subscribe     (install mosquitto-clients for mosquitto_sub)"
        ),
        "  stop          Ctrl-C" + (f" (or after {args.duration:g} s)" if args.duration else ""),
    ]
    if config.web.users:
        known = {u.name for u in config.web.users}
        lines.append("  demo users    (console login and electronic signatures; demo only)")
        lines += [
            f"    {name:<12}password {password:<12} role {role}"
            for name, password, role in DEMO_USERS
            if name in known
        ]
    if config.records.synthesis:
        lines.append(
            "  batch         at the simulated synthesis run's end: the [18F]FDG batch record is"
            " assembled, signed, released by the demo QA officer and one dose dispensed;"
        )
        lines.append(
            "                then: isoedge report batch -c config/demo.toml --state-dir "
            f"{state_dir} --out batch.pdf"
        )
    if config.qc.calibrators:
        lines.append(
            "  QC            the demo technologist performs and signs the daily background and"
            " constancy tests now;"
        )
        lines.append(
            f"                then: isoedge report qc -c config/demo.toml --state-dir {state_dir}"
            " --out qc.pdf"
        )
    lines.append("")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return [
        f"broker {broker_url}   web http://{args.web}/   public key {keys / PUBLIC_JWK_NAME}",
        f"topics {base}/#   stop: Ctrl-C",
        "",
    ]


def _format_value(item: dict[str, Any]) -> str:
    value = item.get("value")
    text = "—" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
    unit = item.get("unit") or ""
    extra = ""
    if item.get("nuclide"):
        extra += f" {item['nuclide']}"
    if item.get("value_at_ref") is not None:
        extra += f"  ({item['value_at_ref']:.4g} {unit} at {str(item.get('ref_time'))[11:16]}Z)"
    if item.get("quality") != "good":
        extra += f" [{item.get('quality')}: {item.get('reason', '')}]"
    return f"{text} {unit}{extra}"


def render(agent: Agent, header: list[str] | None = None) -> str:
    """One frame of the live view (`header`: where to look, repeated on every frame)."""
    live = agent.live
    rows = [
        *(header or []),
        (
            f"IsoEdge demo  {time.strftime('%H:%M:%S')}   broker: {agent.publisher.state.value}"
            f"   acquired {live.counters['readings_acquired']}"
            f"   published {agent.publisher.published_items}"
            f"   last seq {agent.outbox.last_seq}"
        ),
        "",
        f"{'DEVICE':<16}{'STATE':<12}{'CHANNEL':<22}VALUE",
    ]
    for device_id, health in sorted(agent.live.devices.items()):
        channels = sorted((c, item) for (d, c), item in live.latest.items() if d == device_id)
        if not channels:
            rows.append(f"{device_id:<16}{health.state:<12}{'':<22}{health.detail or ''}")
        for index, (channel, item) in enumerate(channels[:8]):
            first = index == 0
            rows.append(
                f"{device_id if first else '':<16}{health.state if first else '':<12}"
                f"{channel:<22}{_format_value(item)}"
            )
    calibrators = agent.qa_desk.calibrators_status()
    if calibrators:
        rows += ["", "CALIBRATOR QC"]
        rows += [
            f"  {device:<14}{state['release'].upper():<10} since {state['since'][:19]}Z"
            f"  {state['reason'][:70]}"
            for device, state in sorted(calibrators.items())
        ]
    alerts = [e for e in live.recent_events if e.get("stream") == "alerts"][-6:]
    rows += ["", "RECENT ALERT EVENTS" if alerts else "no alerts"]
    rows += [
        f"  {a.get('t', '')[11:19]} {a.get('event', ''):<20} {a.get('rule', '')}"
        f" {a.get('device', '') or ''} {a.get('severity', '')}"
        for a in alerts
    ]
    return "\n".join(rows)


async def _live_view(agent: Agent, live_view: bool, header: list[str]) -> None:
    await agent.started.wait()
    while True:
        if live_view:
            sys.stdout.write("\x1b[H\x1b[2J" + render(agent, header) + "\n")
        else:
            counters = agent.live.counters
            sys.stdout.write(
                f"[demo] broker={agent.publisher.state.value}"
                f" acquired={counters['readings_acquired']}"
                f" published={agent.publisher.published_items} seq={agent.outbox.last_seq}"
                f" devices={ {d: h.state for d, h in agent.live.devices.items()} }\n"
            )
        sys.stdout.flush()
        await asyncio.sleep(1.0 if live_view else 5.0)


def _print_summary(agent: Agent) -> None:
    sys.stdout.write(
        f"\ndemo stopped: {agent.live.counters['readings_acquired']} readings acquired,"
        f" {agent.publisher.published_items} published, last seq {agent.outbox.last_seq}\n"
    )
    sys.stdout.flush()


@simulator_starter("modbus")
async def _start_modbus(options: dict[str, Any], device: dict[str, Any]) -> StopFn:
    from simulators.modbus import ModbusSimulator  # noqa: PLC0415 - only the demo needs it

    simulator = ModbusSimulator(**options)
    await simulator.start()
    wiring = simulator.device_config(device["id"], unit_id=device.get("unit_id"))
    for key in ("type", "host", "port"):
        if key in wiring:
            device[key] = wiring[key]
    if wiring["type"] == "modbus_tcp":
        device.pop("baudrate", None)
        device.pop("parity", None)
    else:
        device.pop("host", None)
    device.setdefault("points", wiring["points"])
    return simulator.stop


@simulator_starter("opcua")
async def _start_opcua(options: dict[str, Any], device: dict[str, Any]) -> StopFn:
    from simulators.opcua import SynthesisModuleSimulator  # noqa: PLC0415

    simulator = SynthesisModuleSimulator(**options)
    await simulator.start()
    wiring = simulator.device_config(device["id"])
    # Node ids carry the namespace index the server assigned at start-up.
    device["url"] = wiring["url"]
    device["nodes"] = wiring["nodes"]
    device["events"] = {**device.get("events", {}), **wiring["events"]}
    SYNTHESIS_SIMULATORS[device["id"]] = simulator
    return simulator.stop


@simulator_starter("dosecal")
async def _start_dosecal(options: dict[str, Any], device: dict[str, Any]) -> StopFn:
    from simulators.dosecal import DoseCalibratorSimulator  # noqa: PLC0415

    # The model is the device's driver type unless the demo names another one; the
    # simulator finds its profile through the driver registry.
    simulator = DoseCalibratorSimulator(**{"model": device["type"], **options})
    device["port"] = await simulator.start()  # a pty path or socket://HOST:PORT
    DOSECAL_SIMULATORS[device["id"]] = simulator
    return simulator.stop


def _demo_qc_history(data: dict[str, Any]) -> None:
    """A demo has no QC history: its periodic tests count as done yesterday (not overdue)."""
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for calibrator in data.get("qc", {}).get("calibrators", []):
        for test in ("accuracy", "linearity", "geometry"):
            if isinstance(calibrator.get(test), dict):
                calibrator[test].setdefault("last_performed", yesterday)


_HANDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def calibrator_in_hands() -> asyncio.Lock:
    """One demo operator at the simulated calibrator at a time (QC and elution, batch, dose)."""
    return _HANDS.setdefault(asyncio.get_running_loop(), asyncio.Lock())


async def _demo_calibrator_day(agent: Agent) -> None:
    """The daily QC, then one Tc-99m generator elution, signed (agent/tools/demo_records)."""
    async with calibrator_in_hands():
        await _demo_daily_qc(agent)
        await demo_elution(agent, DOSECAL_SIMULATORS, DEMO_TECHNOLOGIST)


async def _demo_daily_qc(agent: Agent) -> None:
    """At start, as the demo technologist: the daily background and constancy tests, signed."""
    await agent.started.wait()
    manager = agent.qa_desk
    name, password = DEMO_TECHNOLOGIST
    if name not in manager.signatures.users:
        log.warning("demo QC skipped: no demo technologist in the configuration", user=name)
        return
    for device in manager.devices:
        simulator = DOSECAL_SIMULATORS.get(device)
        if simulator is None:
            continue
        sample = (simulator.chamber.sample_nuclide, simulator.chamber.true_activity_mbq())
        try:
            for test in ("background", "constancy"):
                if manager.programme(device).test(test) is None:
                    continue
                run = manager.start_test(device, test, by=name)
                async with asyncio.timeout(60):
                    await operate_simulator(manager, simulator, run)
                record = await manager.sign_run(run.id, name, password)
                log.info("demo QC test signed", device=device, test=test, result=record["result"])
        except Exception:
            log.exception("demo QC test failed", device=device)
        finally:
            simulator.load_sample(*sample)  # the F-18 sample back in the chamber


DEMO_QA = ("qa", "qa-demo")
ASSAY_TIME_SCALE = 60.0
"""The demo's product vial decays 60 times faster: its 10-minute half-life assay takes 10 s."""
DEMO_TESTS: dict[str, dict[str, Any]] = {
    "appearance": {"value": "clear, colourless", "result": "pass"},
    "ph": {"value": 5.5},
    "rcp": {"value": 98.6},
    "residual_solvents": {"value": 120.0},
    "endotoxin": {"value": 2.0},
    "filter_integrity": {"value": "bubble point 3.6 bar", "result": "pass"},
    "sterility": {"result": "pending"},
}
"""Release test results of the demo batch, as an analyst types them (sterility is pending)."""


async def _until(changed: asyncio.Event, predicate: Callable[[], Any], timeout: float) -> Any:
    """Wait (event-driven) until `predicate()` is truthy; its value."""
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            changed.clear()
            await changed.wait()
    return value


async def _demo_batch(agent: Agent) -> None:
    """One [18F]FDG batch: assembled from the simulated run, signed, released, one dose."""
    await agent.started.wait()
    records = agent.records
    modules = records.desk.config.synthesis
    device = modules[0].calibrator if modules else None
    simulator = DOSECAL_SIMULATORS.get(device or "")
    known = {u.name for u in agent.config.web.users}
    if device is None or simulator is None or not {DEMO_TECHNOLOGIST[0], DEMO_QA[0]} <= known:
        log.info("demo batch skipped: no synthesis module, simulated calibrator or demo users")
        return
    changed = asyncio.Event()
    records.batches.on_change = records.after_reading = changed.set
    try:
        # The simulated module started its run before the agent connected: once its events
        # arrive, a new run begins so that the demo's batch is seen from its RunStarted.
        await _until(changed, records.batches.runs, 120)
        synthesis = SYNTHESIS_SIMULATORS.get(modules[0].device)
        if synthesis is not None:
            synthesis.start_new_run()
        run = await _until(changed, lambda: next((r for r in records.batches.runs()
                                                  if r.state == "eos" and r.start_seen), None),
                           900)  # fmt: skip
        log.info("demo batch: end of synthesis", batch=run.batch_id)
        # The demo's daily QC releases the calibrator first.
        await _until(changed, lambda: agent._calibrator_release(device) == "released", 300)  # noqa: SLF001
        async with calibrator_in_hands():  # after the QC and the elution on it
            batch = await _demo_batch_record(agent, run, simulator, changed)
        qa, qa_password = DEMO_QA
        decision = "released" if batch["result"] == "pass" else "rejected"
        await records.release.decide(run.batch_id, decision, name=qa, password=qa_password,
                                     comment="demo release")  # fmt: skip
        log.info("demo batch decided", batch=run.batch_id, decision=decision)
        if decision == "released":
            async with calibrator_in_hands():
                await _demo_dose(agent, run.batch_id, device, simulator, changed)
    except Exception:
        log.exception("demo batch failed")
    finally:
        records.batches.on_change = records.after_reading = None


async def _demo_batch_record(
    agent: Agent, run: Any, simulator: Any, changed: asyncio.Event
) -> dict[str, Any]:
    """The product vial assayed (half-life fitted), the release tests typed, signed."""
    records = agent.records
    simulator.chamber.time_scale = ASSAY_TIME_SCALE
    simulator.load_sample("F-18", (run.eos_activity_mbq or 20_000.0) * 0.02)
    simulator.set_nuclide("F-18")
    await asyncio.sleep(2.0)  # the operator waits for the reading to settle on the new vial
    records.batches.start_assay(run.batch_id, time_scale=ASSAY_TIME_SCALE)
    await _until(changed, lambda: run.state != "assaying", 120)
    tech, tech_password = DEMO_TECHNOLOGIST
    batch: dict[str, Any] = await records.batches.sign(run.batch_id, DEMO_TESTS, tech,
                                                       tech_password)  # fmt: skip
    log.info("demo batch signed", batch=run.batch_id, result=batch["result"])
    return batch


async def _demo_dose(
    agent: Agent, batch_id: str, device: str, simulator: Any, changed: asyncio.Event
) -> None:
    """A prescription, the syringe measured in real time on the calibrator, dispensed."""
    records = agent.records
    tech, tech_password = DEMO_TECHNOLOGIST
    prescribed, scheduled = 250.0, datetime.now(UTC) + timedelta(minutes=30)
    rx_id = f"RX-{batch_id}"
    agent.dosage.add_prescription(rx_id, "F-18", prescribed, "MBq", scheduled, actor=tech,
                              note="demo dose")  # fmt: skip
    simulator.chamber.time_scale = 1.0
    simulator.load_sample("F-18", prescribed * 2 ** (30 * 60 / agent.nuclides.half_life_s("F-18")))
    fresh = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    await _until(changed, lambda: str(records.dispensing.latest.get(device, {}).get("t", ""))
                 > fresh.replace("+00:00", "Z"), 60)  # fmt: skip
    dose = await records.dispensing.dispense(
        batch_id, prescription_id=rx_id, patient_id="DEMO-000123", volume_ml=0.8,
        device=device, name=tech, password=tech_password,
    )  # fmt: skip
    log.info("demo dose dispensed", batch=batch_id, record=dose["id"],
             deviation_pct=dose["deviation_pct"])  # fmt: skip


async def operate_simulator(manager: Any, simulator: Any, run: Any) -> None:
    """Follow a guided run's steps on a simulated calibrator, as its operator would."""
    placed: str | None = None
    while run.state == "running":
        step = run.current
        changed = False
        if step is not None and step.kind == "background" and simulator.chamber.a0_mbq > 0:
            simulator.empty()
            changed = True
        elif step is not None and step.kind == "source" and step.source is not None:
            source = manager.programme(run.device).source(step.source)
            if placed != step.source:
                activity, _ = manager.expected_activity(run.device, source.id)
                simulator.place_source(source.nuclide, activity)
                placed, changed = step.source, True
            if simulator.chamber.selected_nuclide != step.setting:
                simulator.set_nuclide(step.setting or source.nuclide)
                changed = True
        if step is not None and not changed and step.waiting_for_operator:
            # The chamber is as the step asks: the operator's "— measure".
            manager.confirm_step(run.id, step.index, by=run.started_by)
        await asyncio.sleep(0.2)


__all__ = ["SIMULATOR_STARTERS", "render", "run_demo", "simulator_starter"]
