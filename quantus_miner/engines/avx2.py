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
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import POLL_MASK, first_hit
from .keccak import PAD_WORD8, ROT, ROUND_CONSTANTS

L = 8
N = 4  # lanes per vector
LIMBS = 18
LIMB_BITS = 29
SCRATCH_WORDS = 8 * L  # the 8 rate words of each stream's final state, lane-minor
REQUIRES = ("avx2",)

I32 = ir.IntType(32)
I64 = ir.IntType(64)
V = ir.VectorType(I64, N)
ARRAY = types.Array(types.uint64, 1, "C")


def _const(x: int) -> ir.Constant:
    return ir.Constant(V, [ir.Constant(I64, x & (2**64 - 1))] * N)


class _Emitter:
    """Straight-line `<4 x i64>` IR: loads, stores, the Montgomery step, absorb, Keccak."""

    def __init__(self, builder: ir.IRBuilder):
        self.b = builder
        module = builder.module
        fn3 = ir.FunctionType(V, [V, V, V])
        self.fshl = cgutils.get_or_insert_function(module, fn3, "llvm.fshl.v4i64")
        self.bswap = cgutils.get_or_insert_function(module, ir.FunctionType(V, [V]), "llvm.bswap.v4i64")

    def _ptr(self, base, index):
        """Vector at base[index]; index an int or an IR i64."""
        if isinstance(index, int):
            index = ir.Constant(I64, index)
        return self.b.bitcast(self.b.gep(base, [index]), V.as_pointer())

    def load(self, base, index: int):
        return self.b.load(self._ptr(base, index), align=8, typ=V)

    def store(self, value, base, index: int) -> None:
        self.b.store(value, self._ptr(base, index), align=8)

    def splat(self, scalar):
        b = self.b
        one = b.insert_element(ir.Constant(V, ir.Undefined), scalar, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(V, ir.Undefined), ir.Constant(ir.VectorType(I32, N), [0] * N))

    def splat_load(self, base, index: int):
        return self.splat(self.b.load(self.b.gep(base, [ir.Constant(I64, index)]), typ=I64))

    def mul32(self, x, y):
        """The low 32 bits of x times those of y, 64 bits wide (`vpmuludq`)."""
        m = _const(0xFFFF_FFFF)
        return self.b.mul(self.b.and_(x, m), self.b.and_(y, m))

    def montmul(self, y, c, n, ninv):
        """y * c * 2^-522 mod n, 29-bit limbs; y, c < n in, fully reduced out (T < 2n before the subtract)."""
        b = self.b
        zero = _const(0)
        mask = _const((1 << LIMB_BITS) - 1)
        t = [zero] * LIMBS
        for i in range(LIMBS):
            for j in range(LIMBS):
                t[j] = b.add(t[j], self.mul32(y[i], c[j]))
            # (t0 * -n^-1) mod 2^29 depends on t0 mod 2^29 only, so its low 32 bits will do
            q = b.and_(self.mul32(t[0], ninv), mask)
            for j in range(LIMBS):
                t[j] = b.add(t[j], self.mul32(q, n[j]))
            carry = b.lshr(t[0], _const(LIMB_BITS))  # t0 is now a multiple of 2^29
            t = [b.add(t[1], carry), *t[2:], zero]
        # each accumulator gathered at most 36 products < 2^58 plus a carry: nothing overflowed 64 bits
        k = zero
        norm = []
        for j in range(LIMBS):
            s = b.add(t[j], k)
            norm.append(b.and_(s, mask))
            k = b.lshr(s, _const(LIMB_BITS))
        borrow = zero
        diff = []
        for j in range(LIMBS):
            d = b.sub(b.sub(norm[j], n[j]), borrow)
            diff.append(b.and_(d, mask))
            borrow = b.lshr(d, _const(63))
        keep_diff = b.icmp_unsigned("==", borrow, zero)  # no final borrow: T >= n
        return [b.select(keep_diff, diff[j], norm[j]) for j in range(LIMBS)]

    def absorb(self, y):
        """The 25 Keccak lanes of SHA3-512(be64(y)): word w is the little-endian read of bytes 8w..8w+7."""
        b = self.b
        state = [_const(0)] * 25
        for k in range(8):  # 64-bit word k of y, k = 0 least significant
            word = None
            for j in range(LIMBS):
                lo = LIMB_BITS * j
                if lo + LIMB_BITS <= 64 * k or lo >= 64 * (k + 1):
                    continue
                part = b.shl(y[j], _const(lo - 64 * k)) if lo >= 64 * k else b.lshr(y[j], _const(64 * k - lo))
                word = part if word is None else b.or_(word, part)
            state[7 - k] = b.call(self.bswap, [word])  # big-endian: the most significant word first
        state[8] = _const(PAD_WORD8)
        return state

    def rol(self, x, r: int):
        return self.b.call(self.fshl, [x, x, _const(r)]) if r else x

    def keccak(self, a):
        b = self.b
        ones = _const(-1)
        a = list(a)
        for rc in ROUND_CONSTANTS:
            c = [b.xor(b.xor(b.xor(b.xor(a[x], a[x + 5]), a[x + 10]), a[x + 15]), a[x + 20]) for x in range(5)]
            d = [b.xor(c[(x - 1) % 5], self.rol(c[(x + 1) % 5], 1)) for x in range(5)]
            bb = [None] * 25
            for x in range(5):
                for y in range(5):
                    bb[y + 5 * ((2 * x + 3 * y) % 5)] = self.rol(b.xor(a[x + 5 * y], d[x]), ROT[x][y])
            for y in range(5):
                for x in range(5):
                    nxt, nxt2 = bb[(x + 1) % 5 + 5 * y], bb[(x + 2) % 5 + 5 * y]
                    a[x + 5 * y] = b.xor(bb[x + 5 * y], b.and_(b.xor(nxt, ones), nxt2))
            a[0] = b.xor(a[0], _const(rc))
        return a

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
