"""Password hashes of people (console login and electronic signatures): salted scrypt.

Lives in agent.core because both the console (login) and agent.qc (re-authentication at the
moment of signing a QC record) check them, and agent.qc may not import the console.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

# scrypt cost: n=2**14, r=8 needs 16 MiB and ~50 ms per check on a small ARM board; the result
# of a successful check is cached (see `Authenticator`) so the page's polling stays cheap.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
_SCRYPT_MAXMEM = 128 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> str:
    """Salted scrypt hash for the configuration: `scrypt$n$r$p$salt$hash` (base64url)."""
    if not password:
        raise ValueError("empty password")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_DKLEN,
        maxmem=_SCRYPT_MAXMEM,
    )
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches an `scrypt$n$r$p$salt$hash` string (constant-time compare)."""
    try:
        scheme, n_text, r_text, p_text, salt_text, hash_text = encoded.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = _unb64(salt_text), _unb64(hash_text)
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected),
            maxmem=_SCRYPT_MAXMEM,
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(digest, expected)


def check_password_hash_format(encoded: str) -> None:
    """Raise ValueError when `encoded` is not a usable `scrypt$n$r$p$salt$hash` string."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":  # noqa: PLR2004 - six fields by definition
        raise ValueError("expected scrypt$n$r$p$salt$hash (from `isoedge web-passwd`)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        _unb64(parts[4])
        _unb64(parts[5])
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed scrypt hash: {exc}") from None
    if n < 2 or n & (n - 1) or r < 1 or p < 1:  # noqa: PLR2004 - scrypt's own constraints
        raise ValueError("scrypt parameters must be n a power of two > 1, r >= 1, p >= 1")


__all__ = ["check_password_hash_format", "hash_password", "verify_password"]
