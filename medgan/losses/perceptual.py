"""Perceptual losses: distances between features of frozen, locally stored networks.

Every loss takes ``(B, C, D, H, W)`` prediction and target in network units and returns a float32 scalar: the
weighted sum over the chosen layers of the mean L1 or squared distance between the two inputs' features. The
networks are frozen (``eval``, ``requires_grad`` off), stay in eval mode when the loss is set to train, move
with ``.to(device)``, and run in float32 with autocast disabled. No weights are ever downloaded: each loss reads
the file given by its ``weights`` kwarg.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medgan.losses.feature_networks import (
    MEDICALNET_DEPTHS,
    MEDICALNET_LAYERS,
    MedicalNetResNet3D,
    PerceptualAutoencoder3D,
    VGGFeatures,
    vgg_layer_names,
)
from medgan.losses.weights import (
    existing_weights_path,
    load_exact_state,
    read_state_dict,
    verify_sha256,
)

logger = logging.getLogger(__name__)

AUTOENCODER_FORMAT = "medgan-perceptual-autoencoder"

# ImageNet statistics that torchvision's VGG weights expect after scaling RGB to [0, 1].
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_DISTANCES = {"l1": F.l1_loss, "mse": F.mse_loss}


class _FeatureDistanceLoss(torch.nn.Module):
    """Shared part of the perceptual losses: the frozen network, the distance and the per-layer weights.

    Subclasses set ``self.network`` through `_set_network` and implement `_layer_distances`.
    """

    name = "perceptual"

    def __init__(self, n_layers: int, distance: str, layer_weights: list[float] | None) -> None:
        super().__init__()
        if distance not in _DISTANCES:
            raise ValueError(f"{self.name}: distance must be one of {', '.join(_DISTANCES)}, got {distance!r}.")
        self.distance = distance
        if layer_weights is None:
            layer_weights = [1.0 / n_layers] * n_layers
        if not isinstance(layer_weights, (list, tuple)) or len(layer_weights) != n_layers or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                for w in layer_weights):
            raise ValueError(f"{self.name}: layer_weights must list {n_layers} non-negative numbers, one per chosen "
                             f"layer, got {layer_weights!r}.")
        self.layer_weights = [float(w) for w in layer_weights]

    def _set_network(self, network: torch.nn.Module) -> None:
        network.eval()
        network.requires_grad_(False)
        self.network = network

    def train(self, mode: bool = True) -> "_FeatureDistanceLoss":
        super().train(mode)
        self.network.eval()  # batch-norm statistics and the features stay fixed
        return self

    def _compare(self, prediction_features: list[torch.Tensor], target_features: list[torch.Tensor]) -> list[torch.Tensor]:
        metric = _DISTANCES[self.distance]
        return [metric(p, t) for p, t in zip(prediction_features, target_features)]

    def _layer_distances(self, prediction: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"{self.name}: prediction and target must have the same shape, got "
                             f"{tuple(prediction.shape)} and {tuple(target.shape)}.")
        if prediction.ndim != 5:
            raise ValueError(f"{self.name}: expected (B, C, D, H, W) tensors, got shape {tuple(prediction.shape)}.")
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            distances = self._layer_distances(prediction.float(), target.float().detach())
            total = prediction.new_zeros((), dtype=torch.float32)
            for weight, distance in zip(self.layer_weights, distances):
                total = total + weight * distance
            return total


def _check_choices(loss_name: str, kwarg: str, values: Any, choices: list[Any]) -> list[Any]:
    """Return ``values`` as a list after checking that it is non-empty and contains only ``choices``."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{loss_name}: {kwarg} must be a non-empty list, got {values!r}.")
    unknown = [value for value in values if value not in choices or isinstance(value, bool)]
    if unknown:
        raise ValueError(f"{loss_name}: invalid value(s) {unknown!r} in kwarg {kwarg}; choose from "
                         f"{', '.join(map(str, choices))}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{loss_name}: kwarg {kwarg} lists a value twice: {values!r}.")
    return list(values)


# ---------------------------------------------------------------------------------------------------------


