"""Validation of customs data as a customs officer would check it, every rule at once.

Each ``validate_*`` function returns the list of *all* violations of one message (never stops
at the first), each a :class:`gateway.errors.FieldViolation` whose path is the field's path in
the request message (``notice.goods[0].quantity.unit``, ``addressing.recipients[1]``). A
missing sub-message is reported once at its own path; its fields are not reported on top.
The ``check_*`` forms raise :class:`ValidationError` carrying every violation; a whole
PartnerGateway submit request is validated by :func:`gateway.domain.kinds.check_request`,
which picks the payload's validator from the table of kinds.

Rules that need state (an amendment must exceed the last version) take the last known version
as an argument; ``None`` means the id is new here. Times are compared with ``now`` (aware), with
:data:`CLOCK_SKEW` allowed for clocks running ahead. Rules and sources: ``docs/domain.md``.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from typing import Final

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain import dates, identifiers, reference
from gateway.domain.dates import EPOCH, FIRST_TIMESTAMP_SECOND, LAST_TIMESTAMP_SECOND
from gateway.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "CLOCK_SKEW",
    "MAX_VALIDITY",
    "ValidationError",
    "check_addressing",
    "check_declaration",
    "check_revocation",
    "check_seizure_notice",
    "check_watchlist_entry",
    "check_withdrawal",
    "raise_if_invalid",
    "to_bad_request",
    "validate_addressing",
    "validate_addressing_but_id",
    "validate_declaration",
    "validate_message_id",
    "validate_revocation",
    "validate_seizure_notice",
    "validate_watchlist_entry",
    "validate_withdrawal",
]

CLOCK_SKEW: Final = dt.timedelta(minutes=5)
"""How far in the future a time stamped "now" by another clock may be and still be accepted."""

MAX_VALIDITY: Final = dt.timedelta(days=731)
"""Longest validity window of a watchlist entry: two years, a leap day included."""

_MAX_LIST: Final = 1000  # any repeated field longer than this is refused (fail closed)

_WATCHLIST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,62}[a-z0-9]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,17})(\.[0-9]+)?")

_E = common_pb2.EntityType
# Enum values as module constants: ``_E.ENTITY_TYPE_X`` runs a Python-level __getattr__ per use.
_CONTAINER: Final = common_pb2.ENTITY_TYPE_CONTAINER
_VEHICLE: Final = common_pb2.ENTITY_TYPE_VEHICLE
_COMMODITY: Final = common_pb2.ENTITY_TYPE_COMMODITY
_CONTAINER_SCHEME: Final = common_pb2.IDENTIFIER_SCHEME_CONTAINER
_MICROSECOND: Final = dt.timedelta(microseconds=1)
_MAX_VALIDITY_MICROS: Final = MAX_VALIDITY // _MICROSECOND
_NAMED_ENTITIES: Final = frozenset(
    {_E.ENTITY_TYPE_PERSON, _E.ENTITY_TYPE_ORGANISATION, _E.ENTITY_TYPE_VESSEL}
)
_PARTY_ENTITIES: Final = frozenset({_E.ENTITY_TYPE_PERSON, _E.ENTITY_TYPE_ORGANISATION})
_CATEGORY: Final = common_pb2.ControlledCategory.DESCRIPTOR
_TYPOLOGY: Final = common_pb2.Typology.DESCRIPTOR


def _known(enum: EnumDescriptor) -> frozenset[int]:
    """The values of ``enum`` that :meth:`_Collector.enum` (required) accepts: known, not 0."""
    return frozenset(number for number in enum.values_by_number if number != 0)


_KNOWN_CATEGORIES: Final = _known(_CATEGORY)
_KNOWN_TYPOLOGIES: Final = _known(_TYPOLOGY)


class ValidationError(InvalidArgumentError):
    """A request broke one or more validation rules; ``violations`` lists every one."""

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        shown = "; ".join(str(v) for v in violations[:5])
        more = f"; and {len(violations) - 5} more" if len(violations) > 5 else ""
        super().__init__(
            f"{len(violations)} invalid field(s): {shown}{more}", violations=list(violations)
        )


def to_bad_request(violations: Iterable[FieldViolation]) -> error_details_pb2.BadRequest:
    """The ``google.rpc.BadRequest`` detail listing ``violations`` in order."""
    detail = error_details_pb2.BadRequest()
    for v in violations:
        detail.field_violations.add(field=v.field, description=v.description)
    return detail


class _Collector:
    """Collects violations; every helper reports and carries on."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.now = now
        self.violations: list[FieldViolation] = []

    def add(self, path: str, reason: str) -> None:
        self.violations.append(FieldViolation(path, reason))

    def text(
        self, path: str, value: str, *, max_len: int, required: bool, multiline: bool = False
    ) -> None:
        if not value or value.isspace():  # as ``not value.strip()``, without the copy
            if required:
                self.add(path, "required")
            elif value:
                self.add(path, "blank; leave it empty or write something")
            return
        if len(value) > max_len:
            self.add(path, f"at most {max_len} characters, got {len(value)}")
        if value.isprintable():  # no Cc, Cs, Co or Cn character: skip the per-character scan
            return
        allowed = "\n\t" if multiline else ""
        for ch in value:
            if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in allowed:
                self.add(path, f"contains control or unassigned character U+{ord(ch):04X}")
                break

    def enum(self, path: str, value: int, enum: EnumDescriptor, *, required: bool = True) -> None:
        if value == 0:
            if required:
                self.add(path, f"required; one of {enum.name} other than {enum.values[0].name}")
            return
        if value not in enum.values_by_number:
            self.add(path, f"{value} is not a known {enum.name}")

    def enums(
        self, path: str, values: Sequence[int], enum: EnumDescriptor, known: frozenset[int]
    ) -> None:
        """:meth:`enum` (required) of each of ``values`` at ``path[i]``; ``known`` is
        :func:`_known` of ``enum``. An item's path is built only for a violation."""
        if known.issuperset(values):  # each one known: what the loop would find, in C
            return
        for i, value in enumerate(values):
            if value not in known:
                self.enum(f"{path}[{i}]", value, enum)

    def hs_codes(self, path: str, codes: Sequence[str], *, min_digits: int) -> None:
        """:meth:`hs` of each of ``codes`` at ``path[i]``, the path built only for a violation."""
        for i, code in enumerate(codes):
            problem = identifiers.hs_code_problem(code, min_digits=min_digits)
            if problem is not None:
                self.add(f"{path}[{i}]", problem)

    def listed(self, path: str, items: Sequence[object], *, required: bool = False) -> None:
        if required and not items:
            self.add(path, "required; at least one")
        if len(items) > _MAX_LIST:
            self.add(path, f"at most {_MAX_LIST} items, got {len(items)}")

    def country(self, path: str, code: str, *, required: bool = False) -> None:
        if not code:
            if required:
                self.add(path, "required")
            return
        if not reference.is_country(code):
            self.add(path, f"{code!r} is not an ISO 3166-1 alpha-2 country code")

    def countries(self, path: str, codes: Sequence[str]) -> None:
        self.listed(path, codes)
        unique = set(codes)
        if len(unique) == len(codes) and unique <= reference.COUNTRIES:
            return  # each a country, none twice: what the loop below would find, without paths
        seen: set[str] = set()
        for i, code in enumerate(codes):
            self.country(f"{path}[{i}]", code, required=True)
            if code in seen:
                self.add(f"{path}[{i}]", f"{code!r} listed twice")
            seen.add(code)

    def locode(self, path: str, code: str, *, required: bool = False) -> None:
        if not code:
            if required:
                self.add(path, "required")
            return
        if not reference.is_locode(code):
            self.add(path, f"{code!r} is not a UN/LOCODE (ISO country and 3 letters/digits 2-9)")

    def hs(self, path: str, code: str, *, min_digits: int = 6) -> None:
        problem = identifiers.hs_code_problem(code, min_digits=min_digits)
        if problem is not None:
            self.add(path, problem)

    def uuid(self, path: str, value: str) -> None:
        if not value:
            self.add(path, "required")
        elif not _UUID.fullmatch(value):
            self.add(path, f"{value!r} is not a UUID in canonical lower-case form")

    def watchlist_name(self, path: str, value: str) -> None:
        if not value:
            self.add(path, "required")
        elif not _WATCHLIST_NAME.fullmatch(value):
            self.add(
                path, f"{value!r} is not a watchlist name (3-64 of a-z, 0-9 and '-', no edge '-')"
            )

    def time(self, path: str, msg: Message, field: str) -> dt.datetime | None:
        micros = self.micros(path, msg, field)
        # What Timestamp.ToDatetime(tzinfo=UTC) returns for a valid value, without its checks
        # made again and its conversion to UTC from UTC (a tenth of an entry's validation).
        return None if micros is None else EPOCH + dt.timedelta(microseconds=micros)

    def micros(self, path: str, msg: Message, field: str) -> int | None:
        """:meth:`time` as the whole microseconds since the epoch its datetime would hold:
        compared as integers, no datetime is made for a valid time (ADR 0085)."""
        if not msg.HasField(field):
            self.add(path, "required")
            return None
        ts: Timestamp = getattr(msg, field)
        seconds, nanos = ts.seconds, ts.nanos
        if not 0 <= nanos < 1_000_000_000:
            self.add(path, f"nanos {nanos} out of range 0..999999999")
            return None
        if not FIRST_TIMESTAMP_SECOND <= seconds <= LAST_TIMESTAMP_SECOND:
            self.add(path, f"seconds {seconds} out of range (years 0001 to 9999)")
            return None
        return seconds * 1_000_000 + nanos // 1000

    def not_future(self, path: str, when: dt.datetime | None) -> None:
        assert self.now is not None
        if when is not None and when > self.now + CLOCK_SKEW:
            self.add(
                path,
                f"{when.isoformat()} is in the future (now {self.now.isoformat()}, "
                f"{int(CLOCK_SKEW.total_seconds())} s skew allowed)",
            )

    def version(self, path: str, version: int, last_version: int | None, *, final: bool) -> None:
        """Versions: 1 for something new, then each above the last one known here.

        A revocation or withdrawal (``final``) always follows at least version 1.
        """
        if version == 0:
            self.add(path, "required; 1 or more")
            return
        if last_version is None:
            if final and version < 2:
                self.add(path, f"must follow a published version (2 or more), got {version}")
            elif not final and version != 1:
                self.add(path, f"a new id starts at version 1, got {version}")
        elif version <= last_version:
            self.add(path, f"must be higher than the last version {last_version}, got {version}")

    def decimal(self, path: str, amount: str, *, places: int, positive: bool) -> None:
        if not amount:
            self.add(path, "required")
            return
        if not _DECIMAL.fullmatch(amount):
            self.add(path, f"{amount!r} is not a decimal number like '12500.5' (no sign, exponent)")
            return
        value = Decimal(amount)
        if "." in amount and len(amount.split(".")[1]) > places:
            self.add(path, f"{amount!r} has more than {places} decimal places")
        if positive and value <= 0:
            self.add(path, f"must be greater than zero, got {amount!r}")

    # --- shared sub-messages ---------------------------------------------------------------

    def names(self, path: str, names: Sequence[common_pb2.Name], *, need_primary: bool) -> None:
        self.listed(path, names)
        at = len(self.violations)  # the missing primary name goes here, before the names'
        primary = not need_primary  # found one that is not an alias (or none is needed)
        for i, name in enumerate(names):
            if not primary and not name.alias:
                primary = True
            # What :meth:`text` accepts without a word, checked before its paths are built.
            full, latin = name.full_name, name.latin_name
            if not (full and len(full) <= 300 and full.isprintable() and not full.isspace()):
                self.text(f"{path}[{i}].full_name", full, max_len=300, required=True)
            if latin and not (len(latin) <= 300 and latin.isprintable() and not latin.isspace()):
                self.text(f"{path}[{i}].latin_name", latin, max_len=300, required=False)
        if not primary:
            problem = FieldViolation(path, "required; at least one name that is not an alias")
            self.violations.insert(at, problem)

    def identifiers(self, path: str, ids: Sequence[common_pb2.Identifier]) -> None:
        self.listed(path, ids)
        seen: set[tuple[int, str, str]] = set()
        for i, ident in enumerate(ids):
            key = (ident.scheme, ident.value, ident.issuing_country)
            for sub, reason in identifiers.identifier_problems(*key):
                self.add(f"{path}[{i}].{sub}", reason)
            if key in seen:
                self.add(f"{path}[{i}]", f"identifier {key[1]!r} listed twice")
            seen.add(key)

    def containers(self, path: str, numbers: Sequence[str]) -> None:
        self.listed(path, numbers)
        seen: set[str] = set()
        for i, number in enumerate(numbers):
            problem = identifiers.container_problem(number) if number else "required"
            if problem is not None:
                self.add(f"{path}[{i}]", problem)
            elif number in seen:
                self.add(f"{path}[{i}]", f"container {number} listed twice")
            seen.add(number)

    def conveyance(self, path: str, conveyance: domain_pb2.Conveyance, *, strict: bool) -> None:
        self.enum(
            f"{path}.mode", conveyance.mode, domain_pb2.TransportMode.DESCRIPTOR, required=strict
        )
        self.text(f"{path}.name", conveyance.name, max_len=200, required=False)
        self.identifiers(f"{path}.identifiers", conveyance.identifiers)

    def route(self, path: str, route: common_pb2.Route, *, origin_required: bool) -> None:
        self.country(f"{path}.origin_country", route.origin_country, required=origin_required)
        self.countries(f"{path}.transit_countries", route.transit_countries)
        self.country(f"{path}.declared_destination_country", route.declared_destination_country)
        self.country(f"{path}.suspected_destination_country", route.suspected_destination_country)
        self.listed(f"{path}.places", route.places)
        for i, place in enumerate(route.places):
            self.locode(f"{path}.places[{i}]", place, required=True)

    def party(self, path: str, party: domain_pb2.Party, *, strict: bool) -> None:
        self.enum(f"{path}.role", party.role, domain_pb2.PartyRole.DESCRIPTOR, required=strict)
        if party.entity_type not in _PARTY_ENTITIES and (strict or party.entity_type != 0):
            self.add(
                f"{path}.entity_type", "must be ENTITY_TYPE_PERSON or ENTITY_TYPE_ORGANISATION"
            )
        self.listed(f"{path}.names", party.names, required=strict)
        self.names(f"{path}.names", party.names, need_primary=False)
        self.identifiers(f"{path}.identifiers", party.identifiers)
        self.country(f"{path}.country", party.country)
        self.listed(f"{path}.watchlist_refs", party.watchlist_refs)
        for j, ref in enumerate(party.watchlist_refs):
            ref_path = f"{path}.watchlist_refs[{j}]"
            self.enum(f"{ref_path}.origin", ref.origin, common_pb2.Jurisdiction.DESCRIPTOR)
            self.watchlist_name(f"{ref_path}.watchlist", ref.watchlist)
            self.uuid(f"{ref_path}.entry_id", ref.entry_id)


