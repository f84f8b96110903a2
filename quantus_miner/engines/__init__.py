"""Mining engines behind one interface (`base.Engine`): the registry of engines by CLI name.

>>> get_engine("cpu-baseline").kernel, get_engine("cpu-baseline-v2").pow
('python-reference', 'v2')
"""

from __future__ import annotations

from ..core.config import ENGINE_NAMES, GPU_ENGINES, KERNEL_NAMES, KERNELS_OF_ENGINE
from .base import Engine
from .baseline import BaselineEngine
from .baseline_v2 import BaselineV2Engine
from .cache import configure_numba_cache


def get_engine(name: str, kernel: str = "auto", gpu_devices: int | None = None) -> Engine:
    """The engine `name`; `kernel` picks cpu-fast's or cpu-fast-v2's kernel (settings `--kernel`/`MINER_KERNEL`),
    `gpu_devices` how many CUDA devices a GPU engine uses (None: all; found and self-tested at warm-up)."""
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
    if name in GPU_ENGINES:
        configure_numba_cache()
        from .gpu.engine import CudaV1Engine, CudaV2Engine  # numba-cuda itself only at warm-up

        return (CudaV1Engine if name == "gpu-cuda" else CudaV2Engine)(wanted=gpu_devices)
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINE_NAMES)})")


def engine_problem(name: str, gpu_devices: int | None = None) -> str | None:
    """Why engine `name` cannot run in this process (a GPU engine without the extra, a GPU, or as many GPUs
    as `--gpu-devices` asks for), or None."""
    if name not in GPU_ENGINES:
        return None
    from .gpu import device_count, gpu_problem

    if problem := gpu_problem():
        return problem
    if gpu_devices is not None and (present := device_count()) < gpu_devices:
        return f"--gpu-devices {gpu_devices} asks for more CUDA devices than the {present} present"
    return None


def slots(engine: Engine, cores: int) -> int:
    """The executor's slots for `engine`: one per device that passed warm-up for a GPU engine, else `cores`."""
    devices = getattr(engine, "devices", None)
    return len(devices) if devices else cores


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


__all__ = ["ENGINE_NAMES", "KERNEL_NAMES", "Engine", "engine_problem", "get_engine", "slots"]
