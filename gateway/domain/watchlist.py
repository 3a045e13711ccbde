"""The merged watchlist view of one node: every entry it may see, from every origin.

One :class:`WatchlistView` per node. The node feeds it each accepted payload with
:meth:`WatchlistView.apply` (its own publications and what it received), persists the payloads
itself, and at start rebuilds the view by applying them again in ledger order: the view
versions come out the same, so clients' ``since_version`` stay meaningful (ADR 0032).

Rules:

- An entry is known by (origin, watchlist, entry_id). A version only replaces a lower one; a
  stale or repeated version changes nothing (idempotent, tolerant of reordering).
- A revocation is final whatever order things arrive in; a later entry version still updates
  the content shown, never the state.
- Each change bumps the view version by one and stamps the entry with it.
- States are computed at a clock ``now``: REVOKED, else NOT_YET_VALID before valid_from,
  EXPIRED from valid_until, else ACTIVE. Only ACTIVE entries match in screening.
- A delta since version V lists the entries changed after V, and those whose validity began or
  ended between the time V was reached and the query, so expiry reaches delta readers too.
- Pages are ordered by (view version, origin, entry id) and carry an opaque token bound to the
  query (watchlist, since_version) and to the view version and time of the first page, and
  authenticated with the node's secret (HMAC-SHA256): a token used with another query, forged
  or from another node is refused with INVALID_ARGUMENT. Entries changed while paging are left
  to the next delta (the response's ``view_version`` is that of the first page).
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import hmac
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain.screening import ScreeningIndex, combined_score
from gateway.domain.validate import ValidationError
from gateway.errors import FieldViolation

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "WatchlistView"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_S = partner_pb2.EntryState
_TOKEN_DOMAIN = b"customs-gateway/watchlist-page-token/v1\x00"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class _Record:
    origin: int
    watchlist: str
    entry_id: str
    entry: domain_pb2.WatchlistEntry | None = None
    revocation: domain_pb2.WatchlistRevocation | None = None
    message_id: str = ""
    view_version: int = 0
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None

    def state(self, now: dt.datetime) -> int:
        if self.revocation is not None:
            return _S.ENTRY_STATE_REVOKED
        if self.valid_from is not None and now < self.valid_from:
            return _S.ENTRY_STATE_NOT_YET_VALID
        if self.valid_until is not None and now >= self.valid_until:
            return _S.ENTRY_STATE_EXPIRED
        return _S.ENTRY_STATE_ACTIVE

    def sort_key(self) -> tuple[int, int, str]:
        return (self.view_version, self.origin, self.entry_id)


def _micros(when: dt.datetime) -> int:
    return (when - _EPOCH) // dt.timedelta(microseconds=1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bad(field: str, reason: str) -> ValidationError:
    return ValidationError([FieldViolation(field, reason)])


class WatchlistView:
    """The merged, versioned view of watchlist entries at one node. Not thread-safe: the node
    serialises calls (one lock), as it does ledger appends.

    Args:
        secret: the node's secret for page tokens (at least 16 bytes).
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError(f"page-token secret must be at least 16 bytes, got {len(secret)}")
        self._secret = secret
        self._lists: dict[str, dict[tuple[int, str], _Record]] = {}
        self._times: list[dt.datetime] = []  # _times[v - 1]: when version v was reached
        self._index = ScreeningIndex()
        self._pages: OrderedDict[tuple[str, int, int, int], list[tuple[int, int, str]]] = (
            OrderedDict()
        )

    @property
    def version(self) -> int:
        """The current view version: the number of changes applied so far."""
        return len(self._times)

    def watchlists(self) -> list[str]:
        """Names of the watchlists with at least one entry, sorted."""
        return sorted(self._lists)

    def last_version(self, origin: int, watchlist: str, entry_id: str) -> int | None:
        """The highest version known of an entry (entry or revocation), None if unknown.

        Pass it to the validators as ``last_version`` for amendments and revocations.
        """
        record = self._lists.get(watchlist, {}).get((origin, entry_id))
        if record is None:
            return None
        versions = [0]
        if record.entry is not None:
            versions.append(record.entry.version)
        if record.revocation is not None:
            versions.append(record.revocation.version)
        return max(versions)

    # --- changes ---------------------------------------------------------------------------

    def apply(
        self,
        origin: int,
        payload: domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation,
        message_id: str,
        *,
        received_at: dt.datetime,
    ) -> bool:
        """Merges one accepted entry version or revocation from ``origin``.

        Args:
            origin: the jurisdiction that published it.
            payload: a validated WatchlistEntry or WatchlistRevocation.
            message_id: the envelope's message id, shown with the item.
            received_at: when the node accepted it (aware); replay passes the stored time.

        Returns:
            True when the view changed (and its version went up), False for a stale or
            repeated version.

        Raises:
            ValidationError: the payload lacks its watchlist, entry id or version.
        """
        if not payload.watchlist or not payload.entry_id or payload.version == 0:
            raise _bad("payload", "watchlist, entry_id and version are required to merge")
        records = self._lists.setdefault(payload.watchlist, {})
        record = records.get((origin, payload.entry_id))
        if record is None:
            record = _Record(origin, payload.watchlist, payload.entry_id)
        if isinstance(payload, domain_pb2.WatchlistRevocation):
            if record.revocation is not None and payload.version <= record.revocation.version:
                return False
            record.revocation = payload
            self._index.drop((origin, payload.watchlist, payload.entry_id))
        else:
            if record.entry is not None and payload.version <= record.entry.version:
                return False
            record.entry = payload
            validity = payload.validity
            record.valid_from = validity.valid_from.ToDatetime(tzinfo=dt.UTC)
            record.valid_until = validity.valid_until.ToDatetime(tzinfo=dt.UTC)
            if record.revocation is None:
                self._index.put((origin, payload.watchlist, payload.entry_id), payload)
        records[(origin, payload.entry_id)] = record
        previous = self._times[-1] if self._times else received_at
        self._times.append(max(previous, received_at))
        record.view_version = self.version
        record.message_id = message_id
        return True

    # --- queries ---------------------------------------------------------------------------

    def _item(self, record: _Record, now: dt.datetime) -> partner_pb2.WatchlistItem:
        if record.entry is not None:
            entry = record.entry
        else:  # revoked before any version arrived here
            assert record.revocation is not None
            entry = domain_pb2.WatchlistEntry(
                watchlist=record.watchlist,
                entry_id=record.entry_id,
                version=record.revocation.version,
            )
        return partner_pb2.WatchlistItem(
            origin=cast(common_pb2.Jurisdiction, record.origin),
            entry=entry,
            state=cast(partner_pb2.EntryState, record.state(now)),
            view_version=record.view_version,
            message_id=record.message_id,
        )

    def get(
        self, origin: int, watchlist: str, entry_id: str, *, now: dt.datetime
    ) -> partner_pb2.WatchlistItem | None:
        """One entry as a WatchlistItem with its state at ``now``, or None if unknown."""
        record = self._lists.get(watchlist, {}).get((origin, entry_id))
        return None if record is None else self._item(record, now)

    def list_watchlist(
        self, request: partner_pb2.ListWatchlistRequest, *, now: dt.datetime
    ) -> partner_pb2.ListWatchlistResponse:
        """Answers a ListWatchlistRequest: a snapshot (since_version 0) or a delta, one page.

        Raises:
            ValidationError: bad watchlist, page size, since_version or page token, each
                reported at its field.
        """
        problems: list[FieldViolation] = []
        if not request.watchlist:
            problems.append(FieldViolation("watchlist", "required"))
        if request.page_size > MAX_PAGE_SIZE:
            problems.append(
                FieldViolation("page_size", f"at most {MAX_PAGE_SIZE}, got {request.page_size}")
            )
        if request.since_version > self.version:
            problems.append(
                FieldViolation(
                    "since_version",
                    f"{request.since_version} is ahead of this view (version {self.version})",
                )
            )
        if problems:
            raise ValidationError(problems)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if request.page_token:
            first_version, first_micros, cursor = self._open_token(request)
        else:
            first_version, first_micros, cursor = self.version, _micros(now), None
        first_now = _EPOCH + dt.timedelta(microseconds=first_micros)
        order = self._candidates(
            request.watchlist, request.since_version, first_version, first_micros
        )
        start = 0 if cursor is None else bisect.bisect_right(order, cursor)
        records = self._lists.get(request.watchlist, {})
        items: list[partner_pb2.WatchlistItem] = []
        last: tuple[int, int, str] | None = None
        position = start
        while position < len(order) and len(items) < page_size:
            sort_key = order[position]
            position += 1
            record = records.get((sort_key[1], sort_key[2]))
            if record is None or record.view_version > first_version:
                continue  # changed since the first page: the next delta carries it
            items.append(self._item(record, first_now))
            last = sort_key
        token = ""
        if position < len(order) and last is not None:
            token = self._make_token(request, first_version, first_micros, last)
        return partner_pb2.ListWatchlistResponse(
            items=items, next_page_token=token, view_version=first_version
        )

    def snapshot(
        self, watchlist: str, *, now: dt.datetime, page_size: int = 0, page_token: str = ""
    ) -> partner_pb2.ListWatchlistResponse:
        """One page of the whole watchlist, every state, at ``now``."""
        return self.list_watchlist(
            partner_pb2.ListWatchlistRequest(
                watchlist=watchlist, page_size=page_size, page_token=page_token
            ),
            now=now,
        )

    def delta(
        self,
        watchlist: str,
        since_version: int,
        *,
        now: dt.datetime,
        page_size: int = 0,
        page_token: str = "",
    ) -> partner_pb2.ListWatchlistResponse:
        """One page of what changed (content or state) after ``since_version``."""
        return self.list_watchlist(
            partner_pb2.ListWatchlistRequest(
                watchlist=watchlist,
                since_version=since_version,
                page_size=page_size,
                page_token=page_token,
            ),
            now=now,
        )

    def _candidates(
        self, watchlist: str, since: int, first_version: int, first_micros: int
    ) -> list[tuple[int, int, str]]:
        cache_key = (watchlist, since, first_version, first_micros)
        cached = self._pages.get(cache_key)
        if cached is not None:
            self._pages.move_to_end(cache_key)
            return cached
        first_now = _EPOCH + dt.timedelta(microseconds=first_micros)
        since_time = self._times[since - 1] if since > 0 else None
        order: list[tuple[int, int, str]] = []
        for record in self._lists.get(watchlist, {}).values():
            if record.view_version > first_version:
                continue
            if since == 0 or record.view_version > since:
                order.append(record.sort_key())
                continue
            assert since_time is not None
            for boundary in (record.valid_from, record.valid_until):
                if boundary is not None and since_time < boundary <= first_now:
                    order.append(record.sort_key())
                    break
        order.sort()
        self._pages[cache_key] = order
        while len(self._pages) > 16:
            self._pages.popitem(last=False)
        return order

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _TOKEN_DOMAIN + payload, hashlib.sha256).digest()[:16]

    def _make_token(
        self,
        request: partner_pb2.ListWatchlistRequest,
        first_version: int,
        first_micros: int,
        cursor: tuple[int, int, str],
    ) -> str:
        body = [1, request.watchlist, request.since_version, first_version, first_micros, *cursor]
        payload = json.dumps(body, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def _open_token(
        self, request: partner_pb2.ListWatchlistRequest
    ) -> tuple[int, int, tuple[int, int, str]]:
        try:
            payload_text, mac_text = request.page_token.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError as e:
            raise _bad("page_token", "malformed; pass next_page_token unchanged") from e
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise _bad("page_token", "not issued by this node, or altered")
        body = json.loads(payload)
        _, watchlist, since, first_version, first_micros, vv, origin, entry_id = body
        if watchlist != request.watchlist or since != request.since_version:
            raise _bad(
                "page_token",
                f"issued for another query (watchlist {watchlist!r}, since_version {since}); "
                f"this one is watchlist {request.watchlist!r}, since_version "
                f"{request.since_version}",
            )
        return int(first_version), int(first_micros), (int(vv), int(origin), str(entry_id))

    # --- screening ---------------------------------------------------------------------------

    def screen(
        self,
        declaration: domain_pb2.Declaration,
        *,
        now: dt.datetime,
        watchlists: tuple[str, ...] | list[str] = (),
    ) -> partner_pb2.ScreenDeclarationResponse:
        """Screens ``declaration`` against the entries ACTIVE at ``now``.

        Args:
            declaration: a validated declaration.
            now: the clock deciding which entries are in force.
            watchlists: only these watchlists; empty for all.

        Returns:
            Hits, highest score first (then highest risk, then origin, watchlist, entry id),
            each with every reason found, and the view version screened against.
        """
        wanted = set(watchlists)
        hits: list[partner_pb2.ScreeningHit] = []
        for key, reasons in self._index.find(declaration).items():
            origin, watchlist, entry_id = key
            if wanted and watchlist not in wanted:
                continue
            record = self._lists[watchlist][(origin, entry_id)]
            if record.entry is None or record.state(now) != _S.ENTRY_STATE_ACTIVE:
                continue
            hits.append(
                partner_pb2.ScreeningHit(
                    origin=cast(common_pb2.Jurisdiction, origin),
                    watchlist=watchlist,
                    entry_id=entry_id,
                    version=record.entry.version,
                    risk_level=record.entry.risk_level,
                    score=combined_score(r.kind for r in reasons),
                    reasons=reasons,
                )
            )
        hits.sort(key=lambda h: (-h.score, -h.risk_level, h.origin, h.watchlist, h.entry_id))
        return partner_pb2.ScreenDeclarationResponse(hits=hits, view_version=self.version)
