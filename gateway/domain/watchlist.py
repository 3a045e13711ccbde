"""The merged watchlist view of one node: every entry it may see, from every origin.

One :class:`WatchlistView` per node. The node feeds it each accepted payload with
:meth:`WatchlistView.apply` (its own publications and what it received) and each erased
payload with :meth:`WatchlistView.erase`; the view is a fold of those events and of the
clock, and it reports what it changed (:meth:`WatchlistView.take_changes`) so that the node
can keep it durably (ADR 0035): the view version never goes backwards, across restarts too.

Rules:

- An entry is known by (origin, watchlist, entry_id). A version only replaces a lower one; a
  stale or repeated version changes nothing (idempotent, tolerant of reordering).
- A revocation is final whatever order things arrive in; a later entry version still updates
  the content shown, never the state.
- Every change bumps the view version by one and stamps the entry with it. Changes are: a new
  version or revocation, an erasure (the payload that gave the entry its content reached the
  end of its retention: the names and reason leave the view at once, a tombstone in state
  ERASED remains), and the clock passing a ``valid_from`` or ``valid_until`` (the entry
  enters into force or expires). Time changes are applied in time order by
  :meth:`WatchlistView.advance`, which every query calls first with its clock, so they are
  versions like any other: a delta reports each exactly once.
- States are materialised: REVOKED, else ERASED, else NOT_YET_VALID before valid_from,
  EXPIRED from valid_until, else ACTIVE, as of the time the view has advanced to. Only ACTIVE
  entries match in screening.
- A delta since version V lists the entries whose view version is above V, once each, in
  their latest state (a tombstone for an erased entry); a snapshot (V = 0) lists the entries
  that are not erased.
- Pages are ordered by (view version, origin, entry id) and carry an opaque token bound to the
  query (watchlist, since_version) and to the view version of the first page, and
  authenticated with the node's secret (HMAC-SHA256): a token used with another query, forged
  or from another node is refused with INVALID_ARGUMENT. Entries changed while paging are left
  to the next delta (the response's ``view_version`` is that of the first page).
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import heapq
import hmac
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple, Protocol, cast

from google.protobuf import timestamp_pb2

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain.screening import ScreeningIndex
from gateway.domain.validate import ValidationError
from gateway.errors import FieldViolation

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Boundary",
    "MemoryRecordStorage",
    "RecordStorage",
    "StoredRecord",
    "ViewRecord",
    "WatchlistView",
    "micros",
    "validity",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_TOKEN_DOMAIN = b"customs-gateway/watchlist-page-token/v2\x00"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class StoredRecord(NamedTuple):
    """One entry of the view as the node stores it (bytes, so the store needs no protobuf).

    ``entry`` is empty for a tombstone (erased) or for an entry revoked before any version
    arrived; ``revocation`` is empty unless revoked. A tuple in the order of the store's
    columns: the store writes it as it is (a bulk publish stores thousands a call).
    """

    origin: int
    watchlist: str
    entry_id: str
    entry: bytes
    revocation: bytes
    message_id: str
    revocation_message_id: str
    view_version: int
    state: int
    erased_version: int
    valid_from_us: int | None = None  # the entry's validity, microseconds since the epoch
    valid_until_us: int | None = None


@dataclass
class ViewRecord:
    """One entry of the view in memory (its latest content parsed); what a
    :class:`RecordStorage` hands out and takes back."""

    origin: int
    watchlist: str
    entry_id: str
    entry: domain_pb2.WatchlistEntry | None = None
    revocation: domain_pb2.WatchlistRevocation | None = None
    message_id: str = ""
    revocation_message_id: str = ""
    view_version: int = 0
    state: int = partner_pb2.ENTRY_STATE_UNSPECIFIED
    erased_version: int = 0  # the entry version whose payload was erased, 0 if none
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    indexed: bool = False  # whether the screening index holds it (not stored: derived)

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.origin, self.watchlist, self.entry_id)

    def state_at(self, now: dt.datetime) -> int:
        if self.revocation is not None:
            return partner_pb2.ENTRY_STATE_REVOKED
        if self.entry is None:
            return partner_pb2.ENTRY_STATE_ERASED
        if self.valid_from is not None and now < self.valid_from:
            return partner_pb2.ENTRY_STATE_NOT_YET_VALID
        if self.valid_until is not None and now >= self.valid_until:
            return partner_pb2.ENTRY_STATE_EXPIRED
        return partner_pb2.ENTRY_STATE_ACTIVE

    def sort_key(self) -> tuple[int, int, str]:
        return (self.view_version, self.origin, self.entry_id)

    def version(self) -> int:
        versions = [self.erased_version]
        if self.entry is not None:
            versions.append(self.entry.version)
        if self.revocation is not None:
            versions.append(self.revocation.version)
        return max(versions)

    @classmethod
    def from_stored(cls, stored: StoredRecord) -> ViewRecord:
        """The record a stored one describes."""
        record = cls(stored.origin, stored.watchlist, stored.entry_id)
        if stored.entry:
            record.entry = domain_pb2.WatchlistEntry.FromString(stored.entry)
            record.valid_from, record.valid_until = validity(record.entry)
        if stored.revocation:
            record.revocation = domain_pb2.WatchlistRevocation.FromString(stored.revocation)
        record.message_id = stored.message_id
        record.revocation_message_id = stored.revocation_message_id
        record.view_version = stored.view_version
        record.state = stored.state
        record.erased_version = stored.erased_version
        record.indexed = (
            record.entry is not None and record.state != partner_pb2.ENTRY_STATE_REVOKED
        )
        return record

    def stored(self) -> StoredRecord:
        """The record as the node stores it."""
        return StoredRecord(
            self.origin,
            self.watchlist,
            self.entry_id,
            b"" if self.entry is None else self.entry.SerializeToString(),
            b"" if self.revocation is None else self.revocation.SerializeToString(),
            self.message_id,
            self.revocation_message_id,
            self.view_version,
            self.state,
            self.erased_version,
            None if self.valid_from is None else micros(self.valid_from),
            None if self.valid_until is None else micros(self.valid_until),
        )


_Record = ViewRecord
Boundary = tuple[dt.datetime, int, str, str]
"""(time, origin, watchlist, entry_id): an entry's valid_from or valid_until."""