# --- watchlist entries and revocations --------------------------------------------------------


def validate_watchlist_entry(
    entry: domain_pb2.WatchlistEntry,
    *,
    now: dt.datetime,
    last_version: int | None = None,
    path: str = "entry",
) -> list[FieldViolation]:
    """Every violation of a WatchlistEntry about to be published at ``now``.

    Args:
        entry: the entry as submitted.
        now: the node's clock (timezone-aware).
        last_version: the last version of this entry id known here, None for a new entry.
        path: the entry's path in the request.

    Returns:
        All violations, in field order; empty when the entry is valid.
    """
    c = _Collector(now)
    watchlist, entry_id = entry.watchlist, entry.entry_id
    if not (watchlist and _WATCHLIST_NAME.fullmatch(watchlist)):  # else nothing to report
        c.watchlist_name(f"{path}.watchlist", watchlist)
    if not (entry_id and _UUID.fullmatch(entry_id)):  # else nothing to report
        c.uuid(f"{path}.entry_id", entry_id)
    c.version(f"{path}.version", entry.version, last_version, final=False)
    entity_type = entry.entity_type
    c.enum(f"{path}.entity_type", entity_type, common_pb2.EntityType.DESCRIPTOR)
    c.names(f"{path}.names", entry.names, need_primary=entity_type in _NAMED_ENTITIES)
    c.identifiers(f"{path}.identifiers", entry.identifiers)
    if entity_type == _CONTAINER and all(i.scheme != _CONTAINER_SCHEME for i in entry.identifiers):
        c.add(f"{path}.identifiers", "a CONTAINER entry needs an ISO 6346 container identifier")
    if entity_type == _VEHICLE and not entry.identifiers:
        c.add(f"{path}.identifiers", "a VEHICLE entry needs at least one identifier")
    if entity_type == _COMMODITY and not (entry.hs_codes or entry.categories):
        c.add(f"{path}.hs_codes", "a COMMODITY entry needs HS codes or controlled categories")
    c.countries(f"{path}.countries", entry.countries)
    categories, hs_codes, typologies = entry.categories, entry.hs_codes, entry.typologies
    c.listed(f"{path}.categories", categories)
    c.enums(f"{path}.categories", categories, _CATEGORY, _KNOWN_CATEGORIES)
    c.listed(f"{path}.hs_codes", hs_codes)
    c.hs_codes(f"{path}.hs_codes", hs_codes, min_digits=4)
    c.listed(f"{path}.typologies", typologies)
    c.enums(f"{path}.typologies", typologies, _TYPOLOGY, _KNOWN_TYPOLOGIES)
    c.countries(f"{path}.flagged_transit_countries", entry.flagged_transit_countries)
    c.enum(f"{path}.risk_level", entry.risk_level, domain_pb2.RiskLevel.DESCRIPTOR)
    c.text(f"{path}.reason", entry.reason, max_len=2000, required=True, multiline=True)
    c.text(
        f"{path}.handling_instructions",
        entry.handling_instructions,
        max_len=1000,
        required=False,
        multiline=True,
    )
    until: int | None = None  # times in microseconds since the epoch, as datetimes hold them
    if not entry.HasField("validity"):
        c.add(f"{path}.validity", "required")
    else:
        vpath = f"{path}.validity"
        start = c.micros(f"{vpath}.valid_from", entry.validity, "valid_from")
        until = c.micros(f"{vpath}.valid_until", entry.validity, "valid_until")
        if start is not None and until is not None:
            if until <= start:
                c.add(f"{vpath}.valid_until", "must be after valid_from")
            elif until - start > _MAX_VALIDITY_MICROS:
                c.add(
                    f"{vpath}.valid_until",
                    f"window of {dt.timedelta(microseconds=until - start).days} days is longer "
                    f"than {MAX_VALIDITY.days} days (2 years)",
                )
        if until is not None and until <= (now - EPOCH) // _MICROSECOND:
            c.add(f"{vpath}.valid_until", f"already passed (now {now.isoformat()})")
    retain = c.micros(f"{path}.retain_until", entry, "retain_until")
    if retain is not None and until is not None and retain < until:
        c.add(f"{path}.retain_until", "must not be before validity.valid_until")
    birth = dates.date_of_birth_problem(entry.date_of_birth)
    if birth:
        c.add(f"{path}.date_of_birth", birth)
    return c.violations


