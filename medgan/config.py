"""Typed training configuration, loaded from YAML, validated, and overridable with ``key.path=value`` strings.

Configs are data only: YAML is parsed with ``yaml.safe_load`` and nothing in a config is evaluated.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medgan.tasks import Task, get_task


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key path and the value."""


@dataclass
class DataConfig:
    """Sources of training volumes and the patch-sampling settings.

    ``mode: simulate`` reads high-quality volumes (``volumes``: files or folders) and degrades each patch on the
    fly: low-dose CT noise for ``ldct``, thick slices (and optional Rician noise) for ``mri-sr``.
    ``mode: paired`` reads a CSV or JSON ``manifest`` with ``low`` and ``high`` paths and an optional
    ``patient``. ``mode: paired-folders`` finds one full-dose and one low-dose series in each patient folder
    under ``root``.
    """

    mode: Literal["simulate", "paired", "paired-folders"] = "simulate"
    volumes: list[str] = field(default_factory=list)
    manifest: str | None = None
    root: str | None = None
    full_dose_patterns: list[str] = field(default_factory=lambda: ["*full*", "*FD*", "*normal*"])
    low_dose_patterns: list[str] = field(default_factory=lambda: ["*low*", "*QD*", "*quarter*"])
    validation_volumes: list[str] = field(default_factory=list)
    validation_manifest: str | None = None
    validation_fraction: float = 0.0
    patch_size: list[int] = field(default_factory=lambda: [16, 64, 64])
    dose_fraction_range: list[float] = field(default_factory=lambda: [0.1, 0.5])
    validation_dose_fraction: float = 0.25
    photons_per_ray: float = 1.0e5
    electronic_noise_std_photons: float = 5.0
    n_views: int = 720
    simulation: Literal["exact", "noise-bank"] = "exact"
    noise_bank_size: int = 4
    thin_patch_probability: float = 0.2
    flips: bool = True
    slice_profile: Literal["boxcar", "gaussian"] = "boxcar"
    rician_snr_range: list[float] = field(default_factory=list)
    validation_rician_snr: float | None = None


@dataclass
class NetworkSpec:
    """A network by registry name with its constructor arguments."""

    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossTerm:
    """One non-adversarial generator loss term: a name from `medgan.losses.loss_names`, its weight and kwargs."""

    name: str = ""
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


# Losses that need no kwargs, so loss.content can name them.
_SIMPLE_CONTENT_LOSSES = ("l1", "mse", "ssim3d")


@dataclass
class LossConfig:
    """Weights of the generator's loss terms and of the critic's gradient penalty.

    The generator's non-adversarial loss is the weighted sum of ``terms``. A config without ``terms`` gets one
    term, ``content`` (default ``l1``) with weight ``content_weight`` (default 1), as configs before ``terms``
    existed did. Giving both ``terms`` and ``content``/``content_weight`` is an error.
    """

    adversarial_weight: float = 1.0e-3
    content: str | None = None
    content_weight: float | None = None
    terms: list[LossTerm] = field(default_factory=list)
    gradient_penalty_weight: float = 10.0

    def resolved_terms(self) -> list[LossTerm]:
        """Return ``terms``, or the single term that ``content`` and ``content_weight`` define."""
        if self.terms:
            return list(self.terms)
        weight = 1.0 if self.content_weight is None else self.content_weight
        return [LossTerm(name=self.content or "l1", weight=weight)]


@dataclass
class TrainConfig:
    """Optimisation schedule."""

    steps: int = 2000
    batch_size: int = 4
    n_critic: int = 4
    warmup_steps: int = 200
    lr_generator: float = 1.0e-4
    lr_critic: float = 1.0e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    validate_every: int = 200
    checkpoint_every: int = 200
    device: str = "auto"
    threads: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    ema_decay: float = 0.999
    lr_schedule: Literal["constant", "cosine"] = "constant"
    preview_every: int = 0
    log_every: int = 10
    tensorboard: bool = True
    init_generator: str | None = None


