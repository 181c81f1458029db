"""Reading and writing volumes (DICOM, NIfTI, NRRD, MetaImage) with their exact geometry."""

from medgan.io.atomic import atomic_output
from medgan.io.readers import VolumeReadError, read_volume, write_volume
from medgan.io.volume import Volume

__all__ = ["Volume", "VolumeReadError", "atomic_output", "read_volume", "write_volume"]