class RecordStorage(Protocol):
    """Where a :class:`WatchlistView` keeps its records: in memory
    (:class:`MemoryRecordStorage`) or in the node's database (``gateway.exchange``, ADR 0038),
    so that the node's memory does not grow with the number of entries. Every change the view
    makes to a record is followed by :meth:`put` of it; reads see what was put."""

    def get(self, origin: int, watchlist: str, entry_id: str) -> ViewRecord | None:
        """The record of an entry, None if unknown."""

    def put(self, record: ViewRecord) -> None:
        """Keeps ``record`` (new or changed)."""

    def by_message(self, message_id: str) -> tuple[int, str, str] | None:
        """The entry whose content came in ``message_id`` (it may have been replaced since:
        the caller checks), None if none."""

    def message_ids(self) -> set[str]:
        """Every message id the records show (content or revocation)."""

    def schedule(self, boundary: Boundary) -> None:
        """An entry's validity boundary after the time the view has advanced to."""

    def due(self, after: dt.datetime, upto: dt.datetime) -> list[Boundary]:
        """The boundaries in (``after``, ``upto``] in time order (then origin, watchlist,
        entry id); some may no longer be the entry's (the caller checks its state)."""

    def next_boundary(self, after: dt.datetime) -> dt.datetime | None:
        """The earliest boundary after ``after`` (or an earlier time: a hint), None if none."""

    def page(
        self,
        watchlist: str,
        since: int,
        upto: int,
        cursor: tuple[int, int, str] | None,
        limit: int,
    ) -> tuple[list[ViewRecord], bool]:
        """Up to ``limit`` records of ``watchlist`` with view version in (``since``,
        ``upto``] (not erased when ``since`` is 0), ordered by (view version, origin, entry id)
        after ``cursor``; and whether more may follow."""

    def watchlists(self) -> list[str]:
        """Names of the watchlists with at least one record, sorted."""

    def empty(self) -> bool:
        """Whether no record is kept."""


