"""cpu-fast's AVX2 kernel: 8 nonce streams as two groups of `<4 x i64>` vectors, written as LLVM IR.

For CPUs without AVX-512 (so without IFMA): numbers are 18 limbs of 29 bits (Montgomery radix
2^522), multiplied with 32x32 -> 64-bit `vpmuludq` (LLVM selects it for `mul` of operands whose
high halves it may ignore); a 58-bit product accumulates without carries (at most 36 per limb
before the shift, < 2^64). Keccak-f[1600]'s 25 lanes of a group are 25 vectors through the 24
rounds (AVX2 has 16 registers: LLVM spills some to the stack, which L1 serves); rotations are
funnel shifts. Each batch hashes and then steps group 0 (lanes 0-3), then group 1 (lanes 4-7),
one group per iteration of a loop. Everything here is AVX2, so it can be forced and tested on an AVX-512 host.

Same interface as `kernels` and `ifma` (L, LIMBS, LIMB_BITS, SCRATCH_WORDS, scan_lanes, hash_half,
step_half); lane `l` at step `i` holds nonce `base + L*i + l`.
"""

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from .kernels import POLL_MASK, first_hit
from .vector_ir import VectorEmitter

L = 8
N = 4  # lanes per vector
LIMBS = 18
LIMB_BITS = 29
SCRATCH_WORDS = 8 * L  # the 8 rate words of each stream's final state, lane-minor
REQUIRES = ("avx2",)

I64 = ir.IntType(64)
ARRAY = types.Array(types.uint64, 1, "C")


class _Emitter(VectorEmitter):
    """`<4 x i64>` IR: the Montgomery step on 29-bit limbs with `vpmuludq` (the rest: `VectorEmitter`)."""

    lanes, limbs, limb_bits = N, LIMBS, LIMB_BITS

    def mul32(self, x, y):
        """The low 32 bits of x times those of y, 64 bits wide (`vpmuludq`)."""
        m = self.const(0xFFFF_FFFF)
        return self.b.mul(self.b.and_(x, m), self.b.and_(y, m))

    def montmul(self, y, c, n, ninv):
        """y * c * 2^-522 mod n, 29-bit limbs; y, c < n in, fully reduced out (T < 2n before the subtract)."""
        b = self.b
        zero = self.const(0)
        mask = self.const((1 << LIMB_BITS) - 1)
        t = [zero] * LIMBS
        for i in range(LIMBS):
            for j in range(LIMBS):
                t[j] = b.add(t[j], self.mul32(y[i], c[j]))
            # (t0 * -n^-1) mod 2^29 depends on t0 mod 2^29 only, so its low 32 bits will do
            q = b.and_(self.mul32(t[0], ninv), mask)
            for j in range(LIMBS):
                t[j] = b.add(t[j], self.mul32(q, n[j]))
            carry = b.lshr(t[0], self.const(LIMB_BITS))  # t0 is now a multiple of 2^29
            t = [b.add(t[1], carry), *t[2:], zero]
        # each accumulator gathered at most 36 products < 2^58 plus a carry: nothing overflowed 64 bits
        return self.reduce(t, n)

    def hash_and_compare(self, y, st, g, tgt0, thr0):
        """Store group g's 8 rate words to `st` (g: the group's first lane, an IR i64); return its lanes
        (bits g..g+3) whose leading word ties or beats."""
        b = self.b
        out = self.keccak(self.absorb(y))
        for w in range(8):
            self.store(out[w], st, b.add(g, ir.Constant(I64, w * L)))
        lead = b.xor(b.call(self.bswap, [out[0]]), self.splat(tgt0))
        hits = b.icmp_unsigned("<=", lead, self.splat(thr0))
        return b.shl(b.zext(b.bitcast(hits, ir.IntType(N)), I64), g)


def _data(context, builder, aryty, value):
    return context.make_array(aryty)(context, builder, value).data


def _constants(em, context, builder, sig, args):
    c = _data(context, builder, sig.args[1], args[1])
    n = _data(context, builder, sig.args[2], args[2])
    return ([em.splat_load(c, j) for j in range(LIMBS)], [em.splat_load(n, j) for j in range(LIMBS)],
            em.splat(args[3]))


