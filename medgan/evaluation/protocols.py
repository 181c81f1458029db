"""Named evaluation protocols: the intensity window or scaling, mask and data range behind every number.

A PSNR or SSIM value means nothing without the window and data range it was computed in, so every evaluation
names one protocol from ``PROTOCOLS`` and stores its description next to the numbers.

CT display windows are given as centre and width in HU, as in clinical viewers: the window ``[centre - width / 2,
centre + width / 2]`` is clipped and mapped linearly to [0, 1]. The chest (-600 / 1500), abdomen (50 / 400) and
head (40 / 80) windows are the standard lung, soft-tissue and brain display windows. A published low-dose CT
table is comparable with these numbers only when it states the same window, data range and mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CT_CLIP_RANGE_HU = (-1024.0, 3071.0)
"""Range of 12-bit CT data with the usual rescale intercept of -1024: what a CT scanner stores."""


@dataclass(frozen=True)
class PreparedImages:
    """Images of one case in protocol units, with the protocol's mask and the scale that was used.

    Attributes:
        arrays: the inputs mapped to protocol units, in the order they were given.
        mask: boolean mask of the voxels that the metrics average over, or ``None`` for every voxel.
        scale: the reference value that maps to 1 (``mri-brain``), or ``None`` for fixed windows.
    """

    arrays: tuple[np.ndarray, ...]
    mask: np.ndarray | None
    scale: float | None


@dataclass(frozen=True)
class Protocol:
    """One way to turn voxel values into the numbers that PSNR, SSIM, RMSE and MAE are computed on.

    Exactly one of ``window_hu``, ``clip_hu`` and ``reference_percentile`` is set.

    Args:
        name: identifier for ``--protocol``.
        modality: ``"CT"`` or ``"MR"``; it sets which baselines and checks apply.
        description: one line for reports.
        unit: unit of the values after mapping.
        data_range: the ``L`` of PSNR and of the SSIM constants, in ``unit``.
        window_hu: ``(low, high)`` in HU, clipped and mapped linearly to [0, 1].
        clip_hu: ``(low, high)`` in HU, clipped without mapping.
        reference_percentile: percentile of the reference that every image of the case is divided by.
        mask_fraction: voxels where the reference exceeds this fraction of that percentile form the mask.
        display_range: ``(low, high)`` in ``unit`` for figures.
        difference_range: figures map differences in ``[-difference_range, difference_range]`` to grey levels.
    """

    name: str
    modality: str
    description: str
    unit: str
    data_range: float
    window_hu: tuple[float, float] | None = None
    clip_hu: tuple[float, float] | None = None
    reference_percentile: float | None = None
    mask_fraction: float | None = None
    display_range: tuple[float, float] = (0.0, 1.0)
    difference_range: float = 0.1

    def __post_init__(self) -> None:
        modes = [self.window_hu is not None, self.clip_hu is not None, self.reference_percentile is not None]
        if sum(modes) != 1:
            raise ValueError(f"Protocol {self.name!r} must set exactly one of window_hu, clip_hu and "
                             "reference_percentile.")
        for name in ("window_hu", "clip_hu"):
            bounds = getattr(self, name)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"Protocol {self.name!r}: {name} must satisfy low < high, got {bounds}.")
        if not self.data_range > 0:
            raise ValueError(f"Protocol {self.name!r}: data_range must be positive, got {self.data_range!r}.")

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"

    def summary(self) -> str:
        """Return the intensity mapping, mask and data range in one line, for printing next to numbers."""
        if self.window_hu is not None:
            low, high = self.window_hu
            centre, width = (low + high) / 2, high - low
            mapping = f"window {centre:g}/{width:g} HU = [{low:g}, {high:g}] HU clipped and mapped to [0, 1]"
        elif self.clip_hu is not None:
            mapping = f"HU clipped to [{self.clip_hu[0]:g}, {self.clip_hu[1]:g}]"
        else:
            mapping = f"intensities divided by the reference's {self.reference_percentile:g}th percentile"
        if self.mask_fraction is None:
            mask = "all voxels"
        else:
            mask = f"reference > {self.mask_fraction:g} x that percentile"
        return f"{self.name}: {mapping}; mask: {mask}; data range {self.data_range:g} {self.unit}"

    def to_dict(self) -> dict:
        record = asdict(self)
        record["summary"] = self.summary()
        return record

    def prepare(self, reference: np.ndarray, *others: np.ndarray) -> PreparedImages:
        """Map ``reference`` and ``others`` (same shape or not) into protocol units and build the mask.

        The mask is built from ``reference`` and has its shape. For ``mri-brain`` every image is divided by the
        reference's percentile, so a low-resolution input keeps its own shape.

        Raises:
            ValueError: if the reference's percentile is not positive (an empty image).
        """
        arrays = (reference, *others)
        if self.window_hu is not None:
            low, high = self.window_hu
            mapped = tuple((np.clip(np.asarray(a, dtype=np.float64), low, high) - low) / (high - low) for a in arrays)
            return PreparedImages(mapped, None, None)
        if self.clip_hu is not None:
            low, high = self.clip_hu
            mapped = tuple(np.clip(np.asarray(a, dtype=np.float64), low, high) for a in arrays)
            return PreparedImages(mapped, None, None)
        scale = float(np.percentile(np.asarray(reference, dtype=np.float64), self.reference_percentile))
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"Protocol {self.name}: the reference's {self.reference_percentile:g}th percentile is "
                             f"{scale:g}, so it cannot set the intensity scale. Check that the reference is a "
                             "non-empty magnitude image.")
        mapped = tuple(np.asarray(a, dtype=np.float64) / scale for a in arrays)
        mask = mapped[0] > self.mask_fraction if self.mask_fraction is not None else None
        return PreparedImages(mapped, mask, scale)


def _ct_window(name: str, centre_hu: float, width_hu: float, description: str) -> Protocol:
    return Protocol(name=name, modality="CT", description=description, unit="window fraction", data_range=1.0,
                    window_hu=(centre_hu - width_hu / 2, centre_hu + width_hu / 2))


PROTOCOLS: dict[str, Protocol] = {
    "ct-hu": Protocol(
        name="ct-hu", modality="CT",
        description="Raw HU clipped to the 12-bit CT range [-1024, 3071]; data range 4095 HU.",
        unit="HU", data_range=CT_CLIP_RANGE_HU[1] - CT_CLIP_RANGE_HU[0], clip_hu=CT_CLIP_RANGE_HU,
        display_range=(-1000.0, 1000.0), difference_range=100.0,
    ),
    "ldct-chest": _ct_window("ldct-chest", -600.0, 1500.0, "Lung window, centre -600 HU, width 1500 HU."),
    "ldct-abdomen": _ct_window("ldct-abdomen", 50.0, 400.0, "Abdominal soft-tissue window, centre 50 HU, width 400 HU."),
    "ldct-head": _ct_window("ldct-head", 40.0, 80.0, "Brain window, centre 40 HU, width 80 HU."),
    "mri-brain": Protocol(
        name="mri-brain", modality="MR",
        description="MRI super-resolution: intensities divided by the reference's 99.5th percentile, metrics over "
                    "the voxels above 10 % of it, plus data consistency with the thick-slice input.",
        unit="fraction of the reference's 99.5th percentile", data_range=1.0, reference_percentile=99.5,
        mask_fraction=0.1, display_range=(0.0, 1.0), difference_range=0.2,
    ),
}


def get_protocol(name: str) -> Protocol:
    """Return the protocol called ``name``.

    Raises:
        ValueError: if no protocol has that name; the message lists the known ones.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {name!r}; available protocols: {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]