def validate_revocation(
    revocation: domain_pb2.WatchlistRevocation,
    *,
    last_version: int | None = None,
    path: str = "revocation",
) -> list[FieldViolation]:
    """Every violation of a WatchlistRevocation; ``last_version`` as for entries."""
    c = _Collector()
    c.watchlist_name(f"{path}.watchlist", revocation.watchlist)
    c.uuid(f"{path}.entry_id", revocation.entry_id)
    c.version(f"{path}.version", revocation.version, last_version, final=True)
    c.text(f"{path}.reason", revocation.reason, max_len=2000, required=True, multiline=True)
    return c.violations


# --- seizure notices and withdrawals -----------------------------------------------------------


def validate_seizure_notice(
    notice: domain_pb2.SeizureNotice,
    *,
    now: dt.datetime,
    last_version: int | None = None,
    path: str = "notice",
) -> list[FieldViolation]:
    """Every violation of a SeizureNotice submitted (or amended) at ``now``.

    Args:
        notice: the notice as submitted.
        now: the node's clock (timezone-aware).
        last_version: the last version of this notice id known here, None for a new notice.
        path: the notice's path in the request.

    Returns:
        All violations, in field order; empty when the notice is valid.
    """
    c = _Collector(now)
    c.uuid(f"{path}.notice_id", notice.notice_id)
    c.version(f"{path}.version", notice.version, last_version, final=False)
    c.text(f"{path}.case_reference", notice.case_reference, max_len=64, required=True)
    seized = c.time(f"{path}.seized_at", notice, "seized_at")
    c.not_future(f"{path}.seized_at", seized)
    if seized is not None and c.now is not None:
        too_old = dates.seized_at_problem(seized, now=c.now)
        if too_old:
            c.add(f"{path}.seized_at", too_old)
    c.locode(f"{path}.place", notice.place, required=True)
    c.enum(f"{path}.direction", notice.direction, domain_pb2.Direction.DESCRIPTOR)
    if notice.HasField("conveyance"):
        c.conveyance(f"{path}.conveyance", notice.conveyance, strict=True)
    else:
        c.add(f"{path}.conveyance", "required")
    c.containers(f"{path}.container_numbers", notice.container_numbers)
    c.listed(f"{path}.goods", notice.goods, required=True)
    line_numbers: set[int] = set()
    for i, line in enumerate(notice.goods):
        g = f"{path}.goods[{i}]"
        if line.line_number == 0:
            c.add(f"{g}.line_number", "required; 1 or more")
        elif line.line_number in line_numbers:
            c.add(f"{g}.line_number", f"line number {line.line_number} used twice")
        line_numbers.add(line.line_number)
        c.hs(f"{g}.declared_hs_code", line.declared_hs_code)
        c.text(f"{g}.declared_description", line.declared_description, max_len=500, required=True)
        c.hs(f"{g}.actual_hs_code", line.actual_hs_code)
        c.text(f"{g}.actual_description", line.actual_description, max_len=500, required=True)
        c.enum(
            f"{g}.category",
            line.category,
            common_pb2.ControlledCategory.DESCRIPTOR,
            required=False,
        )
        if line.HasField("quantity"):
            c.decimal(f"{g}.quantity.amount", line.quantity.amount, places=3, positive=True)
            if not line.quantity.unit:
                c.add(f"{g}.quantity.unit", "required")
            elif line.quantity.unit not in reference.UNITS:
                c.add(
                    f"{g}.quantity.unit",
                    f"{line.quantity.unit!r} is not a UN/ECE Rec 20 unit code "
                    "(e.g. KGM kilogram, TNE tonne, H87 piece)",
                )
        else:
            c.add(f"{g}.quantity", "required")
        if line.HasField("value"):
            c.decimal(f"{g}.value.amount", line.value.amount, places=2, positive=False)
            if not line.value.currency:
                c.add(f"{g}.value.currency", "required")
            elif line.value.currency not in reference.CURRENCIES:
                c.add(
                    f"{g}.value.currency", f"{line.value.currency!r} is not a known ISO 4217 code"
                )
        c.enum(
            f"{g}.concealment",
            line.concealment,
            domain_pb2.ConcealmentMethod.DESCRIPTOR,
            required=False,
        )
        c.text(
            f"{g}.concealment_details",
            line.concealment_details,
            max_len=1000,
            required=False,
            multiline=True,
        )
    if notice.HasField("route"):
        c.route(f"{path}.route", notice.route, origin_required=True)
    else:
        c.add(f"{path}.route", "required")
    c.listed(f"{path}.parties", notice.parties)
    for i, party in enumerate(notice.parties):
        c.party(f"{path}.parties[{i}]", party, strict=True)
    c.listed(f"{path}.typologies", notice.typologies, required=True)
    c.enums(f"{path}.typologies", notice.typologies, _TYPOLOGY, _KNOWN_TYPOLOGIES)
    c.text(f"{path}.narrative", notice.narrative, max_len=10000, required=False, multiline=True)
    c.listed(f"{path}.attachments", notice.attachments)
    for i, att in enumerate(notice.attachments):
        a = f"{path}.attachments[{i}]"
        if not att.media_type:
            c.add(f"{a}.media_type", "required")
        elif not _MEDIA_TYPE.fullmatch(att.media_type):
            c.add(f"{a}.media_type", f"{att.media_type!r} is not a media type like 'image/jpeg'")
        if not att.sha256:
            c.add(f"{a}.sha256", "required")
        elif not _SHA256.fullmatch(att.sha256):
            c.add(f"{a}.sha256", "must be 64 lower-case hex characters")
        c.text(f"{a}.description", att.description, max_len=300, required=False)
    c.enum(f"{path}.status", notice.status, domain_pb2.NoticeStatus.DESCRIPTOR)
    retain = c.time(f"{path}.retain_until", notice, "retain_until")
    if retain is not None and seized is not None and retain <= seized:
        c.add(f"{path}.retain_until", "must be after seized_at")
    elif retain is not None and c.now is not None:
        past = dates.retain_until_problem(retain, now=c.now)
        if past:
            c.add(f"{path}.retain_until", past)
    return c.violations


