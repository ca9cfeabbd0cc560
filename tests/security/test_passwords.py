"""Password hashes: only a complete scrypt hash is ever accepted (issue 20, "one in 256")."""

from __future__ import annotations

import base64
import hashlib

import pytest

from agent.core.passwords import (
    check_password_hash_format,
    hash_password,
    verify_dummy,
    verify_password,
)

PLACEHOLDER = "scrypt$16384$8$1$REPLACE$ME"  # what config/example-site.toml used to ship


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _truncated_hash(password: str, dklen: int) -> str:
    salt = b"s" * 16
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=dklen)
    return f"scrypt$16384$8$1${_b64(salt)}${_b64(digest)}"


def test_placeholder_hash_lets_no_password_in():
    # "ME" decodes to one byte: the old code compared one byte of scrypt output, so about one
    # password in 256 matched. Try 600 guesses: none may pass.
    assert not any(verify_password(f"guess{i}", PLACEHOLDER) for i in range(600))


def test_digest_length_is_never_taken_from_the_stored_hash():
    # A hash with a 1-byte digest that really is the first byte of the password's scrypt.
    stored = _truncated_hash("the real one", 1)
    assert not verify_password("the real one", stored)
    with pytest.raises(ValueError, match="32-byte digest"):
        check_password_hash_format(stored)


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        (PLACEHOLDER, "digest of 1 bytes"),
        ("notahash", "complete scrypt hash"),
        ("scrypt$16384$8$1$" + _b64(b"s" * 8) + "$" + _b64(b"d" * 32), "salt of 8 bytes"),
        ("scrypt$1024$8$1$" + _b64(b"s" * 16) + "$" + _b64(b"d" * 32), "n=1024"),
        ("scrypt$16384$1$1$" + _b64(b"s" * 16) + "$" + _b64(b"d" * 32), "r=1"),
        ("scrypt$16384$8$1$" + _b64(b"s" * 16) + "$" + _b64(b"d" * 31), "digest of 31"),
        ("scrypt$16384$8$1$" + _b64(b"s" * 16) + "$" + _b64(b"d" * 33), "digest of 33"),
        ("scrypt$16384$8$1$ab+/$" + _b64(b"d" * 32), "base64url"),
    ],
)
def test_incomplete_hashes_are_refused(encoded, why):
    with pytest.raises(ValueError, match=why):
        check_password_hash_format(encoded)
    assert not verify_password("anything", encoded)


def test_a_real_hash_round_trips_and_unknown_users_cost_a_real_check():
    encoded = hash_password("correct horse")
    check_password_hash_format(encoded)
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsf", encoded)
    assert not verify_password("x\ud800", encoded)  # a lone surrogate is a wrong password
    assert verify_dummy("correct horse") is False
