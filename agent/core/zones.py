"""The site's time zone from the `tzdata` package, whatever the operating system ships.

Kazakhstan moved to UTC+5 everywhere on 1 March 2024 (tzdata 2024a); a machine whose
/usr/share/zoneinfo is older shows Almaty an hour wrong. The agent therefore reads its zone
rules from the `tzdata` package it depends on (a pinned, current copy), and falls back to the
system's rules only for a zone that package does not know.
"""

from __future__ import annotations

import functools
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Z"})


@functools.lru_cache(maxsize=64)
def site_zone(name: str) -> ZoneInfo:
    """The zone `name` with the rules of the `tzdata` package (ZoneInfoNotFoundError if unknown)."""
    if not name or ".." in name or name.startswith("/"):
        raise ZoneInfoNotFoundError(name)
    node = resources.files("tzdata.zoneinfo")
    for part in name.split("/"):
        node = node.joinpath(part)
    try:
        with node.open("rb") as handle:
            return ZoneInfo.from_file(handle, key=name)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
        return ZoneInfo(name)  # the system's rules: a zone newer than the package


def tzdata_version() -> str:
    """The version of the `tzdata` package whose rules are in use (e.g. 2025.2)."""
    from importlib.metadata import version  # noqa: PLC0415 - only for this look-up

    return version("tzdata")