@dataclass
class Config:
    """A complete training configuration."""

    task: str = "ldct"
    seed: int = 0
    run_dir: str = "runs/ldct"
    data: DataConfig = field(default_factory=DataConfig)
    generator: NetworkSpec = field(default_factory=NetworkSpec)
    critic: NetworkSpec = field(default_factory=NetworkSpec)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}.")
        return _build(annotation, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        options = [a for a in arguments if a is not type(None)]
        return _convert(value, options[0], key)
    if origin is Literal:
        if value not in arguments:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, arguments))}, got {value!r}.")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}.")
        return [_convert(item, arguments[0], f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}.")
        return dict(value)
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e6 (no dot) as a string; accept any text Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}.")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}.")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}.")
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"Unknown config key(s){where}: {', '.join(unknown)}. Valid keys: {', '.join(sorted(names))}.")
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _convert(value, hints[name], key)
    return cls(**values)


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if not (too_low or too_high):
        return
    if high is None:
        rule = f"> {low}" if low_open else f">= {low}"
    else:
        rule = f"in {'(' if low_open else '['}{low}, {high}]"
    raise ConfigError(f"{key} must be {rule}, got {value!r}.")


def validate(config: Config) -> Config:
    """Check value ranges and cross-field rules, and fill network defaults from the task.

    Raises:
        ConfigError: naming the key and the value.
    """
    try:
        task = get_task(config.task)
    except ValueError as error:
        raise ConfigError(f"task: {error}") from error
    # Without a name the section means the task's default network; kwargs given there override its defaults.
    if not config.generator.name:
        config.generator = NetworkSpec(task.generator["name"],
                                       {**task.generator.get("kwargs", {}), **config.generator.kwargs})
    if not config.critic.name:
        config.critic = NetworkSpec(task.critic["name"], {**task.critic.get("kwargs", {}), **config.critic.kwargs})

    data = config.data
    if len(data.patch_size) != 3 or any(n < 1 for n in data.patch_size):
        raise ConfigError(f"data.patch_size must be three positive integers (D, H, W), got {data.patch_size!r}.")
    if len(data.dose_fraction_range) != 2 or not 0 < data.dose_fraction_range[0] <= data.dose_fraction_range[1] <= 1:
        raise ConfigError(
            f"data.dose_fraction_range must be [low, high] with 0 < low <= high <= 1, got {data.dose_fraction_range!r}."
        )
    _check_range("data.validation_dose_fraction", data.validation_dose_fraction, 0, 1, low_open=True)
    _check_range("data.photons_per_ray", data.photons_per_ray, 0, None, low_open=True)
    _check_range("data.electronic_noise_std_photons", data.electronic_noise_std_photons, 0)
    _check_range("data.n_views", data.n_views, 1)
    _check_range("data.noise_bank_size", data.noise_bank_size, 1)
    _check_range("data.thin_patch_probability", data.thin_patch_probability, 0, 1)
    if data.mode == "simulate" and not data.volumes:
        raise ConfigError("data.volumes must list at least one high-quality volume (file or folder) in simulate mode.")
    if data.mode == "paired" and not data.manifest:
        raise ConfigError("data.manifest must name a CSV or JSON file with 'low' and 'high' entries in paired mode.")
    if data.mode == "paired-folders" and not data.root:
        raise ConfigError("data.root must name a folder with one sub-folder per patient in paired-folders mode.")
    _validate_sources(data, task)
    _validate_mri_degradation(data, task)

    _validate_loss(config.loss)

    train = config.train
    for key in ("steps", "batch_size", "n_critic", "validate_every", "checkpoint_every"):
        _check_range(f"train.{key}", getattr(train, key), 1)
    _check_range("train.warmup_steps", train.warmup_steps, 0)
    _check_range("train.ema_decay", train.ema_decay, 0, 1)
    _check_range("train.preview_every", train.preview_every, 0)
    _check_range("train.log_every", train.log_every, 1)
    if train.ema_decay == 1:
        raise ConfigError("train.ema_decay must be below 1 (1 would freeze the average), got 1.")
    _check_range("train.threads", train.threads, 0)
    _check_range("train.lr_generator", train.lr_generator, 0, None, low_open=True)
    _check_range("train.lr_critic", train.lr_critic, 0, None, low_open=True)
    if len(train.betas) != 2 or not all(0 <= b < 1 for b in train.betas):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {train.betas!r}.")
    if train.init_generator is not None and not (isinstance(train.init_generator, str)
                                                 and train.init_generator.strip()):
        raise ConfigError(f"train.init_generator must be a shipped model name or a .safetensors path, got "
                          f"{train.init_generator!r}.")
    return config