def validate_withdrawal(
    withdrawal: domain_pb2.SeizureWithdrawal,
    *,
    last_version: int | None = None,
    path: str = "withdrawal",
) -> list[FieldViolation]:
    """Every violation of a SeizureWithdrawal; ``last_version`` as for notices."""
    c = _Collector()
    c.uuid(f"{path}.notice_id", withdrawal.notice_id)
    c.version(f"{path}.version", withdrawal.version, last_version, final=True)
    c.text(f"{path}.reason", withdrawal.reason, max_len=2000, required=True, multiline=True)
    return c.violations


# --- addressing and declarations ----------------------------------------------------------------


def validate_addressing(
    addressing: partner_pb2.Addressing, *, origin: int, path: str = "addressing"
) -> list[FieldViolation]:
    """Every violation of a submit request's Addressing sent from jurisdiction ``origin``.

    Recipients: at least one, each a known jurisdiction, not the origin, not repeated, and each
    listed in ``handling.releasable_to`` (itself non-empty, known, without the origin).
    """
    found = validate_message_id(addressing.message_id, path=f"{path}.message_id")
    return found + validate_addressing_but_id(addressing, origin=origin, path=path)


def validate_message_id(
    message_id: str, *, path: str = "addressing.message_id"
) -> list[FieldViolation]:
    """Every violation of an Addressing's message id: what :func:`validate_addressing` reports
    first."""
    if message_id and _UUID.fullmatch(message_id):  # else :meth:`uuid` finds nothing
        return []
    c = _Collector()
    c.uuid(path, message_id)
    return c.violations


