"""The gRPC node: config, TLS, interceptors and servicers around the pure core."""

from gateway.server.config import ConfigError, NodeConfig, PeerConfig, load_config
from gateway.server.node import Node

__all__ = ["ConfigError", "Node", "NodeConfig", "PeerConfig", "load_config"]
