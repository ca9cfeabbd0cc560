"""Issue 20, brokers: an ingest that cannot get QoS 1 shared subscriptions stops and says why.

Before, against a broker granting QoS 0 only, the ingest logged "ingest connected", received
nothing and said nothing. A real mosquitto with `max_qos 0` (its CONNACK says Maximum QoS 0).
"""

from __future__ import annotations

from broker import Mosquitto
from ingestproc import IngestProcess, report, write_ingest_config
from synth import SynthAgent

from central.app import prepare_database
from central.config import load_config


def test_ingest_stops_with_a_clear_error_when_the_broker_allows_qos_0_only(tmp_path, postgres):
    broker = Mosquitto(tmp_path / "broker", listener_options="allow_anonymous true\nmax_qos 0\n")
    broker.start()
    try:
        config = write_ingest_config(tmp_path / "ingest.toml", broker.url, postgres.url, [])
        ingest = IngestProcess(config).start()
        assert ingest.proc is not None
        code = ingest.proc.wait(60)
    finally:
        broker.stop()
    log = ingest.log()
    assert code == 1, log
    assert "ingest failed: the broker allows QoS 0 only" in log
    assert "envelopes need QoS 1" in log


def test_a_registered_agent_with_nothing_stored_is_reported_as_no_data(tmp_path, postgres):
    agent = SynthAgent("lab1", "edge1", tmp_path / "keys")
    config = write_ingest_config(tmp_path / "ingest.toml", "mqtt://127.0.0.1:1", postgres.url,
                                 [("lab1", "edge1", [agent.jwk_path])])
    prepare_database(load_config(config))  # a fresh database's "schema created" log line aside
    (entry,) = report(config)["agents"]
    assert (entry["site"], entry["agent"], entry["envelopes"]) == ("lab1", "edge1", 0)
    assert entry["chain"] == "no data"  # was "ok": nothing stored vouched for nothing
