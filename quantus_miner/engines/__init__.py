"""Mining engines behind one interface (`base.Engine`): the registry of engines by CLI name.

>>> get_engine("cpu-baseline").kernel, get_engine("cpu-baseline-v2").pow
('python-reference', 'v2')
"""

from __future__ import annotations

from ..core.config import ENGINE_NAMES, KERNEL_NAMES, KERNELS_OF_ENGINE
from .base import Engine
from .baseline import BaselineEngine
from .baseline_v2 import BaselineV2Engine
from .cache import configure_numba_cache


def get_engine(name: str, kernel: str = "auto") -> Engine:
    """The engine `name`; `kernel` picks cpu-fast's or cpu-fast-v2's kernel (settings `--kernel`/`MINER_KERNEL`)."""
    if name == "cpu-baseline":
        return BaselineEngine()
    if name == "cpu-fast":
        configure_numba_cache()  # before Numba compiles (or loads) anything
        from .fast import FastEngine  # imports Numba only when asked for

        return FastEngine.for_host(kernel)
    if name == "cpu-baseline-v2":
        return BaselineV2Engine()
    if name == "cpu-fast-v2":
        configure_numba_cache()
        from .fast_v2 import FastV2Engine  # imports Numba only when asked for

        return FastV2Engine.for_host(kernel)
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINE_NAMES)})")


def kernel_problem(name: str, kernel: str) -> str | None:
    """Why engine `name` cannot run a forced `kernel` on this host, or None (checked before anything starts)."""
    if name not in KERNELS_OF_ENGINE or kernel == "auto":
        return None
    if kernel not in KERNELS_OF_ENGINE[name]:
        return f"engine {name} runs the kernels {', '.join(KERNELS_OF_ENGINE[name])}, not {kernel}"
    configure_numba_cache()
    if name == "cpu-fast":  # imports Numba only when a kernel is forced
        from .fast import SPECS, host_features
    else:
        from .fast_v2 import SPECS, host_features

    missing = SPECS[kernel].missing(host_features())
    return f"kernel {kernel} needs {', '.join(missing)}, which this host lacks" if missing else None


__all__ = ["ENGINE_NAMES", "KERNEL_NAMES", "Engine", "get_engine"]
