"""The seed case as valid messages: antimony ingots declared as zinc, moved through Viet Nam.

Hong Kong Customs publishes a watchlist entry on a Hong Kong trading company suspected of
buying antimony ingots declared as zinc and routed through a third country. Mainland customs
then seizes such a consignment at Shekou: 24 tonnes of antimony ingots, painted to look like
zinc, declared under HS 7901.11 instead of 8110.10, bound for Haiphong with a suspected final
destination elsewhere. Every builder returns a message that passes validation at ``now``;
the demo and other test suites use them. All identifiers carry valid check digits and are
fictitious.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2

__all__ = [
    "SEED_CONTAINERS",
    "SEED_ENTRY_ID",
    "SEED_IMO",
    "SEED_NOTICE_ID",
    "SEED_WATCHLIST",
    "seed_declaration",
    "seed_notice_request",
    "seed_publish_request",
    "seed_revocation",
    "seed_seizure_notice",
    "seed_watchlist_entry",
    "timestamp",
]

SEED_WATCHLIST = "strategic-minerals"
SEED_ENTRY_ID = "3b0f6a52-9c1e-4d7a-8f43-2e5b7c9d1a60"
SEED_NOTICE_ID = "c41d8e27-5a96-4b0f-b1e3-7f2a6d9c8e15"
SEED_IMO = "IMO9074729"
SEED_CONTAINERS = ("CSQU3054383", "TGHU7654320", "MEDU4411229")
HK_COMPANY_TRADITIONAL = "華南金屬貿易有限公司"
HK_COMPANY_SIMPLIFIED = "华南金属贸易有限公司"
HK_COMPANY_LATIN = "South China Metals Trading Company Limited"
HK_COMPANY_BR = "71234567"
CN_EXPORTER_USCC = "91451481MA5KXQ7T15"

_C = common_pb2
_D = domain_pb2


def timestamp(when: dt.datetime) -> Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def seed_watchlist_entry(now: dt.datetime, *, version: int = 1) -> domain_pb2.WatchlistEntry:
    """HK's entry on the trading company, valid from a day before ``now`` for 180 days."""
    valid_from = now - dt.timedelta(days=1)
    valid_until = now + dt.timedelta(days=180)
    return _D.WatchlistEntry(
        watchlist=SEED_WATCHLIST,
        entry_id=SEED_ENTRY_ID,
        version=version,
        entity_type=_C.ENTITY_TYPE_ORGANISATION,
        names=[
            _C.Name(full_name=HK_COMPANY_TRADITIONAL, latin_name=HK_COMPANY_LATIN),
            _C.Name(full_name="南華礦產", latin_name="Nam Wah Minerals", alias=True),
        ],
        identifiers=[
            _C.Identifier(scheme=_C.IDENTIFIER_SCHEME_HK_BR, value=HK_COMPANY_BR),
        ],
        countries=["HK"],
        categories=[_C.CONTROLLED_CATEGORY_ANTIMONY],
        hs_codes=["8110", "2617"],
        typologies=[
            _C.TYPOLOGY_FALSE_DECLARATION,
            _C.TYPOLOGY_CONCEALMENT,
            _C.TYPOLOGY_THIRD_COUNTRY_TRANSSHIPMENT,
        ],
        flagged_transit_countries=["VN", "TH"],
        risk_level=_D.RISK_LEVEL_HIGH,
        reason=(
            "Intelligence: the company has bought antimony ingots from Guangxi declared as zinc "
            "ingots, shipped through Haiphong and Laem Chabang for onward sale."
            if version == 1
            else "Amended: also trades under the name Nam Wah Minerals; Laem Chabang confirmed."
        ),
        validity=_C.Validity(valid_from=timestamp(valid_from), valid_until=timestamp(valid_until)),
        retain_until=timestamp(valid_until + dt.timedelta(days=3 * 365)),
        handling_instructions="Hold for examination; check ingots for paint over antimony.",
    )