def validate_addressing_but_id(
    addressing: partner_pb2.Addressing, *, origin: int, path: str = "addressing"
) -> list[FieldViolation]:
    """Every violation of an Addressing but of its message id: what :func:`validate_addressing`
    reports after it. It depends on the recipients and the handling only, so a bulk call's
    entries, which mostly share both, need it once per distinct pair (ADR 0085)."""
    c = _Collector()
    releasable: AbstractSet[int] = frozenset()
    has_handling = addressing.HasField("handling")
    if has_handling:
        h = f"{path}.handling"
        handling = addressing.handling
        releasable_to = handling.releasable_to
        c.listed(f"{h}.releasable_to", releasable_to, required=True)
        unique = set(releasable_to)
        if _good_jurisdictions(unique, len(releasable_to), origin):
            releasable = unique  # what the loop below would collect, finding nothing
        else:
            collected: set[int] = set()
            for i, j in enumerate(releasable_to):
                _jurisdiction(c, f"{h}.releasable_to", i, j, origin, collected)
            releasable = collected
        c.text(f"{h}.caveat", handling.caveat, max_len=200, required=False)
    else:
        c.add(f"{path}.handling", "required")
    recipients = addressing.recipients
    c.listed(f"{path}.recipients", recipients, required=True)
    unique = set(recipients)
    if _good_jurisdictions(unique, len(recipients), origin) and (
        not has_handling or unique <= releasable
    ):
        return c.violations  # the loop below would find nothing
    seen: set[int] = set()
    for i, j in enumerate(recipients):
        fresh = _jurisdiction(c, f"{path}.recipients", i, j, origin, seen)
        if fresh and has_handling and j not in releasable:
            c.add(f"{path}.recipients[{i}]", f"{_jname(j)} is not in handling.releasable_to")
    return c.violations


