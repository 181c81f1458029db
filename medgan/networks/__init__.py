"""Generators and critics, built by name through the registry."""

from medgan.networks import critics, generators  # noqa: F401  (registers the networks)
from medgan.networks.registry import build_network, network_names, register_network

__all__ = ["build_network", "network_names", "register_network"]
