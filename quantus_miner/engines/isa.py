"""What the JIT compiles for on this host: its CPU features, and the choice of a CPU engine's kernel from them
(by name, or the first this host can run that passes its self-test) before anything is compiled."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from numba.core import codegen as numba_codegen
from numba.core import config as numba_config

from ..core.outcomes import ConsensusError

log = logging.getLogger("quantus_miner")


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


class KernelUnavailable(ValueError):
    """A kernel named with --kernel that this CPU cannot run."""


def kernels_for(specs: Mapping[str, Any], requested: str, features: frozenset[str] | None,
                unknown: str) -> tuple[tuple[Any, ...], bool]:
    """The kernels to try, in order of preference, and whether one was named (forced).

    `requested`: "auto" (every kernel of `specs` that `features`, by default the host's, can run) or a
    name of `specs` (KernelUnavailable if this host cannot run it); a name outside `specs` raises
    ValueError(`unknown`). A spec says what it lacks with `missing(features)`.
    """
    if requested != "auto" and requested not in specs:
        raise ValueError(unknown)
    features = host_features() if features is None else features
    if requested != "auto":
        spec = specs[requested]
        if missing := spec.missing(features):
            raise KernelUnavailable(f"kernel {requested} needs {', '.join(missing)}, which this host lacks")
        return (spec,), True
    return tuple(s for s in specs.values() if not s.missing(features)), False


def first_passing(engine: str, candidates: tuple[Any, ...], forced: bool, self_test: Callable[[Any], str | None]):
    """The first of `candidates` whose `self_test` passes (None); a kernel that cannot build fails it.

    ConsensusError when a forced kernel fails, or none passes; each failure before is logged.
    """
    for spec in candidates:
        try:
            failure = self_test(spec)
        except Exception as exc:  # a kernel that cannot even build here is a failed kernel
            failure = f"{type(exc).__name__}: {exc}"
        if failure is None:
            return spec
        if forced:
            raise ConsensusError(f"kernel {spec.name} failed its self-test on this host: {failure}")
        log.warning("kernel %s failed its self-test on this host (%s); trying the next kernel", spec.name, failure)
    raise ConsensusError(f"no {engine} kernel passed its self-test on this host")


class KernelChoice:
    """A CPU engine's kernel choice, mixed into the engine class: `for_host`, `kernel`, `warm_up`.

    The class sets `SPECS` (the kernels by name, fastest first) and `_self_test(spec)`; an engine holds
    `name`, `candidates`, `forced` and `spec` (the kernel in use, set by warm-up).
    """

    SPECS: ClassVar[Mapping[str, Any]]
    UNKNOWN_FOR: ClassVar[str] = ""  # names the engine in the unknown-kernel message

    @classmethod
    def for_host(cls, requested: str = "auto", features: frozenset[str] | None = None):
        """The engine with the kernels this CPU can run (`requested`: one by name, or auto)."""
        unknown = f"unknown kernel {requested!r}{cls.UNKNOWN_FOR} (choose from auto, {', '.join(cls.SPECS)})"
        candidates, forced = kernels_for(cls.SPECS, requested, features, unknown)
        return cls(candidates, forced=forced)

    @property
    def kernel(self) -> str:
        """The kernel in use (before warm-up: the one warm-up will try first)."""
        return (self.spec or self.candidates[0]).label

    def warm_up(self) -> None:
        """Compile (or load from the on-disk cache) and self-test kernels until one passes; use it."""
        if self.spec is None:
            self.spec = first_passing(self.name, self.candidates, self.forced, self._self_test)

    def _chosen(self):
        """The kernel in use, warming up first if needed."""
        if self.spec is None:
            self.warm_up()
        return self.spec


__all__ = ["KernelChoice", "KernelUnavailable", "first_passing", "host_features", "host_isa", "kernels_for"]
