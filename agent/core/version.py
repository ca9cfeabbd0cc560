"""The agent's version, as published in the retained status and /metrics."""

from __future__ import annotations

from importlib import metadata


def _installed_version() -> str:
    try:
        return metadata.version("isoedge")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


__version__ = _installed_version()
