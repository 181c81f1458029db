"""Generators and critics, built by name through the registry."""

# Importing the network modules registers their networks.
from medgan.networks import cpce, critics, generators, sr, unet  # noqa: F401
from medgan.networks.critics import critic_input, interpolate_to_grid
from medgan.networks.registry import build_network, network_names, register_network
from medgan.networks.sr import pixel_shuffle_3d

__all__ = [
    "build_network",
    "critic_input",
    "interpolate_to_grid",
    "network_names",
    "pixel_shuffle_3d",
    "register_network",
]
