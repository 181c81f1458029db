"""Export a model as a MONAI bundle folder that ``python -m monai.bundle run`` runs.

Two engines. ``engine="medgan"`` (the default) writes the model's safetensors weights and card and an
``inference.json`` whose restore step is ``medgan.transforms.Restoredd``: the bundle needs medgan installed, and
its output equals ``medgan infer``'s for every model, super-resolution included. ``engine="monai"``, described
below, runs without medgan.

The folder contains ``configs/metadata.json``, ``configs/inference.json`` and ``models/model.ts``. The config uses
MONAI components only: ``LoadImaged`` + ``EnsureChannelFirstd``, ``ScaleIntensityRanged`` with the card's
linear intensity map, ``SlidingWindowInferer`` and ``SaveImaged``. ``model.ts`` wraps the generator so that it
takes MONAI's ``(B, 1, X, Y, Z)`` layout (X, Y, Z = the file's i, j, k) and permutes to medgan's ``(D, H, W)
= (k, j, i)`` inside, so the network gets each axis as it did in training.

The bundle's output differs from ``medgan infer`` in two ways. MONAI's Gaussian blending weights do not stay
at 1 at the volume's border, and MONAI pads a volume shorter than the window (here with replicated edge
values) where medgan shrinks the window. Both change voxels only where windows overlap or along short axes,
and with one window covering the whole volume the two agree to float32 rounding.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

import medgan
from medgan.export.checks import (
    CHECK_PATCH_DHW,
    DEFAULT_TOLERANCE,
    SECOND_CHECK_PATCH_DHW,
    ExportResult,
    check_outputs_free,
    check_tolerance,
    load_network,
)
from medgan.export.torchscript import check_traced, trace_network
from medgan.inference.restorer import Restorer
from medgan.io.atomic import atomic_output, check_folder_writable
from medgan.models.card import ModelCard
from medgan.tasks import IntensityMapping, get_task

logger = logging.getLogger(__name__)

BUNDLE_MODEL = Path("models") / "model.ts"
BUNDLE_INFERENCE = Path("configs") / "inference.json"
BUNDLE_METADATA = Path("configs") / "metadata.json"
BUNDLE_CARD = Path("docs") / "medgan_card.json"
BUNDLE_WEIGHTS = Path("models") / "model.safetensors"
BUNDLE_ENGINES = ("medgan", "monai")


class MonaiLayoutNetwork(torch.nn.Module):
    """A generator that takes and returns MONAI's ``(B, C, X, Y, Z)`` layout instead of medgan's ``(B, C, Z, Y, X)``."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)


def is_medgan_bundle(folder: Path) -> bool:
    """Return whether ``folder`` is a bundle that medgan exported: its ``configs/metadata.json`` is a JSON object
    with ``"authors": "medgan"`` and a ``medgan_card`` object, as `metadata` writes it."""
    try:
        description = json.loads((folder / BUNDLE_METADATA).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (isinstance(description, dict) and description.get("authors") == "medgan"
            and isinstance(description.get("medgan_card"), dict))


def check_bundle_replaceable(output: Path) -> None:
    """Raise FileExistsError when ``output`` is an existing folder that is not a medgan bundle.

    ``--overwrite`` replaces the whole folder, so it applies only to a bundle that medgan wrote, never to a folder
    that may contain the user's own files.
    """
    if output.is_dir() and not is_medgan_bundle(output):
        raise FileExistsError(
            f"Output folder {output} exists and is not a MONAI bundle exported by medgan (it has no "
            f"{BUNDLE_METADATA.as_posix()} with medgan's card), so it is not replaced, even with --overwrite, "
            "because that would delete every file in it. Choose a new folder name, or remove the folder first."
        )


def check_bundle_supported(card: ModelCard) -> IntensityMapping:
    """Return the card's fixed intensity map, or raise why a MONAI config cannot express this model.

    Raises:
        ValueError: for a per-volume intensity map (MRI) or an output scale other than ``(1, 1, 1)``.
    """
    mapping = IntensityMapping.from_dict(card.intensity)
    if mapping.reference_percentile is not None:
        raise ValueError(
            f"Model {card.name!r} scales each volume by its {mapping.reference_percentile:g}th percentile, and no "
            "MONAI transform divides by a percentile and multiplies the prediction by the same number afterwards "
            "(ScaleIntensityRangePercentiles also subtracts the lowest percentile). Export it with --format "
            "torchscript or onnx and apply the card's mapping in your own code."
        )
    if tuple(card.output_scale) != (1, 1, 1):
        raise ValueError(
            f"Model {card.name!r} has output scale {tuple(card.output_scale)}: MONAI's SlidingWindowInferer "
            "returns the finer grid with the input's affine, and no MONAI transform rescales an affine without "
            "resampling the voxels, so SaveImaged would write a wrong geometry. Export it with --format "
            "torchscript or onnx, or use medgan.transforms.Restored(d)."
        )
    return mapping


def inference_config(card: ModelCard, mapping: IntensityMapping, roi_size_xyz: list[int]) -> dict[str, Any]:
    """Return the ``inference.json`` content for a model with the fixed intensity map ``mapping``."""
    unit_high = mapping.offset + mapping.scale
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "restored",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "datalist": "$[{'image': path} for path in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))]",
        "network": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device).eval()",
        "roi_size": roi_size_xyz,
        "overlap": 0.25,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
                # (value - a_min) / (a_max - a_min) * (b_max - b_min) + b_min = (value - offset) / scale.
                {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": mapping.offset,
                 "a_max": unit_high, "b_min": 0.0, "b_max": 1.0, "clip": False},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        # A factory (_mode_ callable): "run" passes each image's window, roi_size shrunk to the image along
        # shorter axes as medgan does, because padding the input instead changes the result near its border.
        "inferer": {"_target_": "SlidingWindowInferer", "_mode_": "callable", "sw_batch_size": 1,
                    "overlap": "@overlap", "mode": "gaussian", "sigma_scale": 0.125,
                    "padding_mode": "replicate"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "ScaleIntensityRanged", "keys": "pred", "a_min": 0.0, "a_max": 1.0,
                 "b_min": mapping.offset, "b_max": unit_high, "clip": False},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
                 "output_postfix": "@output_postfix", "output_dtype": "$numpy.float32", "resample": False,
                 "separate_folder": False, "print_log": False},
            ],
        },
        "initialize": ["$import numpy", "$torch.set_grad_enabled(False)"],
        "run": ["$[@postprocessing({'pred': @inferer(roi_size=[min(window, size) for window, size in "
                "zip(@roi_size, item['image'].shape[1:])])(item['image'][None].to(@device), @network)[0].cpu()}) "
                "for item in @dataset]"],
        "finalize": [],
    }


