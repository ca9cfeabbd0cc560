"""A small tmpfs the test mounts itself: a real file system that really fills up (ENOSPC)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MountImpossibleError(RuntimeError):
    """This machine does not let the test mount a file system (not root, no CAP_SYS_ADMIN)."""


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "8m") at `path` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise MountImpossibleError("mounting a tmpfs needs root (the CI runs as root)")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        check=False, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise MountImpossibleError(f"mount -t tmpfs failed: {result.stderr.strip()}")
    try:
        yield path
    finally:
        _umount(path)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave_bytes: int = 0, name: str = "ballast") -> Path:
    """Write a ballast file until only `leave_bytes` are free (or the disk is full)."""
    ballast = path / name
    chunk = b"\0" * (64 * 1024)
    with ballast.open("ab") as handle:
        while True:
            room = free_bytes(path) - leave_bytes
            if room <= 0:
                break
            try:
                handle.write(chunk[: min(len(chunk), room)])
                handle.flush()
            except OSError:
                break
    return ballast
