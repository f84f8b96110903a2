"""cpu-fast: Numba lane kernels chosen per host, with exact handling of range edges and the saturated tail.

Kernels, fastest first: `ifma8` (`ifma`: LLVM vector IR, AVX-512 IFMA, 52-bit limbs), `avx2x8`
(`avx2`: LLVM vector IR on `<4 x i64>`, 29-bit limbs, AVX2) and `lanes8` (`kernels`: generated
scalar code LLVM vectorises, 29-bit limbs; runs anywhere).
`auto` takes the first whose host features are present *and* whose known-answer self-test
passes at warm-up on this host; a kernel that fails is skipped with a logged warning.
"""

from __future__ import annotations

from types import ModuleType

import attrs
import numpy as np
from ..core import qpow
from ..core.config import V1_KERNELS
from ..core.outcomes import ChunkOutcome, verified
from . import avx2, ifma, kernels, limbs
from .base import BENCH_HEADER, PreparedJob, steps_per_cpu_second
from .isa import KernelChoice, KernelUnavailable, host_features, host_isa

KERNELS = V1_KERNELS  # the concrete kernels, fastest first ("auto" picks among them)
MAX_STEPS_PER_CALL = 1 << 40


@attrs.frozen
class KernelSpec:
    """One kernel: its module (same interface in each: L, LIMBS, LIMB_BITS, SCRATCH_WORDS,
    scan_lanes, hash_half, step_half) and the host features LLVM needs to compile it."""

    name: str
    module: ModuleType
    requires: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The kernel as /health and the logs name it: name, limb width, instruction set."""
        m = self.module
        isa = "avx512ifma" if "avx512ifma" in self.requires else "avx2" if self.requires == ("avx2",) else host_isa()
        return f"{self.name}-{m.LIMB_BITS}bit-{isa}"

    def missing(self, features: frozenset[str]) -> list[str]:
        """The CPU features the kernel needs that `features` lacks."""
        return [f for f in self.requires if f not in features]


SPECS = {"ifma8": KernelSpec("ifma8", ifma, ifma.REQUIRES), "avx2x8": KernelSpec("avx2x8", avx2, avx2.REQUIRES),
         "lanes8": KernelSpec("lanes8", kernels)}
assert tuple(SPECS) == KERNELS


@attrs.frozen
class FastConstants:
    """A job's constants in the kernel's limbs (Montgomery form)."""
    step: np.ndarray  # m^L * R mod n in the kernel's limbs: Montgomery-multiplying by it steps y by L nonces
    n: np.ndarray
    ninv: np.uint64  # -n^-1 mod 2^LIMB_BITS
    target: np.ndarray  # 8 big-endian words
    threshold: np.ndarray
    first_saturated: int  # first nonce whose exponent saturates; from here y is constant
    y_saturated: int


@attrs.define
class FastEngine(KernelChoice):
    """QPoW v1 on Numba kernels (IFMA, AVX2 or portable lanes), the first that passes its self-test."""

    SPECS = SPECS
    # in order of preference; warm-up keeps the first that passes
    candidates: tuple[KernelSpec, ...]
    forced: bool = False
    name: str = "cpu-fast"
    pow: str = "v1"
    spec: KernelSpec | None = None  # the kernel in use, set by warm-up

    def _self_test(self, spec: KernelSpec) -> str | None:
        return self_test(spec)

    def prepare(self, ctx: qpow.JobContext, threshold: int) -> PreparedJob:
        """The job's constants in the chosen kernel's limbs."""
        m = self._chosen().module
        n = ctx.n
        radix = 1 << (m.LIMB_BITS * m.LIMBS)
        constants = FastConstants(
            step=limbs.to_limbs(pow(ctx.m, m.L, n) * radix % n, m.LIMB_BITS, m.LIMBS),
            n=limbs.to_limbs(n, m.LIMB_BITS, m.LIMBS),
            ninv=np.uint64((-pow(n, -1, 1 << m.LIMB_BITS)) % (1 << m.LIMB_BITS)),
            target=limbs.to_be_words(ctx.target),
            threshold=limbs.to_be_words(min(threshold, qpow.MAX_U512)),
            first_saturated=qpow.MAX_U512 - ctx.h + 1,
            y_saturated=pow(ctx.m, qpow.MAX_U512, n),
        )
        return PreparedJob(ctx, threshold, constants)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        """Scan [start, end] with the kernel, polling `flag`; exact counts, a re-verified nonce."""
        c: FastConstants = job.constants
        tested = 0
        if start == 0:  # never valid; counted so a range's tested total equals its size
            tested, start = 1, 1
        if start > end:
            return ChunkOutcome(tested)
        fast_end = min(end, c.first_saturated - 1)
        if start <= fast_end:
            outcome = self._scan_stepping(job, start, fast_end, flag)
            tested += outcome.tested
            if outcome.found or outcome.cancelled:
                return ChunkOutcome(tested, outcome.found, outcome.cancelled)
        tail_start = max(start, c.first_saturated)
        if tail_start <= end:
            # every nonce here has the same y, hence the same distance: decide the tail at once
            if qpow.distance_of_y(job.ctx, c.y_saturated) <= job.threshold:
                return ChunkOutcome(tested + 1, verified(job.ctx, job.threshold, tail_start))
            tested += end - tail_start + 1
        return ChunkOutcome(tested)

    def _initial_y(self, ctx: qpow.JobContext, start: int) -> np.ndarray:
        """Lane l holds m^(h + start + l) mod n: one exponentiation, then multiplications by m."""
        m = self._chosen().module
        values = [pow(ctx.m, ctx.h + start, ctx.n)]
        for _ in range(m.L - 1):
            values.append(values[-1] * ctx.m % ctx.n)
        return limbs.lanes_to_limbs(values, m.LIMB_BITS, m.LIMBS)

    def _scan_stepping(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        """The kernel over [start, end], all below the saturation point.

        The last step may run past `end` (a range need not be a multiple of L): its spare lanes are
        computed and ignored, which costs less than the reference would on the remainder.
        """
        c: FastConstants = job.constants
        ctx = job.ctx
        m = self._chosen().module
        lanes = m.L
        size = end - start + 1
        steps = -(-size // lanes)
        y = self._initial_y(ctx, start)
        st = limbs.aligned_words(m.SCRATCH_WORDS)
        out = np.zeros(2, dtype=np.int64)
        done = 0  # steps
        while done < steps:  # slices keep the step count within int64
            todo = min(steps - done, MAX_STEPS_PER_CALL)
            verdict = m.scan_lanes(y, c.step, c.n, c.ninv, c.target, c.threshold, todo, flag, st, out)
            if verdict == 1:
                nonce = start + lanes * (done + int(out[0])) + int(out[1])
                if nonce > end:  # the first hit is a spare lane of the last step: none up to `end`
                    return ChunkOutcome(size)
                return ChunkOutcome(nonce - start + 1, verified(ctx, job.threshold, nonce))
            if verdict == -1:
                return ChunkOutcome(min(lanes * (done + int(out[0])), size), cancelled=True)
            done += todo
        return ChunkOutcome(size)

    def profile(self, seconds: float = 1.0) -> dict[str, float]:
        """Nonces per CPU-second of the kernel's halves alone and of the whole kernel, one thread, no chunking.

        `hash_rate`: absorb + Keccak-f[1600] + compare; `step_rate`: the Montgomery step;
        `kernel_rate`: the scan kernel itself at threshold 0. Each runs about `seconds`.
        """
        job = self.prepare(qpow.JobContext.from_header(BENCH_HEADER), 0)
        c: FastConstants = job.constants
        m = self._chosen().module
        y = self._initial_y(job.ctx, 1)
        st = limbs.aligned_words(m.SCRATCH_WORDS)
        out = np.zeros(2, dtype=np.int64)
        flag = np.zeros(1, dtype=np.uint8)
        halves = {
            "hash_rate": lambda steps: m.hash_half(y, c.target, c.threshold, steps, st),
            "step_rate": lambda steps: m.step_half(y, c.step, c.n, c.ninv, steps),
            "kernel_rate": lambda steps: m.scan_lanes(y, c.step, c.n, c.ninv, c.target, c.threshold,
                                                      steps, flag, st, out),
        }
        return {name: m.L * steps_per_cpu_second(run, seconds, first=256) for name, run in halves.items()}


def self_test(spec: KernelSpec) -> str | None:
    """Known answers for `spec` on this host: None when all pass, else what went wrong.

    A published vector (4330 nonces; found in the last lane of a step; not reported from a spare lane
    past a range's end), then small ranges checked nonce by nonce against the reference: from 0 with
    a lane remainder, across 2^64, and across the saturation point 2^512-1-h. The zero header's n has
    512 bits.
    """
    engine = FastEngine((spec,), forced=True, spec=spec)
    flag = np.zeros(1, dtype=np.uint8)
    zero = qpow.JobContext.from_header(bytes(32))
    easy = qpow.MAX_U512 // 5000
    lanes = spec.module.L
    checks = [(zero, easy, 1, 5000, 4330), (zero, easy, 4330 - 4 * lanes + 1, 4330, 4330),
              (zero, easy, 4330 - lanes - 2, 4329, None)]  # 4330 falls in a spare lane past the end
    bench = qpow.JobContext.from_header(BENCH_HEADER)
    saturated = qpow.MAX_U512 - bench.h + 1
    for lo, hi in ((0, 2 * lanes + 3), (2**64 - 9, 2**64 + 9), (saturated - 19, saturated + 2)):
        distances = {k: qpow.distance(bench, k) for k in range(max(lo, 1), hi + 1)}
        best = min(distances.values())
        first = min(k for k, d in distances.items() if d == best)
        checks.append((bench, best, lo, hi, first))
        if best:
            checks.append((bench, best - 1, lo, hi, None))
    for ctx, threshold, lo, hi, want in checks:
        got = engine.search(engine.prepare(ctx, threshold), lo, hi, flag)
        if want is None:
            expected = ChunkOutcome(hi - lo + 1)
        else:
            expected = ChunkOutcome(want - lo + 1, verified(ctx, threshold, want))
        if got != expected:
            return f"range [{lo}, {hi}] at threshold {threshold:#x}: got {got}, expected {expected}"
    return None
