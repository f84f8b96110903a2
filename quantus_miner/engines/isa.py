"""What the JIT compiles for on this host: its CPU features (kernel selection reads them before compiling)."""

from __future__ import annotations

from numba.core import codegen as numba_codegen
from numba.core import config as numba_config


def host_features() -> frozenset[str]:
    """The CPU features Numba compiles for: the host's, unless NUMBA_CPU_FEATURES (or NUMBA_ENABLE_AVX=0)
    says otherwise. A kernel needing a feature outside this set must never be compiled: LLVM would abort."""
    flat = numba_config.CPU_FEATURES
    if flat is None:
        flat = numba_codegen.get_host_cpu_features()
    return frozenset(f[1:] for f in flat.split(",") if f.startswith("+"))


def host_isa() -> str:
    """The widest SIMD the JIT targets on this host (names the kernel build in `bench --json`)."""
    features = host_features()
    for isa in ("avx512f", "avx2", "sse4.2"):
        if isa in features:
            return isa
    return "scalar"


__all__ = ["host_features", "host_isa"]
