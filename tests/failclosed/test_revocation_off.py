"""A node with no CRL configured says, at every start, that revocation is not enforced."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pki import Jurisdiction
from tests.support import World, running_node


def _revocation_off(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "revocation-off"]


def test_a_node_without_crls_warns_that_revocation_is_off(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = world.write_config(Jurisdiction.HK, tmp_path / "hk-data")
    assert "crls = []" in config.read_text()
    with caplog.at_level("INFO", logger="gateway"), running_node(config):
        started = [r for r in caplog.records if getattr(r, "event", None) == "started"]
        assert started  # the start-up path ran to the end
        assert _revocation_off(caplog) == [
            "no CRL is configured ([tls] crls is empty): revoked certificates are admitted; "
            "list every jurisdiction's CRL to enforce revocation"
        ]
