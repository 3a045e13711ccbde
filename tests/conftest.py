"""Shared fixtures: one PKI world per session, nodes per test (real TLS, real files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pki import Jurisdiction
from gateway.server import Node
from tests.support import World, make_world, running_node


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Three jurisdictions' roots, bundle, node/partner/auditor credentials."""
    return make_world(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def hk_node(world: World, tmp_path: Path) -> Iterator[Node]:
    """A running HK node with no peers."""
    with running_node(world.write_config(Jurisdiction.HK, tmp_path / "hk-data")) as node:
        yield node
