"""Operator mistakes on the command line: one line, exit 2, pointing to the right help; and
the demo never empties a directory it did not make."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.demo.run import DEMO_MARKER, prepare_directory
from gateway.errors import FailedPreconditionError


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["pki", "revoke", "--ca-dir", "ca", "--serial", "01", "--reason", "superseded",
          "--passphrase-file", "pass"], "pki revoke"),
        (["serve", "--config", "node.toml", "--bogus"], "serve"),
        (["pki", "bundle", "check", "bundle.json", "--bogus"], "pki bundle check"),
        (["--bogus"], ""),
    ],
    ids=["pki-revoke-passphrase-file", "serve", "pki-bundle-check", "top-level"],
)  # fmt: skip
def test_unknown_option_points_to_the_commands_own_help(
    argv: list[str], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    prog = f"customs-gateway {command}".strip()
    assert err.startswith(f"{prog}: error: unrecognized arguments: "), err
    assert ("--passphrase-file pass" in err) == (command == "pki revoke")
    assert err.endswith(f"(see {prog} --help)\n"), err


def test_demo_refuses_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "README.md").write_text("a user's own file")
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--dir", "."]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "demo directory . is not empty and is not a previous demo run" in err
    assert "nothing was deleted" in err
    assert (tmp_path / "README.md").read_text() == "a user's own file"
    assert (tmp_path / "src").is_dir()
    assert not (tmp_path / DEMO_MARKER).exists()


def test_demo_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(FailedPreconditionError, match="is a file; nothing was changed"):
        prepare_directory(tmp_path / "f")


def test_demo_empties_its_own_previous_run_and_a_new_directory_is_made(tmp_path: Path) -> None:
    run = tmp_path / "demo-run"
    prepare_directory(run)
    assert (run / DEMO_MARKER).is_file()
    (run / "hk" / "data").mkdir(parents=True)
    (run / "hk" / "data" / "ledger.db").write_bytes(b"old")
    (run / "bundle.json").write_text("{}")
    prepare_directory(run)
    assert sorted(p.name for p in run.iterdir()) == [DEMO_MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_directory(empty)
    assert (empty / DEMO_MARKER).is_file()
