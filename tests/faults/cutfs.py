# FUSE callbacks keep libfuse's signatures (unused arguments) and work on raw fds and paths:
# ruff: noqa: ARG002, C901, PTH100, PTH101, PTH102, PTH104, PTH106, PTH108, PTH118, PTH208
"""A pass-through FUSE file system that loses every write not yet fsynced, like LazyFS.

`python tests/faults/cutfs.py BACKING MOUNTPOINT [--fsync-delay-ms N]` serves BACKING at
MOUNTPOINT. Data written to a file is kept in this process's memory (4 KiB pages, plus a
pending size for truncations) and reaches BACKING only when the file is fsynced (fsync or
fdatasync). Reads see the unsynced data, as they would through a page cache. Name operations
(create, unlink, rename, mkdir) go to BACKING at once.

A power cut is this process dying: `CutFS.cut()` (tests) SIGKILLs it, so every unsynced write
is lost, lazily unmounts the dead mount and serves BACKING again from what was fsynced.

`--fsync-delay-ms` makes every fsync (and directory fsync) take that much longer, like a slow
SD card; data is durable before the delay starts.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 4096


@dataclass
class _Dirty:
    """Unsynced state of one file (keyed by backing inode)."""

    size: int  # logical size, as reads and getattr see it
    floor: int  # bytes of the backing file still valid (min size truncated to since the sync)
    pages: dict[int, bytearray] = field(default_factory=dict)
    handles: int = 0


def _operations() -> Any:
    """The Operations class (mfusepy is imported only where the file system really runs)."""
    import mfusepy

    class CutOps(mfusepy.Operations):
        use_ns = True

        def __init__(self, backing: str, fsync_delay_s: float) -> None:
            self.backing = backing
            self.fsync_delay_s = fsync_delay_s
            self._mutex = threading.RLock()
            self.files: dict[int, _Dirty] = {}  # inode -> state
            self.fh_inode: dict[int, int] = {}

        # -------------------------------------------------------------- helpers
        def _real(self, path: str) -> str:
            return os.path.join(self.backing, path.lstrip("/"))

        def _state(self, fh: int) -> _Dirty:
            ino = self.fh_inode[fh]
            state = self.files.get(ino)
            if state is None:
                size = os.fstat(fh).st_size
                state = self.files[ino] = _Dirty(size=size, floor=size)
            return state

        def _page(self, fh: int, state: _Dirty, index: int) -> bytearray:
            page = state.pages.get(index)
            if page is None:
                start = index * PAGE
                page = bytearray(PAGE)
                if start < state.floor:
                    data = os.pread(fh, min(PAGE, state.floor - start), start)
                    page[: len(data)] = data
                state.pages[index] = page
            return page

        def _read(self, fh: int, state: _Dirty, size: int, offset: int) -> bytes:
            end = min(offset + size, state.size)
            out = bytearray()
            pos = offset
            while pos < end:
                index, within = divmod(pos, PAGE)
                take = min(PAGE - within, end - pos)
                page = state.pages.get(index)
                if page is not None:
                    out += page[within : within + take]
                elif pos < state.floor:
                    avail = min(take, state.floor - pos)
                    data = os.pread(fh, avail, pos)
                    out += data + bytes(take - len(data))
                else:
                    out += bytes(take)
                pos += take
            return bytes(out)

        def _sync(self, fh: int) -> None:
            ino = self.fh_inode[fh]
            state = self.files.get(ino)
            if state is not None and (state.pages or state.floor != state.size):
                if state.floor < os.fstat(fh).st_size:
                    os.ftruncate(fh, state.floor)
                for index in sorted(state.pages):
                    start = index * PAGE
                    if start >= state.size:
                        continue
                    os.pwrite(fh, bytes(state.pages[index][: state.size - start]), start)
                os.ftruncate(fh, state.size)
                state.pages.clear()
                state.floor = state.size
            os.fsync(fh)

        # ---------------------------------------------------------- operations
        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self._mutex:
                st = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
                attrs = {
                    key: getattr(st, key)
                    for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                                "st_ino", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")
                }
                for key in ("atime", "mtime", "ctime"):
                    attrs[f"st_{key}"] = attrs.pop(f"st_{key}_ns")
                state = self.files.get(st.st_ino)
                if state is not None:
                    attrs["st_size"] = state.size
                    attrs["st_blocks"] = (state.size + 511) // 512
                return attrs

        def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, Any], int]]:
            # With attributes: the kernel asks for READDIRPLUS, and entries without a mode
            # are dropped (an empty listing).
            entries = [".", "..", *os.listdir(self._real(path))]
            return [(name, self.getattr(os.path.join(path, name)), 0) for name in entries]

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._real(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def _opened(self, fd: int) -> int:
            with self._mutex:
                ino = os.fstat(fd).st_ino
                self.fh_inode[fd] = ino
                self._state(fd).handles += 1
            return fd

        def open(self, path: str, flags: int) -> int:
            # Always read-write underneath: unsynced pages may have to be written back later.
            fd = os.open(self._real(path), os.O_RDWR if os.access(self._real(path), os.W_OK)
                         else os.O_RDONLY)
            if flags & os.O_TRUNC:
                self.truncate(path, 0, fd)
            return self._opened(fd)

        def create(self, path: str, mode: int, flags: int = 0) -> int:
            fd = os.open(self._real(path), os.O_RDWR | os.O_CREAT, mode)
            fh = self._opened(fd)
            if flags & os.O_TRUNC:
                self.truncate(path, 0, fh)
            return fh

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with self._mutex:
                return self._read(fh, self._state(fh), size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self._mutex:
                state = self._state(fh)
                pos, view = offset, memoryview(data)
                while view:
                    index, within = divmod(pos, PAGE)
                    take = min(PAGE - within, len(view))
                    self._page(fh, state, index)[within : within + take] = view[:take]
                    view = view[take:]
                    pos += take
                state.size = max(state.size, offset + len(data))
                return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self._mutex:
                if fh is None:
                    fd = os.open(self._real(path), os.O_RDWR)
                    try:
                        self.fh_inode[fd] = os.fstat(fd).st_ino
                        self._truncate(fd, length)
                    finally:
                        del self.fh_inode[fd]
                        os.close(fd)
                else:
                    self._truncate(fh, length)
            return 0

        def _truncate(self, fh: int, length: int) -> None:
            state = self._state(fh)
            for index in [i for i in state.pages if i * PAGE >= length]:
                del state.pages[index]
            tail = state.pages.get(length // PAGE)
            if tail is not None:
                tail[length % PAGE :] = bytes(PAGE - length % PAGE)
            state.floor = min(state.floor, length)
            state.size = length

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                self._sync(fh)
            if self.fsync_delay_s:
                time.sleep(self.fsync_delay_s)
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            if self.fsync_delay_s:
                time.sleep(self.fsync_delay_s)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            with self._mutex:
                ino = self.fh_inode.pop(fh)
                state = self.files.get(ino)
                if state is not None:
                    state.handles -= 1
                    if state.handles <= 0 and not state.pages and state.floor == state.size:
                        del self.files[ino]
                    elif state.handles <= 0 and os.fstat(fh).st_nlink == 0:
                        del self.files[ino]  # deleted and closed: nothing left to sync
                os.close(fh)
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._real(path))
            return 0

        def rename(self, old: str, new: str) -> int:
            os.rename(self._real(old), self._real(new))
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._real(path))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            os.utime(self._real(path), ns=times)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._real(path))
            return {key: getattr(st, key) for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")}

    return CutOps


def serve(backing: str, mountpoint: str, fsync_delay_ms: float) -> None:
    """Serve until unmounted or killed."""
    import mfusepy

    ops = _operations()(os.path.abspath(backing), fsync_delay_ms / 1000.0)
    mfusepy.FUSE(ops, mountpoint, foreground=True, nothreads=False, hard_remove=True,
                 use_ino=True, fsname="cutfs")


def fuse_available() -> str | None:
    """None when a cutfs can be mounted here, else why not (for a skip reason)."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse on this machine"
    if os.geteuid() != 0:
        return "mounting FUSE file systems in the tests needs root"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy/libfuse3 not installed (make setup-test): {exc}"
    return None


class CutFS:
    """Test handle: mount, cut (power loss), remount, unmount."""

    def __init__(self, backing: Path, mountpoint: Path, *, fsync_delay_ms: float = 0) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.fsync_delay_ms = fsync_delay_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def mount(self) -> CutFS:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        log = (self.backing.parent / "cutfs.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.backing), str(self.mountpoint),
             "--fsync-delay-ms", str(self.fsync_delay_ms)],
            stdout=log, stderr=log,
        )
        deadline = time.monotonic() + 15
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cutfs did not mount at {self.mountpoint}; see cutfs.log")
            time.sleep(0.02)
        return self

    def _unmount_dead(self) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False,
                       capture_output=True)

    def cut(self) -> None:
        """Power loss: every write not fsynced is gone. The caller kills its processes too."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.cuts += 1
        self._unmount_dead()

    def remount(self) -> None:
        self.mount()

    def unmount(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(["umount", str(self.mountpoint)], check=False,
                           capture_output=True)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._unmount_dead()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--fsync-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    serve(args.backing, args.mountpoint, args.fsync_delay_ms)


if __name__ == "__main__":
    main()
