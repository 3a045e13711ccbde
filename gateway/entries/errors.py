"""Errors of the entry codec."""

from __future__ import annotations

from gateway.errors import InvalidArgumentError

__all__ = ["EntryFormatError"]


class EntryFormatError(InvalidArgumentError):
    """An entry to append, or entry bytes read back, break the canonical format."""
