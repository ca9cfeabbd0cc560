"""A loopback TCP proxy that can go silent: bytes stop flowing, nothing is refused or reset.

`BlackholeProxy(target_port).start()` listens on a free 127.0.0.1 port and forwards to the
target. `silence()` stops forwarding in both directions while every connection stays open,
and new connections are accepted but never forwarded: what a client sees when a cable is cut
or a router drops packets (no RST, no FIN, only missing answers). `restore()` closes the
silenced connections' upstream sides (as the path returning after a real outage finds the
broker has long dropped that session) and forwards new connections again.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class BlackholeProxy:
    """Thread-based proxy: one selector loop for every connection."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._silent = threading.Event()
        self._restore = threading.Event()
        self._restore_done = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []  # accepted while silent: never answered
        self._thread = threading.Thread(target=self._run, name="blackhole", daemon=True)
        self.connections = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> BlackholeProxy:
        self._thread.start()
        return self

    def silence(self) -> None:
        """Drop every byte from now on, in both directions; refuse nothing."""
        self._silent.set()

    def restore(self, timeout: float = 5.0) -> None:
        """Forward again. Connections silenced meanwhile are dead for their peers: closed.

        The proxy's own thread closes them (a socket closed under its selector would kill it);
        this waits until it has.
        """
        self._restore_done.clear()
        self._restore.set()
        if not self._restore_done.wait(timeout):
            raise RuntimeError("the proxy thread did not restore forwarding")

    def _do_restore(self) -> None:
        with self._lock:
            for sock in [*self._pairs, *self._held]:
                with contextlib.suppress(OSError):
                    sock.close()
            self._pairs.clear()
            self._held.clear()
        self._silent.clear()
        self._restore.clear()
        self._restore_done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for sock in [*self._pairs, *self._held, self._listener]:
                with contextlib.suppress(OSError):
                    sock.close()
            self._pairs.clear()

    def _run(self) -> None:
        self._listener.setblocking(False)
        while not self._stop.is_set():
            if self._restore.is_set():
                self._do_restore()
            with self._lock:
                readers = [self._listener, *self._pairs]
                readers = [s for s in readers if s.fileno() >= 0]
            selector = selectors.DefaultSelector()
            for sock in readers:
                selector.register(sock, selectors.EVENT_READ)
            try:
                events = selector.select(0.05)
            except (OSError, ValueError):
                continue  # a socket went away under the selector: look again
            finally:
                selector.close()
            if self._silent.is_set():
                # Accept (the kernel already completed the handshake) but never answer;
                # leave queued bytes unread so the peer's window fills like a dead path's.
                for key, _mask in events:
                    if key.fileobj is self._listener:
                        self._accept(hold=True)
                continue
            for key, _mask in events:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept(hold=False)
                else:
                    self._forward(sock)

    def _accept(self, *, hold: bool) -> None:
        try:
            client, _addr = self._listener.accept()
        except BlockingIOError:
            return
        if hold:
            with self._lock:
                self._held.append(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client
        self.connections += 1

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            try:
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
            except OSError:
                pass
            else:
                return
        with self._lock:
            for end in (sock, peer):
                self._pairs.pop(end, None)
                with contextlib.suppress(OSError):
                    end.close()