class MemoryRecordStorage:
    """:class:`RecordStorage` in dictionaries and a heap of boundaries (tests, benches, pure
    use)."""

    def __init__(self) -> None:
        self._lists: dict[str, dict[tuple[int, str], ViewRecord]] = {}
        self._by_message: dict[str, tuple[int, str, str]] = {}
        self._boundaries: list[Boundary] = []  # min-heap
        self._pages: OrderedDict[tuple[str, int, int], list[tuple[int, int, str]]] = OrderedDict()

    def get(self, origin: int, watchlist: str, entry_id: str) -> ViewRecord | None:
        """The record of an entry, None if unknown."""
        return self._lists.get(watchlist, {}).get((origin, entry_id))

    def put(self, record: ViewRecord) -> None:
        """Keeps ``record``."""
        self._lists.setdefault(record.watchlist, {})[(record.origin, record.entry_id)] = record
        for message_id in (record.message_id, record.revocation_message_id):
            if message_id:
                self._by_message[message_id] = record.key

    def by_message(self, message_id: str) -> tuple[int, str, str] | None:
        """The entry a message id was last seen on."""
        return self._by_message.pop(message_id, None)

    def message_ids(self) -> set[str]:
        """Every message id seen on the records (older versions' too)."""
        return set(self._by_message)

    def schedule(self, boundary: Boundary) -> None:
        """Pushes a boundary on the heap."""
        heapq.heappush(self._boundaries, boundary)

    def due(self, after: dt.datetime, upto: dt.datetime) -> list[Boundary]:
        """Pops the boundaries up to ``upto``."""
        out = []
        while self._boundaries and self._boundaries[0][0] <= upto:
            out.append(heapq.heappop(self._boundaries))
        return out

    def next_boundary(self, after: dt.datetime) -> dt.datetime | None:
        """The heap's first boundary."""
        return self._boundaries[0][0] if self._boundaries else None

    def page(
        self,
        watchlist: str,
        since: int,
        upto: int,
        cursor: tuple[int, int, str] | None,
        limit: int,
    ) -> tuple[list[ViewRecord], bool]:
        """One page, from the sorted candidates (cached for the 16 latest queries)."""
        order = self._candidates(watchlist, since, upto)
        position = 0 if cursor is None else bisect.bisect_right(order, cursor)
        records = self._lists.get(watchlist, {})
        out: list[ViewRecord] = []
        while position < len(order) and len(out) < limit:
            sort_key = order[position]
            position += 1
            record = records.get((sort_key[1], sort_key[2]))
            if record is None or record.view_version > upto:
                continue  # changed since the first page: the next delta carries it
            out.append(record)
        return out, position < len(order)

    def _candidates(self, watchlist: str, since: int, upto: int) -> list[tuple[int, int, str]]:
        cache_key = (watchlist, since, upto)
        cached = self._pages.get(cache_key)
        if cached is not None:
            self._pages.move_to_end(cache_key)
            return cached
        order = [
            record.sort_key()
            for record in self._lists.get(watchlist, {}).values()
            if record.view_version > since
            and not (since == 0 and record.state == partner_pb2.ENTRY_STATE_ERASED)
        ]
        order.sort()
        self._pages[cache_key] = order
        while len(self._pages) > 16:
            self._pages.popitem(last=False)
        return order

    def watchlists(self) -> list[str]:
        """Names of the watchlists with at least one record, sorted."""
        return sorted(self._lists)

    def empty(self) -> bool:
        """Whether no record is kept."""
        return not self._lists


def validity(entry: domain_pb2.WatchlistEntry) -> tuple[dt.datetime | None, dt.datetime | None]:
    """An entry's valid_from and valid_until as aware times (None where not given)."""
    validity = entry.validity
    start = _aware(validity.valid_from) if validity.HasField("valid_from") else None
    end = _aware(validity.valid_until) if validity.HasField("valid_until") else None
    return start, end


