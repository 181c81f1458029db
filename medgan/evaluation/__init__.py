"""Image-quality metrics under named protocols."""

from medgan.evaluation.metrics import HU_WINDOW_WIDE, psnr, ssim_slices, windowed

__all__ = ["HU_WINDOW_WIDE", "psnr", "ssim_slices", "windowed"]
