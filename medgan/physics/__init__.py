"""Physical models of the imaging chain, used to simulate degraded training inputs."""

from medgan.physics.ct import (
    FILTER_NAMES,
    MU_WATER_PER_MM,
    ParallelBeamGeometry,
    filtered_back_projection,
    forward_project,
    hu_to_mu,
    mu_delta_to_hu_delta,
    mu_to_hu,
    poisson_log_noise,
)

__all__ = [
    "FILTER_NAMES",
    "MU_WATER_PER_MM",
    "ParallelBeamGeometry",
    "filtered_back_projection",
    "forward_project",
    "hu_to_mu",
    "mu_delta_to_hu_delta",
    "mu_to_hu",
    "poisson_log_noise",
]
