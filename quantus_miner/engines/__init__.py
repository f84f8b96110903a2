"""Mining engines behind one interface (`base.Engine`): the registry of engines by CLI name.

>>> get_engine("cpu-baseline").kernel
'python-reference'
"""

from __future__ import annotations

from ..core.config import ENGINE_NAMES, KERNEL_NAMES
from .base import Engine
from .baseline import BaselineEngine
from .cache import configure_numba_cache


def get_engine(name: str, kernel: str = "auto") -> Engine:
    """The engine `name`; `kernel` picks cpu-fast's kernel (settings `--kernel`/`MINER_KERNEL`)."""
    if name == "cpu-baseline":
        return BaselineEngine()
    if name == "cpu-fast":
        configure_numba_cache()  # before Numba compiles (or loads) anything
        from .fast import FastEngine  # imports Numba only when asked for

        return FastEngine.for_host(kernel)
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINE_NAMES)})")


__all__ = ["ENGINE_NAMES", "KERNEL_NAMES", "Engine", "get_engine"]