def _good_jurisdictions(unique: AbstractSet[int], listed: int, origin: int) -> bool:
    """Whether a list of ``listed`` jurisdictions whose set is ``unique`` passes
    :func:`_jurisdiction` item by item: each known, not ``origin``, none twice."""
    known = reference.KNOWN_JURISDICTIONS
    return len(unique) == listed and origin not in unique and unique <= known


def _jname(j: int) -> str:
    desc = common_pb2.Jurisdiction.DESCRIPTOR.values_by_number.get(j)
    return desc.name if desc is not None else str(j)


def _jurisdiction(c: _Collector, path: str, i: int, j: int, origin: int, seen: set[int]) -> bool:
    """Reports a bad jurisdiction ``j`` at ``path[i]``; True when ``j`` is a good, new entry.
    (The item's path is built only for a violation: most lists have none.)"""
    if j not in reference.KNOWN_JURISDICTIONS:
        c.add(f"{path}[{i}]", f"{_jname(j)} is not a known jurisdiction (CN, HK, MO)")
        return False
    if j == origin:
        c.add(f"{path}[{i}]", f"{_jname(j)} is the origin; a node does not send to itself")
        return False
    if j in seen:
        c.add(f"{path}[{i}]", f"{_jname(j)} listed twice")
        return False
    seen.add(j)
    return True


