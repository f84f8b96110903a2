"""PTX of the GPU kernels without a GPU, `ptxas -v` figures, and an instruction count per nonce.

Numba-cuda compiles a kernel's device functions for "the current device", which needs a driver; for
ahead-of-time PTX (`compile_ptx(..., cc=...)`) on a machine without one, `compile_kernel` stands in a
device of the requested compute capability while it compiles (the kernel itself is compiled for `cc`).
Must run with the simulator off (`NUMBA_ENABLE_CUDASIM` unset when Numba is imported).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import types

KERNELS = ("scan_v1", "scan_v2")


def _signature(name: str):
    from numba import types as t

    u64 = t.Array(t.uint64, 1, "C")
    found = t.Array(t.int64, 1, "C")
    if name == "scan_v1":  # y0, consts, levels, ninv, target, threshold, count, found
        return (u64, t.Array(t.uint64, 2, "C"), t.int64, t.uint64, u64, u64, t.int64, found)
    return (u64, u64, t.boolean, u64, t.int64, found)  # mid, low, high_zero, target, count, found


@contextlib.contextmanager
def _stand_in_device(cc: tuple[int, int]):
    import numba.cuda.dispatcher as dispatcher

    real = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = real


def compile_kernel(name: str, cc: tuple[int, int]) -> str:
    """PTX text of kernel `name` (scan_v1 or scan_v2) for compute capability `cc`."""
    from numba import cuda

    from . import kernels

    if kernels.SIMULATED:
        raise RuntimeError("PTX needs the real numba-cuda: unset NUMBA_ENABLE_CUDASIM")
    with _stand_in_device(cc):
        ptx, _ = cuda.compile_ptx(getattr(kernels, name).py_func, _signature(name), cc=cc)
    return ptx


def ptxas_path() -> str | None:
    """ptxas from the nvidia-cuda-nvcc-cu12 wheel (the gpu extra), else one on PATH, else None."""
    for base in sys.path:
        found = glob.glob(os.path.join(base, "nvidia", "cuda_nvcc", "bin", "ptxas"))
        if found:
            return found[0]
    return shutil.which("ptxas")


def ptxas_report(ptx: str, arch: str, ptxas: str) -> dict:
    """`ptxas -v -arch=<arch>`: registers per thread, spill stores/loads (bytes), stack frame (bytes)."""
    with subprocess.Popen([ptxas, "-v", f"-arch={arch}", "-", "-o", os.devnull], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        out, _ = proc.communicate(ptx, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"ptxas failed: {out[-2000:]}")
    figures = {"arch": arch}
    for key, pattern in (("registers", r"Used (\d+) registers"), ("spill_stores", r"(\d+) bytes spill stores"),
                         ("spill_loads", r"(\d+) bytes spill loads"), ("stack_frame", r"(\d+) bytes stack frame")):
        m = re.search(pattern, out)
        figures[key] = int(m.group(1)) if m else None
    return figures


_INSTRUCTION = re.compile(r"^\s*(?:@!?%p\d+\s+)?([a-z][a-z0-9]*)((?:\.[a-z0-9]+)*)\s", re.M)


def count_instructions(ptx: str) -> dict[str, int]:
    """Static PTX instruction counts by class over the whole kernel text (not per nonce: see docs/gpu.md)."""
    counts: dict[str, int] = {}
    for op, suffix in _INSTRUCTION.findall(ptx):
        wide = ".u64" in suffix or ".s64" in suffix or ".b64" in suffix
        key = f"{op}{'.64' if wide else ''}"
        counts[key] = counts.get(key, 0) + 1
    return counts


__all__ = ["KERNELS", "compile_kernel", "count_instructions", "ptxas_path", "ptxas_report"]
