"""Test support: a complete three-jurisdiction PKI on disk, node configs, and client channels.

Everything is made by the project's own PKI code; nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest

from gateway.pki import (
    CertificateAuthority,
    IssuedCertificate,
    Jurisdiction,
    Role,
    SpiffeId,
    create_root_ca,
    issue_leaf,
    issue_signing_certificate,
)
from gateway.pki.bundle import TrustBundle
from gateway.pki.pem import certificate_pem, write_private_key, write_public_file
from gateway.server import LISTEN_ADDRESS_FILE, Node, load_config
from gateway.transport import ClientIdentity, secure_channel

T = TypeVar("T")

ALL = (Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO)


@dataclass
class Credential:
    """A certificate and key on disk."""

    identity: SpiffeId
    certificate: Path
    key: Path
    issued: IssuedCertificate


@dataclass
class World:
    """Three root CAs, the trust bundle, and per jurisdiction a node, a partner and an auditor."""

    root: Path
    cas: dict[Jurisdiction, CertificateAuthority]
    bundle: Path
    creds: dict[tuple[Jurisdiction, Role, str], Credential] = field(default_factory=dict)

    def issue(
        self,
        jurisdiction: Jurisdiction,
        role: Role,
        name: str,
        *,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = dt.timedelta(days=30),
        signing: bool = False,
        server_only: bool = False,
        ca: CertificateAuthority | None = None,
        tag: str = "",
    ) -> Credential:
        """Issue and write a credential (``signing`` for the Ed25519 signing certificate)."""
        identity = SpiffeId(jurisdiction, role, name)
        ca = ca or self.cas[jurisdiction]
        if signing:
            issued = issue_signing_certificate(ca, identity, now=now, lifetime=lifetime)
        else:
            issued = issue_leaf(ca, identity, now=now, lifetime=lifetime, server_only=server_only)
        stem = f"{role.value}-{name}{'-signing' if signing else ''}{tag}"
        directory = self.root / jurisdiction.value.lower()
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        write_public_file(cert_path, certificate_pem(issued.certificate))
        assert issued.private_key is not None
        write_private_key(key_path, issued.private_key, overwrite=True)
        cred = Credential(identity, cert_path, key_path, issued)
        if not tag:
            self.creds[
                (jurisdiction, role, name)
                if not signing
                else (jurisdiction, role, name + "#signing")
            ] = cred
        return cred

    def cred(self, jurisdiction: Jurisdiction, role: Role, name: str | None = None) -> Credential:
        """A set-up credential: node ``gateway``, partner ``risk`` or auditor ``audit``."""
        default = {Role.NODE: "gateway", Role.PARTNER: "risk", Role.AUDITOR: "audit"}[role]
        return self.creds[(jurisdiction, role, name or default)]

    def signing(self, jurisdiction: Jurisdiction) -> Credential:
        """The node's Ed25519 signing credential."""
        return self.creds[(jurisdiction, Role.NODE, "gateway#signing")]

    def client_identity(self, cred: Credential) -> ClientIdentity:
        """A client identity for ``cred`` trusting this world's bundle."""
        return ClientIdentity.from_files(cred.certificate, cred.key, self.bundle)

    def write_config(
        self,
        jurisdiction: Jurisdiction,
        data_dir: Path,
        *,
        peers: dict[Jurisdiction, int | str | Path | list[str] | list[Path]] | None = None,
        listen: str = "127.0.0.1:0",
        crls: Sequence[Path] = (),
        server: str = "",
        storage: str | None = None,
    ) -> Path:
        """Write the node config for ``jurisdiction`` beside ``data_dir``; return its path.

        ``server`` holds extra lines for the ``[server]`` table. A peer is reached at a
        ``HOST:PORT`` string, a port on 127.0.0.1, or through the address file (a ``Path``)
        its node writes once it has bound its port; a list of either names the replicas of
        one node (``addresses`` or ``address_files``). ``storage`` is a ``[storage] url``;
        without one, CN's node is put on a database of its own when the suite runs with
        ``CUSTOMS_TEST_STORE=postgresql`` (:func:`suite_database`).
        """
        node, signing = self.cred(jurisdiction, Role.NODE), self.signing(jurisdiction)
        lines = [
            f'jurisdiction = "{jurisdiction.value}"',
            'name = "gateway"',
            f'listen = "{listen}"',
            f'data_dir = "{data_dir}"',
            "",
            "[tls]",
            f'certificate = "{node.certificate}"',
            f'key = "{node.key}"',
            f'trust_bundle = "{self.bundle}"',
            f"crls = [{', '.join(repr(str(c)) for c in crls)}]",
            "",
            "[signing]",
            f'certificate = "{signing.certificate}"',
            f'key = "{signing.key}"',
            "",
            "[server]",
            "grace_seconds = 1.0",
            "max_workers = 16",
            server,
            "",
        ]
        if storage is None and jurisdiction is Jurisdiction.CN and TEST_STORE == "postgresql":
            storage = suite_database(data_dir)
        if storage is not None:
            lines += ["[storage]", f'url = "{storage}"', ""]
        for peer, where in (peers or {}).items():
            where = f"127.0.0.1:{where}" if isinstance(where, int) else where
            lines += [
                "[[peers]]",
                f'jurisdiction = "{peer.value}"',
                _peer_address(where),
                "",
            ]
        path = data_dir.parent / f"{jurisdiction.value.lower()}-node.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))
        return path


