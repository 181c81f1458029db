"""Model files: safetensors weights plus a JSON `ModelCard`, loaded without executing any code."""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file

from medgan.io.atomic import atomic_output
from medgan.models.card import ModelCard
from medgan.networks import build_network

logger = logging.getLogger(__name__)

SHIPPED_PACKAGE = "medgan.models.shipped"
# Suffixes of PyTorch's own files (torch.save checkpoints and TorchScript archives), never loaded as a model.
PICKLE_SUFFIXES = (".pt", ".pth")
# Suffixes of the files that share one JSON card: the model file and its exports (ldct.safetensors, ldct.ts,
# ldct.pt and ldct.onnx all use ldct.json).
CARD_SHARING_SUFFIXES = (".safetensors", ".ts", ".pt", ".onnx")


def shipped_model_names() -> list[str]:
    """Names of the models shipped inside the package."""
    folder = resources.files(SHIPPED_PACKAGE)
    return sorted(entry.name[: -len(".safetensors")] for entry in folder.iterdir()
                  if entry.name.endswith(".safetensors"))


def resolve_model_path(name_or_path: str | Path) -> Path:
    """Return the weights path for a shipped model name or a path to ``*.safetensors``.

    Raises:
        FileNotFoundError: if neither a shipped model nor an existing file matches; lists the shipped names.
        ValueError: if ``name_or_path`` is an existing ``.pt`` or ``.pth`` file, such as a training checkpoint.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".json":
        candidate = candidate.with_suffix(".safetensors")
    if candidate.suffix.lower() in PICKLE_SUFFIXES and candidate.is_file():
        raise ValueError(
            f"{candidate} is a PyTorch {candidate.suffix} file, such as a training checkpoint, not a medgan model "
            "file. medgan loads models only from .safetensors files with a JSON card and never unpickles .pt "
            "files. Export the training run with medgan export RUN_DIR -o model.safetensors, then pass "
            "model.safetensors."
        )
    if candidate.is_file():
        return candidate
    shipped = resources.files(SHIPPED_PACKAGE) / f"{name_or_path}.safetensors"
    if shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(
        f"Model {str(name_or_path)!r} not found: it is neither an existing .safetensors file nor a shipped model "
        f"(shipped models: {', '.join(shipped_model_names()) or 'none'})."
    )


def card_path_for(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


def exports_sharing_card(card_path: Path, output: Path) -> list[Path]:
    """Return the existing files other than ``output`` that share ``card_path``: its stem with an export suffix."""
    return [card_path.with_suffix(suffix) for suffix in CARD_SHARING_SUFFIXES
            if card_path.with_suffix(suffix) != output and card_path.with_suffix(suffix).is_file()]


def check_card_not_shared(card_path: Path, new_card_json: str, output: Path) -> None:
    """Raise FileExistsError when writing ``new_card_json`` to ``card_path`` would change the card of another export.

    ``ldct.ts`` and ``ldct.onnx`` share ``ldct.json``, so exporting another model to ``ldct.onnx`` would make the
    card describe the wrong model for ``ldct.ts``. ``--overwrite`` does not allow this.
    """
    if not card_path.is_file():
        return
    try:
        unchanged = card_path.read_text(encoding="utf-8") == new_card_json
    except (OSError, UnicodeDecodeError):
        unchanged = False
    if unchanged:
        return
    others = exports_sharing_card(card_path, output)
    if others:
        raise FileExistsError(
            f"The card {card_path} describes a different model, and {', '.join(str(path) for path in others)} "
            f"still uses it, so writing {output} would leave that file with the wrong card (even with --overwrite). "
            "Choose another output name, for example with the model's name in it."
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def network_weights_sha256(network: torch.nn.Module) -> str:
    """Return the SHA-256 of ``network``'s weights serialised as safetensors, which orders tensors by name.

    It hashes the tensors alone, so it differs from a card's ``weights_sha256``, the hash of the model file.
    """
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in network.state_dict().items()}
    return hashlib.sha256(save(tensors)).hexdigest()


def save_model(network: torch.nn.Module, card: ModelCard, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``network``'s weights to ``path`` (``.safetensors``) and ``card`` beside it (``.json``).

    Both files are written atomically; the card records the weights' SHA-256.

    Raises:
        ValueError: if ``path`` does not end in ``.safetensors``.
        FileExistsError: if either file exists and ``overwrite`` is false, or if the card differs from the one
            beside ``path`` and another export with the same stem (``.ts``, ``.pt``, ``.onnx``) still uses that card.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Model path must end in .safetensors, got {str(path)!r}.")
    card_path = card_path_for(path)
    if not overwrite:
        for existing in (path, card_path):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; pass --overwrite (overwrite=True) to replace it.")
    tensors = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    with atomic_output(path, overwrite=overwrite) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "medgan", "task": card.task})
        card.weights_sha256 = sha256_of(Path(temporary))
        # Checked once the card is complete, so exporting the same weights again keeps working.
        check_card_not_shared(card_path, card.to_json(), path)
    with atomic_output(card_path, overwrite=overwrite) as temporary:
        Path(temporary).write_text(card.to_json(), encoding="utf-8")
    logger.debug("Wrote model %s and its card %s", path, card_path)
    return path


def load_model_files(name_or_path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """Build the network of a model file and load its weights; nothing is unpickled.

    Raises:
        FileNotFoundError: if the weights or the card are missing.
        ValueError: if the card is invalid, the weights' checksum differs from the card's, or the weights do not
            fit the network the card describes.
    """
    weights_path = resolve_model_path(name_or_path)
    card_path = card_path_for(weights_path)
    if not card_path.is_file():
        raise FileNotFoundError(f"Model card {card_path} not found; a model file needs its .json card beside it.")
    card = ModelCard.read(card_path)
    if not card.weights_sha256:
        raise ValueError(f"Model card {card_path} has no weights_sha256, so its weights cannot be verified; "
                         "write model files with medgan export or medgan.models.save_model.")
    if card.weights_sha256:
        actual = sha256_of(weights_path)
        if actual != card.weights_sha256:
            raise ValueError(
                f"Weights {weights_path} have SHA-256 {actual}, but the card {card_path} expects "
                f"{card.weights_sha256}: the files do not belong together or one is damaged. Export the model again "
                "(medgan export RUN_DIR -o MODEL.safetensors writes both files), or use the card that was written "
                "with these weights."
            )
    network = build_network(card.network["name"], card.network.get("kwargs", {}))
    try:
        state = load_file(str(weights_path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError for damaged files
        raise ValueError(f"{weights_path} is not a valid safetensors file: {error}. If it is a PyTorch pickle or "
                         "checkpoint renamed to .safetensors, note that medgan never loads those as a model; "
                         "export the training run with medgan export RUN_DIR -o model.safetensors.") from error
    try:
        missing, unexpected = network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(
            f"Weights {weights_path} do not fit network {card.network['name']!r} with the card's arguments "
            f"{card.network.get('kwargs', {})}: {error}"
        ) from error
    if missing or unexpected:
        raise ValueError(
            f"Weights {weights_path} do not fit network {card.network['name']!r}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
        )
    network.to(device).eval()
    return network, card
