"""A database of its own per test on the PostgreSQL server of CUSTOMS_TEST_POSTGRES."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

SERVER = os.environ.get("CUSTOMS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_database() -> Iterator[str]:
    """The URL of a new database with a unique name, dropped afterwards. Without a server the
    test is skipped, with one line saying so; with CI=true that is a failure."""
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        message = f"no PostgreSQL server at {SERVER}: {str(exc).strip().splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"replicas_{uuid.uuid4().hex[:16]}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(SERVER)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
