"""Export trained models for other runtimes: TorchScript, ONNX and MONAI bundles.

Each export loads a shipped model or ``.safetensors`` model file, writes the network, checks it numerically
against PyTorch on random patches, and writes the model card beside it so users can map intensities.
"""

from medgan.export.bundle import export_monai_bundle
from medgan.export.checks import DEFAULT_TOLERANCE, ExportCheckError, ExportResult
from medgan.export.onnx import ONNX_OPSET, export_onnx
from medgan.export.torchscript import export_torchscript

__all__ = [
    "DEFAULT_TOLERANCE",
    "ONNX_OPSET",
    "ExportCheckError",
    "ExportResult",
    "export_monai_bundle",
    "export_onnx",
    "export_torchscript",
]