def validate_declaration(
    declaration: domain_pb2.Declaration, *, path: str = "declaration"
) -> list[FieldViolation]:
    """Every violation of a Declaration to screen.

    Declarations come from port systems, so fewer fields are required than in a notice, but
    what is there must be well formed: HS codes, ISO 6346 check digits, identifier check
    digits, country codes and LOCODEs. A declaration with nothing to screen is refused.
    """
    c = _Collector()
    c.text(f"{path}.reference", declaration.reference, max_len=64, required=False)
    c.listed(f"{path}.parties", declaration.parties)
    for i, party in enumerate(declaration.parties):
        c.party(f"{path}.parties[{i}]", party, strict=False)
    c.listed(f"{path}.items", declaration.items)
    for i, item in enumerate(declaration.items):
        c.hs(f"{path}.items[{i}].hs_code", item.hs_code)
        c.text(f"{path}.items[{i}].description", item.description, max_len=500, required=False)
    c.containers(f"{path}.container_numbers", declaration.container_numbers)
    if declaration.HasField("conveyance"):
        c.conveyance(f"{path}.conveyance", declaration.conveyance, strict=False)
    if declaration.HasField("route"):
        c.route(f"{path}.route", declaration.route, origin_required=False)
    if not (
        declaration.parties
        or declaration.items
        or declaration.container_numbers
        or declaration.HasField("conveyance")
    ):
        c.add(path, "nothing to screen: no parties, items, containers or conveyance")
    return c.violations


