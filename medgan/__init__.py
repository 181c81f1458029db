"""medgan: restore medical volumes with 3D generative adversarial networks."""

__version__ = "0.1.0"

from medgan.io import Volume, read_volume, write_volume  # noqa: E402
from medgan.inference.restorer import Restorer, load_model  # noqa: E402

__all__ = ["Volume", "read_volume", "write_volume", "Restorer", "load_model", "__version__"]