def medgan_inference_config() -> dict[str, Any]:
    """Return the ``inference.json`` content of a bundle that restores with ``medgan.transforms.Restoredd``."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "restored",
        "device": "auto",
        "datalist": "$[{'image': path} for path in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))]",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "medgan.transforms.Restoredd", "keys": "image", "device": "@device",
                 "model": "$os.path.join(@bundle_root, 'models', 'model.safetensors')"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "postprocessing": {
            "_target_": "SaveImaged", "keys": "image", "output_dir": "@output_dir",
            "output_postfix": "@output_postfix", "output_dtype": "$numpy.float32", "resample": False,
            "separate_folder": False, "print_log": False,
        },
        "initialize": ["$import numpy"],
        "run": ["$[@postprocessing(item) for item in @dataset]"],
        "finalize": [],
    }


def metadata(card: ModelCard, mapping: IntensityMapping, roi_size_xyz: list[int]) -> dict[str, Any]:
    """Return the ``metadata.json`` content: MONAI's bundle fields plus the medgan card."""
    unit = mapping.unit or "arbitrary units"
    return {
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medgan {medgan.__version__}"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": _version("numpy"),
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": card.name or "medgan model",
        "task": card.task,
        "description": (f"medgan {card.task} generator {card.network['name']}. Input and output in {unit}; the "
                        f"network sees (value - {mapping.offset:g}) / {mapping.scale:g}. Default sliding window "
                        f"{roi_size_xyz} voxels along X, Y, Z."),
        "authors": "medgan",
        "copyright": "See the medgan project's license.",
        "intended_use": card.notes or "Research use; see the medgan model card in docs/medgan_card.json.",
        "data_source": card.training_data,
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": unit, "modality": get_task(card.task).modality, "num_channels": 1,
                "spatial_shape": roi_size_xyz, "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {"0": "image"},
            }},
            "outputs": {"pred": {
                "type": "image", "format": unit, "num_channels": 1, "spatial_shape": roi_size_xyz,
                "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": {"0": "image"},
            }},
        },
        "medgan_card": json.loads(card.to_json()),
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def export_monai_bundle(model: str | Path, output: str | Path, *, overwrite: bool = False,
                        tolerance: float = DEFAULT_TOLERANCE, engine: str = "medgan") -> ExportResult:
    """Write ``model`` as a MONAI bundle folder ``output``.

    With ``engine="medgan"`` the folder contains ``models/model.safetensors`` with its card ``models/model.json``
    and an ``inference.json`` that restores each image with ``medgan.transforms.Restoredd``, so its output is
    ``medgan infer``'s. With ``engine="monai"`` it uses MONAI components only, as follows.

    ``configs/inference.json`` reads every ``*.nii*`` file in ``dataset_dir``, restores it with a sliding window
    of the model's default size (the ``roi_size`` entry, along X, Y, Z) and writes ``NAME_restored.nii.gz``
    into ``output_dir``. The TorchScript module is compared with PyTorch on random patches of two sizes, in
    MONAI's layout, before the folder is moved into place. The medgan card is in ``docs/medgan_card.json`` and
    in ``metadata.json`` under ``medgan_card``.

    Raises:
        ValueError: if the model's intensity map or output scale cannot be expressed in a MONAI config (see
            `check_bundle_supported`), or for a bad tolerance.
        ExportCheckError: if the TorchScript module does not match PyTorch; nothing is written then.
        FileExistsError: if ``output`` exists and ``overwrite`` is false, or if it is a folder that is not a
            bundle medgan exported (see `is_medgan_bundle`), whatever ``overwrite`` is.
        OutputNotWritableError: if the folder that contains ``output`` cannot be written to.
    """
    output = Path(output)
    tolerance = check_tolerance(tolerance)
    if engine not in BUNDLE_ENGINES:
        raise ValueError(f"engine must be one of {', '.join(BUNDLE_ENGINES)}, got {engine!r}.")
    check_bundle_replaceable(output)
    check_outputs_free([output], overwrite)
    if output.parent.is_dir():
        check_folder_writable(output.parent)
    network, card = load_network(model)
    if engine == "medgan":
        return _export_medgan_bundle(network, card, output, overwrite)
    mapping = check_bundle_supported(card)
    roi_dhw = Restorer(network, card, device="cpu").default_roi()
    roi_size_xyz = [int(n) for n in reversed(roi_dhw)]

    wrapped = MonaiLayoutNetwork(network).eval()
    # Check patches in MONAI's (B, C, X, Y, Z) order.
    shapes = [(1, 1, *reversed(CHECK_PATCH_DHW)), (2, 1, *reversed(SECOND_CHECK_PATCH_DHW))]
    traced = trace_network(wrapped, torch.zeros(shapes[0]))
    with atomic_output(output, overwrite=overwrite, directory=True) as folder:
        for relative in (BUNDLE_MODEL, BUNDLE_INFERENCE, BUNDLE_METADATA, BUNDLE_CARD):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(folder / BUNDLE_MODEL))
        reloaded = torch.jit.load(str(folder / BUNDLE_MODEL), map_location="cpu")
        differences = check_traced(wrapped, reloaded, shapes, tolerance, "bundle's TorchScript module")
        (folder / BUNDLE_INFERENCE).write_text(
            json.dumps(inference_config(card, mapping, roi_size_xyz), indent=2) + "\n", encoding="utf-8")
        (folder / BUNDLE_METADATA).write_text(
            json.dumps(metadata(card, mapping, roi_size_xyz), indent=2) + "\n", encoding="utf-8")
        (folder / BUNDLE_CARD).write_text(card.to_json(), encoding="utf-8")
    logger.info("Wrote MONAI bundle %s", output)
    return ExportResult(format="monai-bundle", path=output, card_path=output / BUNDLE_CARD,
                        max_abs_difference=differences, tolerance=tolerance)