# --- raising forms -------------------------------------------------------------------------------


def raise_if_invalid(violations: Sequence[FieldViolation]) -> None:
    """Raises :class:`ValidationError` with ``violations`` unless there are none."""
    if violations:
        raise ValidationError(violations)


def check_watchlist_entry(
    entry: domain_pb2.WatchlistEntry, *, now: dt.datetime, last_version: int | None = None
) -> None:
    """:func:`validate_watchlist_entry`, raising :class:`ValidationError` on any violation."""
    raise_if_invalid(validate_watchlist_entry(entry, now=now, last_version=last_version))


def check_revocation(
    revocation: domain_pb2.WatchlistRevocation, *, last_version: int | None = None
) -> None:
    """:func:`validate_revocation`, raising :class:`ValidationError` on any violation."""
    raise_if_invalid(validate_revocation(revocation, last_version=last_version))


def check_seizure_notice(
    notice: domain_pb2.SeizureNotice, *, now: dt.datetime, last_version: int | None = None
) -> None:
    """:func:`validate_seizure_notice`, raising :class:`ValidationError` on any violation."""
    raise_if_invalid(validate_seizure_notice(notice, now=now, last_version=last_version))


def check_withdrawal(
    withdrawal: domain_pb2.SeizureWithdrawal, *, last_version: int | None = None
) -> None:
    """:func:`validate_withdrawal`, raising :class:`ValidationError` on any violation."""
    raise_if_invalid(validate_withdrawal(withdrawal, last_version=last_version))


def check_addressing(addressing: partner_pb2.Addressing, *, origin: int) -> None:
    """:func:`validate_addressing`, raising :class:`ValidationError` on any violation."""
    raise_if_invalid(validate_addressing(addressing, origin=origin))


def check_declaration(declaration: domain_pb2.Declaration) -> None:
    """:func:`validate_declaration`, raising :class:`ValidationError` on any violation."""
    raise_if_invalid(validate_declaration(declaration))
