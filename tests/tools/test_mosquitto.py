"""The mosquitto launcher used by `isoedge demo`, the tests and the bench."""

from __future__ import annotations

import socket
import threading

import pytest

from agent.tools.mosquitto import Mosquitto


def test_restart_waits_for_a_port_that_is_briefly_taken(tmp_path):
    broker = Mosquitto(tmp_path)
    holder = socket.socket()
    holder.bind(("127.0.0.1", broker.port))  # bound, not listening: like a client's port
    threading.Timer(1.0, holder.close).start()
    try:
        broker.start(timeout=10)
        with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
            pass
        assert "Address already in use" in broker.log.read_text()
    finally:
        broker.stop()
        holder.close()


def test_a_port_that_stays_taken_is_a_clear_error(tmp_path):
    broker = Mosquitto(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", broker.port))
        with pytest.raises(RuntimeError, match="Address already in use"):
            broker.start(timeout=1.5)
    broker.stop()