def _validate_sources(data: DataConfig, task: Task) -> None:
    """Check the pattern lists and the choice between a held-out validation set and a patient split."""
    for key in ("full_dose_patterns", "low_dose_patterns"):
        patterns = getattr(data, key)
        if data.mode == "paired-folders" and (not patterns or not all(p.strip() for p in patterns)):
            raise ConfigError(f"data.{key} must list at least one non-empty glob pattern, got {patterns!r}.")
    _check_range("data.validation_fraction", data.validation_fraction, 0, 1)
    if data.validation_fraction >= 1:
        raise ConfigError(f"data.validation_fraction must be below 1 so that some patients train, got "
                          f"{data.validation_fraction!r}.")
    explicit = [key for key in ("validation_volumes", "validation_manifest") if getattr(data, key)]
    if data.validation_fraction > 0 and explicit:
        raise ConfigError(f"data.validation_fraction ({data.validation_fraction:g}) and data.{explicit[0]} both "
                          "choose validation patients; keep only one of them.")
    if task.output_scale != (1, 1, 1) and data.mode != "simulate":
        raise ConfigError(f"data.mode must be 'simulate' for task {task.name!r}, whose low-resolution inputs are "
                          f"made from the high-resolution volumes, got {data.mode!r}.")


def _validate_mri_degradation(data: DataConfig, task: Task) -> None:
    """Check the thick-slice settings: the patch must hold whole thick slices of the task's output scale."""
    if len(data.rician_snr_range) not in (0, 2) or (
            data.rician_snr_range and not 0 < data.rician_snr_range[0] <= data.rician_snr_range[1]):
        raise ConfigError(f"data.rician_snr_range must be [] (no noise) or [low, high] with 0 < low <= high, got "
                          f"{data.rician_snr_range!r}.")
    if data.validation_rician_snr is not None:
        _check_range("data.validation_rician_snr", data.validation_rician_snr, 0, None, low_open=True)
    # Tensors are (D, H, W) = (k, j, i), so the factor along k (volume axis 2) applies to patch axis 0.
    factors = tuple(reversed(task.output_scale))
    for axis, (size, factor) in enumerate(zip(data.patch_size, factors)):
        if size % factor:
            raise ConfigError(f"data.patch_size[{axis}] must be a multiple of {factor}, the output scale of task "
                              f"{task.name!r} along that axis, got {size} (data.patch_size {data.patch_size!r}).")


def _validate_loss(loss: LossConfig) -> None:
    """Check the weights, and each term's name, kwargs and weights file, before anything is built."""
    for key in ("adversarial_weight", "gradient_penalty_weight"):
        _check_range(f"loss.{key}", getattr(loss, key), 0)
    if loss.content_weight is not None:
        _check_range("loss.content_weight", loss.content_weight, 0)
    if loss.content is not None and loss.content not in _SIMPLE_CONTENT_LOSSES:
        raise ConfigError(f"loss.content must be one of {', '.join(map(repr, _SIMPLE_CONTENT_LOSSES))}, got "
                          f"{loss.content!r}. Losses that need kwargs (the perceptual ones) go in loss.terms.")
    if loss.terms and (loss.content is not None or loss.content_weight is not None):
        raise ConfigError("loss.terms and loss.content/loss.content_weight both define the generator's content "
                          "loss; keep loss.terms and list the content loss there as a term.")
    # Imported here because the losses import torch, which reading a config does not need otherwise.
    from medgan.losses import loss_kwargs, loss_names

    for index, term in enumerate(loss.resolved_terms()):
        key = f"loss.terms[{index}]"
        if term.name not in loss_names():
            raise ConfigError(f"{key}.name must be one of {', '.join(loss_names())}, got {term.name!r}.")
        if not math.isfinite(term.weight) or term.weight < 0:
            raise ConfigError(f"{key}.weight must be a finite number >= 0, got {term.weight!r}.")
        accepted, required = loss_kwargs(term.name)
        unknown = sorted(set(term.kwargs) - set(accepted))
        if unknown:
            raise ConfigError(f"{key}.kwargs: unknown kwarg(s) {', '.join(unknown)} for loss {term.name!r}; valid "
                              f"kwargs: {', '.join(accepted) or 'none'}.")
        for name in required:
            if term.kwargs.get(name) in (None, ""):
                raise ConfigError(f"{key}.kwargs.{name} is required for loss {term.name!r}.")
        weights = term.kwargs.get("weights")
        if weights is not None and not (isinstance(weights, str) and Path(weights).expanduser().is_file()):
            raise ConfigError(f"{key}.kwargs.weights: weights file {weights!r} of loss {term.name!r} not found. "
                              "Relative paths in a config file are relative to the file's folder.")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"train.steps=100"`` into a key path and a YAML-parsed value.

    Raises:
        ConfigError: if the text has no ``=`` or an empty key.
    """
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key.path=value, for example train.steps=100.")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"Override {text!r} has an empty key.")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"Override {text!r}: the value is not valid YAML ({error}).") from error
    return key.strip().split("."), value


def _apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Override {'.'.join(path)}: {part} is not a mapping.")
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides, and validate.

    Relative paths in a config file (``run_dir`` and those inside ``data``) are resolved against the file's
    folder. Without a file they are relative to the working directory.

    Raises:
        ConfigError: for invalid YAML, unknown keys, wrong types or out-of-range values.
        FileNotFoundError: if ``path`` does not exist.
    """
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Config file {path} not found.")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"Config file {path} is not valid YAML: {error}") from error
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping at the top level.")
        data = loaded or {}
        base = path.resolve().parent
    for text in overrides:
        key_path, value = parse_override(text)
        _apply_override(data, key_path, value)
    config = _build(Config, data, "")
    config.data = _resolve_paths(config.data, base)
    config.loss = _resolve_loss_paths(config.loss, base)
    config.train.init_generator = _resolve_model_reference(config.train.init_generator, base)
    if path is not None and not Path(config.run_dir).expanduser().is_absolute():
        config.run_dir = str(base / config.run_dir)
    return validate(config)


