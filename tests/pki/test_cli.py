"""``customs-gateway pki ...`` run in-process: outcomes, files, exit statuses and messages."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.cli import main
from gateway.pki import TrustBundle, load_crl
from gateway.pki.revocation import revoked_entries

PASS = "correct horse battery staple"


@pytest.fixture
def run(capsys):
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    p = tmp_path / "pass.txt"
    p.write_text(PASS + "\n")
    return p


@pytest.fixture
def ca(tmp_path, passfile, run) -> Path:
    d = tmp_path / "hk" / "ca"
    code, _, _ = run(
        "pki",
        "init-ca",
        "--jurisdiction",
        "HK",
        "--dir",
        str(d),
        "--passphrase-file",
        str(passfile),
    )
    assert code == 0
    return d


def _issue(run, ca, passfile, out, *extra) -> dict:
    code, stdout, err = run(
        "pki",
        "issue",
        "--ca-dir",
        str(ca),
        "--out-dir",
        str(out),
        "--passphrase-file",
        str(passfile),
        "--json",
        *extra,
    )
    assert code == 0, err
    return json.loads(stdout)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# -- init-ca ------------------------------------------------------------------------------------


def test_init_ca_writes_an_encrypted_0600_key_and_a_name_constrained_root(ca, run):
    assert _mode(ca / "ca.key") == 0o600
    assert _mode(ca) == 0o700
    assert b"ENCRYPTED PRIVATE KEY" in (ca / "ca.key").read_bytes()
    root = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    nc = root.extensions.get_extension_for_class(x509.NameConstraints).value
    assert {g.value for g in nc.permitted_subtrees} == {"hk.customs-exchange"}
    index = json.loads((ca / "index.json").read_text())
    assert index == {
        "format": "customs-gateway/ca-index/v1",
        "jurisdiction": "HK",
        "crl_number": 0,
        "certificates": [],
    }


def test_init_ca_refuses_an_existing_ca_unless_forced(ca, run, passfile):
    before = (ca / "ca.pem").read_bytes()
    code, out, err = run("pki", "init-ca", "--jurisdiction", "HK", "--dir", str(ca))
    assert (code, out) == (2, "")
    assert "already holds a CA (ca.key, ca.pem, index.json); refusing to overwrite it" in err
    assert (ca / "ca.pem").read_bytes() == before
    code, out, err = run("pki", "init-ca", "--jurisdiction", "HK", "--dir", str(ca), "--force")
    assert code == 0
    assert (ca / "ca.pem").read_bytes() != before
    assert "warning: the CA key is not encrypted" in err


@pytest.mark.parametrize(
    ("how", "message"),
    [
        pytest.param("env-unset", "environment variable CG_TEST_UNSET is not set", id="env-unset"),
        pytest.param("empty-file", "holds an empty passphrase", id="empty-file"),
        pytest.param("missing-file", "cannot read passphrase file", id="missing-file"),
    ],
)
def test_init_ca_passphrase_errors(tmp_path, run, how, message, monkeypatch):
    monkeypatch.delenv("CG_TEST_UNSET", raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    args = {
        "env-unset": ["--passphrase-env", "CG_TEST_UNSET"],
        "empty-file": ["--passphrase-file", str(empty)],
        "missing-file": ["--passphrase-file", str(tmp_path / "nope")],
    }[how]
    code, _, err = run(
        "pki", "init-ca", "--jurisdiction", "MO", "--dir", str(tmp_path / "c"), *args
    )
    assert code == 2
    assert message in err
    assert not (tmp_path / "c" / "ca.key").exists()


def test_init_ca_passphrase_from_environment(tmp_path, run, monkeypatch):
    monkeypatch.setenv("CG_TEST_PASS", PASS)
    d = tmp_path / "mo"
    code, out, _ = run(
        "pki",
        "init-ca",
        "--jurisdiction",
        "MO",
        "--dir",
        str(d),
        "--passphrase-env",
        "CG_TEST_PASS",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["encrypted"] is True
    serialization.load_pem_private_key((d / "ca.key").read_bytes(), PASS.encode())


def test_init_ca_unknown_jurisdiction_is_a_usage_error(tmp_path, run):
    code, _, err = run("pki", "init-ca", "--jurisdiction", "TW", "--dir", str(tmp_path / "x"))
    assert code == 2
    assert "unknown jurisdiction 'TW' (known: CN, HK, MO)" in err


# -- issue --------------------------------------------------------------------------------------


def test_issue_tls_and_signing_certificates(ca, run, passfile, tmp_path):
    out = tmp_path / "node"
    tls = _issue(run, ca, passfile, out, "--role", "node", "--name", "gateway", "--days", "10")
    sig = _issue(run, ca, passfile, out, "--role", "node", "--name", "gateway", "--signing")
    assert tls["identity"] == sig["identity"] == "spiffe://hk.customs-exchange/node/gateway"
    assert (tls["kind"], sig["kind"]) == ("tls", "signing")
    assert _mode(out / "gateway.key") == _mode(out / "gateway-signing.key") == 0o600
    cert = x509.load_pem_x509_certificate((out / "gateway.pem").read_bytes())
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=10) < life <= dt.timedelta(days=10, minutes=5)
    assert (ca / "issued" / f"{tls['serial']}.pem").read_bytes() == (
        out / "gateway.pem"
    ).read_bytes()
    key = serialization.load_pem_private_key((out / "gateway-signing.key").read_bytes(), None)
    assert type(key).__name__ == "Ed25519PrivateKey"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--role", "partner", "--name", "x", "--signing"],
            "only nodes have signing certificates, not spiffe://hk.customs-exchange/partner/x",
            id="signing-for-partner",
        ),
        pytest.param(["--role", "boss", "--name", "x"], "unknown role 'boss'", id="bad-role"),
        pytest.param(
            ["--role", "partner", "--name", "Bad_Name"], "bad holder name 'Bad_Name'", id="bad-name"
        ),
        pytest.param(
            ["--role", "partner", "--name", "x", "--days", "0"],
            "days must be positive, got 0",
            id="zero-days",
        ),
    ],
)
def test_issue_refuses(ca, run, passfile, tmp_path, args, message):
    code, out, err = run(
        "pki",
        "issue",
        "--ca-dir",
        str(ca),
        "--out-dir",
        str(tmp_path / "o"),
        "--passphrase-file",
        str(passfile),
        *args,
    )
    assert (code, out) == (2, "")
    assert message in err
    assert json.loads((ca / "index.json").read_text())["certificates"] == []


def test_issue_refuses_to_overwrite_a_key_unless_forced(ca, run, passfile, tmp_path):
    out = tmp_path / "p"
    first = _issue(run, ca, passfile, out, "--role", "partner", "--name", "risk")
    key_before = (out / "risk.key").read_bytes()
    code, _, err = run(
        "pki",
        "issue",
        "--ca-dir",
        str(ca),
        "--out-dir",
        str(out),
        "--role",
        "partner",
        "--name",
        "risk",
        "--passphrase-file",
        str(passfile),
    )
    assert code == 2
    assert f"{out / 'risk.key'} exists; refusing to overwrite a private key (use --force)" in err
    assert (out / "risk.key").read_bytes() == key_before
    assert len(json.loads((ca / "index.json").read_text())["certificates"]) == 1
    second = _issue(run, ca, passfile, out, "--role", "partner", "--name", "risk", "--force")
    assert second["serial"] != first["serial"]
    assert (out / "risk.key").read_bytes() != key_before
    assert _mode(out / "risk.key") == 0o600


@pytest.mark.parametrize(
    ("passarg", "message"),
    [
        pytest.param("wrong", "wrong passphrase or not a PEM private key", id="wrong-passphrase"),
        pytest.param(None, "is encrypted: a passphrase is needed", id="no-passphrase"),
    ],
)
def test_issue_with_a_wrong_or_missing_passphrase(ca, run, tmp_path, passarg, message):
    extra = []
    if passarg:
        f = tmp_path / "wrong"
        f.write_text("not it\n")
        extra = ["--passphrase-file", str(f)]
    code, _, err = run(
        "pki",
        "issue",
        "--ca-dir",
        str(ca),
        "--out-dir",
        str(tmp_path / "o"),
        "--role",
        "auditor",
        "--name",
        "a",
        *extra,
    )
    assert code == 2
    assert message in err
    assert not (tmp_path / "o" / "a.key").exists()


def test_commands_on_a_directory_without_a_ca(run, tmp_path):
    code, _, err = run("pki", "list", "--ca-dir", str(tmp_path))
    assert code == 2
    assert f"{tmp_path} is not a CA directory (no index.json or ca.pem)" in err


# -- renew, revoke, crl, list ------------------------------------------------------------------


def test_renew_with_a_new_key_and_with_the_same_key(ca, run, passfile, tmp_path):
    out = tmp_path / "a"
    old = _issue(run, ca, passfile, out, "--role", "auditor", "--name", "audit")
    old_key = (out / "audit.key").read_bytes()
    code, stdout, err = run(
        "pki",
        "renew",
        "--ca-dir",
        str(ca),
        "--serial",
        old["serial"],
        "--out-dir",
        str(out),
        "--passphrase-file",
        str(passfile),
        "--json",
        "--key",
        str(out / "audit.key"),
    )
    assert code == 0, err
    kept = json.loads(stdout)
    assert kept["renewed_from"] == old["serial"]
    assert kept["key"] is None
    assert (out / "audit.key").read_bytes() == old_key
    new_cert = x509.load_pem_x509_certificate((out / "audit.pem").read_bytes())
    assert f"{new_cert.serial_number:x}" == kept["serial"]
    # a new key: refused without --force because audit.key exists
    code, _, err = run(
        "pki",
        "renew",
        "--ca-dir",
        str(ca),
        "--serial",
        kept["serial"],
        "--out-dir",
        str(out),
        "--passphrase-file",
        str(passfile),
    )
    assert code == 2
    assert "refusing to overwrite a private key" in err
    code, _, _ = run(
        "pki",
        "renew",
        "--ca-dir",
        str(ca),
        "--serial",
        kept["serial"],
        "--out-dir",
        str(out),
        "--passphrase-file",
        str(passfile),
        "--force",
    )
    assert code == 0
    assert (out / "audit.key").read_bytes() != old_key


@pytest.mark.parametrize(
    ("command", "serial", "message"),
    [
        pytest.param(
            "renew", "abc123", "serial abc123 was not issued by the CA", id="renew-unknown"
        ),
        pytest.param(
            "revoke", "abc123", "serial abc123 was not issued by the CA", id="revoke-unknown"
        ),
        pytest.param("revoke", "xyz", "serial 'xyz' is not a hexadecimal number", id="not-hex"),
        pytest.param("revoke", "0", "serial '0' must be positive", id="zero"),
    ],
)
def test_unknown_or_bad_serial(ca, run, passfile, tmp_path, command, serial, message):
    extra = (
        ["--out-dir", str(tmp_path), "--passphrase-file", str(passfile)]
        if command == "renew"
        else ["--reason", "key-compromise"]
    )
    code, out, err = run("pki", command, "--ca-dir", str(ca), "--serial", serial, *extra)
    assert (code, out) == (2, "")
    assert message in err


def test_revoke_then_crl_lists_the_serial_with_its_reason_and_numbers_increase(
    ca, run, passfile, tmp_path
):
    p = _issue(run, ca, passfile, tmp_path / "p", "--role", "partner", "--name", "risk")
    code, out, _ = run(
        "pki", "revoke", "--ca-dir", str(ca), "--serial", p["serial"], "--reason", "key-compromise"
    )
    assert code == 0
    assert (
        f"revoked {p['serial']} (spiffe://hk.customs-exchange/partner/risk) for key-compromise"
        in out
    )
    code, _, err = run(
        "pki", "revoke", "--ca-dir", str(ca), "--serial", p["serial"], "--reason", "superseded"
    )
    assert code == 2
    assert f"serial {p['serial']} was already revoked at" in err
    code, _, err = run(
        "pki",
        "renew",
        "--ca-dir",
        str(ca),
        "--serial",
        p["serial"],
        "--out-dir",
        str(tmp_path / "p"),
        "--passphrase-file",
        str(passfile),
        "--force",
    )
    assert code == 2
    assert "was revoked; issue a new certificate instead of renewing it" in err
    numbers = []
    for _ in range(2):
        code, out, err = run(
            "pki",
            "crl",
            "--ca-dir",
            str(ca),
            "--out",
            str(tmp_path / "hk.crl"),
            "--passphrase-file",
            str(passfile),
            "--json",
        )
        assert code == 0, err
        numbers.append(json.loads(out)["number"])
    assert numbers == [1, 2]
    crl = load_crl((tmp_path / "hk.crl").read_bytes())
    assert [(f"{e.serial:x}", e.reason.value) for e in revoked_entries(crl)] == [
        (p["serial"], "key-compromise")
    ]


def test_crl_with_a_wrong_passphrase_does_not_advance_the_number(ca, run, tmp_path):
    wrong = tmp_path / "w"
    wrong.write_text("nope")
    code, _, err = run(
        "pki",
        "crl",
        "--ca-dir",
        str(ca),
        "--out",
        str(tmp_path / "x.crl"),
        "--passphrase-file",
        str(wrong),
    )
    assert code == 2
    assert "wrong passphrase" in err
    assert json.loads((ca / "index.json").read_text())["crl_number"] == 0
    assert not (tmp_path / "x.crl").exists()


def test_revoke_with_an_unknown_reason_is_a_usage_error(ca, run):
    code, _, err = run("pki", "revoke", "--ca-dir", str(ca), "--serial", "1", "--reason", "hold")
    assert code == 2
    assert "unknown revocation reason 'hold'" in err


def test_list_shows_each_status_and_flags_what_expires(ca, run, passfile, tmp_path):
    ok = _issue(run, ca, passfile, tmp_path / "o", "--role", "partner", "--name", "ok")
    soon = _issue(
        run, ca, passfile, tmp_path / "o", "--role", "partner", "--name", "soon", "--days", "3"
    )
    gone = _issue(run, ca, passfile, tmp_path / "o", "--role", "auditor", "--name", "gone")
    run(
        "pki",
        "revoke",
        "--ca-dir",
        str(ca),
        "--serial",
        gone["serial"],
        "--reason",
        "cessation-of-operation",
    )
    code, out, _ = run("pki", "list", "--ca-dir", str(ca), "--json", "--expiring-within", "7")
    assert code == 0
    doc = json.loads(out)
    assert doc["ca"]["status"] == "valid"
    status = {r["serial"]: (r["role"], r["status"]) for r in doc["certificates"]}
    assert status == {
        ok["serial"]: ("partner", "valid"),
        soon["serial"]: ("partner", "expiring-soon"),
        gone["serial"]: ("auditor", "revoked"),
    }
    code, out, _ = run("pki", "list", "--ca-dir", str(ca), "--expiring-within", "7")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["SERIAL", "ROLE", "KIND", "IDENTITY", "NOT", "AFTER", "STATUS"]
    assert any(soon["serial"][:16] in line and line.endswith("expiring-soon") for line in lines)
    assert lines[-1] == "1 certificate(s) expired or expiring within 7 days"
    code, out, _ = run("pki", "list", "--ca-dir", str(ca), "--json", "--status", "revoked")
    assert [r["serial"] for r in json.loads(out)["certificates"]] == [gone["serial"]]


# -- show ---------------------------------------------------------------------------------------


def test_show_certificate_and_crl(ca, run, passfile, tmp_path):
    n = _issue(run, ca, passfile, tmp_path / "n", "--role", "node", "--name", "gateway")
    code, out, _ = run("pki", "show", str(tmp_path / "n" / "gateway.pem"), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["serial"] == n["serial"]
    assert doc["role"] == "node"
    assert doc["extended_key_usage"] == ["serverAuth", "clientAuth"]
    assert doc["names"] == [
        "spiffe://hk.customs-exchange/node/gateway",
        "gateway.hk.customs-exchange",
    ]
    code, out, _ = run("pki", "show", str(ca / "ca.pem"))
    assert code == 0
    assert "kind                 root" in out
    run(
        "pki",
        "crl",
        "--ca-dir",
        str(ca),
        "--out",
        str(tmp_path / "c.crl"),
        "--passphrase-file",
        str(passfile),
    )
    code, out, _ = run("pki", "show", str(tmp_path / "c.crl"))
    assert code == 0
    assert out.startswith("CRL of CN=HK customs-exchange root CA")


def test_show_a_missing_file(run, tmp_path):
    code, _, err = run("pki", "show", str(tmp_path / "none.pem"))
    assert code == 2
    assert f"{tmp_path / 'none.pem'} does not exist" in err


# -- bundle -------------------------------------------------------------------------------------


@pytest.fixture
def three(tmp_path, run) -> dict[str, Path]:
    dirs = {}
    for j in ("CN", "HK", "MO"):
        d = tmp_path / j.lower()
        assert run("pki", "init-ca", "--jurisdiction", j, "--dir", str(d))[0] == 0
        dirs[j] = d
    return dirs


def test_bundle_build_and_check(three, run, tmp_path):
    out = tmp_path / "bundle.json"
    code, _, err = run(
        "pki",
        "bundle",
        "build",
        "--root",
        f"CN={three['CN']}",
        "--root",
        f"HK={three['HK'] / 'ca.pem'}",
        "--root",
        f"MO={three['MO']}",
        "--out",
        str(out),
    )
    assert code == 0, err
    bundle = TrustBundle.from_json(out.read_text())
    assert [j.value for j, _ in bundle] == ["CN", "HK", "MO"]
    code, stdout, _ = run("pki", "bundle", "check", str(out), "--json")
    assert code == 0
    assert json.loads(stdout)["ok"] is True
    code, _, err = run("pki", "bundle", "build", "--root", f"CN={three['CN']}", "--out", str(out))
    assert code == 2
    assert "exists; refusing to overwrite it (use --force)" in err
    code, _, err = run(
        "pki", "bundle", "build", "--root", f"CN={three['CN']}", "--out", str(out), "--force"
    )
    assert code == 2
    assert "no root given for HK: a bundle holds the roots of CN, HK, MO" in err


def test_bundle_build_refuses_a_root_mapped_to_the_wrong_jurisdiction(three, run, tmp_path):
    code, _, err = run(
        "pki", "bundle", "build", "--root", f"CN={three['HK']}", "--out", str(tmp_path / "b.json")
    )
    assert code == 2
    assert "root for CN: subject country ['HK'] is not ['CN']" in err
    assert not (tmp_path / "b.json").exists()


def _unconstrained_root(country: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, country)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )


def test_bundle_check_fails_with_exit_1_naming_each_problem(three, run, tmp_path):
    from gateway.pki import Jurisdiction
    from gateway.pki.pem import load_certificate

    bundle = TrustBundle(
        (
            (Jurisdiction.CN, load_certificate(three["CN"] / "ca.pem")),
            (Jurisdiction.HK, _unconstrained_root("HK")),
        )
    )
    f = tmp_path / "bad.json"
    f.write_text(bundle.to_json())
    code, out, _ = run("pki", "bundle", "check", str(f))
    assert code == 1
    assert "HK" in out
    assert "no name constraints" in out
    assert "MO  -  no root" in out
    assert out.splitlines()[-1] == f"trust bundle {f}: FAILED"


def test_bundle_check_refuses_a_malformed_file(run, tmp_path):
    f = tmp_path / "b.json"
    f.write_text("{}")
    code, _, err = run("pki", "bundle", "check", str(f))
    assert code == 2
    assert "trust bundle format must be 'customs-gateway/trust-bundle/v1'" in err


def test_bundle_build_bad_root_argument(run, tmp_path):
    code, _, err = run("pki", "bundle", "build", "--root", "HK", "--out", str(tmp_path / "b"))
    assert code == 2
    assert "'HK' is not JURISDICTION=PATH" in err


# -- help ---------------------------------------------------------------------------------------

COMMANDS = [
    ["init-ca"],
    ["issue"],
    ["renew"],
    ["revoke"],
    ["crl"],
    ["list"],
    ["show"],
    ["bundle"],
    ["bundle", "build"],
    ["bundle", "check"],
    [],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c) or "pki")
def test_every_command_has_help_with_an_example(run, command):
    code, out, _ = run("pki", *command, "--help")
    assert code == 0
    assert "example:\n  customs-gateway pki " in out


@pytest.mark.parametrize("command", [c for c in COMMANDS if c], ids=lambda c: "-".join(c))
def test_every_command_has_a_place_in_the_operator_guide(command):
    guide = (Path(__file__).parents[2] / "docs" / "operations-pki.md").read_text()
    assert f"customs-gateway pki {' '.join(command)}" in guide
