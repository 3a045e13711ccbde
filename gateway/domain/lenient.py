"""What screening accepts: a declaration as port systems write it, put in normal form first.

Screening is a question, not a record: a container number written with spaces or in lower
case, an IMO number without its prefix, an HS code with dots, a country code in lower case are
screened in their normal form, and the response says what was normalised
(``ScreenDeclarationResponse.normalised``). Only what cannot be normalised into a valid value
is refused (INVALID_ARGUMENT naming each field): a wrong check digit, an unknown country, an
HS code that is not one.

Dates of birth are checked by :func:`gateway.domain.dates.date_of_birth_problem`.
"""

from __future__ import annotations

import re
from typing import Final

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain.dates import date_of_birth_problem
from gateway.domain.identifiers import normalise_identifier
from gateway.domain.validate import validate_declaration
from gateway.errors import FieldViolation

__all__ = ["normalise_declaration"]

_HS_SEPARATORS: Final = re.compile(r"[\s.\-]")


def normalise_declaration(
    declaration: domain_pb2.Declaration, *, path: str = "declaration"
) -> tuple[domain_pb2.Declaration, list[partner_pb2.Normalisation], list[FieldViolation]]:
    """The declaration in normal form, what was changed, and what is still wrong after that.

    Returns:
        (normalised copy, one Normalisation per changed value, violations of the copy).
    """
    out = domain_pb2.Declaration()
    out.CopyFrom(declaration)
    changes: list[partner_pb2.Normalisation] = []

    def use(field: str, given: str, used: str) -> str:
        if used != given:
            changes.append(partner_pb2.Normalisation(field=field, given=given, used=used))
        return used

    container = common_pb2.IDENTIFIER_SCHEME_CONTAINER
    for i, number in enumerate(out.container_numbers):
        out.container_numbers[i] = use(
            f"{path}.container_numbers[{i}]", number, normalise_identifier(container, number)
        )
    for i, item in enumerate(out.items):
        item.hs_code = use(
            f"{path}.items[{i}].hs_code", item.hs_code, _HS_SEPARATORS.sub("", item.hs_code)
        )
    identifiers = [(f"{path}.conveyance.identifiers[{i}]", ident)
                   for i, ident in enumerate(out.conveyance.identifiers)]  # fmt: skip
    for p, party in enumerate(out.parties):
        identifiers += [(f"{path}.parties[{p}].identifiers[{i}]", ident)
                        for i, ident in enumerate(party.identifiers)]  # fmt: skip
        if party.country:
            party.country = use(
                f"{path}.parties[{p}].country", party.country, party.country.upper()
            )
    for where, ident in identifiers:
        ident.value = use(
            f"{where}.value", ident.value, normalise_identifier(ident.scheme, ident.value)
        )
        if ident.issuing_country:
            ident.issuing_country = use(
                f"{where}.issuing_country", ident.issuing_country, ident.issuing_country.upper()
            )
    if out.HasField("route"):
        route = out.route
        for attr in ("origin_country", "declared_destination_country"):
            value = getattr(route, attr)
            setattr(route, attr, use(f"{path}.route.{attr}", value, value.upper()))
        for i, country in enumerate(route.transit_countries):
            route.transit_countries[i] = use(
                f"{path}.route.transit_countries[{i}]", country, country.upper()
            )
    problems = validate_declaration(out, path=path)
    for p, party in enumerate(out.parties):
        problem = date_of_birth_problem(party.date_of_birth)
        if problem:
            problems.append(FieldViolation(f"{path}.parties[{p}].date_of_birth", problem))
    return out, changes, problems
