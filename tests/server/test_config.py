"""Node configs: every mistake is one line naming the key, exit status 2, never a traceback."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli.serve import YOUNG_COLLECTION_THRESHOLD
from gateway.pki import Jurisdiction
from gateway.server import ConfigError, load_config
from tests.support import World, python_process


@pytest.fixture
def good_config(world: World, tmp_path: Path) -> Path:
    return world.write_config(
        Jurisdiction.HK, tmp_path / "data", peers={Jurisdiction.CN: 7001, Jurisdiction.MO: 7003}
    )


def test_good_config_loads(good_config: Path) -> None:
    config = load_config(good_config)
    assert config.jurisdiction is Jurisdiction.HK
    assert config.identity.uri == "spiffe://hk.customs-exchange/node/gateway"
    assert [p.jurisdiction for p in config.peers] == [Jurisdiction.CN, Jurisdiction.MO]
    assert config.peers[0].identity.dns_name == "gateway.cn.customs-exchange"


def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


CASES = [
    ("not-toml", "[tls]", "[tls", r"not valid TOML"),
    (
        "unknown-key",
        'name = "gateway"',
        'name = "gateway"\nlisten_adress = "x"',
        r"key 'listen_adress': unknown key",
    ),
    ("missing-key", 'listen = "127.0.0.1:0"', "", r"key 'listen': is required"),
    (
        "bad-jurisdiction",
        'jurisdiction = "HK"',
        'jurisdiction = "TW"',
        r"key 'jurisdiction': unknown jurisdiction 'TW'",
    ),
    (
        "bad-address",
        'listen = "127.0.0.1:0"',
        'listen = "localhost"',
        r"key 'listen': 'localhost' is not HOST:PORT",
    ),
    (
        "wrong-type",
        "max_workers = 16",
        'max_workers = "16"',
        r"key 'server.max_workers': must be an integer, not a string$",
    ),
    (
        "wrong-type-number",
        "grace_seconds = 1.0",
        "grace_seconds = true",
        r"key 'server.grace_seconds': must be a number, not true or false$",
    ),
    (
        "wrong-type-boolean",
        "grace_seconds = 1.0",
        "grace_seconds = 1.0\npin_python_threads = 1",
        r"key 'server.pin_python_threads': must be true or false, not an integer$",
    ),
    (
        "misspelt-required-key",
        'listen = "127.0.0.1:0"',
        'listne = "127.0.0.1:0"',
        r"key 'listne': unknown key \(did you mean 'listen'\?\)$",
    ),
    (
        "misspelt-optional-key",
        "max_workers = 16",
        "max_worker = 16",
        r"key 'server.max_worker': unknown key \(did you mean 'server.max_workers'\?\)$",
    ),
    (
        "misspelt-peer-address",
        'address = "127.0.0.1:7001"',
        'adress = "127.0.0.1:7001"',
        r"key 'peers\[0\].adress': unknown key \(did you mean 'peers\[0\].address'\?\)$",
    ),
    (
        "peer-address-twice",
        'address = "127.0.0.1:7001"',
        'address = "127.0.0.1:7001"\naddress_file = "cn/listen-address"',
        r"key 'peers\[0\].address': give one of address, address_file, addresses or "
        r"address_files, not several$",
    ),
    (
        "peer-addresses-empty",
        'address = "127.0.0.1:7001"',
        "addresses = []",
        r"key 'peers\[0\].addresses': must list at least one$",
    ),
    (
        "peer-addresses-not-host-port",
        'address = "127.0.0.1:7001"',
        'addresses = ["127.0.0.1:7001", "replica-2"]',
        r"key 'peers\[0\].addresses\[1\]': 'replica-2' is not HOST:PORT$",
    ),
    (
        "peer-address-files-not-strings",
        'address = "127.0.0.1:7001"',
        "address_files = [7001]",
        r"key 'peers\[0\].address_files\[0\]': must be a string, not an integer$",
    ),
    (
        "missing-certificate",
        "hk/node-gateway.pem",
        "hk/missing.pem",
        r"key 'tls.certificate': file .*missing.pem does not exist",
    ),
    (
        "unknown-tls-key",
        "[tls]",
        "[tls]\ncertfile = 'x'",
        r"key 'tls.certfile': unknown key \(did you mean 'tls.certificate'\?\)$",
    ),
    ("unrelated-key", "[tls]", "[tls]\ncolour = 'x'", r"key 'tls.colour': unknown key$"),
    (
        "misspelt-required-table",
        "[tls]",
        "[tsl]",
        r"key 'tsl': unknown key \(did you mean 'tls'\?\)$",
    ),
    (
        "misspelt-limit",
        "[server]",
        "[limits]\ncals_per_caller = 4\n\n[server]",
        r"key 'limits.cals_per_caller': unknown key \(did you mean 'limits.calls_per_caller'\?\)$",
    ),
    (
        "misspelt-optional-table",
        "[server]",
        "[sever]",
        r"key 'sever': unknown key \(did you mean 'server'\?\)$",
    ),
    (
        "peer-is-self",
        'jurisdiction = "CN"',
        'jurisdiction = "HK"',
        r"key 'peers\[0\].jurisdiction': a node does not peer with its own",
    ),
    (
        "bad-node-name",
        'name = "gateway"',
        'name = "Gate Way"',
        r"key 'name': bad holder name 'Gate Way'",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_config_mistakes_name_the_key(good_config: Path, old: str, new: str, message: str) -> None:
    _edit(good_config, old, new)
    with pytest.raises(ConfigError, match=message):
        load_config(good_config)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [CASES[0][1:], CASES[6][1:]],
    ids=["malformed-config", "missing-certificate-file"],
)
def test_serve_with_bad_config_is_one_line_exit_2(
    good_config: Path, old: str, new: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(good_config, old, new)
    assert main(["serve", "--config", str(good_config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("customs-gateway: error: config ")
    assert "Traceback" not in err


def test_serve_with_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err.strip().endswith("nope.toml: file does not exist")


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the following arguments are required: --config" in err


def test_serve_process_stops_cleanly_on_sigterm(good_config: Path) -> None:
    """The real command: starts, listens, and on SIGTERM exits 0 after a graceful stop."""
    proc = python_process("-m", "gateway", "serve", "--config", str(good_config))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        logs = proc.stderr.read()
        assert '"event": "stopped"' in logs
        assert "Traceback" not in logs
        frozen = [json.loads(x) for x in logs.splitlines() if '"heap_frozen"' in x]
        assert frozen
        assert frozen[0]["frozen_objects"] > 10_000  # the start-up heap, not a few objects
        # A bulk call's short-lived objects die young: not collected every 700 allocations.
        assert frozen[0]["young_collection_threshold"] == YOUNG_COLLECTION_THRESHOLD
    finally:
        if proc.poll() is None:
            proc.kill()