def seed_revocation(version: int = 3) -> domain_pb2.WatchlistRevocation:
    """HK's revocation of the seed entry."""
    return _D.WatchlistRevocation(
        watchlist=SEED_WATCHLIST,
        entry_id=SEED_ENTRY_ID,
        version=version,
        reason="Case closed after prosecution; entry no longer needed.",
    )


def seed_publish_request(now: dt.datetime) -> partner_pb2.PublishWatchlistEntryRequest:
    """HK's request to publish the seed entry to CN and MO."""
    return partner_pb2.PublishWatchlistEntryRequest(
        addressing=_addressing(
            "0d9e3c1a-4b2f-4e8a-9c71-5a6b8d0e2f13", [_C.JURISDICTION_CN, _C.JURISDICTION_MO]
        ),
        entry=seed_watchlist_entry(now),
    )


def _addressing(
    message_id: str, recipients: list[common_pb2.Jurisdiction]
) -> partner_pb2.Addressing:
    return partner_pb2.Addressing(
        message_id=message_id,
        recipients=recipients,
        handling=_C.Handling(
            releasable_to=recipients,
            onward_dissemination_allowed=False,
            caveat="For customs enforcement use only",
        ),
    )


def seed_seizure_notice(now: dt.datetime, *, version: int = 1) -> domain_pb2.SeizureNotice:
    """CN's seizure at Shekou two days before ``now``: antimony ingots declared as zinc."""
    seized_at = now - dt.timedelta(days=2)
    photo = hashlib.sha256(b"seed case: photograph of painted ingot, container CSQU3054383")
    lab = hashlib.sha256(b"seed case: laboratory report, Sb 99.65%")
    return _D.SeizureNotice(
        notice_id=SEED_NOTICE_ID,
        version=version,
        case_reference="SZ-SK-2026-00417",
        seized_at=timestamp(seized_at),
        place="CNSHK",
        direction=_D.DIRECTION_EXPORT,
        conveyance=_D.Conveyance(
            mode=_D.TRANSPORT_MODE_SEA,
            name="JIN HAI 8",
            identifiers=[
                _C.Identifier(scheme=_C.IDENTIFIER_SCHEME_IMO, value=SEED_IMO),
                _C.Identifier(scheme=_C.IDENTIFIER_SCHEME_MMSI, value="413456789"),
            ],
        ),
        container_numbers=list(SEED_CONTAINERS),
        goods=[
            _D.GoodsLine(
                line_number=1,
                declared_hs_code="790111",
                declared_description="unwrought zinc, not alloyed, >= 99.99% Zn, ingots",
                actual_hs_code="811010",
                actual_description="unwrought antimony ingots, 99.65% Sb, painted to resemble zinc",
                category=_C.CONTROLLED_CATEGORY_ANTIMONY,
                quantity=_C.Quantity(amount="24000", unit="KGM"),
                value=_C.Money(amount="62400.00", currency="USD"),
                concealment=_D.CONCEALMENT_METHOD_COATED_OR_PAINTED,
                concealment_details="Ingots painted zinc-grey, stamped 'Zn 99.99'.",
            ),
            _D.GoodsLine(
                line_number=2,
                declared_hs_code="790111",
                declared_description="unwrought zinc, not alloyed, >= 99.99% Zn, ingots",
                actual_hs_code="790111",
                actual_description="zinc ingots stacked around the antimony as cover",
                quantity=_C.Quantity(amount="2.5", unit="TNE"),
                value=_C.Money(amount="7250.00", currency="USD"),
                concealment=_D.CONCEALMENT_METHOD_MIXED_WITH_OTHER_GOODS,
            ),
        ],
        route=_C.Route(
            origin_country="CN",
            transit_countries=["VN"],
            declared_destination_country="VN",
            suspected_destination_country="AE",
            places=["CNSHK", "VNHPH", "AEJEA"],
        ),
        parties=[
            _D.Party(
                role=_D.PARTY_ROLE_EXPORTER,
                entity_type=_C.ENTITY_TYPE_ORGANISATION,
                names=[
                    _C.Name(
                        full_name="凭祥华锑矿产进出口有限公司",
                        latin_name="Pingxiang Huati Minerals Import and Export Co., Ltd.",
                    )
                ],
                identifiers=[
                    _C.Identifier(scheme=_C.IDENTIFIER_SCHEME_USCC, value=CN_EXPORTER_USCC)
                ],
                country="CN",
            ),
            _D.Party(
                role=_D.PARTY_ROLE_CONSIGNEE,
                entity_type=_C.ENTITY_TYPE_ORGANISATION,
                names=[_C.Name(full_name=HK_COMPANY_SIMPLIFIED, latin_name=HK_COMPANY_LATIN)],
                identifiers=[_C.Identifier(scheme=_C.IDENTIFIER_SCHEME_HK_BR, value=HK_COMPANY_BR)],
                country="HK",
                watchlist_refs=[
                    _D.WatchlistRef(
                        origin=_C.JURISDICTION_HK, watchlist=SEED_WATCHLIST, entry_id=SEED_ENTRY_ID
                    )
                ],
            ),
            _D.Party(
                role=_D.PARTY_ROLE_BENEFICIAL_OWNER,
                entity_type=_C.ENTITY_TYPE_PERSON,
                names=[_C.Name(full_name="陳志強", latin_name="CHAN Chi Keung")],
                identifiers=[
                    _C.Identifier(
                        scheme=_C.IDENTIFIER_SCHEME_NATIONAL_ID,
                        value="K4829131",
                        issuing_country="HK",
                    )
                ],
                country="HK",
            ),
        ],
        typologies=[
            _C.TYPOLOGY_FALSE_DECLARATION,
            _C.TYPOLOGY_CONCEALMENT,
            _C.TYPOLOGY_THIRD_COUNTRY_TRANSSHIPMENT,
        ],
        narrative=(
            "X-ray and density check of three containers declared as zinc ingots found antimony "
            "ingots painted grey. Declared destination Haiphong; bills of lading for onward "
            "carriage to Jebel Ali found with the shipper."
        ),
        attachments=[
            _D.AttachmentDigest(
                media_type="image/jpeg", sha256=photo.hexdigest(), description="painted ingot"
            ),
            _D.AttachmentDigest(
                media_type="application/pdf", sha256=lab.hexdigest(), description="lab report"
            ),
        ],
        status=_D.NOTICE_STATUS_PROVISIONAL,
        retain_until=timestamp(seized_at + dt.timedelta(days=5 * 365)),
    )