def _resolve_paths(data: DataConfig, base: Path) -> DataConfig:
    def resolve(entry: str) -> str:
        candidate = Path(entry).expanduser()
        return str(candidate if candidate.is_absolute() else (base / candidate))

    data.volumes = [resolve(v) for v in data.volumes]
    data.validation_volumes = [resolve(v) for v in data.validation_volumes]
    if data.manifest:
        data.manifest = resolve(data.manifest)
    if data.root:
        data.root = resolve(data.root)
    if data.validation_manifest:
        data.validation_manifest = resolve(data.validation_manifest)
    return data


def _resolve_model_reference(reference: str | None, base: Path) -> str | None:
    """Resolve a model file path against ``base``; a bare shipped model name stays a name."""
    if not isinstance(reference, str) or not reference.strip():
        return reference
    candidate = Path(reference).expanduser()
    if candidate.is_absolute() or (len(candidate.parts) == 1 and not candidate.suffix):
        return reference
    return str(base / candidate)


def _resolve_loss_paths(loss: LossConfig, base: Path) -> LossConfig:
    for term in loss.terms:
        weights = term.kwargs.get("weights")
        if isinstance(weights, str) and weights.strip():
            candidate = Path(weights).expanduser()
            term.kwargs["weights"] = str(candidate if candidate.is_absolute() else (base / candidate))
    return loss


