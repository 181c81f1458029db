"""The records of a training run: ``log.csv``, TensorBoard events and progress lines in the log.

``log.csv`` has one row per step. TensorBoard, when the ``tensorboard`` package is installed and
``train.tensorboard`` is true, receives every numeric CSV column as a scalar and the validation previews as
images under ``tensorboard/``. Every ``train.log_every`` steps one plain log line gives the step, the losses and
the throughput, so logs written to files carry no progress-bar control characters.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PROGRESS_KEYS = ("generator_loss", "content_loss", "critic_loss", "wasserstein_distance", "gradient_penalty")


def open_tensorboard(folder: Path) -> Any | None:
    """Return a ``SummaryWriter`` writing to ``folder``, or ``None`` with a log line when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch raises ImportError when the tensorboard package is absent
        logger.info("TensorBoard logging is off: %s. Install it with 'pip install tensorboard', or set "
                    "train.tensorboard: false to silence this line.", error)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(folder))


class RunLog:
    """Write step records to ``log.csv``, TensorBoard and periodic progress lines.

    Args:
        run_dir: the run folder.
        columns: CSV columns in order; keys of a record outside them are not written to the CSV.
        total_steps: ``train.steps``, shown in progress lines.
        log_every: steps between progress lines.
        tensorboard: whether to try TensorBoard.
    """

    def __init__(self, run_dir: Path, columns: list[str], total_steps: int, log_every: int,
                 tensorboard: bool) -> None:
        self.csv_path = Path(run_dir) / "log.csv"
        self.columns = columns
        self.total_steps = total_steps
        self.log_every = log_every
        self.writer = open_tensorboard(Path(run_dir) / "tensorboard") if tensorboard else None
        self._window_started = time.perf_counter()
        self._window_patches = 0

    def write(self, record: dict[str, Any], patches: int) -> None:
        """Record one step; ``patches`` is how many patches the step consumed, for the throughput line."""
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value)
                             for key, value in record.items()})
        step = int(record["step"])
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and key in self.columns and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
        self._window_patches += patches
        if step % self.log_every == 0 or step == self.total_steps:
            self._progress_line(record, step)

    def _progress_line(self, record: dict[str, Any], step: int) -> None:
        elapsed = time.perf_counter() - self._window_started
        rate = self._window_patches / elapsed if elapsed > 0 else float("nan")
        terms = ", ".join(f"{key} {record[key]:.4g}" for key in PROGRESS_KEYS if key in record)
        logger.info("step %d/%d (%s): %s; %.1f patches/s", step, self.total_steps, record.get("phase", ""), terms,
                    rate)
        self._window_started = time.perf_counter()
        self._window_patches = 0

    def add_preview(self, tiles: list[np.ndarray], step: int, window: tuple[float, float]) -> None:
        """Add ``(H, W)`` slices side by side as one TensorBoard image, ``window`` mapped to black..white."""
        if self.writer is None:
            return
        low, high = window
        height = max(tile.shape[0] for tile in tiles)
        padded = [np.pad(tile, ((0, height - tile.shape[0]), (0, 0)), constant_values=low) for tile in tiles]
        image = (np.clip(np.concatenate(padded, axis=1), low, high) - low) / (high - low)
        self.writer.add_image("validation/input_output_target", image[None].astype(np.float32), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
