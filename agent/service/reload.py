"""Configuration reload (SIGHUP / `systemctl reload isoedge`) without losing buffered data.

Every section of the configuration is either applied live or reported (apply-or-report):

* applied (`APPLIED_SECTIONS`): devices — supervisors are started for added devices, stopped
  for removed ones and restarted for devices whose settings changed, unchanged devices keep
  running untouched, and the rule engine learns every device's poll interval (an added
  device's stale rule fires); clock supervision settings;
* every other section (`RESTART_SECTIONS`: what identifies the agent or its durable state —
  agent, broker, signing, outbox, replay, web —, the rules, nuclides, the QC programme `[qc]`,
  the demo) is not swapped under a running agent: a change there is reported as
  `restart_required` and the running values stay. A section added to the configuration later
  is reported until it is made live-applicable (`RESTART_SECTIONS` is every section not
  applied).

The outbox, its sequence numbers and the broker connection keep running throughout, so no
reading is lost and `seq` continues without a gap. An invalid file changes nothing. Both
outcomes go to the audit stream (`config.reloaded` with `applied` and `restart_required`,
`config.reload_failed`), to the log, and to the service status line until the agent restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from agent.service.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from agent.acquisition.pipeline import Pipeline
    from agent.qc.audit import AuditLog
    from agent.service.clock import ClockMonitor
    from agent.service.sdnotify import SystemdNotifier
    from drivers.base import DeviceConfigBase

log = structlog.get_logger("isoedge.reload")

APPLIED_SECTIONS = ("devices", "clock")
"""Sections a reload applies to the running agent."""

RESTART_SECTIONS = tuple(name for name in Config.model_fields if name not in APPLIED_SECTIONS)
"""Sections applied only at start (every other one); a change is reported, the running value
kept."""


@dataclass(frozen=True, slots=True)
class DeviceDiff:
    """How the set of enabled devices changes between two configurations."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when no supervisor needs to change."""
        return not (self.added or self.removed or self.changed)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """Outcome of `Agent.reload()`."""

    devices: DeviceDiff
    restart_required: list[str]
    clock_changed: bool
    applied: list[str] = field(default_factory=list)  # sections changed and applied live


class Reloadable(Protocol):
    """What a reload needs of the running agent (the runtime's `Agent` is one)."""

    config: Config
    config_path: Path | None
    pipeline: Pipeline
    clock: ClockMonitor
    audit: AuditLog
    notifier: SystemdNotifier

    @property
    def supervisors(self) -> Mapping[str, object]:
        """Running device supervisors by device id."""
        ...

    async def stop_device(self, device_id: str) -> None:
        """Stop one device's supervisor."""

    def start_device(self, config: DeviceConfigBase) -> None:
        """Start supervising one device."""

    def devices_changed(self, devices: Mapping[str, DeviceConfigBase]) -> None:
        """The enabled devices after a reload (the rule engine's poll intervals...)."""

    async def reload(self, new_config: Config) -> ReloadResult:
        """Apply a new configuration."""
        ...

    def service_status(self) -> str:
        """One line for systemd's STATUS=."""
        ...


def enabled_devices(config: Config) -> dict[str, Any]:
    """Enabled device configurations by id."""
    return {d.id: d for d in config.devices if d.enabled}


def diff_devices(old: Config, new: Config) -> DeviceDiff:
    """Compare the enabled devices of two configurations (by id, then by every setting)."""
    before, after = enabled_devices(old), enabled_devices(new)
    return DeviceDiff(
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        changed=sorted(i for i in set(before) & set(after) if before[i] != after[i]),
        unchanged=sorted(i for i in set(before) & set(after) if before[i] == after[i]),
    )


def restart_required(old: Config, new: Config) -> list[str]:
    """Sections that differ but are applied only when the agent starts."""
    return [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]


def effective_config(old: Config, new: Config) -> Config:
    """`new`, with the start-only sections kept from `old` (what the agent actually runs)."""
    return new.model_copy(update={name: getattr(old, name) for name in RESTART_SECTIONS})


async def apply_reload(agent: Reloadable, new: Config) -> ReloadResult:
    """Apply `new` to a running agent: devices and clock settings; see the module docstring."""
    old = agent.config
    diff = diff_devices(old, new)
    pending_restart = restart_required(old, new)
    after = enabled_devices(new)
    for device_id in [*diff.removed, *diff.changed]:
        await agent.stop_device(device_id)
    agent.config = effective_config(old, new)
    agent.devices_changed(after)
    for device_id in [*diff.changed, *diff.added]:
        agent.start_device(after[device_id])
    clock_changed = old.clock != new.clock
    if clock_changed:
        agent.clock.settings = new.clock
    applied = [name for name in APPLIED_SECTIONS if getattr(old, name) != getattr(new, name)]
    if pending_restart:
        log.warning("configuration sections changed that apply only after a restart",
                    sections=pending_restart)
    return ReloadResult(diff, pending_restart, clock_changed, applied)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def reload_from_file(agent: Reloadable) -> bool:
    """Re-read `agent.config_path` and apply it; True if applied. Never raises on bad input."""
    path = agent.config_path
    if path is None:
        log.warning("reload requested but the agent was not started from a file")
        return False
    agent.notifier.reloading()
    log.info("reloading configuration", path=str(path))
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        errors = [str(p) for p in exc.problems]
        log.error(  # noqa: TRY400 - the problems are listed; a traceback adds nothing
            "configuration reload failed; keeping the running configuration",
                  path=str(path), errors=errors)
        agent.audit.record(
            "config.reload_failed",
            actor="isoedge",
            subject=str(path),
            reason="invalid configuration; the running one is kept",
            errors=errors,
            devices=sorted(agent.supervisors),
        )
        agent.notifier.ready("reload failed: running the previous configuration")
        return False
    old_devices = sorted(agent.supervisors)
    result = await agent.reload(new)
    agent.audit.record(
        "config.reloaded",
        actor="isoedge",
        subject=str(path),
        old={"devices": old_devices},
        new={"devices": sorted(agent.supervisors)},
        sha256=await asyncio.to_thread(_sha256, path),
        old_devices=old_devices,
        devices=sorted(agent.supervisors),
        added=result.devices.added,
        removed=result.devices.removed,
        changed=result.devices.changed,
        clock_changed=result.clock_changed,
        applied=result.applied,
        restart_required=result.restart_required,
    )
    log.info("configuration reloaded", added=result.devices.added,
             removed=result.devices.removed, changed=result.devices.changed,
             applied=result.applied, restart_required=result.restart_required)
    agent.notifier.ready(agent.service_status())
    return True


async def serve_reload_requests(agent: Reloadable, requested: asyncio.Event) -> None:
    """Handle reload requests one at a time until cancelled; requests made meanwhile coalesce."""
    while True:
        await requested.wait()
        requested.clear()
        try:
            await reload_from_file(agent)
        except Exception:  # a bug in one reload must not take the agent down
            log.exception("configuration reload crashed; keeping what is running")
            agent.notifier.ready(agent.service_status())


__all__ = [
    "APPLIED_SECTIONS",
    "RESTART_SECTIONS",
    "DeviceDiff",
    "ReloadResult",
    "Reloadable",
    "apply_reload",
    "diff_devices",
    "effective_config",
    "reload_from_file",
    "restart_required",
    "serve_reload_requests",
]