def _limbs(em, yp, g):
    return [em.load(yp, em.b.add(g, ir.Constant(I64, j * L))) for j in range(LIMBS)]


def _step(em, yp, g, cv, nv, ninv_v):
    for j, limb in enumerate(em.montmul(_limbs(em, yp, g), cv, nv, ninv_v)):
        em.store(limb, yp, em.b.add(g, ir.Constant(I64, j * L)))


# One group per call (g: its first lane, 0 or N), called in a loop: two groups in one block let LLVM
# interleave them and spill (with 16 registers, measured 4.1 M nonces/s against 6.5 M).
@intrinsic
def _scan_group(typingctx, y, c, n, ninv, st, tgt0, thr0, g):
    """Hash group g's y (into st; returns its hit bits) and step it in place."""
    sig = types.uint64(ARRAY, ARRAY, ARRAY, types.uint64, ARRAY, types.uint64, types.uint64, types.int64)

    def codegen(context, builder, signature, args):
        em = _Emitter(builder)
        yp = _data(context, builder, signature.args[0], args[0])
        stp = _data(context, builder, signature.args[4], args[4])
        cv, nv, ninv_v = _constants(em, context, builder, signature, args)
        # hash first, then step from y reloaded: y need not stay live across the step
        hits = em.hash_and_compare(_limbs(em, yp, args[7]), stp, args[7], args[5], args[6])
        _step(em, yp, args[7], cv, nv, ninv_v)
        return hits

    return sig, codegen


@intrinsic
def _hash_group(typingctx, y, st, tgt0, thr0, g):
    """The hashing half alone: absorb + Keccak + compare."""
    sig = types.uint64(ARRAY, ARRAY, types.uint64, types.uint64, types.int64)

    def codegen(context, builder, signature, args):
        em = _Emitter(builder)
        yp = _data(context, builder, signature.args[0], args[0])
        stp = _data(context, builder, signature.args[1], args[1])
        return em.hash_and_compare(_limbs(em, yp, args[4]), stp, args[4], args[2], args[3])

    return sig, codegen


@intrinsic
def _step_group(typingctx, y, c, n, ninv, g):
    """The stepping half alone: y <- y * c * 2^-522 mod n in place."""
    sig = types.uint64(ARRAY, ARRAY, ARRAY, types.uint64, types.int64)

    def codegen(context, builder, signature, args):
        em = _Emitter(builder)
        yp = _data(context, builder, signature.args[0], args[0])
        cv, nv, ninv_v = _constants(em, context, builder, signature, args)
        _step(em, yp, args[4], cv, nv, ninv_v)
        return ir.Constant(I64, 0)

    return sig, codegen


@njit(nogil=True, cache=True)
def scan_lanes(y, c, n, ninv, target, threshold, steps, flag, st, out):
    """As `kernels.scan_lanes`, except that on a hit `y` has already stepped past the hit."""
    tgt0 = target[0]
    thr0 = threshold[0]
    for it in range(steps):
        if (it & POLL_MASK) == 0 and flag[0] != 0:
            out[0] = it
            return -1
        hits = 0
        for g in range(0, L, N):
            hits |= _scan_group(y, c, n, ninv, st, tgt0, thr0, g)
        if hits != 0:  # rare: the leading word ties or beats the threshold, compare the rest
            lane = first_hit(st, hits, target, threshold, L)
            if lane >= 0:
                out[0] = it
                out[1] = lane
                return 1
    out[0] = steps
    return 0


@njit(nogil=True, cache=True)
def hash_half(y, target, threshold, steps, st):
    """Absorb + Keccak + compare `steps` times (lane 0's lowest limb flipped each step); returns the hit count."""
    hits = 0
    for _ in range(steps):
        y[0] ^= np.uint64(1)
        for g in range(0, L, N):
            hits += _hash_group(y, st, target[0], threshold[0], g) != 0
    return hits


@njit(nogil=True, cache=True)
def step_half(y, c, n, ninv, steps):
    """`steps` Montgomery steps of every lane (no hashing)."""
    for _ in range(steps):
        for g in range(0, L, N):
            _step_group(y, c, n, ninv, g)
    return y[0]
