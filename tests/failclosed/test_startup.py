"""A node refuses to start when it could not do what its config says (ADR 0025): each operator
mistake gives exactly one line on stderr naming the path or key, exit status 2, no traceback.

The real command (``python -m gateway serve --config ...``) runs on real files. The processes of
the table start together (one fixture), so the table costs about one start-up, not thirty.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.pki import Jurisdiction, Role, SpiffeId, create_root_ca, issue_leaf
from gateway.pki.bundle import TrustBundle
from gateway.pki.pem import certificate_pem, write_private_key, write_public_file
from gateway.pki.revocation import RevocationReason, RevokedEntry, build_crl
from gateway.server import Node, load_config
from tests.failclosed.serving import (
    FILE_MODES_APPLY,
    Outcome,
    assert_one_line_refusal,
    finish,
    start_serve,
)
from tests.support import TEST_STORE, World, channel_to, make_world, running_node, wait_for

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


@dataclass
class Case:
    """A directory of its own with a CN node config the case may spoil."""

    world: World
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "cn-data"

    def config(self, **kwargs: object) -> Path:
        return self.world.write_config(CN, self.data, **kwargs)  # type: ignore[arg-type]

    def edit(self, config: Path, old: str, new: str) -> Path:
        text = config.read_text()
        assert old in text, old
        config.write_text(text.replace(old, new))
        return config

    def crl(self, name: str, *, number: int = 1, ca: Jurisdiction = CN) -> Path:
        path = self.root / name
        crl = build_crl(self.world.cas[ca], [], number=number)
        write_public_file(path, crl.public_bytes(Encoding.PEM))
        return path

    def ledger(self) -> Path:
        """An existing, good ledger in the data directory (a node ran there once)."""
        config = self.config()
        node = Node(load_config(config))
        node.ledger.close()
        node.data_dir.release()
        return self.data / "ledger.db"


def _swap_tls(case: Case, cert: Path, key: Path) -> Path:
    node = case.world.cred(CN, Role.NODE)
    config = case.config()
    case.edit(config, f'certificate = "{node.certificate}"', f'certificate = "{cert}"')
    return case.edit(config, f'key = "{node.key}"', f'key = "{key}"')


def _rsa_node_certificate(case: Case, bits: int) -> tuple[Path, Path]:
    key = rsa.generate_private_key(65537, bits)
    issued = issue_leaf(
        case.world.cas[CN],
        SpiffeId(CN, Role.NODE, "gateway"),
        public_key=key.public_key(),  # type: ignore[arg-type]
    )
    cert, key_path = case.root / "rsa.pem", case.root / "rsa.key"
    write_public_file(cert, certificate_pem(issued.certificate))
    key_path.write_bytes(
        key.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert, key_path


# -- the cases: each spoils one thing and names what the one line must say --------------------


def second_node_on_one_data_directory(case: Case) -> tuple[Path, str]:
    config = case.config()
    case.hold(Node(load_config(config)))  # type: ignore[attr-defined]
    return config, rf"data directory {case.data} is in use by another node \(pid {os.getpid()},"


def partners_certificate_as_tls_certificate(case: Case) -> tuple[Path, str]:
    partner = case.world.cred(CN, Role.PARTNER)
    return _swap_tls(case, partner.certificate, partner.key), (
        r"TLS certificate .* is spiffe://cn.customs-exchange/partner/risk, not this node's "
        r"identity spiffe://cn.customs-exchange/node/gateway"
    )


def other_jurisdictions_node_certificate(case: Case) -> tuple[Path, str]:
    hk = case.world.cred(HK, Role.NODE)
    return _swap_tls(case, hk.certificate, hk.key), (
        r"is spiffe://hk.customs-exchange/node/gateway, not this node's identity "
        r"spiffe://cn.customs-exchange/node/gateway"
    )


def other_node_name(case: Case) -> tuple[Path, str]:
    other = case.world.issue(CN, Role.NODE, "gateway-2")
    return _swap_tls(
        case, other.certificate, other.key
    ), "is spiffe://cn.customs-exchange/node/gateway-2"


def certificate_without_client_authentication(case: Case) -> tuple[Path, str]:
    cred = case.world.issue(CN, Role.NODE, "gateway", server_only=True, tag="-server-only")
    return _swap_tls(case, cred.certificate, cred.key), "lacks the TLS client authentication EKU"


def certificate_without_digital_signature(case: Case) -> tuple[Path, str]:
    """The node's identity and EKUs, but a key usage of keyEncipherment only."""
    ca, key = case.world.cas[CN], ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    identity = SpiffeId(CN, Role.NODE, "gateway")
    usage = dict.fromkeys(
        ("content_commitment", "data_encipherment", "key_agreement", "key_cert_sign"), False
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity.uri), x509.DNSName(identity.dns_name)]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                key_encipherment=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    cert_path, key_path = case.root / "no-ds.pem", case.root / "no-ds.key"
    write_public_file(cert_path, certificate_pem(cert))
    write_private_key(key_path, key)
    return _swap_tls(case, cert_path, key_path), "does not allow digitalSignature"


