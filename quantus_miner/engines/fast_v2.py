"""QPoW v2 engines: cpu-fast-v2 (Numba, midstate + lazy second squeeze) and cpu-baseline-v2.

A nonce costs 5 permutations naively. Block 0 (the header) is absorbed once per job (`prepare`)
and block 1 (the nonce's high 256 bits) once per 2^256-aligned segment of each `search` call
(one permutation, negligible against a chunk), so each nonce needs blocks 2 and 3 only; h1 (the
hash's high 256 bits) decides `hash < target` unless it equals the target's high half, so the
5th permutation runs only then: 2 permutations per nonce.

Kernels, fastest first: `v2-avx512` and `v2-avx2` (`poseidon2_vec`: explicit LLVM vector IR,
`<8 x i64>` / `<4 x i64>`) and `v2-lanes8` (`kernels_v2`: scalar code LLVM vectorises; runs
anywhere). As for cpu-fast, `auto` takes the first whose host features are present and whose
known-answer self-test passes at warm-up on this host; `--kernel` forces one.

>>> from quantus_miner.core import qpow2
>>> engine = FastV2Engine()
>>> job = engine.prepare(bytes(32), qpow2.target_of(5000))
>>> engine.search(job, 1, 10_000, new_cancel_flag()).found.nonce
7414
"""

from __future__ import annotations

from types import ModuleType

import attrs
import numpy as np

from ..core import qpow2
from ..core.config import V2_KERNELS
from ..core.outcomes import ChunkOutcome, verified_v2
from . import kernels_v2 as kernels
from . import poseidon2_vec
from .base import BENCH_HEADER, PreparedJob, new_cancel_flag, steps_per_cpu_second
from .baseline_v2 import check_range
from .isa import KernelChoice, KernelUnavailable, host_features


LOW_MASK = (1 << 256) - 1
MAX_NONCES_PER_CALL = 1 << 62  # the kernel counts in int64


def _words_be(value: int) -> np.ndarray:
    """A 256-bit value as 4 u64 words, most significant first."""
    return np.array([(value >> (64 * (3 - k))) & ((1 << 64) - 1) for k in range(4)], dtype=np.uint64)


def _limbs_le(value: int) -> np.ndarray:
    """A 256-bit value as 4 u64 limbs, least significant first."""
    return np.array([(value >> (64 * k)) & ((1 << 64) - 1) for k in range(4)], dtype=np.uint64)


def _felts(chunk32: bytes) -> np.ndarray:
    return np.array(qpow2.pack_bytes(chunk32)[: qpow2.RATE], dtype=np.uint64)


@attrs.frozen
class V2Context:
    """A QPoW v2 job as the kernels take it: header state after block 0 and the target in words."""
    header: bytes
    header_state: np.ndarray  # sponge state after block 0, computed by the kernel
    target_hi: np.ndarray  # target >> 256, 4 big-endian words
    target_lo: np.ndarray


def prepare_context(header: bytes, target: int, absorb=None) -> V2Context:
    """The job's constants; `absorb` (default: the scalar kernel's) computes the header's midstate."""
    if len(header) != 32:
        raise ValueError("header must be 32 bytes")
    if not 0 <= target <= qpow2.MAX_U512:
        raise ValueError("target must be in [0, 2^512 - 1]")
    zero = np.zeros(qpow2.WIDTH, dtype=np.uint64)
    return V2Context(
        header=header,
        header_state=(absorb or kernels.absorb_block)(zero, _felts(header)),
        target_hi=_words_be(target >> 256),
        target_lo=_words_be(target & LOW_MASK),
    )


def nonce_midstate(ctx: V2Context, nonce: int, absorb=None) -> np.ndarray:
    """The state after blocks 0 and 1 for `nonce`'s segment (the kernel's own computation)."""
    high = (nonce >> 256).to_bytes(32, "big")
    return (absorb or kernels.absorb_block)(ctx.header_state, _felts(high))


@attrs.frozen
class V2KernelSpec:
    """One v2 kernel: `module.<scan>` has `kernels_v2.scan_segment`'s interface, `module.<permute>`
    `permute_many`'s (both looked up at call time); `requires`: the host features it is built for."""

    name: str
    label: str
    module: ModuleType
    scan: str
    permute: str
    absorb: str  # `kernels_v2.absorb_block`'s interface: each kernel computes its own midstates
    requires: tuple[str, ...] = ()

    def missing(self, features: frozenset[str]) -> list[str]:
        """The CPU features the kernel needs that `features` lacks."""
        return [f for f in self.requires if f not in features]

    def scan_segment(self, *args):
        """Run the kernel's scan over one segment."""
        return getattr(self.module, self.scan)(*args)

    def permute_many(self, state: np.ndarray, rounds: int) -> None:
        """Run `rounds` permutations in place (for `bench --profile`)."""
        getattr(self.module, self.permute)(state, rounds)

    def absorb_block(self, state: np.ndarray, block: np.ndarray) -> np.ndarray:
        """Absorb one block into the sponge state with this kernel."""
        return getattr(self.module, self.absorb)(state, block)


SPECS = {
    "v2-avx512": V2KernelSpec("v2-avx512", "v2-avx512-mul32", poseidon2_vec, "scan_segment_avx512",
                              "permute_many_avx512", "absorb_block_avx512", ("avx512f",)),
    "v2-avx2": V2KernelSpec("v2-avx2", "v2-avx2-mul32", poseidon2_vec, "scan_segment_avx2",
                            "permute_many_avx2", "absorb_block_avx2", ("avx2",)),
    "v2-lanes8": V2KernelSpec("v2-lanes8", kernels.KERNEL_NAME, kernels, "scan_segment", "permute_many",
                              "absorb_block"),
}
assert tuple(SPECS) == V2_KERNELS


