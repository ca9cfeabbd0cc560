"""Relative paths in a configuration file are relative to that file, for every section and driver.

One generic walk over the validated models: every field holding a `Path` (alone, optional, in
a list, tuple or dict, or inside nested models such as a driver's `security` table) is
resolved against the configuration file's folder. A driver gets this for its file fields by
typing them `Path` — nothing to register. A field relative to something else (the outbox
database, relative to `agent.state_dir`) is annotated `Annotated[Path, KeepRelative()]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class KeepRelative:
    """Field marker: this path is relative to something else than the configuration file."""

    def __repr__(self) -> str:
        return "KeepRelative()"


def resolve_relative_paths(model: M, base: Path) -> M:
    """A copy of `model` with every relative `Path` (at any depth) joined to `base`."""
    updates: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        if any(isinstance(marker, KeepRelative) for marker in info.metadata):
            continue
        value = getattr(model, name)
        resolved = _resolve(value, base)
        if resolved is not value:
            updates[name] = resolved
    return model.model_copy(update=updates) if updates else model


def _resolve(value: Any, base: Path) -> Any:
    """`value` with its paths resolved; the same object when nothing changed."""
    if isinstance(value, PurePath):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return resolve_relative_paths(value, base)
    if isinstance(value, list | tuple):
        items = [_resolve(item, base) for item in value]
        unchanged = all(new is old for new, old in zip(items, value, strict=True))
        return value if unchanged else type(value)(items)
    if isinstance(value, Mapping):
        resolved = {key: _resolve(item, base) for key, item in value.items()}
        unchanged = all(resolved[key] is item for key, item in value.items())
        return value if unchanged else resolved
    return value