def unreadable_config(case: Case) -> tuple[Path, str]:
    config = case.config()
    config.chmod(0o000)
    return config, rf"config {config}: cannot be read: Permission denied"


def certificate_from_a_foreign_ca(case: Case) -> tuple[Path, str]:
    rogue = create_root_ca(CN)
    cred = case.world.issue(CN, Role.NODE, "gateway", ca=rogue, tag="-rogue")
    return _swap_tls(case, cred.certificate, cred.key), "does not chain to a CN root"


def expired_tls_certificate(case: Case) -> tuple[Path, str]:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cred = case.world.issue(
        CN, Role.NODE, "gateway", now=past, lifetime=dt.timedelta(days=1), tag="-expired"
    )
    return _swap_tls(case, cred.certificate, cred.key), r"TLS certificate .* expired at"


def revoked_tls_certificate(case: Case) -> tuple[Path, str]:
    node = case.world.cred(CN, Role.NODE)
    serial = node.issued.certificate.serial_number
    entry = RevokedEntry(serial, dt.datetime.now(dt.UTC), RevocationReason.KEY_COMPROMISE)
    crl = case.root / "cn.crl"
    built = build_crl(case.world.cas[CN], [entry], number=1)
    write_public_file(crl, built.public_bytes(Encoding.PEM))
    return case.config(crls=[crl]), r"TLS certificate .* was revoked at"


def rsa_1024_tls_certificate(case: Case) -> tuple[Path, str]:
    cert, key = _rsa_node_certificate(case, 1024)
    return _swap_tls(case, cert, key), r"key RSA-1024 is not allowed \(only ECDSA P-256"


def wrong_key_for_certificate(case: Case) -> tuple[Path, str]:
    node, hk = case.world.cred(CN, Role.NODE), case.world.cred(HK, Role.NODE)
    return _swap_tls(case, node.certificate, hk.key), "is not the key of the certificate"


def signing_certificate_of_another_node(case: Case) -> tuple[Path, str]:
    ours, theirs = case.world.signing(CN), case.world.signing(HK)
    config = case.config()
    case.edit(config, str(ours.certificate), str(theirs.certificate))
    return case.edit(config, str(ours.key), str(theirs.key)), (
        r"key 'signing.certificate': is not for spiffe://cn.customs-exchange/node/gateway"
    )


def tls_key_as_signing_key(case: Case) -> tuple[Path, str]:
    config = case.config()
    node = case.world.cred(CN, Role.NODE)
    return case.edit(config, str(case.world.signing(CN).key), str(node.key)), (
        r"key 'signing.key': not an Ed25519 private key"
    )


def data_directory_is_a_file(case: Case) -> tuple[Path, str]:
    config = case.config()
    case.data.write_text("not a directory\n")
    return config, rf"data directory {case.data} is not a directory"


def data_directory_under_a_file(case: Case) -> tuple[Path, str]:
    (case.root / "file").write_text("x")
    config = case.config()
    case.edit(config, f'data_dir = "{case.data}"', f'data_dir = "{case.root / "file" / "data"}"')
    return config, r"data directory .*file/data cannot be read: Not a directory"


