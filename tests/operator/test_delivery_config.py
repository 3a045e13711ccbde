"""``[delivery]``: retry cap, first retry and summary interval, checked like every key, and
used by the node's deliverers."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pki import Jurisdiction
from gateway.server import ConfigError, Node, load_config
from gateway.server.config import DeliverySettings
from tests.support import World

HK, CN = Jurisdiction.HK, Jurisdiction.CN


def _config(world: World, tmp_path: Path, delivery: str) -> Path:
    path = world.write_config(HK, tmp_path / "data", peers={CN: 7001})
    path.write_text(path.read_text() + "\n[delivery]\n" + delivery + "\n")
    return path


def test_defaults_without_the_table(world: World, tmp_path: Path) -> None:
    config = load_config(world.write_config(HK, tmp_path / "data"))
    assert config.delivery == DeliverySettings(0.05, 5.0, 600.0)


def test_the_node_backs_off_up_to_the_configured_cap(world: World, tmp_path: Path) -> None:
    path = _config(
        world,
        tmp_path,
        "retry_base_seconds = 1\nretry_cap_seconds = 120\nfailure_summary_seconds = 900",
    )
    node = Node(load_config(path))
    try:
        deliverer = node.deliverers[CN]
        backoff = deliverer._backoff
        assert (backoff.base, backoff.cap) == (1.0, 120.0)
        assert deliverer._summary_interval == 900.0
        assert max(backoff.delay(30) for _ in range(200)) <= 120.0
        assert max(backoff.delay(30) for _ in range(200)) > 5.0  # no longer the fixed 5 s
    finally:
        node.ledger.close()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param("retry_cap_seconds = 0", r"'delivery.retry_cap_seconds': must be positive",
                     id="zero-cap"),
        pytest.param("retry_base_seconds = 10\nretry_cap_seconds = 1",
                     r"'delivery.retry_cap_seconds': must not be below retry_base_seconds",
                     id="cap-below-base"),
        pytest.param('failure_summary_seconds = "often"',
                     r"'delivery.failure_summary_seconds': must be",
                     id="wrong-type"),
        pytest.param("retry_cap = 60", r"'delivery.retry_cap': unknown key", id="unknown-key"),
    ],
)  # fmt: skip
def test_mistakes_name_the_key(world: World, tmp_path: Path, lines: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(world, tmp_path, lines))
