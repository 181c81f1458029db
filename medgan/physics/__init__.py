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
)
from medgan.physics.fanbeam import FanBeamGeometry, fan_filtered_back_projection
from medgan.physics.noise import (
    bowtie_photon_fraction,
    insert_dose_reduction_noise,
    log_measurement_variance,
    poisson_log_noise,
)
from medgan.physics.projector import BACKENDS

__all__ = [
    "BACKENDS",
    "FILTER_NAMES",
    "MU_WATER_PER_MM",
    "FanBeamGeometry",
    "ParallelBeamGeometry",
    "bowtie_photon_fraction",
    "fan_filtered_back_projection",
    "filtered_back_projection",
    "forward_project",
    "hu_to_mu",
    "insert_dose_reduction_noise",
    "log_measurement_variance",
    "mu_delta_to_hu_delta",
    "mu_to_hu",
    "poisson_log_noise",
]