def world_writable_data_directory(case: Case) -> tuple[Path, str]:
    config = case.config()
    case.data.mkdir(mode=0o700)
    case.data.chmod(0o777)
    return config, r"is writable by group or others \(mode 0777\).*chmod 700"


def group_writable_ledger(case: Case) -> tuple[Path, str]:
    ledger = case.ledger()
    ledger.chmod(0o664)
    return case.config(), rf"ledger file {ledger} is writable by group or others \(mode 0664\)"


def ledger_is_a_symlink(case: Case) -> tuple[Path, str]:
    """Someone points ledger.db elsewhere: the node writes only files of its own directory."""
    elsewhere = case.ledger()
    moved = case.root / "elsewhere.db"
    elsewhere.rename(moved)
    (case.data / "ledger.db").symlink_to(moved)
    return case.config(), rf"ledger file {case.data / 'ledger.db'} is not a regular file"


def corrupt_database(case: Case) -> tuple[Path, str]:
    config = case.config()
    case.data.mkdir(mode=0o700)
    ledger = case.data / "ledger.db"
    ledger.write_bytes(b"this is not an SQLite database, " * 200)
    ledger.chmod(0o600)
    return config, rf"ledger {ledger} cannot be opened: file is not a database"


def ledger_of_another_jurisdiction(case: Case) -> tuple[Path, str]:
    hk = case.world.write_config(HK, case.data)
    node = Node(load_config(hk))
    node.ledger.close()
    node.data_dir.release()
    return case.config(), r"is the ledger of 'hk.customs-exchange/ledger'"


def storage_url_not_postgresql(case: Case) -> tuple[Path, str]:
    config = case.config(storage="mysql://gateway@127.0.0.1/customs")
    return config, r"key 'storage\.url': must start with postgresql:// \(got mysql scheme\)"


def storage_server_unreachable(case: Case) -> tuple[Path, str]:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    case.hold(closed)  # type: ignore[attr-defined]
    url = f"postgresql://gateway@127.0.0.1:{closed.getsockname()[1]}/customs"
    return case.config(storage=url), rf"database {url} unreachable: .*refused"


def read_only_database(case: Case) -> tuple[Path, str]:
    ledger = case.ledger()
    ledger.chmod(0o400)
    return case.config(), rf"ledger file {ledger} is not readable and writable by this user"


def unreadable_tls_key(case: Case) -> tuple[Path, str]:
    node = case.world.cred(CN, Role.NODE)
    key = case.root / "node.key"
    key.write_bytes(node.key.read_bytes())
    key.chmod(0o000)
    return _swap_tls(case, node.certificate, key), rf"{key}.*Permission denied"


def unreadable_signing_key(case: Case) -> tuple[Path, str]:
    signing = case.world.signing(CN)
    key = case.root / "signing.key"
    key.write_bytes(signing.key.read_bytes())
    key.chmod(0o000)
    config = case.config()
    return case.edit(config, str(signing.key), str(key)), rf"{key}.*Permission denied"


