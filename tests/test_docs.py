"""Every CLI command has help with an example and a place in the docs (as sqlite-utils does)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import json_format, message_factory

from customs.gateway.v1 import partner_pb2
from gateway.cli import main
from gateway.cli._base import build_parser
from gateway.pki import Jurisdiction, Role, create_root_ca
from gateway.pki.pem import certificate_pem
from gateway.pki.revocation import build_crl
from gateway.server.config import (
    DeliverySettings,
    NodeConfig,
    PeerConfig,
    ServerSettings,
    StorageSettings,
    load_config,
)
from gateway.server.limits import Limits
from tests.interop.examples import code_example, partner_examples
from tests.support import World

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(
    p.read_text()
    for p in [ROOT / "README.md", ROOT / "certs" / "README.md", *(ROOT / "docs").rglob("*.md")]
)


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix
        return
    for name, sub in subparsers[0].choices.items():
        yield from _commands(sub, (*prefix, name))


COMMANDS = sorted(_commands(build_parser()))


def test_there_are_commands() -> None:
    assert ("serve",) in COMMANDS
    assert ("audit", "fetch") in COMMANDS
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_command_has_help_with_an_example(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out.lower(), out
    assert f"customs-gateway {' '.join(command)}" in out


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_command_is_documented(command: tuple[str, ...]) -> None:
    assert f"customs-gateway {' '.join(command)}" in DOCS


# -- the config reference (docs/configuration.md) against the parser and `config example` ------

CONFIG_DOC = ROOT / "docs" / "configuration.md"
_ROW = re.compile(r"^\| `(?P<key>[\w.\[\]]+)` \| (?P<type>[^|]+) \| (?P<default>[^|]+) \| .+ \|$")
_TYPES = {"str": "string", "int": "integer", "float": "number", "Path": "string"}
# NodeConfig fields whose key is not their own name; "source" is where the file was, no key.
_NODE_KEYS = {
    "tls_certificate": "tls.certificate",
    "tls_key": "tls.key",
    "trust_bundle": "tls.trust_bundle",
    "crls": "tls.crls",
    "signing_certificate": "signing.certificate",
    "signing_key": "signing.key",
    "metrics_listen": "metrics.listen",
}


_NODE_KEYS_BY_KEY = {key: name for name, key in _NODE_KEYS.items()}


def _documented() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in CONFIG_DOC.read_text().splitlines():
        if m := _ROW.match(line):
            rows[m["key"]] = (m["type"].strip(), m["default"].strip())
    return rows


def _code_settings() -> dict[str, dataclasses.Field[Any]]:
    """Every setting of the parser's dataclasses, by its key in the file."""
    keys: dict[str, dataclasses.Field[Any]] = {}
    for f in dataclasses.fields(NodeConfig):
        if f.name == "source":
            continue
        if f.name == "peers":
            keys |= {f"peers[].{p.name}": p for p in dataclasses.fields(PeerConfig)}
        elif f.name == "server":
            keys |= {f"server.{s.name}": s for s in dataclasses.fields(ServerSettings)}
        elif f.name == "delivery":
            keys |= {f"delivery.{d.name}": d for d in dataclasses.fields(DeliverySettings)}
        elif f.name == "storage":
            keys |= {f"storage.{x.name}": x for x in dataclasses.fields(StorageSettings)}
        elif f.name == "limits":
            keys |= {
                f"limits.{x.name}": x for x in dataclasses.fields(Limits) if x.name != "workers"
            }
        else:
            keys[_NODE_KEYS.get(f.name, f.name)] = f
    return keys


def test_config_reference_documents_every_setting_of_the_code() -> None:
    documented, code = _documented(), _code_settings()
    assert len(documented) >= 20
    assert set(code) - set(documented) == set(), "settings missing from docs/configuration.md"
    assert set(documented) - set(code) == set(), "documented keys the config does not have"
    for key, f in code.items():
        if str(f.type) in _TYPES:
            assert documented[key][0] == _TYPES[str(f.type)], key


