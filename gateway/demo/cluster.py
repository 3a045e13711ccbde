"""Bring up the three nodes as real ``customs-gateway serve`` processes on loopback."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import UnavailableError
from gateway.pki import Jurisdiction, Role, SpiffeId
from gateway.transport import ClientIdentity

__all__ = ["ALL", "Cluster", "NodeProcess"]

ALL = (Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO)

_LISTENING = "listening on "


@dataclass
class NodeProcess:
    """One node: its config, (while running) its process and the port it reported it bound.

    Configs may say ``listen = "127.0.0.1:0"``: the port is what the node reports on its first
    line of standard output (``listening on HOST:PORT``), never a number chosen beforehand.
    """

    jurisdiction: Jurisdiction
    config: Path
    log: Path
    process: subprocess.Popen[str] | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def identity(self) -> SpiffeId:
        return SpiffeId(self.jurisdiction, Role.NODE, "gateway")

    def start(self, timeout: float = 20.0) -> None:
        """Start ``customs-gateway serve``, wait until it listens and take the port it reports."""
        log = self.log.open("a")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:  # the first line, or nothing in time
            selector.register(self.process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout)
        line = self.process.stdout.readline() if ready else ""
        port = line.rpartition(":")[2].strip()
        if not line.startswith(_LISTENING) or not port.isdigit():
            self.process.kill()
            self.process.wait()
            self.process = None
            why = "" if ready else f" within {timeout:g} s"
            raise UnavailableError(f"{self.jurisdiction} node did not start{why}; see {self.log}")
        self.port = int(port)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; return the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@dataclass
class Cluster:
    """The three nodes of a demo run and the credentials to talk to them."""

    root: Path
    nodes: dict[Jurisdiction, NodeProcess] = field(default_factory=dict)

    def client(self, jurisdiction: Jurisdiction, role: Role) -> ClientIdentity:
        """The demo credential of ``role`` in ``jurisdiction``."""
        d = self.root / jurisdiction.value.lower()
        return ClientIdentity.from_files(
            d / f"{role.value}.pem", d / f"{role.value}.key", self.root / "bundle.json"
        )

    def stop_all(self) -> dict[Jurisdiction, int]:
        """Stop every running node; exit statuses by jurisdiction."""
        return {j: n.stop() for j, n in self.nodes.items()}
