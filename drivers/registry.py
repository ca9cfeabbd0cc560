"""The one registry of drivers: the `isoedge.drivers` entry-point group.

Every driver, built in or shipped as its own pip package, declares one entry point per
configuration `type` in its `pyproject.toml`:

    [project.entry-points."isoedge.drivers"]
    capintec_crc15 = "drivers.dosecal.capintec_crc15:DRIVER"

The entry point names a `DriverSpec`: the type name, the configuration model (imported when
the registry loads: it validates files), the driver class and the simulator profile (both
imported on first use, so protocol libraries such as asyncua or pymodbus are loaded only by
an agent that has such a device), and the folder holding the driver's README.md, sample
configuration and golden test cases.

The configuration's device union (discriminated on `type`) is built from this registry
(`device_config_union`), as are `isoedge simulate dosecal --model` and the demo.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import structlog
from pydantic import Field

from drivers.base import DeviceConfigBase, Driver

ENTRY_POINT_GROUP = "isoedge.drivers"

log = structlog.get_logger("isoedge.drivers")


def _import_ref(ref: str) -> Any:
    """`"package.module:Name"` → the object."""
    module_name, _, attribute = ref.partition(":")
    if not attribute:
        raise ValueError(f"expected 'module:Name', got {ref!r}")
    return getattr(importlib.import_module(module_name), attribute)


ConfigModel = type[DeviceConfigBase]
DriverClass = type[Driver]


@dataclass(frozen=True)
class DriverSpec:
    """What the registry knows about one driver `type`.

    `driver` and `simulator` are either the object itself or a `"module:Name"` reference,
    imported on first use. `folder` holds `README.md` (the instrument documentation),
    `sample` (a `[[devices]]` table that the test suite validates) and `testcases/`.
    """

    type: str
    config: ConfigModel
    driver: DriverClass | str
    folder: Path
    summary: str = ""
    simulator: Any = None
    sample: str = "sample.toml"
    _loaded: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = _literal_tags(self.config)
        if tags != (self.type,):
            raise ValueError(
                f"driver {self.type!r}: {self.config.__name__}.type must be "
                f"Literal[{self.type!r}], not {tags}"
            )

    def driver_class(self) -> DriverClass:
        """The driver class (imported now if given as a reference)."""
        if not isinstance(self.driver, str):
            return self.driver
        if "driver" not in self._loaded:
            self._loaded["driver"] = _import_ref(self.driver)
        cls: DriverClass = self._loaded["driver"]
        return cls

    def simulator_profile(self) -> Any:
        """The simulator profile, or None when the driver has none."""
        if not isinstance(self.simulator, str):
            return self.simulator
        if "simulator" not in self._loaded:
            self._loaded["simulator"] = _import_ref(self.simulator)
        return self._loaded["simulator"]

    @property
    def has_simulator(self) -> bool:
        """Whether a simulator profile is declared (without importing it)."""
        return self.simulator is not None

    @property
    def readme(self) -> Path:
        """The instrument documentation."""
        return self.folder / "README.md"

    @property
    def sample_path(self) -> Path:
        """The sample configuration: one `[[devices]]` table."""
        return self.folder / self.sample

    @property
    def testcases(self) -> Path:
        """Golden test cases: one sub-folder per case (config.toml + expected.toml)."""
        return self.folder / "testcases"


def _literal_tags(config: type[DeviceConfigBase]) -> tuple[Any, ...]:
    annotation = config.model_fields["type"].annotation
    return get_args(annotation) if get_origin(annotation) is Literal else ()


@dataclass(frozen=True)
class BrokenDriver:
    """An entry point that could not be loaded (its package is broken or incompatible)."""

    type: str
    source: str
    error: str


class Registry(Mapping[str, DriverSpec]):
    """Driver specs by `type`, loaded once from the entry points."""

    def __init__(
        self,
        specs: Mapping[str, DriverSpec],
        broken: Mapping[str, BrokenDriver],
        ignored: Mapping[str, list[str]] | None = None,
    ) -> None:
        self._specs = dict(sorted(specs.items()))
        self.broken = dict(broken)
        self.ignored = dict(ignored or {})
        """Type → entry points that declared it again (the first declaration is used)."""
        self._reported = False

    def report_problems(self) -> None:
        """Log broken and duplicate declarations, once (by then logging is configured)."""
        if self._reported:
            return
        self._reported = True
        for broken in self.broken.values():
            log.error(
                "drivers.load_failed", driver=broken.type, source=broken.source, error=broken.error
            )
        for type_name, sources in self.ignored.items():
            log.warning("drivers.duplicate_type", driver=type_name, ignored=sources)

    def __getitem__(self, type_name: str) -> DriverSpec:
        try:
            return self._specs[type_name]
        except KeyError:
            raise KeyError(self.unknown_type_message(type_name)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def unknown_type_message(self, type_name: str) -> str:
        """Why there is no driver of this type: a broken package, or a likely typo."""
        if type_name in self.broken:
            broken = self.broken[type_name]
            return f"driver {type_name!r} ({broken.source}) failed to load: {broken.error}"
        close = difflib.get_close_matches(type_name, list(self._specs), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(repr(name) for name in self._specs)
        return f"unknown driver type {type_name!r}{hint}; expected one of {known}"

    def with_simulator(self) -> list[DriverSpec]:
        """Specs that declare a simulator profile, by type name."""
        return [spec for spec in self._specs.values() if spec.has_simulator]


def _load_spec(entry: importlib.metadata.EntryPoint) -> DriverSpec:
    spec = entry.load()
    if not isinstance(spec, DriverSpec):
        raise TypeError(f"{entry.value} is a {type(spec).__name__}, not a DriverSpec")
    if spec.type != entry.name:
        raise ValueError(f"entry point {entry.name!r} names a spec of type {spec.type!r}")
    return spec


def load_registry() -> Registry:
    """Read every `isoedge.drivers` entry point (installed distributions, deduplicated).

    A driver package that fails to import does not stop the others: it is kept in
    `Registry.broken`, so a configuration using its type is refused with the reason. A type
    declared twice keeps its first declaration (a built-in one, if any). Nothing is logged
    here (logging is not configured yet when the configuration module loads, and
    `check-config --json` owns stdout): `report_problems()` logs both when drivers are built.
    """
    specs: dict[str, DriverSpec] = {}
    broken: dict[str, BrokenDriver] = {}
    ignored: dict[str, list[str]] = {}
    entries = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    # A package cannot take over a built-in type: isoedge's own entry points come first.
    for entry in sorted(entries, key=lambda e: e.dist is None or e.dist.name != "isoedge"):
        if entry.name in specs or entry.name in broken:
            ignored.setdefault(entry.name, []).append(entry.value)
            continue
        try:
            specs[entry.name] = _load_spec(entry)
        except Exception as exc:
            broken[entry.name] = BrokenDriver(
                entry.name, entry.value, f"{type(exc).__name__}: {exc}"
            )
    return Registry(specs, broken, ignored)


_lock = threading.Lock()
_registry: Registry | None = None


def registry() -> Registry:
    """The process-wide registry (entry points are read once)."""
    global _registry  # noqa: PLW0603 - one registry per process, built on first use
    with _lock:
        if _registry is None:
            _registry = load_registry()
        return _registry


def device_config_union() -> Any:
    """Every registered configuration model as one union discriminated by `type`."""
    models = tuple(spec.config for spec in registry().values())
    if not models:
        raise RuntimeError(
            f"no drivers registered in the {ENTRY_POINT_GROUP!r} entry-point group; "
            "is isoedge installed (pip install -e .)?"
        )
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at run time


def unknown_driver_message(type_name: str) -> str:
    """The message for a configuration naming a driver type nobody registered."""
    return registry().unknown_type_message(type_name)


def driver_class(type_name: str) -> type[Driver]:
    """The driver class registered for a configuration `type`."""
    try:
        spec = registry()[type_name]
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return spec.driver_class()


def create_driver(config: DeviceConfigBase) -> Driver:
    """Build the driver registered for `config.type`."""
    registry().report_problems()
    return driver_class(config.type)(config)
