"""Shared fixtures: one PKI world per session, nodes per test (real TLS, real files)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from gateway.pki import Jurisdiction
from gateway.server import Node, logs
from tests.support import (
    TEST_STORE,
    World,
    drop_suite_databases,
    make_world,
    running_node,
)

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With CN's node on PostgreSQL (``CUSTOMS_TEST_STORE=postgresql``) the tests marked
    ``sqlite_files`` are deselected: they handle CN's SQLite files, which it then has not."""
    if TEST_STORE != "postgresql":
        return
    dropped = [item for item in items if item.get_closest_marker("sqlite_files")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("sqlite_files")]


@pytest.fixture(autouse=True)
def _suite_databases_dropped_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """In a ``CUSTOMS_TEST_STORE=postgresql`` run, the databases CN's nodes got for data
    directories below the test's ``tmp_path`` are dropped once the test (and its nodes) ended;
    those of module-scoped fixtures at the end of the session."""
    # Asked for before the test runs, so that tmp_path outlives this fixture's teardown.
    own = TEST_STORE == "postgresql" and "tmp_path" in request.fixturenames
    tmp_path = request.getfixturevalue("tmp_path") if own else None
    yield
    if tmp_path is not None:
        drop_suite_databases(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _suite_databases_dropped_at_the_end() -> Iterator[None]:
    """Whatever databases are left (module-scoped nodes) are dropped when the session ends."""
    yield
    if TEST_STORE == "postgresql":
        drop_suite_databases()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Three jurisdictions' roots, bundle, node/partner/auditor credentials."""
    return make_world(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def hk_node(world: World, tmp_path: Path) -> Iterator[Node]:
    """A running HK node with no peers."""
    with running_node(world.write_config(Jurisdiction.HK, tmp_path / "hk-data")) as node:
        yield node
