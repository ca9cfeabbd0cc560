"""Broker security: TLS with CA verification, client certificate, username/password."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from agentproc import AgentProcess, make_keys, write_config
from broker import Mosquitto
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import wait_until


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool,
          server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all made here."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "IsoEdge test CA")])
    ca = _cert("IsoEdge test CA", ca_key, ca_name, ca_key, ca=True)
    _write(directory / "ca", ca_key, ca)
    server_key = _key()
    _write(directory / "server", server_key,
           _cert("localhost", server_key, ca_name, ca_key, ca=False, server=True))
    client_key = _key()
    _write(directory / "client", client_key,
           _cert("edge1", client_key, ca_name, ca_key, ca=False))
    other_key = _key()
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some other CA")])
    _write(directory / "other-ca", other_key, _cert("Some other CA", other_key, other_name,
                                                    other_key, ca=True))
    return {name: directory / f"{name}.pem" for name in ("ca", "server", "client", "other-ca")}


@pytest.fixture
def tls_broker(tmp_path):
    pki = make_pki(tmp_path / "pki")
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "edge1", "s3cret"], check=True)
    broker = Mosquitto(tmp_path, listener_options=(
        f"cafile {pki['ca']}\n"
        f"certfile {pki['server']}\nkeyfile {pki['server'].with_suffix('.key')}\n"
        "require_certificate true\n"
        "allow_anonymous false\n"
        f"password_file {passwords}\n"
        # Started as root, mosquitto switches to its own user and could no longer read the
        # test's private files; it is a throwaway broker on loopback, so it keeps the user.
        "user root\n"
    ))
    broker.start()
    yield broker.port, pki
    broker.stop()


def _tls_subscriber(port: int, pki) -> tuple[mqtt.Client, list]:
    received: list = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set("edge1", "s3cret")
    client.tls_set(ca_certs=str(pki["ca"]), certfile=str(pki["client"]),
                   keyfile=str(pki["client"].with_suffix(".key")), cert_reqs=ssl.CERT_REQUIRED)
    client.on_connect = lambda c, *_: c.subscribe("isoedge/v1/#", qos=1)
    client.on_message = lambda _c, _u, m: received.append(m)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, received


def _tls_config(tmp_path: Path, port: int, pki, ca: Path, password: str) -> Path:
    (tmp_path / "broker.password").write_text(password + "\n")
    devices = """
[[devices]]
id = "area-1"
type = "synthetic"
poll_interval_s = 0.1
"""
    tls = f"""
[broker.tls]
ca_file = "{ca}"
cert_file = "{pki['client']}"
key_file = "{pki['client'].with_suffix('.key')}"
"""
    return write_config(tmp_path / "agent.toml", f"mqtts://127.0.0.1:{port}", devices, tls,
                        broker_extra='username = "edge1"\npassword_file = "broker.password"')


def test_agent_publishes_over_tls_with_client_certificate_and_password(tmp_path, tls_broker):
    port, pki = tls_broker
    make_keys(tmp_path / "keys")
    subscriber, received = _tls_subscriber(port, pki)
    agent = AgentProcess(_tls_config(tmp_path, port, pki, pki["ca"], "s3cret")).start()
    try:
        wait_until(lambda: any("/readings/area-1" in m.topic for m in received), timeout=30)
    finally:
        assert agent.terminate() == 0
        subscriber.disconnect()
        subscriber.loop_stop()
    status = [json.loads(m.payload) for m in received if m.topic.endswith("/status")]
    assert status and status[0]["state"] == "online"


def test_agent_refuses_a_broker_its_ca_does_not_vouch_for(tmp_path, tls_broker):
    port, pki = tls_broker
    make_keys(tmp_path / "keys")
    agent = AgentProcess(_tls_config(tmp_path, port, pki, pki["other-ca"], "s3cret")).start()
    try:
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in agent.log()
                   or "certificate verify failed" in agent.log(), timeout=30)
    finally:
        assert agent.terminate() == 0
    # It keeps acquiring into the outbox meanwhile: nothing is lost while the link is refused.
    assert "device connected" in agent.log()


def test_wrong_broker_password_is_reported_and_retried(tmp_path, tls_broker):
    port, pki = tls_broker
    make_keys(tmp_path / "keys")
    agent = AgentProcess(_tls_config(tmp_path, port, pki, pki["ca"], "wrong")).start()
    try:
        wait_until(lambda: agent.log().count("broker connection lost") >= 2, timeout=30)
    finally:
        assert agent.terminate() == 0
    assert "Not authorized" in agent.log() or "not authorised" in agent.log().lower() \
        or "Bad user name or password" in agent.log()