def _peer_address(where: object) -> str:
    """The address key of a ``[[peers]]`` table: a file, an address, or a list of either (the
    replicas of one node)."""
    if isinstance(where, list):
        key = "address_files" if all(isinstance(w, Path) for w in where) else "addresses"
        return f"{key} = [{', '.join(json.dumps(str(w)) for w in where)}]"
    return f'address_file = "{where}"' if isinstance(where, Path) else f'address = "{where}"'


def make_world(root: Path) -> World:
    """Create the three roots, the bundle, and the default credentials under ``root``."""
    cas = {j: create_root_ca(j) for j in ALL}
    bundle = root / "bundle.json"
    write_public_file(
        bundle, TrustBundle(tuple((j, ca.certificate) for j, ca in cas.items())).to_json().encode()
    )
    world = World(root, cas, bundle)
    for j in ALL:
        world.issue(j, Role.NODE, "gateway")
        world.issue(j, Role.NODE, "gateway", signing=True)
        world.issue(j, Role.PARTNER, "risk")
        world.issue(j, Role.AUDITOR, "audit")
    return world


@contextmanager
def running_node(config: Path) -> Iterator[Node]:
    """A started node for ``config``, stopped on exit."""
    node = Node(load_config(config))
    node.start()
    try:
        yield node
    finally:
        node.stop(grace=0.5)


