"""Typed training configuration, loaded from YAML, validated, and overridable with ``key.path=value`` strings.

Configs are data only: YAML is parsed with ``yaml.safe_load`` and nothing in a config is evaluated.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medgan.tasks import get_task


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key path and the value."""


@dataclass
class DataConfig:
    """Sources of training volumes and the patch-sampling settings.

    ``mode: simulate`` reads normal-dose volumes (``volumes``: files or folders) and simulates low dose on the
    fly. ``mode: paired`` reads a CSV ``manifest`` with ``low`` and ``high`` columns of paths.
    """

    mode: Literal["simulate", "paired"] = "simulate"
    volumes: list[str] = field(default_factory=list)
    manifest: str | None = None
    validation_volumes: list[str] = field(default_factory=list)
    validation_manifest: str | None = None
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


@dataclass
class NetworkSpec:
    """A network by registry name with its constructor arguments."""

    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Weights of the generator's loss terms and of the critic's gradient penalty."""

    adversarial_weight: float = 1.0e-3
    content: Literal["l1", "mse"] = "l1"
    content_weight: float = 1.0
    gradient_penalty_weight: float = 10.0


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
    if not config.generator.name:
        config.generator = NetworkSpec(**{"kwargs": {}, **task.generator})
    if not config.critic.name:
        config.critic = NetworkSpec(**{"kwargs": {}, **task.critic})

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
        raise ConfigError("data.volumes must list at least one normal-dose volume (file or folder) in simulate mode.")
    if data.mode == "paired" and not data.manifest:
        raise ConfigError("data.manifest must name a CSV with 'low' and 'high' columns in paired mode.")

    loss = config.loss
    for key in ("adversarial_weight", "content_weight", "gradient_penalty_weight"):
        _check_range(f"loss.{key}", getattr(loss, key), 0)

    train = config.train
    for key in ("steps", "batch_size", "n_critic", "validate_every", "checkpoint_every"):
        _check_range(f"train.{key}", getattr(train, key), 1)
    _check_range("train.warmup_steps", train.warmup_steps, 0)
    _check_range("train.ema_decay", train.ema_decay, 0, 1)
    _check_range("train.preview_every", train.preview_every, 0)
    if train.ema_decay == 1:
        raise ConfigError("train.ema_decay must be below 1 (1 would freeze the average), got 1.")
    _check_range("train.threads", train.threads, 0)
    _check_range("train.lr_generator", train.lr_generator, 0, None, low_open=True)
    _check_range("train.lr_critic", train.lr_critic, 0, None, low_open=True)
    if len(train.betas) != 2 or not all(0 <= b < 1 for b in train.betas):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {train.betas!r}.")
    return config


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
    if data.validation_manifest:
        data.validation_manifest = resolve(data.validation_manifest)
    return data
