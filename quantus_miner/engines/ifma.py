"""cpu-fast's AVX-512 IFMA kernel: 8 nonce streams in `<8 x i64>` vectors, written as LLVM IR.

Numbers are 10 limbs of 52 bits (Montgomery radix 2^520), so `vpmadd52luq`/`vpmadd52huq`
form the low and high halves of each 52x52-bit product and add them to a 64-bit
accumulator in one instruction (410 per Montgomery step of 8 streams, against 648
multiplies plus as many adds with 29-bit limbs), and every value stays in registers.
Keccak-f[1600]'s 25 lanes of all 8 streams are 25 vectors held across the 24 rounds;
rotations are funnel shifts (`vprolq`), chi's and-not-xor folds into `vpternlogq`.
Nothing here may be compiled on a host without AVX-512 IFMA (LLVM cannot select the
instructions): `fast` checks the host's features before it touches this module, and a
known-answer self-test runs before the kernel is used.

Lane `l` at step `i` holds nonce `base + L*i + l`, as in `kernels`.
"""

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import POLL_MASK, first_hit
from .vector_ir import VectorEmitter

L = 8
LIMBS = 10
LIMB_BITS = 52
SCRATCH_WORDS = 8 * L  # the 8 rate words of each stream's final state, lane-minor
REQUIRES = ("avx512f", "avx512ifma")  # host features LLVM needs to compile this module


I64 = ir.IntType(64)
V = ir.VectorType(I64, L)
FN3 = ir.FunctionType(V, [V, V, V])
ARRAY = types.Array(types.uint64, 1, "C")


class _Emitter(VectorEmitter):
    """`<8 x i64>` IR with AVX-512 IFMA: the Montgomery step on 52-bit limbs (the rest: `VectorEmitter`)."""

    lanes, limbs, limb_bits = L, LIMBS, LIMB_BITS

    def __init__(self, builder: ir.IRBuilder):
        super().__init__(builder)
        module = builder.module
        self.madd_lo = cgutils.get_or_insert_function(module, FN3, "llvm.x86.avx512.vpmadd52l.uq.512")
        self.madd_hi = cgutils.get_or_insert_function(module, FN3, "llvm.x86.avx512.vpmadd52h.uq.512")

    def montmul(self, y, c, n, ninv):
        """y * c * 2^-520 mod n, all 52-bit limbs; y, c < n in, fully reduced out (T < 2n before the subtract)."""
        b = self.b
        zero = self.const(0)
        t = [zero] * (LIMBS + 1)
        for i in range(LIMBS):
            for j in range(LIMBS):
                t[j] = b.call(self.madd_lo, [t[j], y[i], c[j]])
                t[j + 1] = b.call(self.madd_hi, [t[j + 1], y[i], c[j]])
            q = b.call(self.madd_lo, [zero, t[0], ninv])  # (t0 * -n^-1) mod 2^52: t0 + q*n0 = 0 mod 2^52
            for j in range(LIMBS):
                t[j] = b.call(self.madd_lo, [t[j], q, n[j]])
                t[j + 1] = b.call(self.madd_hi, [t[j + 1], q, n[j]])
            carry = b.lshr(t[0], self.const(LIMB_BITS))
            t = [b.add(t[1], carry), *t[2:], zero]
        # each accumulator gathered at most 40 terms < 2^52, so nothing overflowed 64 bits
        return self.reduce(t, n)

    def hash_and_compare(self, y, st, tgt0, thr0):
        """Store the 8 rate words of each stream's state to `st`; return the lanes whose leading word ties or beats."""
        b = self.b
        out = self.keccak(self.absorb(y))
        for w in range(8):
            self.store(out[w], st, w * L)
        lead = b.xor(b.call(self.bswap, [out[0]]), self.splat(tgt0))
        hits = b.icmp_unsigned("<=", lead, self.splat(thr0))
        return b.zext(b.bitcast(hits, ir.IntType(L)), I64)


def _data(context, builder, aryty, value):
    return context.make_array(aryty)(context, builder, value).data


def _constants(em, context, builder, sig, args):
    c = _data(context, builder, sig.args[1], args[1])
    n = _data(context, builder, sig.args[2], args[2])
    cv = [em.splat_load(c, j) for j in range(LIMBS)]
    nv = [em.splat_load(n, j) for j in range(LIMBS)]
    return cv, nv, em.splat(args[3])


@intrinsic
def _scan_step(typingctx, y, c, n, ninv, st, tgt0, thr0):
    """Hash y (into st, returning the hit mask) and step y in place, in one basic block.

    The step is emitted before the hash: measured 2 % faster than after it, 3 % faster than two
    blocks, and as fast or faster than spreading its iterations between the Keccak rounds."""
    sig = types.uint64(ARRAY, ARRAY, ARRAY, types.uint64, ARRAY, types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        em = _Emitter(builder)
        yp = _data(context, builder, signature.args[0], args[0])
        stp = _data(context, builder, signature.args[4], args[4])
        yv = [em.load(yp, j * L) for j in range(LIMBS)]
        cv, nv, ninv_v = _constants(em, context, builder, signature, args)
        for j, limb in enumerate(em.montmul(yv, cv, nv, ninv_v)):
            em.store(limb, yp, j * L)
        return em.hash_and_compare(yv, stp, args[5], args[6])

    return sig, codegen


@intrinsic
def _hash_step(typingctx, y, st, tgt0, thr0):
    """The hashing half alone: absorb + Keccak + compare."""
    sig = types.uint64(ARRAY, ARRAY, types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        em = _Emitter(builder)
        yp = _data(context, builder, signature.args[0], args[0])
        stp = _data(context, builder, signature.args[1], args[1])
        return em.hash_and_compare([em.load(yp, j * L) for j in range(LIMBS)], stp, args[2], args[3])

    return sig, codegen


@intrinsic
def _mont_step(typingctx, y, c, n, ninv):
    """The stepping half alone: y <- y * c * 2^-520 mod n in place."""
    sig = types.uint64(ARRAY, ARRAY, ARRAY, types.uint64)

    def codegen(context, builder, signature, args):
        em = _Emitter(builder)
        yp = _data(context, builder, signature.args[0], args[0])
        cv, nv, ninv_v = _constants(em, context, builder, signature, args)
        for j, limb in enumerate(em.montmul([em.load(yp, j * L) for j in range(LIMBS)], cv, nv, ninv_v)):
            em.store(limb, yp, j * L)
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
        hits = _scan_step(y, c, n, ninv, st, tgt0, thr0)
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
        hits += _hash_step(y, st, target[0], threshold[0]) != 0
    return hits


@njit(nogil=True, cache=True)
def step_half(y, c, n, ninv, steps):
    """`steps` Montgomery steps of every lane (no hashing)."""
    for _ in range(steps):
        _mont_step(y, c, n, ninv)
    return y[0]
