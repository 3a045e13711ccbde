"""Fixtures for the stores and replicas: a real PostgreSQL database per test, dropped after.

The server comes from ``CUSTOMS_TEST_POSTGRES`` (default: the development server at
127.0.0.1:5432, database ``test``); see :func:`tests.support.postgres_server_url`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pki import Jurisdiction
from gateway.server import LISTEN_ADDRESS_FILE, Node, load_config
from tests.support import World, postgres_database, postgres_server_url

CN, HK = Jurisdiction.CN, Jurisdiction.HK


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server URL, checked once: skips (or fails under CI) when there is none."""
    return postgres_server_url()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a fresh database of its own, dropped after the test."""
    with postgres_database(postgres_server) as url:
        yield url


@pytest.fixture
def nodes(world: World, tmp_path: Path, postgres_url: str) -> Iterator[dict[str, Node]]:
    """Two CN replicas on one PostgreSQL database, and HK (SQLite) knowing both."""
    hk_file = tmp_path / "hk" / "data" / LISTEN_ADDRESS_FILE
    started: dict[str, Node] = {}
    files = [tmp_path / n / "data" / LISTEN_ADDRESS_FILE for n in ("cn-1", "cn-2")]
    try:  # HK first: CN's deliverers find it at their first attempt
        hk = world.write_config(HK, tmp_path / "hk" / "data", peers={CN: files})
        started["hk"] = Node(load_config(hk))
        started["hk"].start()
        for name in ("cn-1", "cn-2"):
            config = world.write_config(
                CN, tmp_path / name / "data", peers={HK: hk_file}, storage=postgres_url
            )
            started[name] = Node(load_config(config))
            started[name].start()
        yield started
    finally:
        for node in started.values():
            node.stop(grace=0.2)
