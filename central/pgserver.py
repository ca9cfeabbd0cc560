"""A private PostgreSQL server on a loopback port, for tests, benches and `isoedge demo --fleet`.

Uses Debian's binaries (`initdb`, `pg_ctl`, `postgres` from /usr/lib/postgresql/*/bin, which
is not on PATH). PostgreSQL refuses to run as root, so when we are root the cluster belongs to
an unprivileged system user (`isoedge-pg`, created when missing, else `nobody`) and lives in a
directory under /tmp that only that user can enter.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

PG_USER = "isoedge-pg"
DATABASE = "isoedge"
ROLE = "isoedge"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pg_bindir() -> Path:
    """Directory holding initdb/pg_ctl/postgres; RuntimeError with the fix when missing."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "PostgreSQL is not installed: run `make demo DEMO_ARGS=--fleet`/`make test` as root, "
            "or `sudo apt-get install postgresql`, or give a database URL of your own"
        )
    return Path(candidates[-1]).parent


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged owner of the cluster when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_USER)
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run(  # noqa: S603 - fixed argv
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=False,
            capture_output=True,
        )
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(PG_USER)
    return pwd.getpwnam("nobody")


class PostgresServer:
    """One cluster in a private directory, bound to 127.0.0.1; `url` survives stop/start."""

    def __init__(self, port: int | None = None, *, fsync: bool = True) -> None:
        self.port = port or free_port()
        self.bindir = pg_bindir()
        self.owner = _service_user()
        # /tmp/pytest-of-root and friends are 0700 root: the cluster needs its own directory.
        self.root = Path(tempfile.mkdtemp(prefix="isoedge-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.fsync = fsync
        self._initialised = False

    @property
    def url(self) -> str:
        """postgresql://isoedge@127.0.0.1:PORT/isoedge (trust authentication on loopback)."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.owner is not None:
            kwargs = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[no-any-return]  # noqa: S603 - our own binaries, fixed arguments
            list(argv),
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "TZ": "UTC"},
            **kwargs,  # type: ignore[call-overload]
        )

    def _initdb(self) -> None:
        if self.owner is not None:
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self.root.chmod(0o700)
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.datadir),
            "-U", ROLE,
            "--auth=trust",
            "-E", "UTF8",
            "--no-instructions",
            "--no-sync",
        )
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                f"fsync = {'on' if self.fsync else 'off'}\n"
                "max_connections = 50\nshared_buffers = 128MB\n"
                "timezone = 'UTC'\nlog_timezone = 'UTC'\n"
            )
        self._initialised = True

    def start(self, timeout: float = 30.0) -> None:
        """Initdb on first start, then start and wait until the `isoedge` database exists."""
        if not self._initialised:
            self._initdb()
        result = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
            "-w", "-t", str(int(timeout)), "start", check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"postgres did not start: {result.stdout}{result.stderr}{self.log()}"
            )
        self._ensure_database(timeout)

    def _ensure_database(self, timeout: float) -> None:
        import psycopg  # noqa: PLC0415 - only the ingest side needs the driver

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    f"postgresql://{ROLE}@127.0.0.1:{self.port}/postgres",
                    autocommit=True,
                    connect_timeout=2,
                ) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    if exists is None:
                        conn.execute(f"CREATE DATABASE {DATABASE}")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (clients see their connections drop)."""
        if not self._initialised:
            return
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop",
            check=False,
        )

    def restart(self) -> None:
        """Stop, then start again on the same port with the same data."""
        self.stop()
        self.start()

    def running(self) -> bool:
        """Whether the server process is up."""
        if not self._initialised:
            return False
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status",
                         check=False).returncode == 0

    def log(self) -> str:
        """The server log (for failure messages)."""
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop and delete the cluster."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.destroy()
