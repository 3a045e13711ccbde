"""Operator tests reuse the three real nodes of the exchange tests."""

from tests.exchange.conftest import trio  # noqa: F401 - the fixture, for this folder
