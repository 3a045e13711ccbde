"""The gRPC node: config, TLS, interceptors and servicers around the pure core."""

from gateway.server.config import ConfigError, NodeConfig, PeerConfig, load_config
from gateway.server.node import LISTEN_ADDRESS_FILE, Node

__all__ = ["LISTEN_ADDRESS_FILE", "ConfigError", "Node", "NodeConfig", "PeerConfig", "load_config"]
