"""cpu-fast: the Numba lane kernel with exact handling of range edges and the saturated tail."""

from __future__ import annotations

import attrs
import llvmlite.binding as llvm
import numpy as np

from ..core import qpow
from ..core.config import KERNEL_NAMES
from ..core.outcomes import ChunkOutcome, verified
from . import kernels, limbs
from .base import PreparedJob
from .baseline import scan_reference

KERNELS = tuple(k for k in KERNEL_NAMES if k != "auto")  # the list lives in core.config
MAX_STEPS_PER_CALL = 1 << 40


def host_isa() -> str:
    """The widest SIMD the JIT targets on this host (names the kernel build in `bench --json`)."""
    features = llvm.get_host_cpu_features()
    for isa in ("avx512f", "avx2", "sse4.2"):
        if features.get(isa):
            return isa
    return "scalar"


@attrs.frozen
class FastConstants:
    step: np.ndarray  # m^L * R mod n, 29-bit limbs: Montgomery-multiplying by it steps y by L nonces
    n: np.ndarray
    ninv: np.uint64  # -n^-1 mod 2^29
    target: np.ndarray  # 8 big-endian words
    threshold: np.ndarray
    first_saturated: int  # first nonce whose exponent saturates; from here y is constant
    y_saturated: int


@attrs.define
class FastEngine:
    kernel: str
    name: str = "cpu-fast"

    @classmethod
    def for_host(cls, requested: str = "auto") -> FastEngine:
        if requested not in KERNEL_NAMES:
            raise ValueError(f"unknown kernel {requested!r} (choose from {', '.join(KERNEL_NAMES)})")
        return cls(kernel=f"lanes8-29bit-{host_isa()}")

    def prepare(self, ctx: qpow.JobContext, threshold: int) -> PreparedJob:
        n = ctx.n
        constants = FastConstants(
            step=limbs.to_limbs(pow(ctx.m, kernels.L, n) * limbs.R % n),
            n=limbs.to_limbs(n),
            ninv=np.uint64((-pow(n, -1, 1 << limbs.LIMB_BITS)) % (1 << limbs.LIMB_BITS)),
            target=limbs.to_be_words(ctx.target),
            threshold=limbs.to_be_words(min(threshold, qpow.MAX_U512)),
            first_saturated=qpow.MAX_U512 - ctx.h + 1,
            y_saturated=pow(ctx.m, qpow.MAX_U512, n),
        )
        return PreparedJob(ctx, threshold, constants)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
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

    def _scan_stepping(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        c: FastConstants = job.constants
        ctx = job.ctx
        lanes = kernels.L
        steps = (end - start + 1) // lanes
        tested = 0
        if steps:
            y = limbs.lanes_to_limbs([pow(ctx.m, ctx.h + start + lane, ctx.n) for lane in range(lanes)])
            st = np.empty(kernels.SCRATCH_WORDS, dtype=np.uint64)
            out = np.zeros(2, dtype=np.int64)
            while tested < lanes * steps:  # slices keep the step count within int64
                todo = min(steps - tested // lanes, MAX_STEPS_PER_CALL)
                verdict = kernels.scan_lanes(y, c.step, c.n, c.ninv, c.target, c.threshold, todo, flag, st, out)
                if verdict == 1:
                    nonce = start + tested + lanes * int(out[0]) + int(out[1])
                    return ChunkOutcome(nonce - start + 1, verified(ctx, job.threshold, nonce))
                if verdict == -1:
                    return ChunkOutcome(tested + lanes * int(out[0]), cancelled=True)
                tested += lanes * todo
        rest = scan_reference(job, start + tested, end, flag)  # fewer than L nonces
        return ChunkOutcome(tested + rest.tested, rest.found, rest.cancelled)

    def warm_up(self) -> None:
        """Compile (or load from the on-disk cache) every kernel this engine runs."""
        ctx = qpow.JobContext.from_header(bytes(32))
        job = self.prepare(ctx, 0)
        self.search(job, 1, 8 * kernels.L, np.zeros(1, dtype=np.uint8))

