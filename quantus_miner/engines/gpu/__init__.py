"""GPU engines on CUDA (numba-cuda, the optional `gpu` extra): gpu-cuda (QPoW v1), gpu-cuda-v2 (QPoW v2).

Nothing here imports numba-cuda at module import: `gpu_problem()` says why the GPU engines cannot run
(extra missing, no usable GPU), and the commands exit 2 with that. Under `NUMBA_ENABLE_CUDASIM=1`
numba-cuda's simulator stands in for a GPU (slow: Python per thread), which is how the tests run the
kernels on machines without one.
"""

from __future__ import annotations

import importlib.util
import os

EXTRA_HINT = "pip install 'quantus-miner[gpu]'"
SIMULATOR_ENV = "NUMBA_ENABLE_CUDASIM"


def simulated() -> bool:
    """Whether numba-cuda runs its CUDA simulator instead of a GPU (read at Numba's import, as Numba does)."""
    return os.environ.get(SIMULATOR_ENV, "") not in ("", "0")


def extra_problem() -> str | None:
    """Why the `gpu` extra is unusable here, or None (checked without importing it)."""
    for module in ("numba_cuda", "cuda.bindings"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"the GPU engines need the optional gpu extra ({EXTRA_HINT}): {module} is not installed"
        except (ImportError, ValueError):
            return f"the GPU engines need the optional gpu extra ({EXTRA_HINT}): {module} is not installed"
    return None


def gpu_problem() -> str | None:
    """Why no GPU engine can run in this process, or None (imports numba-cuda when the extra is there)."""
    if problem := extra_problem():
        return problem
    try:
        from numba import cuda  # the extra's numba-cuda
    except Exception as exc:  # e.g. numpy too new for numba-cuda: say so rather than crash later
        return f"numba-cuda does not import ({type(exc).__name__}: {exc}); reinstall with {EXTRA_HINT}"
    if simulated():
        return None
    try:
        if not cuda.is_available() or len(cuda.gpus) == 0:
            return "no usable CUDA GPU (no NVIDIA driver or no device); set NUMBA_ENABLE_CUDASIM=1 to run the " \
                   "CUDA simulator instead (for tests: very slow)"
    except Exception as exc:
        return f"no usable CUDA GPU ({type(exc).__name__}: {exc})"
    return None


def device_count() -> int:
    """GPUs this process can use (1 under the simulator). Call only after `gpu_problem()` returned None."""
    if simulated():
        return 1
    from numba import cuda

    return len(cuda.gpus)


__all__ = ["EXTRA_HINT", "device_count", "extra_problem", "gpu_problem", "simulated"]
