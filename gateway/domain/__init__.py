"""The customs data model, its validation, merged watchlists and screening (pure).

Nothing here does I/O, imports gRPC server code or SQLite: the node persists payloads and
calls this package. Public faces:

- :mod:`gateway.domain.reference`: HS chapters, controlled headings, countries, units,
  currencies and UN/LOCODEs, with their sources.
- :mod:`gateway.domain.identifiers`: ISO 6346, IMO, USCC, LEI, MMSI, HS and national-id checks.
- :mod:`gateway.domain.validate`: ``validate_*`` (every violation with its path) and ``check_*``.
- :mod:`gateway.domain.kinds`: the table of the four message kinds, and whole-request validation.
- :mod:`gateway.domain.names`: name normalisation for matching.
- :mod:`gateway.domain.watchlist`: :class:`WatchlistView`, the merged view of one node.
- :mod:`gateway.domain.screening`: the screening index and scores.
- :mod:`gateway.domain.fixtures`: the seed case (antimony declared as zinc) as valid messages.
"""

from gateway.domain.validate import ValidationError

__all__ = ["ValidationError"]