def test_config_defaults_are_the_documented_ones(example_dir: Path) -> None:
    """A config with only the required keys loads with every documented default in force."""
    documented = _documented()
    required = {k for k, (_, default) in documented.items() if default.startswith("required")}
    assert {"jurisdiction", "listen", "tls.certificate", "peers[].address"} <= required
    full = tomllib.loads((example_dir / "node.toml").read_text())
    lines = [f"{k} = {json.dumps(full[k])}" for k in full if k in required]
    for table in ("tls", "signing"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in full[table].items()
                  if f"{table}.{k}" in required]  # fmt: skip
    for peer in full["peers"]:
        lines.append("[[peers]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in peer.items() if f"peers[].{k}" in required]
    minimal = example_dir / "minimal.toml"
    minimal.write_text("\n".join(lines) + "\n")
    config = load_config(minimal)
    checked = 0
    for key, (_, default) in documented.items():
        if key in required:
            continue
        where, _, name = key.rpartition(".")
        holder = {
            "": config,
            "server": config.server,
            "delivery": config.delivery,
            "peers[]": config.peers[0],
            "limits": config.resolved_limits,
            "storage": config.storage,
        }.get(where)
        attribute = _NODE_KEYS_BY_KEY.get(key, name)
        value = getattr(holder if holder is not None else config, attribute)
        literal = re.match(r"`([^`]+)`", default)  # the value; what follows says where from
        expected = None if literal is None else tomllib.loads(f"v = {literal[1]}")["v"]
        assert (list(value) if isinstance(value, tuple) else value) == expected, key
        checked += 1
    assert checked >= 10


def _example(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["config", "example", *argv]) == 0
    return capsys.readouterr().out


def _uncommented(example: str) -> str:
    """``example`` with its optional tables and keys (shown commented out) switched on; only
    the alternatives to ``address`` (``address_file``, ``addresses``, ``address_files``) stay
    comments."""
    return re.sub(r"^# (\[\w+\]|(?!address)\w+ = )", r"\1", example, flags=re.M)


def _keys(table: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in table.items():
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            keys |= {k for item in value for k in _keys(item, f"{prefix}{key}[].")}
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_config_example_holds_every_documented_key(capsys: pytest.CaptureFixture[str]) -> None:
    text = _example(capsys)
    # Optional keys shown commented out: every one of them is a key too.
    opened = _uncommented(text)
    keys = _keys(tomllib.loads(opened))
    assert '# address_file = "../cn/data/listen-address"' in text
    assert "# addresses = [" in text
    assert "# address_files = [" in text
    alternatives = {"peers[].address_file", "peers[].addresses", "peers[].address_files"}
    assert keys | alternatives == set(_documented())


@pytest.fixture
def example_dir(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """``config example`` as printed (port 0, metrics on too) in ``node.toml``, beside the
    layout of certs/README.md with real certificates, bundle and CRLs."""
    text = _example(capsys, "--jurisdiction", "hk", "--listen", "127.0.0.1:0")
    text = _uncommented(text).replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"')
    # The example's PostgreSQL database is not there: this node keeps the SQLite default
    # (tests/replicas start nodes on a real database).
    text = re.sub(r"^\[storage\].*\n(?:\w+ = .*\n?)*", "", text, flags=re.M)
    node = tmp_path / "certs" / "hk" / "node"
    shared = tmp_path / "certs" / "shared"
    node.mkdir(parents=True)
    shared.mkdir(parents=True)
    tls, signing = world.cred(Jurisdiction.HK, Role.NODE), world.signing(Jurisdiction.HK)
    for source, target in [
        (tls.certificate, node / "gateway.pem"),
        (tls.key, node / "gateway.key"),
        (signing.certificate, node / "gateway-signing.pem"),
        (signing.key, node / "gateway-signing.key"),
        (world.bundle, shared / "bundle.json"),
    ]:
        shutil.copy(source, target)
    for j, ca in world.cas.items():
        crl = build_crl(ca, [], number=1)
        (shared / f"{j.value.lower()}.crl").write_bytes(crl.public_bytes(Encoding.PEM))
    (tmp_path / "node.toml").write_text(text)
    return tmp_path


def test_serve_accepts_the_config_example(example_dir: Path) -> None:
    config = example_dir / "node.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), proc.stderr and proc.stderr.read()
        assert (example_dir / "data" / "listen-address").read_text().strip() == line.split()[-1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_config_example_for_each_jurisdiction_peers_with_the_other_two(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for j in Jurisdiction:
        peers = tomllib.loads(_example(capsys, "--jurisdiction", j.value))["peers"]
        assert sorted(p["jurisdiction"] for p in peers) == sorted(
            k.value for k in Jurisdiction if k is not j
        )


# -- documented shell commands run as written; documented layouts are the ones made ------------

CERTS_README = ROOT / "certs" / "README.md"


def shell_blocks(doc: Path) -> list[str]:
    """The ```sh blocks of ``doc``, in order."""
    return re.findall(r"^```sh\n(.*?)^```", doc.read_text(), re.M | re.S)


def documented_layout(name: str) -> list[str]:
    """The paths of the ``<!-- layout: name -->`` tree of certs/README.md, as regular
    expressions (``<...>`` is one path segment, ``*`` any characters in one)."""
    text = CERTS_README.read_text()
    block = re.search(rf"<!-- layout: {name} -->\n```text\n(.*?)```", text, re.S)
    assert block is not None, name
    stack: list[str] = []
    patterns = []
    for line in block[1].splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        entry = line.split()[0]
        stack[depth:] = [entry.rstrip("/")]
        if not entry.endswith("/"):
            path = "/".join(stack)
            patterns.append(re.sub(r"<[^>]+>", "[^/]+", re.escape(path).replace(r"\*", "[^/]*")))
    return [p.replace(r"\<", "<").replace(r"\>", ">") for p in patterns]


def check_layout(root: Path, name: str) -> None:
    """Every file under ``root`` is in the documented tree, and every documented file without
    a wildcard is there."""
    patterns = documented_layout(name)
    files = [p.relative_to(root.parent).as_posix() for p in root.rglob("*") if p.is_file()]
    undocumented = [f for f in files if not any(re.fullmatch(p, f) for p in patterns)]
    assert undocumented == [], f"files made but not in certs/README.md ({name})"
    missing = [p for p in patterns if "*" not in p and not any(re.fullmatch(p, f) for f in files)]
    assert missing == [], f"files in certs/README.md ({name}) that were not made"


# Some forty CLI processes one after another: 13 s on an idle machine, over 120 s at a load
# of 37 on two cores. The limit catches a hang, not slowness.
@pytest.mark.timeout(400)
def test_pki_guide_runs_as_written(tmp_path: Path) -> None:
    """Every command of docs/operations-pki.md, in order, in an empty directory (the other two
    administrations' roots given, as the guide says); then the files are those certs/README.md
    describes."""
    for j in (Jurisdiction.CN, Jurisdiction.MO):
        root = create_root_ca(j)
        (tmp_path / f"{j.value.lower()}-ca.pem").write_bytes(certificate_pem(root.certificate))
    script = "\n".join(
        shell_blocks(ROOT / "docs" / "operations-pki.md") + shell_blocks(CERTS_README)
    )
    assert "--passphrase-file ~/.hk-ca-pass" in script
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "warning" not in done.stderr, done.stderr  # e.g. "the CA key is not encrypted"
    assert "trust bundle certs/shared/bundle.json: ok" in done.stdout
    check_layout(tmp_path / "certs", "operator")


def test_a_documented_command_that_fails_fails_the_guide_test(tmp_path: Path) -> None:
    """The runner stops at the first failing command, as the test above relies on."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "customs-gateway pki issue --bogus\necho after"],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "after" not in done.stdout


def test_partner_json_examples_are_proto3_json_of_their_request() -> None:
    """Each JSON example of docs/partners.md parses, strictly, into its RPC's request message
    (the Node.js interop test also sends each one to a real node)."""
    service = partner_pb2.DESCRIPTOR.services_by_name["PartnerGateway"]
    examples = partner_examples()
    assert {e.name for e in examples} >= {"submit-notice", "submit-invalid"}
    for example in examples:
        method = service.methods_by_name[example.method]
        request = message_factory.GetMessageClass(method.input_type)()
        json_format.ParseDict(example.request, request)  # unknown fields are an error
        assert request.ByteSize() > 0, example.name
    notice = partner_pb2.SubmitSeizureNoticeRequest()
    json_format.ParseDict(examples[0].request, notice)
    assert notice.notice.seized_at.ToJsonString() == "2026-11-28T03:15:00Z"  # the Timestamp form


def test_the_documented_node_bulk_loader_is_the_one_the_interop_test_runs() -> None:
    """docs/partners.md shows ``bulkLoad`` of tests/interop/client.js, which the Node.js interop
    test runs against real nodes: the two must not drift apart."""
    shown = code_example("js", "bulk-load")
    client = (Path(__file__).parent / "interop" / "client.js").read_text(encoding="utf-8")
    assert shown.startswith("async function bulkLoad(")
    assert shown in client


def test_the_documented_node_acknowledger_is_the_one_the_interop_test_runs() -> None:
    """docs/partners.md shows ``acknowledgeAll`` of tests/interop/client.js, which the Node.js
    interop scenario runs against real nodes: the two must not drift apart."""
    shown = code_example("js", "acknowledge")
    client = (Path(__file__).parent / "interop" / "client.js").read_text(encoding="utf-8")
    assert shown.startswith("async function acknowledgeAll(")
    assert shown in client


def test_the_documented_python_acknowledger_compiles() -> None:
    """(tests/exchange/test_acknowledge_many.py runs it against real nodes.)"""
    source = code_example("python", "acknowledge")
    compile(source, "partners.md", "exec")
    assert "def acknowledge(stub, messages):" in source


def test_the_documented_python_bulk_loader_compiles() -> None:
    """(tests/exchange/test_bulk.py runs it against a real node.)"""
    source = code_example("python", "bulk-load")
    compile(source, "partners.md", "exec")
    assert "def bulk_load(stub, requests):" in source