def metrics_port_in_use(case: Case) -> tuple[Path, str]:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    case.hold(taken)  # type: ignore[attr-defined]
    port = taken.getsockname()[1]
    config = case.config()
    with config.open("a") as f:
        f.write(f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    return config, rf"cannot listen for metrics on 127.0.0.1:{port}: Address already in use"


def grpc_port_in_use(case: Case) -> tuple[Path, str]:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    case.hold(taken)  # type: ignore[attr-defined]
    port = taken.getsockname()[1]
    return case.config(listen=f"127.0.0.1:{port}"), "address already in use"


def missing_crl(case: Case) -> tuple[Path, str]:
    crl = case.root / "cn.crl"
    return case.config(crls=[crl]), rf"CRL file {crl} does not exist"


def crl_of_a_foreign_ca(case: Case) -> tuple[Path, str]:
    crl = case.root / "cn.crl"
    forged = build_crl(create_root_ca(CN), [], number=7)
    write_public_file(crl, forged.public_bytes(Encoding.PEM))
    return case.config(crls=[crl]), "is not signed by that root of the trust bundle"


def crl_not_a_crl(case: Case) -> tuple[Path, str]:
    crl = case.root / "cn.crl"
    crl.write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    return case.config(crls=[crl]), rf"CRL file {crl}: not a PEM or DER CRL"


def missing_trust_bundle(case: Case) -> tuple[Path, str]:
    config = case.config()
    return case.edit(config, str(case.world.bundle), str(case.root / "gone.json")), (
        r"key 'tls.trust_bundle': file .*gone.json does not exist"
    )


def bundle_without_own_jurisdiction(case: Case) -> tuple[Path, str]:
    bundle = case.root / "bundle.json"
    roots = tuple((j, case.world.cas[j].certificate) for j in (HK, MO))
    write_public_file(bundle, TrustBundle(roots).to_json().encode())
    config = case.config()
    return case.edit(config, str(case.world.bundle), str(bundle)), (
        "the trust bundle has no root of this node's own jurisdiction CN"
    )


def weak_root_in_the_bundle(case: Case) -> tuple[Path, str]:
    """A bundle whose MO root has a P-521 key: the node meets it on every MO caller."""
    bundle = case.root / "bundle.json"
    weak = create_root_ca(MO, private_key=ec.generate_private_key(ec.SECP521R1()))
    roots = ((CN, case.world.cas[CN].certificate), (HK, case.world.cas[HK].certificate))
    write_public_file(bundle, TrustBundle((*roots, (MO, weak.certificate))).to_json().encode())
    config = case.config()
    return case.edit(config, str(case.world.bundle), str(bundle)), (
        r"trust bundle: MO root [0-9a-f]{16}: key ECDSA secp521r1 is not allowed"
    )


def malformed_toml(case: Case) -> tuple[Path, str]:
    return case.edit(case.config(), "[tls]", "[tls"), r"config .*: not valid TOML"


def config_is_a_directory(case: Case) -> tuple[Path, str]:
    path = case.root / "node.toml"
    path.mkdir()
    return path, rf"config {path}: "


CASES: list[Callable[[Case], tuple[Path, str]]] = [
    second_node_on_one_data_directory,
    partners_certificate_as_tls_certificate,
    other_jurisdictions_node_certificate,
    other_node_name,
    certificate_without_client_authentication,
    certificate_without_digital_signature,
    certificate_from_a_foreign_ca,
    expired_tls_certificate,
    revoked_tls_certificate,
    rsa_1024_tls_certificate,
    wrong_key_for_certificate,
    signing_certificate_of_another_node,
    tls_key_as_signing_key,
    data_directory_is_a_file,
    data_directory_under_a_file,
    world_writable_data_directory,
    group_writable_ledger,
    ledger_is_a_symlink,
    corrupt_database,
    ledger_of_another_jurisdiction,
    storage_url_not_postgresql,
    storage_server_unreachable,
    read_only_database,
    unreadable_tls_key,
    unreadable_signing_key,
    metrics_port_in_use,
    grpc_port_in_use,
    missing_crl,
    crl_of_a_foreign_ca,
    crl_not_a_crl,
    missing_trust_bundle,
    bundle_without_own_jurisdiction,
    weak_root_in_the_bundle,
    malformed_toml,
    config_is_a_directory,
    unreadable_config,
]
# Cases about CN's SQLite file itself: with CN on PostgreSQL (CUSTOMS_TEST_STORE=postgresql)
# there is no such file, and the database's own refusals are the storage_* cases.
SQLITE_FILE_CASES = {
    group_writable_ledger,
    ledger_is_a_symlink,
    corrupt_database,
    ledger_of_another_jurisdiction,
    read_only_database,
}
NEED_FILE_MODES = {
    read_only_database,
    unreadable_tls_key,
    unreadable_signing_key,
    unreadable_config,
}


class _Holding(Case):
    """A case that keeps things alive (a node, a bound socket) while its process runs."""

    def __init__(self, world: World, root: Path) -> None:
        super().__init__(world, root)
        self.held: list[object] = []

    def hold(self, thing: object) -> None:
        self.held.append(thing)

    def release(self) -> None:
        for thing in self.held:
            if isinstance(thing, Node):
                thing.ledger.close()
                thing.data_dir.release()
            elif isinstance(thing, socket.socket):
                thing.close()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Outcome, str]]]:
    """Every case set up, its ``serve`` started, all at once; their outcomes by case name."""
    world = make_world(tmp_path_factory.mktemp("startup-pki"))
    cases: dict[str, tuple[_Holding, Path, str]] = {}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for setup in CASES:
            if setup in NEED_FILE_MODES and not FILE_MODES_APPLY:
                continue
            if setup in SQLITE_FILE_CASES and TEST_STORE != "sqlite":
                continue
            case = _Holding(world, tmp_path_factory.mktemp(setup.__name__))
            config, message = setup(case)
            cases[setup.__name__] = (case, config, message)
        procs = {name: start_serve(config) for name, (_, config, _) in cases.items()}
        # The limit catches a process that serves instead of refusing, not slowness: forty
        # Python start-ups at once took over 60 s at a load of 25 on two cores.
        yield {name: (finish(proc, 240), cases[name][2]) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for case, _, _ in cases.values():
            case.release()


@pytest.mark.timeout(400)  # the first case's set-up starts the whole table (see outcomes)
@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(c, id=c.__name__, marks=[pytest.mark.sqlite_files] * (c in SQLITE_FILE_CASES))
        for c in CASES
    ],
)
def test_start_up_mistake_is_one_line_exit_2(
    outcomes: dict[str, tuple[Outcome, str]], setup: Callable[[Case], tuple[Path, str]]
) -> None:
    if setup.__name__ not in outcomes:
        pytest.skip("running as root without setpriv: file modes cannot stop this process")
    outcome, message = outcomes[setup.__name__]
    assert_one_line_refusal(outcome, message)


