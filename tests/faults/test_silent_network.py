"""A silent network (issue 14): the broker's packets dropped, not refused.

A loopback proxy between agent and broker stops forwarding without closing anything, as a cut
cable or a dropping firewall does. The agent must notice within its keep-alive (while sending,
a PUBACK that never comes tells it sooner), reconnect once the path returns and lose nothing.
"""

from __future__ import annotations

import time

import pytest
from agentproc import AgentProcess, counter_devices, make_keys
from collector import Collector
from faults.blackhole import BlackholeProxy
from faults.scenario import (
    backlog_drained,
    fault_config,
    finish,
    healthz,
    metrics,
    verified_delivery,
)
from helpers import wait_until

pytestmark = pytest.mark.slow

KEEPALIVE_S = 5


def broker_state(port: int) -> str | None:
    report = healthz(port)
    return None if report is None else str(report["checks"]["broker"])


@pytest.mark.parametrize("traffic", ["idle", "busy"])
def test_a_silent_network_is_noticed_within_the_keepalive_and_nothing_is_lost(
    tmp_path, mosquitto, traffic, teardown
):
    jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    teardown.callback(collector.stop)
    proxy = BlackholeProxy(mosquitto.port).start()
    teardown.callback(proxy.stop)
    # idle: one reading a second, so the keep-alive ping is what must notice.
    interval = 1.0 if traffic == "idle" else 0.01
    config, port = fault_config(
        tmp_path, proxy.url, counter_devices(1, interval),
        broker_extra=f"keepalive_s = {KEEPALIVE_S}\npublish_timeout_s = {KEEPALIVE_S}\n"
                     f"connect_timeout_s = {KEEPALIVE_S}",
    )
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: broker_state(port) == "connected", timeout=30)
        wait_until(lambda: len(collector.envelopes()) > 2, timeout=30)
        proxy.silence()
        silenced = time.monotonic()
        wait_until(lambda: broker_state(port) != "connected", timeout=3 * KEEPALIVE_S)
        noticed_after = time.monotonic() - silenced
        print(f"silent network ({traffic}): noticed after {noticed_after:.1f} s")  # noqa: T201
        # MQTT: a client that hears nothing for 1.5 keep-alives knows the link is gone.
        assert noticed_after <= 1.5 * KEEPALIVE_S + 1.0, noticed_after
        time.sleep(2)  # readings keep being acquired into the outbox meanwhile
        proxy.restore()
        wait_until(lambda: broker_state(port) == "connected", timeout=6 * KEEPALIVE_S)
        wait_until(lambda: backlog_drained(metrics(port)), timeout=30)
        acquired = metrics(port)["isoedge_readings_acquired_total"]
    finally:
        code = finish(agent)
    assert code == 0, agent.log()[-3000:]
    _decoded, seen = verified_delivery(collector, jwk)
    assert seen["readings"] >= acquired
