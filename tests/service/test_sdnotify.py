"""sd_notify: the protocol on a real datagram socket, and `isoedge run` speaking it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from helpers import REPO, cli_env, free_port, isoedge_cmd

from agent.delivery.signing import generate_key_files
from agent.service.sdnotify import SystemdNotifier

if TYPE_CHECKING:
    from pathlib import Path


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    return sock


def _receive(sock: socket.socket, until: float) -> list[dict[str, str]]:
    messages = []
    while time.monotonic() < until:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        break
    return messages


def _wait_for(sock: socket.socket, key: str, timeout: float = 15.0) -> list[dict[str, str]]:
    """Messages received until one contains `key`."""
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += _receive(sock, deadline)
        if seen and key in seen[-1]:
            return seen
    raise AssertionError(f"no {key} within {timeout}s; got {seen}")


def test_no_socket_means_no_op():
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval_s is None


def test_path_socket_receives_ready_status_and_watchdog(tmp_path):
    address = str(tmp_path / "notify")
    with _listener(address) as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
        assert notifier.ready("3 devices online")
        assert sock.recv(4096) == b"READY=1\nSTATUS=3 devices online"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.status("same")
        assert not notifier.status("same"), "an unchanged status is not resent"
        assert sock.recv(4096) == b"STATUS=same"
        notifier.close()


def test_abstract_namespace_socket():
    name = f"isoedge-test-{uuid.uuid4().hex}"
    with _listener("\0" + name) as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.stopping("bye")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=bye"
        notifier.close()


def test_socket_gone_is_logged_not_raised(tmp_path):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert notifier.enabled
    assert notifier.ready() is False


def test_watchdog_interval_only_for_this_process():
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier(env).watchdog_interval_s == 30.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 30.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert SystemdNotifier({**env, "WATCHDOG_USEC": "0"}).watchdog_interval_s is None


async def test_watchdog_loop_pings_at_half_the_interval_and_withholds_when_unhealthy(tmp_path):
    import asyncio

    address = str(tmp_path / "notify")
    with _listener(address) as sock:
        sock.setblocking(False)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
        notifier = SystemdNotifier(env)
        healthy = True
        task = asyncio.create_task(
            notifier.run_watchdog(lambda: "fine", healthy=lambda: healthy, status_every_s=10)
        )
        await asyncio.sleep(0.55)
        received = []
        while True:
            try:
                received.append(sock.recv(4096))
            except BlockingIOError:
                break
        # Every 0.1 s: about 6 in 0.55 s, never more; fewer only on a very loaded machine.
        assert 3 <= received.count(b"WATCHDOG=1") <= 7
        assert b"STATUS=fine" in received
        healthy = False
        await asyncio.sleep(0.35)
        withheld = []
        while True:
            try:
                withheld.append(sock.recv(4096))
            except BlockingIOError:
                break
        assert b"WATCHDOG=1" not in withheld[1:]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_isoedge_run_notifies_systemd(tmp_path: Path, abstract):
    generate_key_files(tmp_path / "keys")
    config = tmp_path / "isoedge.toml"
    config.write_text(
        f'[agent]\nsite = "lab"\nid = "edge1"\nstate_dir = "{tmp_path / "state"}"\n'
        # Nobody listens on this port: READY must not wait for the broker.
        f'[broker]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
        f'[signing]\nkey_file = "{tmp_path / "keys" / "signing.key"}"\n'
        f'[web]\nenabled = false\n'
        f'[[devices]]\nid = "cal1"\ntype = "synthetic"\npoll_interval_s = 0.2\n'
    )
    if abstract:
        name = f"isoedge-{uuid.uuid4().hex}"
        bind, env_value = "\0" + name, "@" + name
    else:
        bind = env_value = str(tmp_path / "notify")
    with _listener(bind) as sock:
        env = {**cli_env(), "NOTIFY_SOCKET": env_value, "WATCHDOG_USEC": "400000"}
        log = (tmp_path / "agent.log").open("w")
        agent = subprocess.Popen(isoedge_cmd("run", "-c", str(config)), env=env, cwd=REPO,
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            messages = _wait_for(sock, "READY")
            assert "devices online" in messages[-1]["STATUS"]
            assert "WATCHDOG" in _wait_for(sock, "WATCHDOG", timeout=2)[-1]
            agent.send_signal(signal.SIGHUP)
            reloading = _wait_for(sock, "RELOADING")[-1]
            assert int(reloading["MONOTONIC_USEC"]) > 0
            assert "READY" in _wait_for(sock, "READY")[-1]
            agent.send_signal(signal.SIGTERM)
            assert "STOPPING" in _wait_for(sock, "STOPPING")[-1]
        finally:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
            returncode = agent.wait(timeout=15)
            log.close()
    assert returncode == 0, (tmp_path / "agent.log").read_text()
