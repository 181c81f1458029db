"""Export a model's generator to ONNX with dynamic batch and spatial axes, checked with ONNX Runtime."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from medgan.export.checks import (
    CHECK_PATCH_DHW,
    CHECK_SHAPES,
    DEFAULT_TOLERANCE,
    ExportCheckError,
    ExportResult,
    check_difference,
    prepare_file_export,
    random_patch,
    write_card,
)
from medgan.io.atomic import atomic_output

logger = logging.getLogger(__name__)

# ONNX opset 17 has every operator the generators use (Conv, ConvTranspose, Pad with mode "edge", Resize,
# LeakyReLU). The export test runs it with torch 2.13's TorchScript-based exporter and onnxruntime 1.32.
ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
DYNAMIC_AXES = {0: "batch", 2: "depth", 3: "height", 4: "width"}


def _import_onnxruntime():
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"ONNX export needs the onnx and onnxruntime packages ({error}); install them with "
                          "pip install onnx onnxruntime.") from error
    return onnxruntime


def export_onnx(model: str | Path, output: str | Path, *, overwrite: bool = False,
                tolerance: float = DEFAULT_TOLERANCE, opset: int = ONNX_OPSET) -> ExportResult:
    """Write the generator of ``model`` as an ONNX graph to ``output`` and its model card beside it.

    The graph has one input ``"input"`` and one output ``"output"``, float32 ``(B, 1, D, H, W)`` in network
    units, with the batch and the three spatial axes dynamic. The axes and the intensity mapping are those of
    `medgan.export.torchscript.export_torchscript`. ONNX Runtime runs the written file on two random patches
    of different sizes, which shows that the spatial axes are dynamic, and the export fails when either differs
    from PyTorch by more than ``tolerance``.

    Raises:
        ImportError: if onnx or onnxruntime is not installed.
        ValueError: for a bad suffix or tolerance, or an invalid model.
        ExportCheckError: if ONNX Runtime does not match PyTorch; nothing is written then.
        FileExistsError: if an output exists and ``overwrite`` is false.
    """
    onnxruntime = _import_onnxruntime()
    job = prepare_file_export(model, output, (".onnx",), "ONNX", tolerance, overwrite)
    output, tolerance, card_path, network = job.output, job.tolerance, job.card_path, job.network

    example = random_patch((1, 1, *CHECK_PATCH_DHW))
    with atomic_output(output, overwrite=overwrite) as temporary:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter warns about constant folding of Slice steps, and tracing about values
            # fixed by input checks. Neither changes results, and the check on two input sizes below decides.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # NOTE: dynamo=False selects torch's TorchScript-based exporter; the dynamo exporter needs the
            # onnxscript package, which medgan does not depend on.
            torch.onnx.export(network, (example,), str(temporary), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES})
        session = onnxruntime.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        differences = {}
        for seed, shape in enumerate(CHECK_SHAPES):
            patch = random_patch(shape, seed=seed)
            with torch.no_grad():
                reference = network(patch)
            try:
                candidate = session.run([OUTPUT_NAME], {INPUT_NAME: patch.numpy()})[0]
            except Exception as error:  # onnxruntime raises its own exception types
                raise ExportCheckError(
                    f"ONNX Runtime fails on an input of shape {shape}: {str(error).splitlines()[0]}. The export "
                    "fixed a shape-dependent step of this network, so its spatial axes are not dynamic."
                ) from error
            differences[str(shape)] = check_difference(reference, torch.from_numpy(candidate), shape, tolerance,
                                                       "ONNX graph")
    if not job.keep_card:
        write_card(job.card, card_path, overwrite)
    logger.info("Wrote ONNX model %s (opset %d) and its card %s", output, opset, card_path)
    return ExportResult(format="onnx", path=output, card_path=card_path, max_abs_difference=differences,
                        tolerance=tolerance)
