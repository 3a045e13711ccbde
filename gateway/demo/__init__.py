"""``make demo``: three nodes on loopback, a real exchange, verified ledgers, told as a story."""

from gateway.demo.run import run_demo

__all__ = ["run_demo"]
