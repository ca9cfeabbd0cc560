"""A private mosquitto broker on a loopback port (for `isoedge demo`; tests use it too)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    """Path of the mosquitto executable; RuntimeError with the fix when it is missing."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError(
            "mosquitto is not installed: run `make demo`/`make test` as root, or "
            "`sudo apt-get install mosquitto`, or pass --broker mqtt://HOST:PORT"
        )
    return found


class Mosquitto:
    """One broker process bound to 127.0.0.1; `url` stays the same across stop/start."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistent: bool = False,
        listener_options: str = "allow_anonymous true\n",
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # Persistence keeps subscribers' sessions (and their queued QoS 1 messages) across a
        # broker restart, as a production broker does.
        persistence = (
            f"persistence true\npersistence_location {workdir}/\nuser root\n"
            if persistent
            else "persistence false\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + listener_options
            + persistence
            + "max_inflight_messages 0\n"
            "max_queued_messages 1000000\n"
            "message_size_limit 0\n"
        )
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:PORT."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it accepts connections.

        On a restart the port can be briefly taken (e.g. by a client's outgoing connection that
        got it as its ephemeral port while the broker was down); that is retried until `timeout`.
        """
        deadline = time.monotonic() + timeout
        while True:
            offset = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own config file
                    [mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=log
                )
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    if self.proc.poll() is not None:
                        break
                    time.sleep(0.05)
            output = self.log.read_bytes()[offset:].decode(errors="replace")[-500:]
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(
                    f"mosquitto did not accept connections on port {self.port}: {output}"
                )
            if "Address already in use" not in output or time.monotonic() + 0.5 >= deadline:
                raise RuntimeError(f"mosquitto exited: {output}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the broker (clients see the connection drop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