CONFIG_KEY_MEANINGS: dict[str, str] = {
    "task": "`ldct` or `mri-sr` (see medgan/tasks.py)",
    "seed": "seed of every random choice (split, patches, noise, flips, penalty mixing)",
    "run_dir": "run folder; relative paths in a config file are relative to the file",
    "data.mode": "`simulate` (degrade high-quality volumes on the fly), `paired` (manifest) or `paired-folders` "
                 "(one folder per patient under `data.root`)",
    "data.volumes": "high-quality volumes in simulate mode: NIfTI/NRRD/MHA files, folders of them, or DICOM series "
                    "folders",
    "data.manifest": "CSV or JSON file of `low`/`high` paths with an optional `patient`, in paired mode",
    "data.root": "folder with one sub-folder per patient, in paired-folders mode",
    "data.full_dose_patterns": "glob patterns (case-insensitive) that mark a patient's full-dose series by folder "
                               "name, file name or DICOM SeriesDescription",
    "data.low_dose_patterns": "glob patterns (case-insensitive) that mark a patient's low-dose series",
    "data.validation_volumes": "held-out high-quality volumes in simulate mode",
    "data.validation_manifest": "held-out pairs in paired mode",
    "data.validation_fraction": "share of patients held out for validation when no validation set is listed, in "
                                "[0, 1); the split is seeded, recorded in split.json and reused on resume",
    "data.patch_size": "`[D, H, W]` voxels of the high-quality patch; D is the slice axis",
    "data.dose_fraction_range": "ldct: `[low, high]` in (0, 1], drawn uniformly per patch",
    "data.validation_dose_fraction": "ldct: dose of the fixed validation inputs",
    "data.photons_per_ray": "ldct: incident photons per detector ray at full dose",
    "data.electronic_noise_std_photons": "ldct: electronic noise, photons",
    "data.n_views": "ldct: projection views over 180 degrees",
    "data.simulation": "ldct: `exact` (Poisson noise per patch) or `noise-bank` (precomputed "
                       "Gaussian-approximation noise, much faster)",
    "data.noise_bank_size": "ldct: stored noise realizations per slice in `noise-bank` mode",
    "data.thin_patch_probability": "ldct: share of patches made of one slice repeated along D, so the network "
                                   "also learns single-slice inputs",
    "data.flips": "random flips along each axis",
    "data.slice_profile": "mri-sr: `boxcar` or `gaussian` (FWHM = slice thickness) profile of the thick slices",
    "data.rician_snr_range": "mri-sr: `[]` for no noise, or `[low, high]` SNR of Rician noise drawn per patch",
    "data.validation_rician_snr": "mri-sr: SNR of the validation inputs' Rician noise; empty for none",
    "generator": "`name` in the network registry and its `kwargs`; the task's default when omitted",
    "critic": "`name` in the network registry and its `kwargs`; the task's default when omitted",
    "loss.adversarial_weight": "weight of `-D(low, G(low))` in the generator loss",
    "loss.content": "the single content loss (`l1`, `mse` or `ssim3d`) when `loss.terms` is empty; `l1` when both "
                    "are empty",
    "loss.content_weight": "weight of `loss.content`; 1 when empty",
    "loss.terms": "generator loss terms, each `{name, weight, kwargs}`, summed with the adversarial term; names: "
                  "`l1`, `mse`, `ssim3d`, `perceptual-ae`, `perceptual-vgg25d`, `perceptual-medicalnet` (see "
                  "medgan/losses); a `kwargs.weights` path is relative to the config file",
    "loss.gradient_penalty_weight": "lambda of the gradient penalty",
    "train.steps": "total steps",
    "train.batch_size": "patches per batch (per process)",
    "train.n_critic": "critic updates per generator update",
    "train.warmup_steps": "first steps that train the generator on the content loss alone",
    "train.lr_generator": "Adam learning rate of the generator",
    "train.lr_critic": "Adam learning rate of the critic",
    "train.betas": "Adam betas",
    "train.validate_every": "steps between validations",
    "train.checkpoint_every": "steps between checkpoints",
    "train.device": "`auto`, `cpu` or `cuda`",
    "train.threads": "CPU threads (0 keeps torch's default)",
    "train.precision": "`fp32`, `bf16` or `fp16` autocast (fp16 with loss scaling); the gradient penalty is always "
                       "float32",
    "train.ema_decay": "decay of the generator's moving average, which validation scores and export writes",
    "train.lr_schedule": "`constant` or `cosine` (decay to 0 at `train.steps`)",
    "train.preview_every": "steps between PNG previews of a validation slice (0: none)",
    "train.log_every": "steps between progress lines in the log (losses, patches/s)",
    "train.tensorboard": "write TensorBoard scalars and previews to `tensorboard/` when the package is installed",
    "train.init_generator": "shipped model name or `.safetensors` model file whose weights start the generator "
                            "(fine-tuning); its card must name the config's generator and kwargs; a path is "
                            "relative to the config file",
}


def _default_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_default_text(item) for item in value) + "]"
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe_config() -> str:
    """Return the Markdown table of every config key with its default and meaning, from the dataclasses.

    Raises:
        KeyError: if a config key has no entry in ``CONFIG_KEY_MEANINGS``, so a new key cannot go undocumented.
    """
    defaults = Config()
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for section in dataclasses.fields(Config):
        value = getattr(defaults, section.name)
        if isinstance(value, NetworkSpec) or not dataclasses.is_dataclass(value):
            default = "task default" if isinstance(value, NetworkSpec) else f"`{_default_text(value)}`"
            rows.append(f"| `{section.name}` | {default} | {CONFIG_KEY_MEANINGS[section.name]} |")
            continue
        for item in dataclasses.fields(value):
            key = f"{section.name}.{item.name}"
            if key not in CONFIG_KEY_MEANINGS:
                raise KeyError(f"Config key {key} has no entry in medgan.config.CONFIG_KEY_MEANINGS; add one.")
            rows.append(f"| `{key}` | `{_default_text(getattr(value, item.name))}` | {CONFIG_KEY_MEANINGS[key]} |")
    return "\n".join(rows) + "\n"
