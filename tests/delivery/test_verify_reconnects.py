"""Issue 20, brokers: `isoedge verify` across a broker restart reconnects, resumes its session and
prints its whole report (before: exit 1, an empty report, "Disconnected during message
iteration"). A real agent publishes to a real mosquitto (persistence on) that is restarted."""

from __future__ import annotations

import json
import subprocess
import time

from agentproc import AgentProcess, counter_devices, make_keys, write_config
from collector import Collector
from helpers import cli_env, isoedge_cmd, wait_until


def test_verify_reconnects_across_a_broker_restart_and_prints_its_report(tmp_path, mosquitto):
    make_keys(tmp_path / "keys")
    agent = AgentProcess(write_config(tmp_path / "agent.toml", mosquitto.url,
                                      counter_devices(1, 0.05),
                                      # an envelope every 0.1 s: the test waits for 26
                                      "[outbox]\nmax_commit_delay_ms = 100\n"))
    verify = subprocess.Popen(
        isoedge_cmd("verify", "--broker", mosquitto.url, "--key",
                    str(tmp_path / "keys" / "signing.pub.jwk"), "--topic", "isoedge/v1/#",
                    # Ends on a state: 26 envelopes, the first ~20 before the restart below
                    # and the rest after it (the duration only caps it).
                    "--count", "26", "--duration", "60", "--allow-redelivery"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert verify.stderr is not None
        assert "subscribed" in verify.stderr.readline()
        agent.start()  # after verify listens: it sees the stream from seq 1
        watcher = Collector(mosquitto.port)
        watcher.start()
        wait_until(lambda: len(watcher.envelopes()) >= 20, timeout=30)
        watcher.stop()
        mosquitto.stop()
        time.sleep(1)  # both clients see the broker gone
        mosquitto.start()
        out, err = verify.communicate(timeout=90)
    finally:
        agent.stop_quietly()
        if verify.poll() is None:
            verify.kill()
            verify.wait(10)
    report = json.loads(out)
    assert report["reconnects"] >= 1, err
    assert "reconnecting" in err
    (chain,) = report["agents"].values()
    assert chain["first_seq"] == 1 and chain["envelopes"] == chain["last_seq"], report
    assert chain["last_seq"] > 20
    assert report["ok"] is True, report
    assert verify.returncode == 0
