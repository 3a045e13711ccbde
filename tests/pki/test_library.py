"""The pure PKI library: renewal, CRLs and their verification, expiry, per-call authentication."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import InvalidArgumentError, UnauthenticatedError
from gateway.pki import (
    DOCUMENT_SIGNING_EKU,
    Authenticator,
    CertificateStatus,
    CrlError,
    Jurisdiction,
    RevocationReason,
    Role,
    SpiffeId,
    TrustBundle,
    build_crl,
    create_root_ca,
    expiry_warnings,
    identity_of,
    issue_leaf,
    issue_signing_certificate,
    load_crl,
    renew_certificate,
    verify_crl,
)
from gateway.pki.expiry import certificate_status
from gateway.pki.revocation import RevokedEntry, revoked_entries

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
HK, CN, MO = Jurisdiction.HK, Jurisdiction.CN, Jurisdiction.MO


@pytest.fixture(scope="module")
def roots():
    return {j: create_root_ca(j, now=NOW - dt.timedelta(days=1)) for j in Jurisdiction}


@pytest.fixture(scope="module")
def bundle(roots):
    return TrustBundle(tuple((j, ca.certificate) for j, ca in roots.items()))


def _id(j: Jurisdiction, role: Role, name: str = "x") -> SpiffeId:
    return SpiffeId(j, role, name)


# -- renewal ------------------------------------------------------------------------------------


def test_renew_keeps_identity_names_and_usages_with_new_serial_and_validity(roots):
    ca = roots[HK]
    old = issue_leaf(ca, _id(HK, Role.NODE, "gateway"), now=NOW, dns_names=("localhost",))
    new = renew_certificate(ca, old.certificate, now=NOW + dt.timedelta(days=20))
    assert identity_of(new.certificate) == identity_of(old.certificate)
    assert new.certificate.subject == old.certificate.subject
    assert new.certificate.serial_number != old.certificate.serial_number
    assert new.certificate.not_valid_after_utc == NOW + dt.timedelta(days=50)
    for cls in (x509.SubjectAlternativeName, x509.ExtendedKeyUsage, x509.KeyUsage):
        assert (
            new.certificate.extensions.get_extension_for_class(cls).value
            == old.certificate.extensions.get_extension_for_class(cls).value
        )
    assert new.private_key is not None
    assert new.certificate.public_key() != old.certificate.public_key()
    new.certificate.verify_directly_issued_by(ca.certificate)


def test_renew_can_keep_the_key_and_renews_signing_certificates_as_ed25519(roots):
    ca = roots[CN]
    old = issue_signing_certificate(ca, _id(CN, Role.NODE, "gateway"), now=NOW)
    kept = renew_certificate(ca, old.certificate, public_key=old.private_key.public_key())
    assert kept.private_key is None
    assert kept.certificate.public_key() == old.certificate.public_key()
    fresh = renew_certificate(ca, old.certificate)
    assert type(fresh.private_key).__name__ == "Ed25519PrivateKey"
    eku = fresh.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [DOCUMENT_SIGNING_EKU]


@pytest.mark.parametrize(
    ("issuer", "key_kind", "match"),
    [
        pytest.param(MO, None, "was not issued by the MO root", id="other-ca"),
        pytest.param(HK, "ed25519", "the new key is Ed25519PublicKey", id="wrong-key-type"),
    ],
)
def test_renew_refuses(roots, issuer, key_kind, match):
    old = issue_leaf(roots[HK], _id(HK, Role.PARTNER), now=NOW)
    other = issue_signing_certificate(roots[HK], _id(HK, Role.NODE), now=NOW)
    public = other.private_key.public_key() if key_kind else None
    with pytest.raises(ValueError, match=match):
        renew_certificate(roots[issuer], old.certificate, public_key=public)


# -- CRLs ---------------------------------------------------------------------------------------


def test_crl_lists_serials_with_reasons_and_round_trips_through_pem_and_der(roots, bundle):
    ca = roots[HK]
    entries = [
        RevokedEntry(5, NOW, RevocationReason.KEY_COMPROMISE),
        RevokedEntry(3, NOW, RevocationReason.UNSPECIFIED),
    ]
    crl = build_crl(ca, entries, number=7, now=NOW)
    from cryptography.hazmat.primitives.serialization import Encoding

    for data in (crl.public_bytes(Encoding.PEM), crl.public_bytes(Encoding.DER)):
        loaded = load_crl(data)
        verified = verify_crl(loaded, bundle, now=NOW)
        assert verified.jurisdiction is HK
        assert verified.number == 7
        assert verified.revoked_serials() == {3, 5}
        assert sorted(revoked_entries(loaded), key=lambda e: e.serial) == sorted(
            entries, key=lambda e: e.serial
        )
    assert not verified.is_stale(NOW + dt.timedelta(days=6))
    assert verified.is_stale(NOW + dt.timedelta(days=8))


def _forged_crl(name_of: x509.Certificate, key: ec.EllipticCurvePrivateKey, when=NOW):
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name_of.subject)
        .last_update(when)
        .next_update(when + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("case", "match"),
    [
        pytest.param("unknown-issuer", "is not a root of the trust bundle", id="unknown-issuer"),
        pytest.param("bad-signature", "is not signed by that root", id="forged-signature"),
        pytest.param("future", "has thisUpdate 2026-03-02", id="from-the-future"),
    ],
)
def test_verify_crl_refuses(roots, bundle, case, match):
    stranger = create_root_ca(HK, now=NOW)
    if case == "unknown-issuer":
        crl = _forged_crl(
            issue_leaf(stranger, _id(HK, Role.NODE), now=NOW).certificate, stranger.private_key
        )
    elif case == "bad-signature":
        crl = _forged_crl(roots[HK].certificate, stranger.private_key)
    else:
        crl = build_crl(roots[HK], [], number=1, now=NOW + dt.timedelta(days=1))
    with pytest.raises(CrlError, match=match):
        verify_crl(crl, bundle, now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"number": -1}, "CRL number must be >= 0, got -1", id="negative-number"),
        pytest.param(
            {"number": 1, "lifetime": dt.timedelta(0)}, "lifetime must be positive", id="no-life"
        ),
    ],
)
def test_build_crl_refuses_degenerate_input(roots, kwargs, match):
    with pytest.raises(CrlError, match=match):
        build_crl(roots[HK], [], now=NOW, **kwargs)


def test_build_crl_refuses_a_serial_listed_twice(roots):
    twice = [RevokedEntry(9, NOW, RevocationReason.SUPERSEDED)] * 2
    with pytest.raises(CrlError, match="serial 9 is listed twice"):
        build_crl(roots[HK], twice, number=1, now=NOW)


def test_load_crl_refuses_garbage():
    with pytest.raises(CrlError, match="not a PEM or DER CRL \\(5 bytes\\)"):
        load_crl(b"hello")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("key-compromise", "key-compromise"), ("KEY_COMPROMISE", "key-compromise")],
)
def test_revocation_reason_parse(text, expected):
    assert RevocationReason.parse(text).value == expected


def test_revocation_reason_parse_refuses_hold():
    with pytest.raises(InvalidArgumentError, match="unknown revocation reason 'certificate-hold'"):
        RevocationReason.parse("certificate-hold")


# -- expiry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "revoked", "expected"),
    [
        pytest.param(NOW, False, CertificateStatus.VALID, id="valid"),
        pytest.param(
            NOW + dt.timedelta(days=20), False, CertificateStatus.EXPIRING_SOON, id="soon"
        ),
        pytest.param(NOW + dt.timedelta(days=31), False, CertificateStatus.EXPIRED, id="expired"),
        pytest.param(
            NOW - dt.timedelta(hours=1), False, CertificateStatus.NOT_YET_VALID, id="early"
        ),
        pytest.param(NOW, True, CertificateStatus.REVOKED, id="revoked"),
    ],
)
def test_certificate_status(roots, at, revoked, expected):
    cert = issue_leaf(roots[HK], _id(HK, Role.AUDITOR), now=NOW).certificate
    window = dt.timedelta(days=14)
    assert certificate_status(cert, at, window=window, revoked=revoked) is expected


def test_expiry_warnings_lists_what_lapses_within_the_window_soonest_first(roots):
    short = issue_leaf(roots[HK], _id(HK, Role.NODE, "a"), now=NOW, lifetime=dt.timedelta(days=3))
    long = issue_leaf(roots[HK], _id(HK, Role.NODE, "b"), now=NOW, lifetime=dt.timedelta(days=60))
    gone = issue_leaf(roots[HK], _id(HK, Role.NODE, "c"), now=NOW, lifetime=dt.timedelta(days=1))
    warnings = expiry_warnings(
        [("short", short.certificate), ("long", long.certificate), ("gone", gone.certificate)],
        NOW + dt.timedelta(days=2),
        dt.timedelta(days=14),
    )
    assert [w.label for w in warnings] == ["gone", "short"]
    assert warnings[0].expired
    assert "expired at 2026-03-02T12:00:00+00:00" in str(warnings[0])
    assert "in 1.0 days" in str(warnings[1])
    with pytest.raises(ValueError, match="must not be negative"):
        expiry_warnings([], NOW, dt.timedelta(days=-1))


# -- authentication (pure, on certificates; the TLS version is in tests/access) -----------------


def _pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM)


def test_authenticator_refuses_a_revoked_certificate_after_update_and_caches_until_then(
    roots, bundle
):
    ca = roots[HK]
    leaf = issue_leaf(ca, _id(HK, Role.PARTNER, "risk"), now=NOW).certificate
    auth = Authenticator(bundle, clock=lambda: NOW)
    assert auth.authenticate(_pem(leaf)).identity == _id(HK, Role.PARTNER, "risk")
    crl = build_crl(
        ca,
        [RevokedEntry(leaf.serial_number, NOW, RevocationReason.KEY_COMPROMISE)],
        number=1,
        now=NOW,
    )
    auth.update(crls=[crl])
    with pytest.raises(UnauthenticatedError, match=r"was revoked at .* \(CRL number 1\)"):
        auth.authenticate(_pem(leaf))


def test_authenticator_update_with_a_bad_crl_changes_nothing(roots, bundle):
    stranger = create_root_ca(HK, now=NOW)
    leaf = issue_leaf(roots[HK], _id(HK, Role.PARTNER), now=NOW).certificate
    auth = Authenticator(bundle, clock=lambda: NOW)
    with pytest.raises(CrlError, match="is not signed by that root"):
        auth.update(crls=[_forged_crl(roots[HK].certificate, stranger.private_key)])
    assert auth.crls == ()
    assert auth.authenticate(_pem(leaf)).role is Role.PARTNER


def test_authenticator_refuses_a_server_only_certificate_as_client(roots, bundle):
    leaf = issue_leaf(roots[HK], _id(HK, Role.NODE), now=NOW, server_only=True).certificate
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(UnauthenticatedError, match="not allowed for TLS client authentication"):
        Authenticator(bundle, clock=lambda: NOW).authenticate(_pem(leaf))
