"""Agent configuration: TOML validated by pydantic before anything is started."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

from pydantic import BaseModel, Field, ValidationError, model_validator

from agent.console.settings import WebSection
from agent.core.paths import resolve_relative_paths
from agent.core.settings import StrictSection
from agent.delivery.replay import ReplaySection
from agent.delivery.settings import BrokerSection, OutboxSection, SigningSection
from agent.qc.config import RuleConfig
from agent.qc.programme import QCSection
from agent.records.config import RecordsSection
from drivers.base import DeviceConfigBase
from drivers.registry import device_config_union, unknown_driver_message

if TYPE_CHECKING:
    DeviceConfig = DeviceConfigBase
else:
    DeviceConfig = device_config_union()
    """Every registered driver's configuration (the `isoedge.drivers` entry points), by `type`.

    Built when this module loads; statically every device is at least a `DeviceConfigBase`.
    """

IdStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]




class AgentSection(StrictSection):
    """Who this agent is and where it keeps its state."""

    site: IdStr = Field(description="Site id, second level of every MQTT topic.")
    id: IdStr = Field(description="Agent id, unique within the site.")
    state_dir: Path = Field(
        default=Path("/var/lib/isoedge"), description="Outbox, alert state and audit trail."
    )














class NuclideOverride(StrictSection):
    """A site's own half-life for a nuclide, with where it came from."""

    half_life_s: float = Field(gt=0)
    uncertainty_s: float | None = Field(default=None, ge=0)
    source: str = "site configuration"


class ClockSection(StrictSection):
    """Wall-clock supervision (agent/clock.py): jumps make readings "clock": "untrusted"."""

    jump_threshold_s: float = Field(
        default=2.0, gt=0, le=3600, description="Wall vs elapsed time difference that is a jump."
    )
    check_interval_s: float = Field(default=1.0, gt=0, le=60)
    stable_after_s: float = Field(
        default=300.0, ge=0, le=86400, description="Trusted again after this long without a jump."
    )
    not_before: date = Field(
        default=date(2025, 1, 1), description="A wall clock before this date is untrusted."
    )
    trust_ntp_sync: bool = Field(
        default=True, description="Trusted again as soon as NTP reports a sync after the jump."
    )


class DemoSimulator(StrictSection):
    """A simulator `isoedge demo` starts for one device (ignored by `isoedge run`)."""

    kind: str = Field(description="Simulator kind, as in `isoedge simulate KIND`.")
    device: str = Field(description="Device id whose address is pointed at this simulator.")
    options: dict[str, Any] = Field(default_factory=dict)


class DemoSection(StrictSection):
    """What `isoedge demo` starts beside the agent."""

    simulators: list[DemoSimulator] = Field(default_factory=list)


