"""OPC UA Basic256Sha256 SignAndEncrypt with certificates made in the test, and user login."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import REPO, wait_for_condition
from supervised import Supervised

from agent.service.config import load_config, parse_config
from drivers.base import DeviceError
from drivers.registry import create_driver
from simulators.opcua import SynthesisModuleSimulator

pytestmark = pytest.mark.timeout(60)


def make_cert(directory, name: str, uri: str):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(uri),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.der"
    key_path = directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    # RSA key generation is the slow part: one server and one client pair per worker (session:
    # a worker running other modules' tests in between keeps it).
    directory = tmp_path_factory.mktemp("pki")
    server = make_cert(directory, "server", "urn:isoedge:simulator:synthesis")
    client = make_cert(directory, "client", "urn:isoedge:agent:synth-sec")
    return server, client


@pytest.fixture
async def secure_module(certs):
    (server_cert, server_key), _ = certs
    sim = SynthesisModuleSimulator(
        security="SignAndEncrypt",
        certificate=server_cert,
        private_key=server_key,
        users={"qa": "s3cret"},
        time_scale=100.0,
    )
    await sim.start()
    yield sim, certs
    await sim.stop()


def secure_device(sim, certs, tmp_path, *, password: str = "s3cret", **security):  # noqa: S107
    _, (client_cert, client_key) = certs
    password_file = tmp_path / "opcua.password"
    password_file.write_text(password + "\n", encoding="utf-8")
    data = sim.device_config(
        "synth-sec",
        publishing_interval_ms=100,
        timeout_s=3.0,
        username="qa",
        password_file=str(password_file),
        security={
            "policy": "Basic256Sha256",
            "mode": "SignAndEncrypt",
            "certificate": str(client_cert),
            "private_key": str(client_key),
            **security,
        },
    )
    return parse_config({"agent": {"site": "s", "id": "a"}, "devices": [data]}).devices[0]


async def test_sign_and_encrypt_with_user_login(secure_module, tmp_path):
    sim, certs = secure_module
    (server_cert, _), _ = certs
    config = secure_device(sim, certs, tmp_path, server_certificate=str(server_cert))
    async with Supervised(config) as run:
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 2)
    assert run.errors == []
    assert run.channel("supply_pressure")[-1].unit == "kPa"


async def test_wrong_password_is_refused(secure_module, tmp_path):
    sim, certs = secure_module
    driver = create_driver(secure_device(sim, certs, tmp_path, password="wrong"))  # noqa: S106
    try:
        with pytest.raises(DeviceError, match="cannot open OPC UA session"):
            await driver.connect()
    finally:
        await driver.close()


async def test_unsecured_client_is_refused(secure_module):
    sim, _ = secure_module
    data = sim.device_config("synth-plain", timeout_s=2.0, username="qa")
    config = parse_config({"agent": {"site": "s", "id": "a"}, "devices": [data]}).devices[0]
    driver = create_driver(config)
    try:
        with pytest.raises(DeviceError):
            await driver.connect()
    finally:
        await driver.close()


def test_security_settings_are_validated():
    base = {"id": "x", "type": "opcua", "url": "opc.tcp://127.0.0.1:4840", "nodes": []}
    bad = [
        {"policy": "Basic256Sha256", "mode": "None"},
        {"policy": "Basic256Sha256", "mode": "Sign"},
        {"policy": "None", "mode": "Sign"},
    ]
    for security in bad:
        device = {**base, "events": {"event_type": "ns=2;s=E"}, "security": security}
        with pytest.raises(Exception, match="devices\\[0\\]"):
            parse_config({"agent": {"site": "s", "id": "a"}, "devices": [device]})


def test_shipped_synthesis_map_is_valid():
    import tomllib

    path = REPO / "config" / "maps" / "synthesis_fdg.toml"
    devices = tomllib.loads(path.read_text(encoding="utf-8"))["devices"]
    config = parse_config({"agent": {"site": "s", "id": "a"}, "devices": devices})
    assert config.devices[0].events is not None
    assert len(config.devices[0].nodes) == 10


def _toml_value(value) -> str:
    """An inline TOML value (enough for a device configuration)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


async def test_relative_security_paths_are_relative_to_the_config_file(
    secure_module, tmp_path, monkeypatch
):
    # Under systemd the working directory is /: relative certificate, key and password file
    # paths must resolve against the configuration file's folder, not the process's cwd.
    sim, certs = secure_module
    (server_cert, _), (client_cert, client_key) = certs
    site = tmp_path / "site"
    (site / "keys").mkdir(parents=True)
    for source in (server_cert, client_cert, client_key):
        shutil.copy(source, site / "keys" / source.name)
    (site / "keys" / "opcua.password").write_text("s3cret\n", encoding="utf-8")
    device = sim.device_config(
        "synth-sec",
        publishing_interval_ms=100,
        timeout_s=3.0,
        username="qa",
        password_file="keys/opcua.password",  # noqa: S106 - a file name, not a password
        security={
            "policy": "Basic256Sha256",
            "mode": "SignAndEncrypt",
            "certificate": f"keys/{client_cert.name}",
            "private_key": f"keys/{client_key.name}",
            "server_certificate": f"keys/{server_cert.name}",
        },
    )
    lines = ["[agent]", 'site = "s"', 'id = "a"', 'state_dir = "state"', "", "[[devices]]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in device.items()]
    config_file = site / "isoedge.toml"
    config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(config_file)

    loaded = config.devices[0]
    assert loaded.password_file == site / "keys" / "opcua.password"
    assert loaded.security.certificate == site / "keys" / client_cert.name
    assert loaded.security.private_key == site / "keys" / client_key.name
    assert loaded.security.server_certificate == site / "keys" / server_cert.name
    assert config.agent.state_dir == site / "state"
    async with Supervised(loaded) as run:
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 2)
    assert run.errors == []


async def test_opcua_cert_verb_makes_a_certificate_the_server_accepts(secure_module, tmp_path):
    """`isoedge opcua-cert --device synth-sec` (cryptography, not openssl): the certificate
    carries the application URI the agent states, and a real secure session opens with it."""
    import subprocess
    import sys

    from drivers.opcua.certs import certificate_uri

    sim, certs = secure_module
    (server_cert, _), _ = certs
    command = [sys.executable, "-m", "agent.tools.cli", "opcua-cert", "--device", "synth-sec",
               "--out", str(tmp_path / "pki"), "--hostname", "localhost"]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "urn:isoedge:agent:synth-sec" in result.stdout
    cert, key = tmp_path / "pki" / "synth-sec-client.der", tmp_path / "pki" / "synth-sec-client.pem"
    assert certificate_uri(cert) == "urn:isoedge:agent:synth-sec"
    assert key.stat().st_mode & 0o777 == 0o600
    config = secure_device(
        sim, ((None, None), (cert, key)), tmp_path, server_certificate=str(server_cert)
    )
    async with Supervised(config) as run:
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 1)
    assert run.errors == []


async def test_wrong_pinned_server_certificate_is_named(secure_module, tmp_path):
    sim, certs = secure_module
    _, (client_cert, _) = certs
    # Pin a certificate the server does not have (the client's own).
    config = secure_device(sim, certs, tmp_path, server_certificate=str(client_cert))
    driver = create_driver(config)
    try:
        with pytest.raises(DeviceError, match="server certificate does not match the pinned one"):
            await driver.connect()
    finally:
        await driver.close()