def python_process(*args: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    """``python *args`` (this interpreter) as a process of its own, unbuffered, its stdout
    (and, unless ``stderr`` says otherwise, its stderr) piped as text."""
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def serve_process(
    config: Path, log: Path, jurisdiction: Jurisdiction
) -> tuple[subprocess.Popen[str], str]:
    """Start ``serve --config config`` as a real process of its own (one a test can SIGKILL),
    its stderr appended to ``log``; return the process and the address it bound.

    Returns once the node reported ``listening on HOST:PORT``, and guarantees that the config
    is ``jurisdiction``'s and that its address file (which peers read) names that address.
    """
    loaded = load_config(config)
    assert loaded.jurisdiction is jurisdiction, f"{config} is {loaded.jurisdiction}'s config"
    proc = python_process("-m", "gateway", "serve", "--config", str(config), stderr=log.open("a"))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on 127.0.0.1:"), log.read_text()[-3000:]
    address = line.split()[-1]
    assert address == (loaded.data_dir / LISTEN_ADDRESS_FILE).read_text().strip()
    return proc, address


def channel_to(world: World, node: Node, cred: Credential) -> grpc.Channel:
    """A mutual-TLS channel from ``cred`` to ``node``."""
    return secure_channel(node.address, world.client_identity(cred), node.config.identity)


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it is truthy and return its value; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- PostgreSQL (tests marked ``postgres``) -----------------------------------------------------

POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_server_url() -> str:
    """The server the ``postgres`` tests use (``CUSTOMS_TEST_POSTGRES``), once it answers.

    Without a server the calling test is skipped with one line (the same line for every test,
    so pytest folds them); under ``CI=true`` a missing server fails instead: CI must run them.
    """
    url = os.environ.get("CUSTOMS_TEST_POSTGRES", POSTGRES_DEFAULT)
    try:
        psycopg.connect(url, connect_timeout=3, autocommit=True).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())[:160]
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}")
        pytest.skip(f"PostgreSQL tests skipped: no server at CUSTOMS_TEST_POSTGRES ({reason})")
    return url


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@contextmanager
def postgres_database(server: str, prefix: str = "customs_test") -> Iterator[str]:
    """A new, uniquely named database on ``server``, dropped afterwards: its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- Which store CN's node uses in the suite (CUSTOMS_TEST_STORE) -------------------------------

TEST_STORES = ("sqlite", "postgresql")
#: ``sqlite`` (the default) or ``postgresql``: with ``postgresql`` every config written by
#: :meth:`World.write_config` puts CN's node on a fresh database (HK and MO stay on SQLite), so
#: the same suite shows both stores behave alike (issue 14). Read here and nowhere else.
TEST_STORE = os.environ.get("CUSTOMS_TEST_STORE", "sqlite")
if TEST_STORE not in TEST_STORES:
    raise pytest.UsageError(
        f"CUSTOMS_TEST_STORE={TEST_STORE!r}: expected one of {', '.join(TEST_STORES)}"
    )

# Databases made for node data directories in this session, by data directory: a config
# written again for the same directory (a node restarted) finds the same database.
_suite_databases: dict[Path, str] = {}


def suite_database(data_dir: Path) -> str:
    """The URL of the database CN's node with ``data_dir`` uses in a ``postgresql`` run: made
    fresh (uniquely named) the first time, the same one afterwards; dropped by
    :func:`drop_suite_databases`."""
    key = data_dir.resolve()
    if key not in _suite_databases:
        server = postgres_server_url()
        name = f"customs_suite_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        _suite_databases[key] = with_database(server, name)
    return _suite_databases[key]


def drop_suite_databases(under: Path | None = None) -> None:
    """Drop the databases :func:`suite_database` made (for data directories below ``under``,
    or all of them), closing connections a stopped node may have left."""
    server = os.environ.get("CUSTOMS_TEST_POSTGRES", POSTGRES_DEFAULT)
    root = under.resolve() if under is not None else None
    for key in list(_suite_databases):
        if root is not None and not key.is_relative_to(root):
            continue
        name = urlsplit(_suite_databases.pop(key)).path.lstrip("/")
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ledger_file(data_dir: Path) -> Path:
    """The ledger of the node keeping ``data_dir``, as a file the offline auditor reads: its
    ``ledger.db``, or, where this run put the node on PostgreSQL, an export of its database
    (``audit export --url``) beside the data directory. Read it once the node has stopped."""
    url = _suite_databases.get(data_dir.resolve())
    if url is None:
        return data_dir / "ledger.db"
    return export_ledger(
        data_dir, data_dir.parent / f"{data_dir.name}-{uuid.uuid4().hex[:6]}.export"
    )


def export_ledger(data_dir: Path, out: Path) -> Path:
    """Export the ledger of the node keeping ``data_dir`` to ``out`` (from ``ledger.db``, or
    from its database where this run put the node on PostgreSQL); return ``out``."""
    from gateway.cli import main  # the command an auditor runs, whichever the store

    url = _suite_databases.get(data_dir.resolve())
    source = ["--url", url] if url is not None else ["--db", str(data_dir / "ledger.db")]
    if main(["audit", "export", *source, "--out", str(out)]) != 0:
        raise AssertionError(f"audit export of {data_dir} failed")
    return out


def store_execute(data_dir: Path, statement: str) -> None:
    """Run ``statement`` (plain SQL both stores read alike, no parameters) on the store of the
    node keeping ``data_dir``: its ``ledger.db``, or its database where this run put it on
    PostgreSQL. For tests that damage a stopped node's store on purpose."""
    url = _suite_databases.get(data_dir.resolve())
    if url is None:
        with sqlite3.connect(data_dir / "ledger.db") as conn:
            conn.execute(statement)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


def store_rows(data_dir: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of ``query`` (``?`` placeholders, SQL both stores read alike) in the store of
    the node keeping ``data_dir``: its ``ledger.db``, or its database where this run put it on
    PostgreSQL. For tests that look at what a node kept beyond its ledger."""
    url = _suite_databases.get(data_dir.resolve())
    if url is None:
        with sqlite3.connect(data_dir / "ledger.db") as conn:
            return [tuple(row) for row in conn.execute(query, params).fetchall()]
    with psycopg.connect(url, autocommit=True) as pg:
        return [tuple(row) for row in pg.execute(query.replace("?", "%s").encode(), params)]
