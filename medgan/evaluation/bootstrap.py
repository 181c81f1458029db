"""Means over cases with percentile-bootstrap confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class MeanWithInterval:
    """The mean of per-case values and its bootstrap confidence interval.

    Attributes:
        mean: mean over the cases.
        low, high: interval bounds, or ``None`` when no interval is available.
        n_cases: number of cases.
        note: why the interval is not available, or ``""``.
    """

    mean: float
    low: float | None
    high: float | None
    n_cases: int
    note: str = ""

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n_cases": self.n_cases,
                "note": self.note}

    def format(self, digits: int = 2) -> str:
        """Return ``"mean [low, high]"``, or the mean with ``(CI n/a)`` when no interval is available."""
        if self.low is None or self.high is None:
            return f"{self.mean:.{digits}f} (CI n/a)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_mean(values, *, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                   confidence: float = CONFIDENCE) -> MeanWithInterval:
    """Return the mean of ``values`` with a percentile-bootstrap interval over cases.

    ``n_resamples`` resamples of the cases, drawn with replacement by ``numpy.random.default_rng(seed)``, give
    the distribution of the mean. The interval is its ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles. One case, or a value that is not finite (such as the infinite PSNR of identical images), gives no
    interval.

    Raises:
        ValueError: if ``values`` is empty, or ``n_resamples`` or ``confidence`` is out of range.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("values is empty: a mean needs at least one case.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    mean = float(np.mean(data))
    if data.size == 1:
        return MeanWithInterval(mean, None, None, 1, "not available: one case")
    if not np.all(np.isfinite(data)):
        return MeanWithInterval(mean, None, None, int(data.size), "not available: a per-case value is not finite")
    generator = np.random.default_rng(seed)
    indices = generator.integers(0, data.size, size=(n_resamples, data.size))
    means = data[indices].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return MeanWithInterval(mean, float(low), float(high), int(data.size))
