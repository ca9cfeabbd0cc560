"""Fixtures shared by the delivery tests: a signing key and the registry that verifies it."""

from __future__ import annotations

import pytest

from agent.delivery.signing import Signer, generate_key_files
from agent.delivery.verification import KeyRegistry


@pytest.fixture
def signer(tmp_path) -> Signer:
    return generate_key_files(tmp_path / "keys")


@pytest.fixture
def registry(signer) -> KeyRegistry:
    return KeyRegistry([signer.jwk])
