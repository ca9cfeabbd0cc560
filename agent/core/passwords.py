"""Password hashes of people (console login and electronic signatures): salted scrypt.

Lives in agent.core because both the console (login) and agent.qc (re-authentication at the
moment of signing a QC record) check them, and agent.qc may not import the console.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
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


# What a stored hash must at least be: anything weaker or shorter is a configuration error
# (a one-byte digest would let about one password in 256 in).
MIN_N = 2**14
MIN_R = 8
MIN_SALT_BYTES = 16
_MAX_N_R = 2**20  # 128 * n * r bytes of memory: at most 128 MiB (_SCRYPT_MAXMEM)
_MAX_P = 16
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_FIELDS = 6
EXPECTED = (
    f"a complete scrypt hash `scrypt$n$r$p$salt$hash`: {SCRYPT_DKLEN}-byte digest, salt of at"
    f" least {MIN_SALT_BYTES} bytes, n a power of two >= {MIN_N}, r >= {MIN_R}"
    " (make one with `isoedge web-passwd`)"
)


def parse_password_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, digest) of a complete hash; ValueError saying what is missing."""
    parts = encoded.split("$")
    if len(parts) != _FIELDS or parts[0] != "scrypt":
        raise ValueError(f"not {EXPECTED}")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        raise ValueError(f"n, r and p are not numbers; expected {EXPECTED}") from None
    if not (_B64URL.match(parts[4]) and _B64URL.match(parts[5])):
        raise ValueError(f"salt or digest is not base64url; expected {EXPECTED}")
    try:
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        raise ValueError(f"salt or digest is not base64url; expected {EXPECTED}") from None
    if len(digest) != SCRYPT_DKLEN:
        raise ValueError(f"digest of {len(digest)} bytes; expected {EXPECTED}")
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"salt of {len(salt)} bytes; expected {EXPECTED}")
    if n < MIN_N or n & (n - 1) or r < MIN_R or not 1 <= p <= _MAX_P or n * r > _MAX_N_R:
        raise ValueError(f"weak or unusable scrypt cost n={n} r={r} p={p}; expected {EXPECTED}")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches a complete `scrypt$n$r$p$salt$hash` (constant-time).

    The digest length is always SCRYPT_DKLEN, never taken from the stored string; an
    incomplete hash matches nothing (the configuration refuses one anyway).
    """
    try:
        n, r, p, salt, expected = parse_password_hash(encoded)
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_DKLEN,
            maxmem=_SCRYPT_MAXMEM,
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(digest, expected)


# Checked for a name that has no password (unknown user, token-only user), so that it takes
# as long as a real check: the answer's timing does not tell which names exist.
@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(24))


def verify_dummy(password: str) -> bool:
    """Spend one real scrypt check on `password` and return False (unknown user)."""
    verify_password(password, _dummy_hash())
    return False


def check_password_hash_format(encoded: str) -> None:
    """Raise ValueError (saying what was expected) when `encoded` is not a complete hash."""
    parse_password_hash(encoded)


_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def check_user_credentials(name: str, password_hash: str | None, token_sha256: str | None) -> None:
    """ValueError naming user `name` when a configured credential is incomplete.

    An incomplete hash (a placeholder such as "scrypt$16384$8$1$REPLACE$ME") once let about
    one password in 256 in; an all-zero token digest is a placeholder too.
    """
    if password_hash is not None:
        try:
            parse_password_hash(password_hash)
        except ValueError as exc:
            raise ValueError(f"user {name!r}: bad password_hash: {exc}") from None
    if token_sha256 is not None and (
        not _SHA256_HEX.match(token_sha256) or len(set(token_sha256)) == 1
    ):
        raise ValueError(
            f"user {name!r}: token_sha256 is not the 64 hex digits of a token's SHA-256"
            " (`isoedge web-passwd --token` prints it)"
        )


__all__ = [
    "EXPECTED",
    "check_password_hash_format",
    "check_user_credentials",
    "hash_password",
    "parse_password_hash",
    "verify_dummy",
    "verify_password",
]