@attrs.define
class FastV2Engine(KernelChoice):
    """QPoW v2 (Poseidon2) on Numba kernels, the first that passes its self-test."""

    SPECS = SPECS
    UNKNOWN_FOR = " for cpu-fast-v2"

    # in order of preference; warm-up keeps the first that passes (default: the portable scalar kernel)
    candidates: tuple[V2KernelSpec, ...] = (SPECS["v2-lanes8"],)
    forced: bool = False
    name: str = "cpu-fast-v2"
    pow: str = "v2"
    spec: V2KernelSpec | None = None  # the kernel in use, set by warm-up

    def _self_test(self, spec: V2KernelSpec) -> str | None:
        return self_test(spec)

    def prepare(self, header: bytes, target: int) -> PreparedJob:
        """The job's header state and target as the chosen kernel takes them."""
        return PreparedJob(prepare_context(header, target, self._chosen().absorb_block), target)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        """Scan [start, end] upward; the first valid nonce, or all tested, or cancelled."""
        check_range(start, end)
        ctx: V2Context = job.ctx
        spec = self._chosen()
        tested, cursor = 0, start
        while cursor <= end:
            # one kernel call per 2^256-aligned segment: the midstate changes with the high half
            last = min(end, cursor | LOW_MASK, cursor + MAX_NONCES_PER_CALL - 1)
            done, offset, cancelled = spec.scan_segment(
                nonce_midstate(ctx, cursor, spec.absorb_block),
                _limbs_le(cursor & LOW_MASK),
                last - cursor + 1,
                cursor >> 256 == 0,
                ctx.target_hi,
                ctx.target_lo,
                flag,
            )
            tested += done
            if offset >= 0:
                return ChunkOutcome(tested, verified_v2(ctx.header, job.threshold, cursor + offset))
            if cancelled:
                return ChunkOutcome(tested, cancelled=True)
            cursor = last + 1
        return ChunkOutcome(tested)


    def profile(self, seconds: float = 1.0) -> dict[str, float]:
        """Per CPU-second of one thread, no chunking: `permutation_rate` (8-lane permutations alone, counted per
        lane) and `kernel_rate` (nonces of the scan kernel itself at target 0, about 2 permutations each).
        Each runs about `seconds`."""
        spec = self._chosen()
        ctx = prepare_context(BENCH_HEADER, 0, spec.absorb_block)
        mid = nonce_midstate(ctx, 0, spec.absorb_block)
        low = _limbs_le(1)
        flag = new_cancel_flag()
        state = np.arange(qpow2.WIDTH * kernels.LANES, dtype=np.uint64)
        runs = {
            "permutation_rate": lambda n: spec.permute_many(state, n),
            "kernel_rate": lambda n: spec.scan_segment(mid, low, n * kernels.LANES, False, ctx.target_hi,
                                                       ctx.target_lo, flag),
        }
        return {name: kernels.LANES * steps_per_cpu_second(run, seconds) for name, run in runs.items()}


def _reference_outcome(header: bytes, target: int, start: int, end: int) -> ChunkOutcome:
    for nonce in range(start, end + 1):
        if nonce and qpow2.pow_hash(header, nonce) < target:
            return ChunkOutcome(nonce - start + 1, verified_v2(header, target, nonce))
    return ChunkOutcome(end - start + 1)


def self_test(spec: V2KernelSpec) -> str | None:
    """Known answers for `spec` on this host: None when all pass, else what went wrong.

    The published vector (7414 at difficulty 5000, not reported from a spare lane past a range's end);
    nonce 0 never valid; then small ranges checked nonce by nonce against the reference (about 30
    reference hashes, ~60 ms) across 2^256 (the midstate changes) and up to 2^512 - 1, at targets
    h + 1 and h for the best hash h of the range: h1 ties the target's high half there, so the lazy
    5th permutation decides, and a hash equal to the target is invalid.
    """
    engine = FastV2Engine((spec,), forced=True, spec=spec)
    flag = new_cancel_flag()
    zero, easy = bytes(32), qpow2.target_of(5000)
    checks = [(zero, easy, 1, 10_000, 7414), (zero, easy, 7414 - 4 * kernels.LANES + 1, 7414, 7414),
              (zero, easy, 7411, 7413, None), (zero, qpow2.MAX_U512, 0, 0, None), (zero, qpow2.MAX_U512, 0, 3, 1)]
    for lo, hi in ((2**256 - 5, 2**256 + 7), (qpow2.MAX_U512 - 10, qpow2.MAX_U512)):
        hashes = {k: qpow2.pow_hash(BENCH_HEADER, k) for k in range(lo, hi + 1)}
        best = min(hashes, key=hashes.get)
        checks += [(BENCH_HEADER, min(hashes[best] + 1, qpow2.MAX_U512), lo, hi, best), (BENCH_HEADER, hashes[best], lo, hi, None)]
    for header, target, lo, hi, want in checks:
        got = engine.search(engine.prepare(header, target), lo, hi, flag)
        if want is None:
            expected = ChunkOutcome(hi - lo + 1)
        else:
            expected = ChunkOutcome(want - lo + 1, verified_v2(header, target, want))
        if got != expected:
            return f"range [{lo}, {hi}] at target {target:#x}: got {got}, expected {expected}"
    return None