class Config(StrictSection):
    """The whole agent configuration file."""

    agent: AgentSection
    broker: BrokerSection = Field(default_factory=BrokerSection)
    signing: SigningSection = Field(default_factory=SigningSection)
    outbox: OutboxSection = Field(default_factory=OutboxSection)
    replay: ReplaySection = Field(default_factory=ReplaySection)
    web: WebSection = Field(default_factory=WebSection)
    clock: ClockSection = Field(default_factory=ClockSection)
    devices: list[DeviceConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    nuclides: dict[str, NuclideOverride] = Field(default_factory=dict)
    qc: QCSection = Field(default_factory=QCSection)
    records: RecordsSection = Field(default_factory=RecordsSection)
    demo: DemoSection | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        seen: dict[str, int] = {}
        for index, device in enumerate(self.devices):
            if device.id in seen:
                raise _KeyedError(
                    ("devices", index, "id"),
                    f"duplicate device id {device.id!r} (first used by devices[{seen[device.id]}])",
                )
            seen[device.id] = index
        device_ids = set(seen)
        rule_names: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in rule_names:
                raise _KeyedError(("rules", index, "name"), f"duplicate rule name {rule.name!r}")
            rule_names[rule.name] = index
            if rule.device is not None and rule.device not in device_ids:
                raise _KeyedError(
                    ("rules", index, "device"),
                    f"unknown device {rule.device!r}; expected one of {sorted(device_ids)}",
                )
        if self.demo is not None:
            for index, sim in enumerate(self.demo.simulators):
                if sim.device not in device_ids:
                    raise _KeyedError(
                        ("demo", "simulators", index, "device"),
                        f"unknown device {sim.device!r}; expected one of {sorted(device_ids)}",
                    )
        return self

    @model_validator(mode="after")
    def _qc_devices(self) -> Config:
        device_ids = {d.id for d in self.devices}
        for index, calibrator in enumerate(self.qc.calibrators):
            if calibrator.device not in device_ids:
                raise _KeyedError(
                    ("qc", "calibrators", index, "device"),
                    f"unknown device {calibrator.device!r}; expected one of {sorted(device_ids)}",
                )
        return self

    @model_validator(mode="after")
    def _records_devices(self) -> Config:
        device_ids = {d.id for d in self.devices}
        for index, module in enumerate(self.records.synthesis):
            env = module.environment
            for key, device in (("device", module.device), ("calibrator", module.calibrator),
                                *[(f"environment.{name}.device", getattr(env, name).device)
                                  for name in ("pressure", "particles", "dose_rate")
                                  if getattr(env, name) is not None]):  # fmt: skip
                if device is not None and device not in device_ids:
                    raise _KeyedError(
                        ("records", "synthesis", index, *key.split(".")),
                        f"unknown device {device!r}; expected one of {sorted(device_ids)}",
                    )
        return self

    @property
    def outbox_path(self) -> Path:
        """Absolute path of the outbox database."""
        return self.agent.state_dir / self.outbox.path

    def device(self, device_id: str) -> Any:
        """The device configuration with this id."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


class _KeyedError(ValueError):
    """A cross-field error that knows which key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class ConfigProblem(BaseModel):
    """One problem in a configuration file."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """The configuration is unusable; carries every problem found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_loc(loc: Sequence[str | int]) -> str:
    """`("devices", 1, "port")` → `devices[1].port`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems_from_validation(path: str, exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        loc: list[str | int] = list(err["loc"])
        message = err["msg"]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _KeyedError):
            loc, message = [*loc, *ctx_error.loc], ctx_error.message
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        # A discriminated union puts the tag in the path ("devices[0].modbus_tcp.port");
        # users never wrote that tag as a key, so drop it.
        tagged = bool(loc) and loc[0] in {"devices", "rules"}  # the discriminated unions
        loc = [
            p
            for i, p in enumerate(loc)
            if not (tagged and i > 0 and isinstance(loc[i - 1], int) and p in _UNION_TAGS)
        ]
        if err["type"] == "union_tag_invalid":
            message = _unknown_type(loc, err.get("ctx") or {})
            loc = [*loc, "type"]
        elif err["type"] == "union_tag_not_found":
            loc = [*loc, "type"]
            message = "required key is missing"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see config/example-site.toml)"
        if "input" in err and err["type"] not in _NO_INPUT_ECHO:
            shown = repr(err["input"])
            if len(shown) <= _MAX_ECHO and not isinstance(err["input"], dict | list):
                message += f" (got {shown})"
        problems.append(ConfigProblem(file=path, key=format_loc(loc), message=message))
    return problems


def _unknown_type(loc: Sequence[str | int], ctx: dict[str, Any]) -> str:
    """An unknown driver type names the installed drivers (and a likely typo)."""
    if loc and loc[0] == "devices":
        return unknown_driver_message(str(ctx.get("tag")))
    return f"unknown rule type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"


_MAX_ECHO = 60  # longer inputs are not repeated in messages
_NO_INPUT_ECHO = frozenset(
    {"missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found"}
)


def _union_tags(annotated: Any) -> frozenset[str]:
    """The `type` literals of a discriminated union of models."""
    union = get_args(annotated)[0]
    members = get_args(union) or (union,)
    tags: set[str] = set()
    for member in members:
        tags.update(get_args(member.model_fields["type"].annotation))
    return frozenset(tags)


# pydantic puts the union tag into error paths ("devices[0].modbus_tcp.port"); users never
# wrote that tag as a key, so it is dropped from the paths shown to them.
_UNION_TAGS = _union_tags(DeviceConfig) | _union_tags(RuleConfig)


def parse_config(data: dict[str, Any], source: str = "<memory>") -> Config:
    """Validate already-parsed TOML data."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems_from_validation(source, exc)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file; raises `ConfigError` naming file and keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem(file=str(path), key="", message=f"cannot read: {reason}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(file=str(path), key="", message=f"not UTF-8 text: {exc}")]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(file=str(path), key="", message=f"invalid TOML: {exc}")]
        ) from None
    return resolve_paths(parse_config(data, str(path)), path.parent)


def resolve_paths(config: Config, base: Path) -> Config:
    """Relative paths in a file are relative to that file's folder, not the working directory.

    One generic walk (`agent.core.paths`): every `Path` field of every section and of every
    driver's configuration, at any depth; fields marked `KeepRelative` are left as written.
    """
    return resolve_relative_paths(config, base)
