"""The fleet page of a running `isoedge ingest run` as a hostile browser or script sees it."""

from __future__ import annotations

import datetime as dt
import http.client
import ssl
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import wait_until
from ingest_rig import make_rig


def get(port: int, path: str, *, context: ssl.SSLContext | None = None,
        ) -> tuple[int, dict[str, str], bytes]:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
            if context else http.client.HTTPConnection("127.0.0.1", port, timeout=15))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _readings(**params: str) -> str:
    base = {"site": "lab1", "agent": "edge1", "device": "dc-1"}
    return "/api/readings?" + urllib.parse.urlencode({**base, **params})


def test_bad_query_parameters_answer_400_never_500(central_rig):
    central_rig.send_legit(2)
    central_rig.publisher.wait_acked()
    central_rig.assert_stream_complete()
    port = central_rig.web_port
    assert get(port, _readings())[0] == 200
    bad = [
        _readings(device="dc\x00-1"), _readings(site="lab\x001"), _readings(channel="a\x00"),
        _readings(agent="../edge1"), _readings(device="d" * 5000),
        _readings(to="0001-01-01T00:00:00"), _readings(**{"from": "not a time"}),
        "/api/readings?site=lab1&site=lab2&agent=edge1&device=dc-1",
        "/api/readings?agent=edge1&device=dc-1",
        "/export.csv?site=lab1&agent=edge1&device=dc%00x",
    ]
    for path in bad:
        status, _headers, _body = get(port, path)
        assert status == 400, (path, status)
    # extreme but valid times are a (possibly empty) answer
    extreme = _readings(to="9999-12-31T23:59:59", **{"from": "0001-01-01T00:00:00+14:00"})
    assert get(port, extreme)[0] == 200
    assert get(port, "/api/fleet")[0] == 200  # and the page still answers
    assert central_rig.ingest.proc.poll() is None


def test_the_csv_file_name_cannot_be_injected(central_rig):
    status, headers, _body = get(central_rig.web_port, "/export.csv?" + urllib.parse.urlencode({
        "site": "lab1", "agent": "edge1",
        "device": 'dc"; filename="evil.sh',
    }))
    assert status == 200
    disposition = headers["content-disposition"]
    assert disposition.startswith('attachment; filename="lab1_edge1_dc--')
    assert disposition.count('"') == 2 and "evil.sh" not in disposition.split('"')[2]
    status, headers, _body = get(central_rig.web_port, "/export.csv?" + urllib.parse.urlencode({
        "site": "lab1", "agent": "edge1", "device": "dc\r\nX-Injected: 1"}))
    assert status == 400 and "x-injected" not in headers
    name = disposition.split('"')[1]  # of the first answer
    assert all(c.isalnum() or c in "_.-" for c in name), name


def test_security_headers_on_every_answer(central_rig):
    for path in ("/", "/api/fleet", "/static/fleet.js", "/api/readings?site=x", "/nope"):
        _status, headers, _body = get(central_rig.web_port, path)
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert "strict-transport-security" not in headers  # plain HTTP: no HSTS


def _certificate(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "fleet.crt", folder / "fleet.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def test_the_page_is_served_over_tls_with_hsts(tmp_path, mosquitto, postgres):
    cert_file, key_file = _certificate(tmp_path)
    central_rig = make_rig(tmp_path, mosquitto, postgres,
                   web=f'tls_cert = "{cert_file}"\ntls_key = "{key_file}"\n')
    try:
        context = ssl.create_default_context(cafile=str(cert_file))

        def answers() -> bool:
            try:
                return get(central_rig.web_port, "/healthz", context=context)[0] in {200, 503}
            except OSError:
                return False

        wait_until(answers, timeout=60)
        status, headers, body = get(central_rig.web_port, "/api/fleet", context=context)
        assert status == 200 and b'"agents"' in body
        assert headers["strict-transport-security"].startswith("max-age=")
        assert headers["x-frame-options"] == "DENY"
        # plain HTTP on the TLS port gets no page
        try:
            plain = get(central_rig.web_port, "/api/fleet")[0]
        except (http.client.HTTPException, OSError):
            plain = None
        assert plain != 200
    finally:
        central_rig.publisher.close()
        central_rig.ingest.stop_quietly()