def seed_notice_request(now: dt.datetime) -> partner_pb2.SubmitSeizureNoticeRequest:
    """CN's request to submit the seed seizure notice to HK and MO."""
    return partner_pb2.SubmitSeizureNoticeRequest(
        addressing=_addressing(
            "7e2c9b40-1d3f-4a6e-8b05-c9f1a2d3e4b6", [_C.JURISDICTION_HK, _C.JURISDICTION_MO]
        ),
        notice=seed_seizure_notice(now),
    )


def seed_declaration() -> domain_pb2.Declaration:
    """A later export declaration at Shekou by the same consignee: screening should hit."""
    return _D.Declaration(
        reference="SK-EXP-2026-118843",
        parties=[
            _D.Party(
                role=_D.PARTY_ROLE_CONSIGNEE,
                entity_type=_C.ENTITY_TYPE_ORGANISATION,
                names=[
                    _C.Name(
                        full_name="华南金属贸易有限公司",
                        latin_name="SOUTH CHINA METALS TRADING CO LTD",
                    )
                ],
                country="HK",
            ),
        ],
        items=[_D.Declaration.Item(hs_code="811010", description="antimony ingots")],
        container_numbers=["TGHU7654335"],
        conveyance=_D.Conveyance(mode=_D.TRANSPORT_MODE_SEA, name="JIN HAI 8"),
        route=_C.Route(origin_country="CN", transit_countries=["VN"], places=["CNSHK", "VNHPH"]),
    )
