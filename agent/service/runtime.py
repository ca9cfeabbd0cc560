"""The running agent: owns the outbox, publisher, device supervisors and their tasks."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from agent.acquisition.pipeline import Pipeline
from agent.acquisition.state import LiveState
from agent.acquisition.supervisor import DeviceSupervisor, pauses_under
from agent.console.backend import AgentIdentity, DeliveryView, DeviceView
from agent.core.messages import msg
from agent.core.reading import rfc3339_now
from agent.core.states import LINK_STATES
from agent.core.tasks import RECANCEL_S, cancel_and_wait
from agent.core.version import __version__
from agent.delivery.outbox import Outbox, OutboxError, OutboxStats
from agent.delivery.publish import LinkState, Publisher
from agent.delivery.replay import ReplayGate
from agent.delivery.signing import Signer, load_public_jwks
from agent.delivery.topics import Topics
from agent.physics.nuclides import NuclideTable
from agent.qc.alerts import Alert, AlertManager
from agent.qc.audit import AuditLog
from agent.qc.desk import QADesk, status_of
from agent.qc.dosage import DosageDesk
from agent.qc.engine import RuleEngine
from agent.qc.prescriptions import PrescriptionStore
from agent.qc.records import QCRecordStore
from agent.qc.signatures import SignatureService
from agent.records.desk import RecordsDesk
from agent.records.generators import GeneratorRecords, ReadingFanout
from agent.records.service import Records
from agent.service.clock import ClockMonitor
from agent.service.config import Config
from agent.service.migrate import import_legacy_stores
from agent.service.reload import ReloadResult, apply_reload, serve_reload_requests
from agent.service.sdnotify import SystemdNotifier
from agent.state.damage import DamagedDatabaseError, DamageReport, check_database, move_aside
from agent.state.database import StateDatabase
from agent.state.diskspace import SpaceState
from agent.state.pressure import Pressure

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from agent.console.app import WebConsole
    from agent.console.backend import SimulatorPanel
    from drivers.base import DeviceConfigBase

log = structlog.get_logger("isoedge.agent")

SHUTDOWN_BUDGET_S = 4.5  # SIGTERM → exit within 5 s (systemd's TimeoutStopSec is larger)


class Agent:
    """One IsoEdge agent. `await agent.run(stop)` runs until `stop` is set."""

    @staticmethod
    def _check_state_databases(config: Config, state_dir: Path) -> list[DamageReport]:
        """Every state database (and the legacy ones still to import), checked before any opens.

        A refused start changes nothing. The outbox moves its own aside, on its thread; the
        legacy side databases moved aside here are returned to be reported once running.
        """
        moved: list[DamageReport] = []
        for side in (config.outbox_path, state_dir / "audit.db", state_dir / "alerts.db"):
            reason = check_database(side)
            if reason is None:
                continue
            if config.outbox.on_damaged != "move_aside":
                raise DamagedDatabaseError(side, reason)
            if side != config.outbox_path:
                moved.append(move_aside(side, reason))
        return moved

    def __init__(self, config: Config, *, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.topics = Topics(config.broker.topic_prefix, config.agent.site, config.agent.id)
        self.signer = Signer.load(config.signing.key_file)
        self.previous_kids = set(load_public_jwks(list(config.signing.previous_public_keys)))
        self.live = LiveState()
        # The state database (one SQLite file, one owner thread): the outbox's rows and the
        # writes of QC, alerts, audit, records and prescriptions, committed together.
        self.state = StateDatabase(
            config.outbox_path,
            fsync=config.outbox.fsync,
            min_free_bytes=int(config.outbox.min_free_mb * 1024 * 1024),
            reserve_file_bytes=int(config.outbox.reserve_file_mb * 1024 * 1024),
            on_damaged=config.outbox.on_damaged,
        )
        self.outbox = Outbox(
            config.outbox_path,
            self.signer,
            site=config.agent.site,
            agent=config.agent.id,
            topic_for=self.topics.for_stream,
            quota_bytes=int(config.outbox.quota_mb * 1024 * 1024),
            fsync=config.outbox.fsync,
            batch_max_items=config.outbox.batch_max_items,
            batch_max_age_ms=config.outbox.batch_max_age_ms,
            max_commit_delay_ms=config.outbox.max_commit_delay_ms,
            commit_interval_ms=config.outbox.commit_interval_ms,
            archive_days=config.outbox.archive_days,
            archive_bytes=int(config.outbox.archive_mb * 1024 * 1024),
            state=self.state,
        )
        devices = {d.id: d for d in config.devices if d.enabled}
        # A bad nuclide override is a configuration error: raised here, before anything runs.
        self.nuclides = NuclideTable(config.nuclides)
        self.pipeline = Pipeline(
            self.outbox, self.live, devices, half_life=self.nuclides.half_life_s
        )
        state_dir = config.agent.state_dir
        # Started on a (nearly) full disk: the reserve file makes room to open the database.
        self.state.space.release_if_low()
        self.side_damage = self._check_state_databases(config, state_dir)
        # Alerts and the audit trail are tables of the state database, written by its one
        # owner thread together with their stream items (docs/development.md).
        self.audit = AuditLog(self.state, notify=self.live.on_event)
        self.alerts = AlertManager(self.state, self.audit, notify=self.live.on_event)
        self._build_qc(config, devices)
        # The radiopharmacy's records (issue 25): batches, releases, doses... on the same database.
        self.records = self._records(config)
        self.pipeline.rules = self.rules
        self.pipeline.qa_desk = self._generator_records(config)
        self.publisher = Publisher(
            config.broker,
            self.outbox,
            self.topics,
            client_id=config.broker.client_id or f"isoedge-{config.agent.site}-{config.agent.id}",
            status=self.status_document,
            replay_per_s=config.outbox.replay_per_s,
            replay=ReplayGate(config.replay, site=config.agent.site, agent=config.agent.id),
        )
        self.supervisors = {
            d.id: DeviceSupervisor(d, self.pipeline, self.live, self._on_device_state)
            for d in devices.values()
        }
        self.outbox.on_quota_change = self._on_quota_change
        self.state.on_disk_change = self._on_disk_change
        # `isoedge demo` only: the simulated calibrators under the console's hands.
        self.simulator_panel: SimulatorPanel | None = None
        self.web: WebConsole | None = None
        if config.web.enabled:
            # aiohttp loads only when the console is wanted.
            from agent.console.app import WebConsole  # noqa: PLC0415

            self.web = WebConsole(RuntimeConsoleBackend(self), config.web)
        self.started = asyncio.Event()
        self.started_at = time.time()
        self.exit_code = 0
        self._stop = asyncio.Event()
        # Service hooks: systemd notifications, wall-clock supervision, SIGHUP reload.
        self.notifier = SystemdNotifier()
        self.clock = ClockMonitor(
            config.clock,
            on_event=self._record_clock_event,
            on_trust=self._set_clock_trusted,
        )
        self._reload_requested = asyncio.Event()
        # Sections changed by a reload that apply only after a restart (status line, log).
        self.restart_required: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._group: asyncio.TaskGroup | None = None
        self._device_tasks: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ status
    def _generator_records(self, config: Config) -> ReadingFanout:
        """The pipeline's one reading hook: the QC programme, then every record desk.

        Elutions, waste and shipments are built here; batches and doses are `self.records`.
        """
        self.generator_records = GeneratorRecords(
            config.records, self.records.desk, alerts=self.alerts, nuclides=self.nuclides,
            calibrators=[(c.device, c.channel) for c in config.qc.calibrators],
        )  # fmt: skip
        return self.generator_records.fanout(self.qa_desk, self.records)

    def status_document(self, state: str) -> dict[str, Any]:
        """Retained status of docs/contract.md §2."""
        return {
            "state": state,
            "site": self.config.agent.site,
            "agent": self.config.agent.id,
            "version": __version__,
            "kid": self.signer.kid,
            "previous_kids": sorted(self.previous_kids),
            "host": socket.gethostname(),
            "t": rfc3339_now(),
            "devices": {
                device_id: {"state": sup.state.value, "detail": sup.detail}
                for device_id, sup in self.supervisors.items()
            },
            "calibrators": status_of(self.qa_desk),
            "disk": self.state.space.current.as_dict(),
        }

    def _records(self, config: Config) -> Records:
        """The records desk and its kinds; readings reach them through the pipeline's hook."""
        desk = RecordsDesk(
            config.records, site=config.agent.site, zone=config.qc.zone, state=self.state,
            audit=self.audit, users=config.web.users, notify=self.live.on_event,
        )  # fmt: skip
        return Records(
            desk, alerts=self.alerts, nuclides=self.nuclides,
            prescription=self.dosage.prescriptions.get,
            calibrator_release=self._calibrator_release,
            calibrators=[c.device for c in config.qc.calibrators],
        )  # fmt: skip

    def _calibrator_release(self, device: str) -> str | None:
        """`released` / `on_hold` of a calibrator with a QC programme (None: no programme)."""
        state = self.qa_desk.calibrators_status().get(device)
        return None if state is None else state.get("release")

    def _on_release_change(self) -> None:
        """A calibrator was released or put on hold: re-publish the retained status.

        May be called from a worker thread (a signature checked off the event loop).
        """
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.publisher.mark_status_dirty()
        else:
            loop.call_soon_threadsafe(self.publisher.mark_status_dirty)

    def _on_device_state(self, device: str, state: str, detail: str | None) -> None:
        self.publisher.mark_status_dirty()
        if state in LINK_STATES:
            self.rules.on_device_state(device, state, detail)

    def _on_quota_change(self, state: Pressure, used_bytes: int) -> None:
        """Outbox quota policy: never drop; pause low-priority devices, then all, and alert."""
        quota = int(self.config.outbox.quota_mb * 1024 * 1024)
        self._apply_pressure()
        if state == Pressure.OK:
            log.info("outbox below quota", used_bytes=used_bytes)
        else:
            log.error("outbox quota pressure", state=state, used_bytes=used_bytes, quota=quota)
        paused = sorted(d for d, s in self.supervisors.items() if s.paused)
        if state == Pressure.OK:
            self.alerts.clear_alert(
                "outbox.quota", None, None, msg("outbox.quota.ok", used=used_bytes)
            )
        else:
            self.alerts.raise_alert(
                "outbox.quota",
                None,
                None,
                "critical" if state == Pressure.FULL else "alarm",
                msg("outbox.quota", state=str(state), used=used_bytes, quota=quota,
                    paused=", ".join(paused) if paused else msg("none")),
                float(used_bytes),
                details={"state": state, "quota_bytes": quota, "paused_devices": paused},
            )

    def _on_disk_change(self, space: SpaceState) -> None:
        """Free-space policy (outbox.min_free_mb, disk full): as for the quota, never drop."""
        self._apply_pressure()
        self.publisher.mark_status_dirty()
        paused = sorted(d for d, s in self.supervisors.items() if s.paused)
        where = str(self.config.agent.state_dir)
        if space.state == Pressure.OK:
            log.info("disk space back above the reserve", free_bytes=space.free_bytes,
                     directory=where)
            self.alerts.clear_alert(
                "outbox.disk", None, None,
                msg("outbox.disk.ok", left=space.headroom_bytes, directory=where),
            )
            return
        cause = (msg("outbox.disk.full") if space.write_failed
                 else msg("outbox.disk.state", state=str(space.state)))
        log.error("disk space pressure" if space.state == Pressure.HIGH else "disk full",
                  state=space.state, free_bytes=space.free_bytes,
                  reusable_bytes=space.reusable_bytes, min_free_bytes=space.min_free_bytes,
                  directory=where, paused=paused)
        self.alerts.raise_alert(
            "outbox.disk", None, None,
            "critical" if space.state == Pressure.FULL else "alarm",
            msg("outbox.disk", cause=cause, left=space.headroom_bytes, directory=where,
                reserve=space.min_free_bytes, paused=", ".join(paused) if paused else msg("none")),
            float(space.headroom_bytes),
            details={**space.as_dict(), "paused_devices": paused, "directory": where},
        )

    def _pressure(self) -> Pressure:
        """The worse of the quota and the free-space state."""
        return Pressure.worst(self.outbox.quota_state, self.state.disk_state)

    def _pressure_reason(self) -> str:
        parts = []
        if self.outbox.quota_state != Pressure.OK:
            parts.append(f"outbox quota {self.outbox.quota_state}")
        if self.state.disk_state != Pressure.OK:
            parts.append(f"disk {self.state.disk_state}")
        return ", ".join(parts)

    def _apply_pressure(self) -> None:
        """Pause or resume every device by the priority policy for the current pressure."""
        state = self._pressure()
        reason = self._pressure_reason()
        for sup in self.supervisors.values():
            if self._pauses_under_quota(sup, state):
                sup.pause(reason)
            else:
                sup.resume()
        if state == Pressure.OK:
            log.info("outbox pressure gone; acquisition resumed")

    # --------------------------------------------------------------- lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, run until `stop` is set, then shut down in order."""
        self._stop = stop
        self._loop = asyncio.get_running_loop()
        self._lock = lock_state_dir(self.config.agent.state_dir)
        try:
            await self._run(stop)
        except OutboxError:
            if self.state.failure is None:
                raise
            # The state database failed while the agent was still starting (or stopping).
            log.critical("outbox failed; stopping the agent", error=repr(self.state.failure))
            self.exit_code = 1
        finally:
            self._lock.close()
            log.info("agent stopped")

    async def _run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            # Closed in reverse order whatever fails: the console first, the state database
            # last (a console that fails to stop must not keep the outbox from flushing). The
            # outbox opens it: it is the host whose rows its commits hold.
            await self.outbox.start()
            stack.push_async_callback(self.outbox.close)
            await asyncio.to_thread(restrict_state_files, self.config.agent.state_dir)
            await self.state.run(lambda db: import_legacy_stores(db, self.config.agent.state_dir))
            await self.audit.open()
            await self.alerts.open()
            await self.dosage.open()  # stored prescriptions
            await self.qa_desk.open()  # QC records, release states
            await self.records.open()  # batch, release, dispensing... records
            await self.generator_records.open()  # the generators' last elutions
            self._report_damage()
            stack.push_async_callback(self._stop_web)
            await self._start_web()
            await self._serve(stop)

    async def _stop_web(self) -> None:
        if self.web is not None:
            await self.web.stop()

    async def _serve(self, stop: asyncio.Event) -> None:
        self.audit.record(
            "config.loaded",
            actor="isoedge",
            subject=str(self.config_path) if self.config_path else "<memory>",
            new={"devices": sorted(self.supervisors), "rules": [r.name for r in self.config.rules]},
            kid=self.signer.kid,
            version=__version__,
        )
        await self._announce_key()
        self.clock.start()
        log.info(
            "agent starting",
            site=self.config.agent.site,
            agent=self.config.agent.id,
            devices=len(self.supervisors),
            kid=self.signer.kid,
            broker=self.config.broker.url,
        )
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                publisher_task = group.create_task(self.publisher.run(), name="publisher")
                for sup in list(self.supervisors.values()):
                    self.start_device(sup.config)
                service_tasks = [
                    group.create_task(self.clock.run(), name="clock"),
                    group.create_task(self.notifier.run_watchdog(self.service_status),
                                      name="watchdog"),
                    group.create_task(serve_reload_requests(self, self._reload_requested),
                                      name="reload"),
                    group.create_task(self._tick(), name="qc-tick"),
                    group.create_task(self._watch_outbox(), name="outbox-watch"),
                ]
                self.started.set()
                self.notifier.ready(self.service_status())
                await stop.wait()
                self.notifier.stopping()
                await cancel_and_wait(service_tasks)
                await self._shutdown(publisher_task, list(self._device_tasks.values()))
        finally:
            self._group = None
            self.notifier.close()

    def _report_damage(self) -> None:
        """A damaged database moved aside at start: an alert and an audit record say so."""
        for damage in [*self.side_damage, self.state.damage]:
            if damage is not None:
                self._report_one_damage(damage)

    def _report_one_damage(self, damage: DamageReport) -> None:
        continued = (
            msg("state.damaged.continued", seq=damage.continued_seq)
            if damage.continued_seq is not None
            else msg("state.damaged.restarted")
        )
        why = msg("state.damaged.audit", continued=continued)
        self.audit.record(
            "state.damaged",
            actor="isoedge",
            subject=str(damage.path),
            old={"path": str(damage.path), "reason": damage.reason},
            new={"moved_to": str(damage.moved_to), "continued_seq": damage.continued_seq},
            reason=why.code,
            reason_params=why.params,
        )
        self.alerts.raise_alert(
            "state.damaged", None, None, "critical",
            msg("state.damaged", path=str(damage.path), reason=damage.reason,
                moved_to=str(damage.moved_to), continued=continued),
            None,
            details={"path": str(damage.path), "moved_to": str(damage.moved_to)},
        )

    async def _announce_key(self) -> None:
        """Write `key.rotated` to the audit trail when the signing key changed since last run.

        Both public keys are in the event, so a consumer holding the old key learns the new
        one from a record in the same verified, hash-chained stream.
        """
        current = json.dumps(self.signer.jwk, sort_keys=True)
        previous = await self.outbox.get_meta("signing_jwk")
        if previous == current:
            return
        if previous is not None:
            old = json.loads(previous)
            self.audit.record(
                "key.rotated",
                actor="isoedge",
                subject="signing key",
                old={"kid": old.get("kid"), "jwk": old},
                new={"kid": self.signer.kid, "jwk": self.signer.jwk},
                reason="the configured signing key differs from the one used last",
                previous_kids=sorted(self.previous_kids),
            )
            log.warning("signing key rotated", old_kid=old.get("kid"), new_kid=self.signer.kid)
        await self.outbox.set_meta("signing_jwk", current)

    # ------------------------------------------------- service hooks (issue 8)
    def _record_clock_event(self, name: str, fields: dict[str, Any]) -> None:
        # Clock events belong to the audit trail (stored locally and mirrored to MQTT).
        self.audit.record(name, actor="isoedge", subject="clock", **fields)

    def _set_clock_trusted(self, trusted: bool) -> None:
        self.pipeline.clock_trusted = trusted
        self.publisher.mark_status_dirty()

    def _build_qc(self, config: Config, devices: Mapping[str, DeviceConfigBase]) -> None:
        """The dosage desk, the rule engine and the QA desk, wired to the pipeline."""
        self.prescription_store = PrescriptionStore(self.state)
        # The dosage desk: prescriptions and dispensing records.
        self.dosage = DosageDesk(self.audit, self.prescription_store)
        # The rule engine: the configured rules on every reading, device state and tick.
        self.rules = RuleEngine(
            config.rules,
            self.alerts,
            self.nuclides,
            {d.id: d.poll_interval_s for d in devices.values()},
            audit=self.audit,
            prescriptions=self.dosage.prescriptions,
        )
        # The QA desk: the dose-calibrator QC programme (records, signatures, release state).
        self.qc_records = QCRecordStore(self.state, notify=self.live.on_event)
        self.signatures = SignatureService(
            config.web.users, config.qc.signing, self.audit, config.qc.zone
        )
        self.qa_desk = QADesk(
            config.qc,
            self.nuclides,
            self.qc_records,
            self.signatures,
            self.alerts,
            self.audit,
            on_change=self._on_release_change,
        )
        self.dosage.prescriptions.on_dispensed = self.qa_desk.on_dispensed

    def service_status(self) -> str:
        """One line for `systemctl status` (sd_notify STATUS=)."""
        online = sum(1 for s in self.supervisors.values() if s.state.value == "online")
        clock = "trusted" if self.clock.trusted else f"UNTRUSTED ({self.clock.reason})"
        pending = (
            f"; restart required for {', '.join(self.restart_required)}"
            if self.restart_required else ""
        )  # fmt: skip
        return (
            f"{online}/{len(self.supervisors)} devices online; broker {self.publisher.state.value};"
            f" last seq {self.outbox.last_seq}; clock {clock}{pending}"
        )

    def request_reload(self) -> None:
        """Ask the running agent to re-read its configuration file (SIGHUP)."""
        self._reload_requested.set()

    async def reload(self, new_config: Config) -> ReloadResult:
        """Apply a new configuration while running; the outbox and broker link are untouched."""
        result = await apply_reload(self, new_config)
        self.restart_required = result.restart_required
        return result

    def devices_changed(self, devices: Mapping[str, DeviceConfigBase]) -> None:
        """The enabled devices after a reload: the pipeline and the rule engine follow."""
        self.pipeline.devices = dict(devices)
        self.rules.set_poll_intervals({d.id: d.poll_interval_s for d in devices.values()})

    def start_device(self, config: DeviceConfigBase) -> None:
        """Start supervising a device (at start-up, or a device added by a reload)."""
        if self._group is None:
            raise RuntimeError("the agent is not running")
        sup = self.supervisors.get(config.id)
        if sup is None or sup.config != config:
            sup = DeviceSupervisor(config, self.pipeline, self.live, self._on_device_state)
            self.supervisors[config.id] = sup
            self._apply_quota_pause(sup)
        self._device_tasks[config.id] = self._group.create_task(
            sup.run(), name=f"supervisor-{config.id}"
        )
        self.publisher.mark_status_dirty()

    async def stop_device(self, device_id: str) -> None:
        """Stop supervising a device; its driver is closed. Its readings already queued stay."""
        task = self._device_tasks.pop(device_id, None)
        sup = self.supervisors.pop(device_id, None)
        if task is not None:
            # Give the driver its own close timeout before insisting.
            close_s = sup.config.timeout_s + 3.0 if sup is not None else RECANCEL_S
            await cancel_and_wait([task], repeat_s=close_s)
        self.live.devices.pop(device_id, None)
        self.publisher.mark_status_dirty()

    def _pauses_under_quota(self, sup: DeviceSupervisor, state: Pressure) -> bool:
        """The overflow policy (`pauses_under`) for this device among the agent's devices."""
        top = max((s.config.priority for s in self.supervisors.values()), default=0)
        return pauses_under(state, sup.config.priority, top)

    def _apply_quota_pause(self, sup: DeviceSupervisor) -> None:
        """A device added while the outbox is over quota follows the same pause policy."""
        state = self._pressure()
        if self._pauses_under_quota(sup, state):
            sup.pause(self._pressure_reason())

    async def _watch_outbox(self) -> None:
        """Stop with exit code 1 when the outbox fails (disk full, corrupt database).

        An agent must not keep acquiring what it cannot store; systemd restarts it.
        """
        await self.state.failed.wait()
        log.critical("outbox failed; stopping the agent", error=repr(self.state.failure))
        self.exit_code = 1
        self._stop.set()

    async def _tick(self) -> None:
        """1 Hz: time-based rules (stale data, device offline for too long)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self.rules.tick()
                self.qa_desk.tick()
            except Exception:
                log.exception("QC tick failed")

    async def _start_web(self) -> None:
        """Start the console; a console that cannot bind must not stop acquisition."""
        if self.web is None:
            return
        try:
            await self.web.start()
        except (OSError, ValueError) as exc:
            log.error(  # noqa: TRY400 - the error text says it all; no traceback needed
                "web console not started", listen=self.config.web.listen, error=str(exc)
            )

    async def _shutdown(
        self, publisher_task: asyncio.Task[None], device_tasks: list[asyncio.Task[None]]
    ) -> None:
        deadline = time.monotonic() + SHUTDOWN_BUDGET_S
        log.info("agent stopping")

        def left(reserve: float = 0.0) -> float:
            return max(0.0, deadline - time.monotonic() - reserve)

        await cancel_and_wait(device_tasks, repeat_s=max(1.0, left(2.5)))
        # Everything acquired is made durable first; sending it is best effort in the time left,
        # with a second kept for the offline status and one for the disconnect: a broker that
        # stopped answering must not hold the agent past its budget.
        await self.outbox.flush(timeout=max(0.5, left(2.5)))
        if self.publisher.state is LinkState.CONNECTED:
            await self.publisher.drain(timeout=left(2.0))
            await self.publisher.publish_offline("shutdown", timeout=max(0.1, min(2.0, left(1.0))))
        # Repeated cancels also cut short a DISCONNECT the broker does not answer.
        await cancel_and_wait([publisher_task], repeat_s=max(0.2, min(RECANCEL_S, left())))
        with contextlib.suppress(asyncio.CancelledError):
            await publisher_task


class StateDirBusyError(RuntimeError):
    """Another agent already uses this state directory (two writers would fork the chain)."""


STATE_FILE_MODE = 0o600


def restrict_state_files(state_dir: Path) -> None:
    """Make the state directory's files readable by the agent's user only.

    outbox.db and its WAL hold the audit trail, prescriptions and QC records. `isoedge run`
    sets umask 077 at start, so new files are created so; this also mends files an older
    version or another umask left readable.
    """
    for path in state_dir.iterdir():
        try:
            if path.is_file() and not path.is_symlink() and (
                path.stat().st_mode & 0o777
            ) != STATE_FILE_MODE:
                path.chmod(STATE_FILE_MODE)
        except OSError as exc:
            log.warning("cannot restrict a state file to its owner", path=str(path),
                        error=str(exc))  # fmt: skip


def lock_state_dir(state_dir: Path) -> TextIO:
    """Hold an exclusive lock on `state_dir/agent.lock` for the agent's lifetime."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = (state_dir / "agent.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StateDirBusyError(
            f"{state_dir}: another IsoEdge agent (pid {holder}) is using this state directory"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle



class RuntimeConsoleBackend:
    """The running agent seen through the console's narrow interface (`ConsoleBackend`)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        config = agent.config
        self.identity = AgentIdentity(
            site=config.agent.site,
            agent_id=config.agent.id,
            version=__version__,
            kid=agent.signer.kid,
            broker_url=config.broker.url,
            topic_base=agent.topics.base,
        )
        self.live = agent.live

    @property
    def started(self) -> bool:
        """True once the agent has finished starting."""
        return self._agent.started.is_set()

    @property
    def started_at(self) -> float:
        """Epoch seconds the agent started at."""
        return self._agent.started_at

    def calibrators(self) -> dict[str, dict[str, Any]]:
        """Release state per dose calibrator with a QC programme."""
        return self._agent.qa_desk.calibrators_status()

    @property
    def qa_desk(self) -> QADesk:
        """The QC programme (guided tests, signatures, records): the console's `QADesk`."""
        return self._agent.qa_desk

    @property
    def simulator_panel(self) -> SimulatorPanel | None:
        """The demo's simulator controls (set by `isoedge demo` only)."""
        return self._agent.simulator_panel

    def devices(self) -> list[DeviceView]:
        """Every supervised device, sorted by id."""
        return [
            DeviceView(id=device_id, type=sup.config.type, description=sup.config.description,
                       state=sup.state.value, detail=sup.detail,
                       timeout_s=sup.config.timeout_s)
            for device_id, sup in sorted(self._agent.supervisors.items())
        ]

    def delivery(self) -> DeliveryView:
        """Outbox and broker link state."""
        agent = self._agent
        link = agent.publisher.state
        return DeliveryView(
            link_state=link.value,
            connected=link is LinkState.CONNECTED,
            published_items=agent.publisher.published_items,
            published_envelopes=agent.publisher.published_envelopes,
            reconnects=agent.publisher.reconnects,
            quota_state=agent.outbox.quota_state,
            quota_bytes=agent.outbox.quota_bytes,
            writer_alive=agent.state.alive,
            disk=agent.state.space.current.as_dict(),
            committed_by_stream=dict(agent.outbox.committed_by_stream),
            disk_full_total=agent.state.disk_full_total,
            held_back_seconds=agent.outbox.held_back_seconds,
            replay_requests=dict(agent.publisher.replay_gate.counts),
        )

    async def outbox_stats(self) -> OutboxStats | None:
        """Backlog figures (None while the outbox is not running)."""
        try:
            return await self._agent.outbox.stats()
        except OutboxError:
            return None

    def open_alerts(self) -> list[Alert]:
        """Alerts needing attention (in memory)."""
        return self._agent.alerts.open_alerts()

    async def recent_alerts(self, limit: int) -> list[Alert]:
        """The newest alerts, open or closed."""
        return await self._agent.alerts.all_alerts(limit=limit)

    @property
    def records(self) -> Records:
        """The radiopharmacy's records (the console's records pages)."""
        return self._agent.records

    @property
    def generator_records(self) -> GeneratorRecords:
        """Elutions, waste and shipments (the console's generator and waste pages)."""
        return self._agent.generator_records

    @property
    def dosage(self) -> DosageDesk:
        """Prescriptions and dispensing records (satisfies the console's `DosageDesk`)."""
        return self._agent.dosage

    async def acknowledge_alert(self, alert_id: str, user: str, reason: str) -> Alert:
        """Alert state, audit record and stream events in one transaction."""
        return await self._agent.alerts.acknowledge(alert_id, user, reason)

    async def audit_query(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        actor: str | None,
        action: str | None,
        subject: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Audit records matching the filters, oldest first."""
        return await self._agent.audit.query(
            since=since, until=until, actor=actor, action=action, subject=subject, limit=limit
        )


async def run_until_signalled(agent: Agent) -> None:
    """Run the agent until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
    try:
        await agent.run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
