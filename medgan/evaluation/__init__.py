"""Image-quality metrics under named protocols, classical baselines, reports and the fidelity guardrail."""

from medgan.evaluation.metrics import HU_WINDOW_WIDE, mae, psnr, psnr_db, rmse, ssim_3d, ssim_slices, windowed
from medgan.evaluation.protocols import PROTOCOLS, Protocol, get_protocol

__all__ = ["HU_WINDOW_WIDE", "PROTOCOLS", "Protocol", "get_protocol", "mae", "psnr", "psnr_db", "rmse", "ssim_3d",
           "ssim_slices", "windowed"]
