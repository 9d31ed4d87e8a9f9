"""Fixtures every test package shares: the Trust's policy register and its connector maps, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.connector_maps import ConnectorMaps, load_connector_maps
from schemas.policy import Policy, load_policy

POLICY_DIR = Path(__file__).resolve().parents[1] / "policy"


@pytest.fixture(scope="session")
def register() -> Policy:
    """The policy register shipped in `policy/`."""
    return load_policy(POLICY_DIR)


@pytest.fixture(scope="session")
def maps(register: Policy) -> ConnectorMaps:
    """The connector maps shipped in `policy/connectors.yaml`, validated against the register."""
    return load_connector_maps(POLICY_DIR, register)
