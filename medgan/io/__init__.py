"""Reading and writing volumes (DICOM, NIfTI, NRRD, MetaImage) with their exact geometry."""

from medgan.io.atomic import atomic_output
from medgan.io.readers import VolumeReadError, read_volume, write_volume
from medgan.io.volume import Volume


def __getattr__(name: str):
    # The DICOM writer imports pydicom, so it loads only when first used.
    if name == "write_dicom_series":
        from medgan.io.dicom_write import write_dicom_series

        return write_dicom_series
    raise AttributeError(f"module 'medgan.io' has no attribute {name!r}")


__all__ = ["Volume", "VolumeReadError", "atomic_output", "read_volume", "write_dicom_series", "write_volume"]