def _aware(stamp: timestamp_pb2.Timestamp) -> dt.datetime:
    """``stamp.ToDatetime(tzinfo=dt.UTC)`` for a valid timestamp (nanos in [0, 1e9)), without
    its checks and time-zone conversion (UTC to UTC)."""
    return _EPOCH + dt.timedelta(0, stamp.seconds, stamp.nanos // 1000)  # positional: faster


_MICROSECOND = dt.timedelta(microseconds=1)


def micros(when: dt.datetime) -> int:
    """Microseconds since the epoch of an aware time."""
    return (when - _EPOCH) // _MICROSECOND


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
        index: the screening index to keep (one in memory unless given; the node passes one
            kept in its database, ADR 0038).
        records: where the records are kept (in memory unless given; the node passes its
            database, ADR 0038).
    """

    def __init__(
        self,
        secret: bytes,
        index: ScreeningIndex | None = None,
        records: RecordStorage | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError(f"page-token secret must be at least 16 bytes, got {len(secret)}")
        self._secret = secret
        self._records: RecordStorage = MemoryRecordStorage() if records is None else records
        self._version = 0
        self._advanced_to = _EPOCH
        self._next: dt.datetime | None = None  # no boundary is due before this time
        self._changed: dict[tuple[int, str, str], ViewRecord] = {}
        self._index = ScreeningIndex() if index is None else index

    @property
    def version(self) -> int:
        """The current view version: the number of changes applied so far (never decreases)."""
        return self._version

    @property
    def advanced_to(self) -> dt.datetime:
        """The time up to which validity boundaries have been applied (never decreases)."""
        return self._advanced_to

    def watchlists(self) -> list[str]:
        """Names of the watchlists with at least one entry, sorted."""
        return self._records.watchlists()

    def _get(self, origin: int, watchlist: str, entry_id: str) -> ViewRecord | None:
        return self._records.get(origin, watchlist, entry_id)

    def last_version(self, origin: int, watchlist: str, entry_id: str) -> int | None:
        """The highest version known of an entry (entry, revocation or erased), None if unknown.

        Pass it to the validators as ``last_version`` for amendments and revocations.
        """
        record = self._get(origin, watchlist, entry_id)
        return None if record is None else record.version()

    # --- durability ------------------------------------------------------------------------

    def take_changes(self) -> list[StoredRecord]:
        """The records changed since the last call, to be stored with :attr:`version` and
        :attr:`advanced_to` in one transaction before any answer that shows them."""
        changed = [record.stored() for record in self._changed.values()]
        self._changed.clear()
        return changed

    def restore(
        self,
        records: list[StoredRecord],
        *,
        version: int,
        advanced_to: dt.datetime,
        indexed: bool = False,
    ) -> None:
        """Loads a stored view into this (empty) view. With ``indexed``, the screening index
        given at construction already holds these records (it is kept with them); otherwise
        each is indexed here.

        Raises:
            ValueError: the view is not empty, or a record's version is above ``version``.
        """
        if self._version or not self._records.empty():
            raise ValueError("restore needs an empty view")
        for stored in records:
            if stored.view_version > version:
                raise ValueError(
                    f"stored entry {stored.entry_id} has view version {stored.view_version} "
                    f"above the stored view version {version}"
                )
        restored = [ViewRecord.from_stored(stored) for stored in records]
        for record in restored:
            if not indexed:
                record.indexed = False
                self._put(record)
            else:
                self._records.put(record)
        self._version = version
        self._advanced_to = advanced_to
        for record in restored:
            self._schedule(record)

    def resume(self, *, version: int, advanced_to: dt.datetime) -> None:
        """Takes up a view whose records its storage already holds (and the screening index
        given at construction): only the version and the time advanced to are set here."""
        self._version = version
        self._advanced_to = advanced_to
        self._next = self._records.next_boundary(advanced_to)

    def entry(self, key: tuple[int, str, str]) -> domain_pb2.WatchlistEntry | None:
        """The latest content of an entry known by (origin, watchlist, entry_id), None if
        unknown, erased or revoked before any version arrived."""
        record = self._get(*key)
        return None if record is None else record.entry

    def _put(self, record: ViewRecord) -> None:
        self._records.put(record)
        indexable = record.entry is not None and record.state != partner_pb2.ENTRY_STATE_REVOKED
        if record.entry is not None and indexable:
            self._index.put(record.key, record.entry, replacing=record.indexed)
        elif record.indexed:
            self._index.drop(record.key)
        record.indexed = indexable

    def _schedule(self, record: ViewRecord) -> None:
        for boundary in (record.valid_from, record.valid_until):
            if boundary is not None and boundary > self._advanced_to:
                self._records.schedule((boundary, record.origin, record.watchlist, record.entry_id))
                if self._next is None or boundary < self._next:
                    self._next = boundary

    def _bump(self, record: ViewRecord) -> None:
        self._version += 1
        record.view_version = self._version
        self._changed[record.key] = record
        self._records.put(record)

    # --- changes ---------------------------------------------------------------------------

    def advance(self, now: dt.datetime) -> int:
        """Applies every validity boundary passed by ``now``, in time order; returns how many
        entries changed state (each a new view version). A clock going back changes nothing."""
        changed = 0
        if self._next is not None and self._next <= now:
            for boundary, origin, watchlist, entry_id in self._records.due(self._advanced_to, now):
                record = self._get(origin, watchlist, entry_id)
                if record is None:
                    continue
                state = record.state_at(boundary)
                if state != record.state:
                    record.state = state
                    self._bump(record)
                    changed += 1
            self._next = self._records.next_boundary(max(now, self._advanced_to))
        if now > self._advanced_to:
            self._advanced_to = now
        return changed

    def apply(
        self,
        origin: int,
        payload: domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation,
        message_id: str,
        *,
        received_at: dt.datetime,
    ) -> bool:
        """Merges one accepted entry version or revocation from ``origin``.

        Validity boundaries up to ``received_at`` are applied first, so replaying history in
        order gives the same sequence of changes as living through it.

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
        self.advance(received_at)
        record = self._get(origin, payload.watchlist, payload.entry_id)
        if record is None:
            record = ViewRecord(origin, payload.watchlist, payload.entry_id)
        if isinstance(payload, domain_pb2.WatchlistRevocation):
            if record.revocation is not None and payload.version <= record.revocation.version:
                return False
            record.revocation = payload
            record.revocation_message_id = message_id
        else:
            if payload.version <= max(
                record.erased_version, 0 if record.entry is None else record.entry.version
            ):
                return False
            record.entry = payload
            record.message_id = message_id
            record.valid_from, record.valid_until = validity(payload)
            self._schedule(record)
        record.state = record.state_at(self._advanced_to)
        self._put(record)
        self._bump(record)
        return True

    def erase(self, message_id: str) -> bool:
        """The payload of ``message_id`` reached the end of its retention: if it is the one
        that gives an entry its content, the content leaves the view now and the entry becomes
        an ERASED tombstone (a change, so a delta reports it). The erasure of an older version
        or of a revocation changes nothing shown (a revoked entry stays revoked).

        Returns:
            True when the view changed.
        """
        key = self._records.by_message(message_id)
        if key is None:
            return False
        record = self._get(*key)
        if record is None or record.entry is None or record.message_id != message_id:
            return False
        record.erased_version = max(record.erased_version, record.entry.version)
        record.entry = None
        record.message_id = ""
        record.valid_from = record.valid_until = None
        record.state = record.state_at(self._advanced_to)
        self._put(record)
        self._bump(record)
        return True

    def message_ids(self) -> set[str]:
        """The message ids whose payloads back what the view holds (to reconcile erasures
        that happened while the view was not told, e.g. a crash between the two)."""
        return self._records.message_ids()

    # --- queries ---------------------------------------------------------------------------

    def _item(self, record: ViewRecord) -> partner_pb2.WatchlistItem:
        if record.entry is not None:
            entry = record.entry
        else:  # erased, or revoked before any version arrived here
            entry = domain_pb2.WatchlistEntry(
                watchlist=record.watchlist, entry_id=record.entry_id, version=record.version()
            )
        return partner_pb2.WatchlistItem(
            origin=cast(common_pb2.Jurisdiction, record.origin),
            entry=entry,
            state=cast(partner_pb2.EntryState, record.state),
            view_version=record.view_version,
            message_id=record.message_id or record.revocation_message_id,
        )

    def get(
        self, origin: int, watchlist: str, entry_id: str, *, now: dt.datetime
    ) -> partner_pb2.WatchlistItem | None:
        """One entry as a WatchlistItem in its state at ``now``, or None if unknown or erased."""
        self.advance(now)
        record = self._get(origin, watchlist, entry_id)
        if record is None or record.state == partner_pb2.ENTRY_STATE_ERASED:
            return None
        return self._item(record)

    def list_watchlist(
        self, request: partner_pb2.ListWatchlistRequest, *, now: dt.datetime
    ) -> partner_pb2.ListWatchlistResponse:
        """Answers a ListWatchlistRequest: a snapshot (since_version 0) or a delta, one page.

        Raises:
            ValidationError: bad watchlist, page size, since_version or page token, each
                reported at its field.
        """
        self.advance(now)
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
            first_version, cursor = self._open_token(request)
        else:
            first_version, cursor = self.version, None
        records, more = self._records.page(
            request.watchlist, request.since_version, first_version, cursor, page_size
        )
        items = [self._item(record) for record in records]
        token = ""
        if more and records:
            token = self._make_token(request, first_version, records[-1].sort_key())
        return partner_pb2.ListWatchlistResponse(
            items=items, next_page_token=token, view_version=first_version
        )

    def snapshot(
        self, watchlist: str, *, now: dt.datetime, page_size: int = 0, page_token: str = ""
    ) -> partner_pb2.ListWatchlistResponse:
        """One page of the whole watchlist at ``now``: every entry not erased, in any state."""
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
        """One page of what changed (content, state, erasure) after ``since_version``."""
        return self.list_watchlist(
            partner_pb2.ListWatchlistRequest(
                watchlist=watchlist,
                since_version=since_version,
                page_size=page_size,
                page_token=page_token,
            ),
            now=now,
        )

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _TOKEN_DOMAIN + payload, hashlib.sha256).digest()[:16]

    def _make_token(
        self,
        request: partner_pb2.ListWatchlistRequest,
        first_version: int,
        cursor: tuple[int, int, str],
    ) -> str:
        body = [2, request.watchlist, request.since_version, first_version, *cursor]
        payload = json.dumps(body, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def _open_token(
        self, request: partner_pb2.ListWatchlistRequest
    ) -> tuple[int, tuple[int, int, str]]:
        try:
            payload_text, mac_text = request.page_token.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError as e:
            raise _bad("page_token", "malformed; pass next_page_token unchanged") from e
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise _bad("page_token", "not issued by this node, or altered")
        body = json.loads(payload)
        _, watchlist, since, first_version, vv, origin, entry_id = body
        if watchlist != request.watchlist or since != request.since_version:
            raise _bad(
                "page_token",
                f"issued for another query (watchlist {watchlist!r}, since_version {since}); "
                f"this one is watchlist {request.watchlist!r}, since_version "
                f"{request.since_version}",
            )
        return int(first_version), (int(vv), int(origin), str(entry_id))

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
        self.advance(now)
        wanted = set(watchlists)
        hits: list[partner_pb2.ScreeningHit] = []
        for key, candidate in self._index.find(declaration).items():
            origin, watchlist, entry_id = key
            if wanted and watchlist not in wanted:
                continue
            record = self._get(origin, watchlist, entry_id)
            if (
                record is None
                or record.entry is None
                or record.state != partner_pb2.ENTRY_STATE_ACTIVE
            ):
                continue
            hits.append(
                partner_pb2.ScreeningHit(
                    origin=cast(common_pb2.Jurisdiction, origin),
                    watchlist=watchlist,
                    entry_id=entry_id,
                    version=record.entry.version,
                    risk_level=record.entry.risk_level,
                    score=candidate.score,
                    reasons=candidate.reasons,
                    tier=cast(partner_pb2.MatchTier, candidate.tier),
                    entry=record.entry,
                    message_id=record.message_id,
                )
            )
        hits.sort(key=lambda h: (-h.score, -h.risk_level, h.origin, h.watchlist, h.entry_id))
        return partner_pb2.ScreenDeclarationResponse(hits=hits, view_version=self.version)
