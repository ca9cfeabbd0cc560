"""Free space on the state directory's file system: the reserve policy and the reserve file.

The outbox quota bounds the database; this bounds what the file system has left, which on an
SD card shared with the journal can run out first. Three states, as for the quota:

- `ok`: headroom at least twice `outbox.min_free_mb` (and no write failed for lack of space);
- `high`: headroom under twice the reserve: devices below the top priority pause;
- `full`: headroom under the reserve, or a write failed with "disk full": every device pauses.

Headroom is what the outbox can still write into: the file system's free space (for an
unprivileged writer) plus the database's free pages (envelopes deleted after PUBACK leave
pages SQLite reuses before it grows the file). After a write has failed for lack of space,
only the file system's free space counts until the state is left: the free pages evidently
were not enough (the WAL had no room to grow). Leaving a state needs a margin above its
threshold (a tenth of the reserve, at least `RESUME_MARGIN_BYTES`), so a disk hovering at a
limit does not flap.

The reserve file (`state_dir/space-reserve`, `outbox.reserve_file_mb`) is ballast the agent
writes while space is plentiful and deletes the moment a write fails for lack of space, or at
start when the disk is already full: that gives SQLite room to open its WAL, delete delivered
envelopes and checkpoint, so a full disk never locks the backlog in. It is written again once
the disk has room for it and the reserve.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.state.pressure import Pressure

log = structlog.get_logger("isoedge.diskspace")

RESUME_MARGIN_BYTES = 1024 * 1024
RESERVE_FILE_NAME = "space-reserve"
SQLITE_FULL = 13
SQLITE_IOERR = 10


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's "database or disk is full" (and I/O errors raised with no space left).

    SQLite reports ENOSPC from write() as SQLITE_FULL; growing the WAL index (mmap) can
    surface as an SQLITE_IOERR variant, which counts only when the disk really is full.
    """
    if not isinstance(exc, sqlite3.Error):
        return isinstance(exc, OSError) and exc.errno == 28  # noqa: PLR2004 - ENOSPC
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "disk is full" in str(exc)
    return int(code) & 0xFF == SQLITE_FULL


def fs_free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of `directory`."""
    st = os.statvfs(directory)
    return int(st.f_bavail) * int(st.f_frsize)


@dataclass(slots=True)
class SpaceState:
    """What the disk policy decided, for the alert, /healthz and /metrics."""

    state: Pressure = Pressure.OK
    free_bytes: int = 0  # file system free space
    reusable_bytes: int = 0  # free pages inside the database
    min_free_bytes: int = 0
    write_failed: bool = False  # a write failed with ENOSPC and has not yet succeeded again

    @property
    def headroom_bytes(self) -> int:
        """Space the outbox can still write into."""
        return self.free_bytes + self.reusable_bytes

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (the /healthz `disk` check)."""
        return {
            "state": self.state,
            "free_bytes": self.free_bytes,
            "reusable_bytes": self.reusable_bytes,
            "min_free_bytes": self.min_free_bytes,
            "write_failed": self.write_failed,
        }


class DiskSpacePolicy:
    """The reserve policy of the module docstring, with hysteresis."""

    def __init__(self, directory: Path, *, min_free_bytes: int, reserve_file_bytes: int) -> None:
        self.directory = directory
        self.min_free = max(0, min_free_bytes)
        self.reserve_bytes = max(0, reserve_file_bytes)
        self.reserve_path = directory / RESERVE_FILE_NAME
        self.current = SpaceState(min_free_bytes=self.min_free)
        self._failed_episode = False

    @property
    def margin(self) -> int:
        """How far above a threshold the headroom must come back before a state is left."""
        return max(RESUME_MARGIN_BYTES, self.min_free // 10)

    def evaluate(self, reusable_bytes: int, *, write_failed: bool | None = None) -> SpaceState:
        """Measure and decide; returns the (possibly changed) state."""
        current = self.current
        if write_failed is not None:
            current.write_failed = write_failed
        try:
            current.free_bytes = fs_free_bytes(self.directory)
        except OSError as exc:  # the directory vanished or the file system went away
            log.warning("cannot measure free space", directory=str(self.directory),
                        error=str(exc))
            return current
        current.reusable_bytes = max(0, reusable_bytes)
        headroom = current.headroom_bytes
        if current.write_failed:
            self._failed_episode = True
        if self._failed_episode:
            # A write failed for lack of space: free pages inside the database did not help
            # (the WAL had no room to grow), so only space the file system gives back counts.
            headroom = current.free_bytes
        full_below = self.min_free
        high_below = 2 * self.min_free
        previous = current.state
        # Entering a state needs the headroom under its threshold; leaving it, over the
        # threshold plus the margin.
        stay_full = previous == Pressure.FULL and headroom < full_below + self.margin
        stay_high = previous.rank >= Pressure.HIGH.rank and headroom < high_below + self.margin
        if current.write_failed or headroom < full_below or stay_full:
            state = Pressure.FULL
        elif headroom < high_below or stay_high:
            state = Pressure.HIGH
        else:
            state = Pressure.OK
        current.state = state
        if state != Pressure.FULL:
            self._failed_episode = False
        return current

    # ------------------------------------------------------------- reserve file
    def release_reserve(self) -> bool:
        """Delete the reserve file (a write failed for lack of space); True when one existed."""
        try:
            size = self.reserve_path.stat().st_size
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot delete the space reserve", path=str(self.reserve_path),
                        error=str(exc))
            return False
        log.warning("space reserve released for the state database", path=str(self.reserve_path),
                    bytes=size)
        return True

    def ensure_reserve(self) -> None:
        """Write the reserve file when the disk has room for it and the reserve after it."""
        if self.reserve_bytes == 0:
            return
        try:
            have = self.reserve_path.stat().st_size
        except FileNotFoundError:
            have = 0
        except OSError:
            return
        if have >= self.reserve_bytes:
            return
        try:
            free = fs_free_bytes(self.directory)
        except OSError:
            return
        if free < 2 * (self.reserve_bytes - have) + self.min_free + self.margin:
            return
        try:
            with self.reserve_path.open("ab") as handle:
                handle.truncate(0)
                # Real blocks, not a sparse file: the point is to hold space.
                chunk = b"\0" * (256 * 1024)
                written = 0
                while written < self.reserve_bytes:
                    written += handle.write(chunk[: self.reserve_bytes - written])
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            log.warning("cannot write the space reserve", path=str(self.reserve_path),
                        error=str(exc))
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()

    def release_if_low(self) -> None:
        """At start: a disk already (nearly) full gives its reserve to the database at once."""
        try:
            free = fs_free_bytes(self.directory)
        except OSError:
            return
        if free < max(self.min_free, RESUME_MARGIN_BYTES):
            self.release_reserve()