def read_autoencoder_card(weights_path: Path) -> dict[str, Any]:
    """Read the JSON card beside an autoencoder's weights (``FILE.json`` for ``FILE.safetensors``).

    Raises:
        FileNotFoundError: if the card is missing.
        ValueError: if it is not a perceptual-autoencoder card.
    """
    card_path = weights_path.with_suffix(".json")
    if not card_path.is_file():
        raise FileNotFoundError(f"perceptual-ae: card {card_path} not found; the weights of medgan "
                                "pretrain-perceptual need the JSON card written beside them.")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"perceptual-ae: card {card_path} is not valid JSON: {error}") from error
    if not isinstance(card, dict) or card.get("format") != AUTOENCODER_FORMAT:
        raise ValueError(f"perceptual-ae: {card_path} is not a card of medgan pretrain-perceptual (expected "
                         f"format {AUTOENCODER_FORMAT!r}).")
    for key in ("architecture_kwargs", "sha256"):
        if key not in card:
            raise ValueError(f"perceptual-ae: card {card_path} lacks the field {key!r}.")
    return card


class AutoencoderPerceptualLoss(_FeatureDistanceLoss):
    """Feature distance through the encoder of a `PerceptualAutoencoder3D` from ``medgan pretrain-perceptual``.

    Args:
        weights: ``.safetensors`` file with its JSON card beside it. The card's SHA-256 is always checked.
        sha256: expected SHA-256 of the weights file, checked when given.
        layers: encoder levels to compare (0 is the full-resolution level); all levels by default.
        layer_weights: weight per chosen level; ``1 / len(layers)`` each by default.
        distance: ``"l1"`` or ``"mse"`` between feature maps.

    Raises:
        FileNotFoundError: if the weights or the card are missing.
        ValueError: for a checksum mismatch, weights that do not fit the card, or invalid arguments.
    """

    name = "perceptual-ae"

    def __init__(self, weights: str | Path | None = None, sha256: str | None = None, layers: list[int] | None = None,
                 layer_weights: list[float] | None = None, distance: str = "l1") -> None:
        path = existing_weights_path(self.name, weights)
        card = read_autoencoder_card(path)
        verify_sha256(self.name, path, card["sha256"], source=f"the card {path.with_suffix('.json')}")
        verify_sha256(self.name, path, sha256)
        try:
            network = PerceptualAutoencoder3D(**card["architecture_kwargs"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.name}: the card's architecture_kwargs {card['architecture_kwargs']!r} are "
                             f"invalid: {error}") from error
        levels = list(range(len(network.channels)))
        layers = _check_choices(self.name, "layers", levels if layers is None else layers, levels)
        super().__init__(len(layers), distance, layer_weights)
        load_exact_state(self.name, network, read_state_dict(self.name, path), path)
        self._set_network(network)
        self.layers = layers
        logger.info("perceptual-ae: loaded %s (levels %s, %d training steps)", path, layers, card.get("steps", -1))

    def _layer_distances(self, prediction: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        channels = self.network.in_channels
        if prediction.shape[1] != channels:
            raise ValueError(f"{self.name}: the autoencoder takes {channels} channel(s), got {prediction.shape[1]}.")
        with torch.no_grad():
            target_features = self.network.encode(target)
        prediction_features = self.network.encode(prediction)
        return self._compare([prediction_features[i] for i in self.layers], [target_features[i] for i in self.layers])


# ---------------------------------------------------------------------------------------------------------


class VGG25DPerceptualLoss(_FeatureDistanceLoss):
    """2.5D VGG feature distance: 2D slices along each chosen axis go through a torchvision-layout VGG.

    Each slice is replicated to 3 channels after a linear intensity map that sends ``window[0]`` to 0 and
    ``window[1]`` to 1, followed by ImageNet normalization (what torchvision's VGG weights expect). The map does
    not clip, so voxels outside the window keep their gradients. The default window ``[-1, 1]`` in network units
    is ``[-1024, 1024]`` HU for ldct (network units are HU / 1024). A layer's distance is the mean over the axes.

    Args:
        weights: the weights file (``.pth``/``.pt`` read with ``torch.load(weights_only=True)``, or
            ``.safetensors``). It contains a torchvision VGG state dict (``features.N.*``; ``classifier.*`` keys are
            ignored) or the bare features stack (``N.*``). It may stop after the deepest chosen layer.
        sha256: required SHA-256 of the weights file.
        architecture: ``"vgg16"`` or ``"vgg19"``.
        layers: layer names such as ``relu1_2``, ``relu2_2``, ``relu3_3`` (torchvision indices of
            ``features``); ``[relu1_2, relu2_2, relu3_3]`` by default.
        layer_weights: weight per layer; ``1 / len(layers)`` each by default.
        axes: volume axes to slice along, 0 = D, 1 = H, 2 = W; all three by default.
        window: ``[low, high]`` in network units mapped to ``[0, 1]``.
        distance: ``"l1"`` or ``"mse"``.

    Raises:
        FileNotFoundError: if the weights file is missing.
        ValueError: if ``sha256`` is missing or differs, the file does not fit the architecture, or an argument
            is invalid.
    """

    name = "perceptual-vgg25d"

    def __init__(self, weights: str | Path | None = None, sha256: str | None = None, architecture: str = "vgg16",
                 layers: list[str] | None = None, layer_weights: list[float] | None = None,
                 axes: list[int] | None = None, window: list[float] | None = None, distance: str = "l1") -> None:
        path = existing_weights_path(self.name, weights)
        if sha256 is None:
            raise ValueError(f"{self.name}: the kwarg sha256 (SHA-256 of {path}) is required, so that a damaged or "
                             f"different file is detected. Compute it with: sha256sum {path}")
        if architecture not in ("vgg16", "vgg19"):
            raise ValueError(f"{self.name}: architecture must be 'vgg16' or 'vgg19', got {architecture!r}.")
        names = vgg_layer_names(architecture)
        layers = _check_choices(self.name, "layers", ["relu1_2", "relu2_2", "relu3_3"] if layers is None else layers,
                                list(names))
        axes = _check_choices(self.name, "axes", [0, 1, 2] if axes is None else axes, [0, 1, 2])
        window = [-1.0, 1.0] if window is None else window
        if (not isinstance(window, (list, tuple)) or len(window) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
                or not window[0] < window[1]):
            raise ValueError(f"{self.name}: window must be [low, high] in network units with low < high, "
                             f"got {window!r}.")
        super().__init__(len(layers), distance, layer_weights)
        verify_sha256(self.name, path, sha256)
        network = VGGFeatures(architecture)
        deepest = max(names[layer][0] for layer in layers)
        network.features = network.features[:deepest + 1]
        load_exact_state(self.name, network, self._features_state(read_state_dict(self.name, path), deepest), path)
        self._set_network(network)
        self.layers = layers
        self.indices = [names[layer][0] for layer in layers]
        self.min_slice_size = 2 ** max(names[layer][1] for layer in layers)
        self.axes = axes
        self.window = (float(window[0]), float(window[1]))
        self.register_buffer("imagenet_mean", torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("imagenet_std", torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)
        logger.info("perceptual-vgg25d: loaded %s %s (layers %s)", architecture, path, layers)

    def _features_state(self, state: dict[str, torch.Tensor], deepest: int) -> dict[str, torch.Tensor]:
        """Keep the ``features.N`` entries up to ``deepest``, after removing a ``module.`` prefix."""
        state = {key.removeprefix("module."): value for key, value in state.items()}
        if any(key.startswith("features.") for key in state):
            state = {key: value for key, value in state.items() if not key.startswith("classifier.")}
        else:
            state = {f"features.{key}": value for key, value in state.items()}
        selected = {}
        for key, value in state.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) > deepest:
                continue  # layers deeper than the deepest chosen one are not built
            selected[key] = value
        return selected

    def _slices(self, volume: torch.Tensor, axis: int) -> torch.Tensor:
        """Return the 2D slices of ``(N, 1, D, H, W)`` along ``axis`` as ``(N * size, 1, rows, columns)``."""
        moved = volume.movedim(2 + axis, 1)  # (N, S, 1, rows, columns)
        return moved.reshape(-1, 1, *moved.shape[3:])

    def _prepare(self, slices: torch.Tensor) -> torch.Tensor:
        low, high = self.window
        scaled = (slices - low) / (high - low)
        return (scaled.expand(-1, 3, -1, -1) - self.imagenet_mean) / self.imagenet_std

    def _layer_distances(self, prediction: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        # Channels are compared independently, each as a grey-level volume.
        prediction = prediction.reshape(-1, 1, *prediction.shape[2:])
        target = target.reshape(-1, 1, *target.shape[2:])
        sums = [prediction.new_zeros(()) for _ in self.layers]
        for axis in self.axes:
            in_plane = [size for dim, size in enumerate(prediction.shape[2:]) if dim != axis]
            if min(in_plane) < self.min_slice_size:
                raise ValueError(
                    f"{self.name}: slices along axis {axis} are {in_plane[0]} x {in_plane[1]} voxels, but layers "
                    f"{self.layers} need at least {self.min_slice_size} per side (one halving per pooling). Choose "
                    f"shallower layers, drop axis {axis} from the kwarg axes, or use larger patches.")
            with torch.no_grad():
                target_features = self.network.extract(self._prepare(self._slices(target, axis)), self.indices)
            prediction_features = self.network.extract(self._prepare(self._slices(prediction, axis)), self.indices)
            for index, distance in enumerate(self._compare(prediction_features, target_features)):
                sums[index] = sums[index] + distance
        return [total / len(self.axes) for total in sums]


# ---------------------------------------------------------------------------------------------------------


class MedicalNetPerceptualLoss(_FeatureDistanceLoss):
    """3D feature distance through a MedicalNet ResNet-10/18 encoder.

    MedicalNet was trained on volumes normalized to zero mean and unit standard deviation. By default each
    sample of both inputs is normalized with the target's mean and standard deviation (floored at 1e-3
    network units), computed over the patch. ``input_mean`` and ``input_std`` replace that with a fixed map.

    Args:
        weights: the MedicalNet weights file, for example ``resnet_10_23dataset.pth`` of the MedicalNet release
            (read with ``torch.load(weights_only=True)``; ``.safetensors`` also works). Keys may carry the
            ``module.`` prefix of ``DataParallel`` and may sit under ``state_dict``. ``conv_seg.*`` keys (the
            segmentation head) are ignored.
        sha256: expected SHA-256 of the weights file, checked when given.
        depth: 10 or 18; read from the file's keys when ``None``.
        shortcut: ``"A"`` or ``"B"``; read from the file's keys (``downsample`` entries mean B) when ``None``.
        layers: names from ``conv1``, ``layer1`` ... ``layer4``; ``[layer1, layer2]`` by default.
        layer_weights: weight per layer; ``1 / len(layers)`` each by default.
        input_mean, input_std: fixed normalization ``(x - input_mean) / input_std`` in network units.
        distance: ``"l1"`` or ``"mse"``.

    Raises:
        FileNotFoundError: if the weights file is missing.
        ValueError: for a checksum mismatch, keys that do not fit the architecture, or invalid arguments.
    """

    name = "perceptual-medicalnet"

    def __init__(self, weights: str | Path | None = None, sha256: str | None = None, depth: int | None = None,
                 shortcut: str | None = None, layers: list[str] | None = None,
                 layer_weights: list[float] | None = None, input_mean: float | None = None,
                 input_std: float | None = None, distance: str = "l1") -> None:
        path = existing_weights_path(self.name, weights)
        layers = _check_choices(self.name, "layers", ["layer1", "layer2"] if layers is None else layers,
                                list(MEDICALNET_LAYERS))
        if (input_mean is None) != (input_std is None):
            raise ValueError(f"{self.name}: give both input_mean and input_std, or neither, got {input_mean!r} and "
                             f"{input_std!r}.")
        if input_std is not None and not (isinstance(input_std, (int, float)) and input_std > 0):
            raise ValueError(f"{self.name}: input_std must be a positive number, got {input_std!r}.")
        super().__init__(len(layers), distance, layer_weights)
        verify_sha256(self.name, path, sha256)
        state = {key.removeprefix("module."): value for key, value in read_state_dict(self.name, path).items()
                 if not key.removeprefix("module.").startswith("conv_seg.")}
        depth = self._detected_depth(state) if depth is None else depth
        if depth not in MEDICALNET_DEPTHS:
            raise ValueError(f"{self.name}: depth must be 10 or 18, got {depth!r}.")
        if shortcut is None:
            shortcut = "B" if any(".downsample." in key for key in state) else "A"
        network = MedicalNetResNet3D(depth=depth, shortcut=shortcut)
        load_exact_state(self.name, network, state, path)
        self._set_network(network)
        self.layers = layers
        self.input_mean = None if input_mean is None else float(input_mean)
        self.input_std = None if input_std is None else float(input_std)
        logger.info("perceptual-medicalnet: loaded ResNet-%d (shortcut %s) from %s (layers %s)", depth, shortcut,
                    path, layers)

    @staticmethod
    def _detected_depth(state: dict[str, torch.Tensor]) -> int:
        return 18 if "layer1.1.conv1.weight" in state else 10

    def _normalize(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_mean is not None:
            return (prediction - self.input_mean) / self.input_std, (target - self.input_mean) / self.input_std
        dims = tuple(range(1, target.ndim))
        mean = target.mean(dim=dims, keepdim=True)
        std = target.std(dim=dims, keepdim=True, unbiased=False).clamp_min(1e-3)
        return (prediction - mean) / std, (target - mean) / std

    def _layer_distances(self, prediction: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        # Channels are compared independently, each as a grey-level volume.
        prediction = prediction.reshape(-1, 1, *prediction.shape[2:])
        target = target.reshape(-1, 1, *target.shape[2:])
        prediction, target = self._normalize(prediction, target)
        with torch.no_grad():
            target_features = self.network.extract(target, self.layers)
        prediction_features = self.network.extract(prediction, self.layers)
        return self._compare(prediction_features, target_features)
