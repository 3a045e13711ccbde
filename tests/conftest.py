"""Shared fixtures: one PKI world per session, nodes per test (real TLS, real files)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from gateway.pki import Jurisdiction
from gateway.server import Node, logs
from tests.support import World, make_world, running_node

# Property tests check behaviour, not speed: Hypothesis's default 200 ms deadline per example is a
# timed assertion, and it failed on a shared two-core machine under load. Speed is for `make bench`.
settings.register_profile("customs", deadline=None)
settings.load_profile("customs")


@pytest.fixture(autouse=True)
def _logs_released_after_each_test() -> Iterator[None]:
    """A test that runs a command in-process (``main(["serve", ...])``) configures the node's
    log writer on the stderr pytest captured for that test; once the test ends that stream is
    closed, so the writer is closed with it instead of failing on every later line."""
    yield
    writer = logs._writer
    if writer is not None:
        writer.close()
        logs._writer = None
        root = logging.getLogger("gateway")
        root.handlers.clear()
        root.propagate = True


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Three jurisdictions' roots, bundle, node/partner/auditor credentials."""
    return make_world(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def hk_node(world: World, tmp_path: Path) -> Iterator[Node]:
    """A running HK node with no peers."""
    with running_node(world.write_config(Jurisdiction.HK, tmp_path / "hk-data")) as node:
        yield node
