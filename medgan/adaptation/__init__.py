"""Self-supervised adaptation of a network to the one scan it restores (``medgan infer --adapt``)."""

from medgan.adaptation.finetune import adapt_denoiser, adapt_super_resolution, loss_curve_summary
from medgan.adaptation.pairs import CTNoisePatchSampler, InPlanePair, InPlanePatchSampler, in_plane_pair
from medgan.adaptation.refine import PlaneRefiner, RefinedSuperResolution, refine_super_resolution

__all__ = [
    "CTNoisePatchSampler",
    "InPlanePair",
    "InPlanePatchSampler",
    "PlaneRefiner",
    "RefinedSuperResolution",
    "adapt_denoiser",
    "adapt_super_resolution",
    "in_plane_pair",
    "loss_curve_summary",
    "refine_super_resolution",
]
