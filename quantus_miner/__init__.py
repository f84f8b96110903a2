"""quantus-miner: an external QPoW miner for the Quantus Network node."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Numba's on-disk kernel cache must never land in the source tree (or site-packages).
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "quantus-miner" / "numba"))
