"""Signing: keys on disk, RFC 7638 kid, envelopes verified by an independent JOSE library."""

from __future__ import annotations

import base64
import json
import stat
import subprocess

import pytest
from collector import jose_verify
from helpers import cli_env, isoedge_cmd
from joserfc.jwk import OKPKey

from agent.delivery.signing import Signer, generate_key_files
from agent.delivery.verification import KeyRegistry, VerificationError


def test_keygen_writes_0600_key_and_public_jwk(tmp_path):
    result = subprocess.run(isoedge_cmd("keygen", "--out", str(tmp_path / "k")), capture_output=True,
                            text=True, env=cli_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "k" / "signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    jwk = json.loads((tmp_path / "k" / "signing.pub.jwk").read_text())
    assert "d" not in jwk  # the public file holds no private part
    assert jwk["kid"] in result.stdout
    again = subprocess.run(isoedge_cmd("keygen", "--out", str(tmp_path / "k")), capture_output=True,
                           text=True, env=cli_env(), timeout=60)
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr


def test_kid_is_the_rfc7638_thumbprint(tmp_path):
    signer = generate_key_files(tmp_path)
    jwk = json.loads((tmp_path / "signing.pub.jwk").read_text())
    independent = OKPKey.import_key({k: jwk[k] for k in ("kty", "crv", "x")}).thumbprint()
    assert signer.kid == independent == jwk["kid"]


def test_envelope_verifies_with_joserfc_and_tampering_fails(tmp_path):
    signer = generate_key_files(tmp_path)
    payload = b'{"v":1,"seq":1,"items":[]}'
    body = signer.sign_bytes(payload)
    header, got = jose_verify(body, signer.jwk)
    assert got == payload
    assert header["alg"] == "Ed25519"
    assert header["typ"] == "isoedge+json"

    keys = KeyRegistry.from_files([tmp_path / "signing.pub.jwk"])
    assert keys.verify(body).payload == payload
    document = json.loads(body)
    document["payload"] = document["payload"][:-2] + ("A" if document["payload"][-2] != "A" else "B") + document["payload"][-1]
    with pytest.raises(VerificationError, match="bad signature") as refused:
        keys.verify(json.dumps(document).encode())
    assert refused.value.code == "bad_signature"


def test_signature_by_another_key_is_rejected(tmp_path):
    generate_key_files(tmp_path / "a")
    other = generate_key_files(tmp_path / "b")
    keys = KeyRegistry.from_files([tmp_path / "a" / "signing.pub.jwk"])
    with pytest.raises(VerificationError, match="unknown key") as refused:
        keys.verify(other.sign_bytes(b"{}"))
    assert refused.value.code == "unknown_key"


def test_the_kid_in_a_header_is_never_trusted(tmp_path):
    honest = generate_key_files(tmp_path / "a")
    forger = generate_key_files(tmp_path / "b")
    keys = KeyRegistry.from_files([tmp_path / "a" / "signing.pub.jwk"])
    # A registry file that claims another kid for the key: the computed thumbprint wins.
    claimed = {**honest.jwk, "kid": forger.kid}
    assert KeyRegistry([claimed]).kids == {honest.kid}
    # An envelope signed by the forger but naming the honest kid is a bad signature.
    document = json.loads(forger.sign_bytes(b"{}"))
    header = json.loads(base64.urlsafe_b64decode(document["protected"] + "=="))
    header["kid"] = honest.kid
    document["protected"] = base64.urlsafe_b64encode(
        json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(VerificationError, match="bad signature"):
        keys.verify(json.dumps(document).encode())


def test_signer_loads_what_keygen_wrote(tmp_path):
    signer = generate_key_files(tmp_path)
    assert Signer.load(tmp_path / "signing.key").kid == signer.kid


def test_key_rotation_is_announced_in_the_audit_stream(tmp_path, mosquitto):
    import shutil

    from agentproc import AgentProcess, make_keys, write_config
    from collector import Collector, decode_all
    from helpers import wait_until

    old_jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    config = write_config(tmp_path / "agent.toml", mosquitto.url, "")
    first = AgentProcess(config).start()
    wait_until(lambda: len(collector.envelopes()) >= 1, timeout=20)
    assert first.terminate() == 0
    shutil.move(tmp_path / "keys", tmp_path / "retired")
    new_jwk = make_keys(tmp_path / "keys")
    second = AgentProcess(config).start()
    try:
        def rotation_items():
            new_key = [m for m in collector.envelopes() if _kid(m.payload) == new_jwk["kid"]]
            return [i for _t, d, _p in decode_all(new_key, new_jwk) for i in d["items"]
                    if i.get("event") == "key.rotated"]
        wait_until(rotation_items, timeout=20)
    finally:
        assert second.terminate() == 0
        collector.stop()
    event = rotation_items()[0]
    assert event["old"]["kid"] == old_jwk["kid"]
    assert event["new"]["kid"] == new_jwk["kid"]
    assert event["new"]["jwk"]["x"] == new_jwk["x"]
    # The sequence continued across the key change: the first new-key envelope follows the last
    # old-key one.
    old_seqs = [d["seq"] for _t, d, _p in decode_all(
        [m for m in collector.envelopes() if _kid(m.payload) == old_jwk["kid"]],
        old_jwk)]
    new_seqs = [d["seq"] for _t, d, _p in decode_all(
        [m for m in collector.envelopes() if _kid(m.payload) == new_jwk["kid"]], new_jwk)]
    assert min(new_seqs) == max(old_seqs) + 1


def _kid(body: bytes) -> str:
    import base64

    protected = json.loads(body)["protected"]
    return json.loads(base64.urlsafe_b64decode(protected + "=="))["kid"]