@pytest.mark.sqlite_files
def test_looser_data_directory_and_ledger_are_tightened(tmp_path: Path, world: World) -> None:
    """Readable by others (not writable): the node makes them private, says so, and starts."""
    data = tmp_path / "cn-data"
    config = world.write_config(CN, data)
    node = Node(load_config(config))
    node.ledger.close()
    node.data_dir.release()
    data.chmod(0o755)
    (data / "ledger.db").chmod(0o644)
    with Node(load_config(config)) as started:
        assert started.port > 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "lock"):
        path = data / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_new_data_directory_is_private(tmp_path: Path, world: World) -> None:
    data = tmp_path / "fresh" / "cn-data"
    with Node(load_config(world.write_config(CN, data))) as node:
        assert node.port > 0
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = sorted(p.name for p in data.iterdir())
        # CN's node keeps its lock here whichever the store; its ledger file only on SQLite
        assert ({"ledger.db", "lock"} if TEST_STORE == "sqlite" else {"lock"}) <= set(files)
        for path in data.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert (data / "lock").read_text().strip() == str(os.getpid())


def test_a_renewed_tls_certificate_that_is_not_the_nodes_is_refused_at_reload(
    tmp_path: Path, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The start-up check runs at every reload too: a partner's certificate put in place of
    the node's is refused, logged, and the node keeps serving with its own."""
    node_cred, partner = world.cred(CN, Role.NODE), world.cred(CN, Role.PARTNER)
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    shutil.copy(node_cred.certificate, cert)
    shutil.copy(node_cred.key, key)
    config = world.write_config(CN, tmp_path / "cn-data", server="tls_reload_seconds = 0.1")
    text = config.read_text()
    text = text.replace(str(node_cred.certificate), str(cert)).replace(str(node_cred.key), str(key))
    config.write_text(text)
    caplog.set_level(logging.WARNING, logger="gateway.transport")
    with running_node(config) as node:
        original = node.tls.material.certificate_chain
        shutil.copy(partner.key, key)
        shutil.copy(partner.certificate, cert)
        wait_for(
            lambda: any(
                "TLS material not reloaded" in r.getMessage()
                and "is spiffe://cn.customs-exchange/partner/risk, not this node's identity"
                in r.getMessage()
                for r in caplog.records
            ),
            what="the partner's certificate refused",
        )
        assert node.tls.material.certificate_chain == original
        with channel_to(world, node, partner) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