def _export_medgan_bundle(network: torch.nn.Module, card: ModelCard, output: Path, overwrite: bool) -> ExportResult:
    """Write a bundle whose inference config restores with ``medgan.transforms.Restoredd``."""
    from medgan.models.files import save_model

    mapping = IntensityMapping.from_dict(card.intensity)
    roi_size_xyz = [int(n) for n in reversed(Restorer(network, card, device="cpu").default_roi())]
    description = metadata(card, mapping, roi_size_xyz)
    description["required_packages_version"]["medgan"] = medgan.__version__
    description["description"] += " Restored by medgan.transforms.Restoredd, so medgan must be installed."
    with atomic_output(output, overwrite=overwrite, directory=True) as folder:
        for relative in (BUNDLE_WEIGHTS, BUNDLE_INFERENCE, BUNDLE_METADATA, BUNDLE_CARD):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        save_model(network, card, folder / BUNDLE_WEIGHTS)
        (folder / BUNDLE_INFERENCE).write_text(json.dumps(medgan_inference_config(), indent=2) + "\n",
                                               encoding="utf-8")
        (folder / BUNDLE_METADATA).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        (folder / BUNDLE_CARD).write_text(card.to_json(), encoding="utf-8")
    logger.info("Wrote MONAI bundle %s (medgan engine)", output)
    return ExportResult(format="monai-bundle", path=output, card_path=output / BUNDLE_CARD,
                        max_abs_difference={}, tolerance=0.0)
