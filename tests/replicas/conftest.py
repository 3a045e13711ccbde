"""Fixtures for the stores and replicas: a real PostgreSQL database per test, dropped after.

The server comes from ``CUSTOMS_TEST_POSTGRES`` (default: the development server at
127.0.0.1:5432, database ``test``); see :func:`tests.support.postgres_server_url`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import postgres_database, postgres_server_url


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server URL, checked once: skips (or fails under CI) when there is none."""
    return postgres_server_url()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a fresh database of its own, dropped after the test."""
    with postgres_database(postgres_server) as url:
        yield url
