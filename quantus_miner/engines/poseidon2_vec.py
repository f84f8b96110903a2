"""cpu-fast-v2's explicit-vector kernels: Poseidon2 over Goldilocks in `<8 x i64>` (AVX-512F) or `<4 x i64>` (AVX2).

The scalar kernel (`kernels_v2`) leaves vectorisation to LLVM's loop vectoriser, which keeps the
state in memory between steps. Here the permutation is LLVM vector IR (through Numba intrinsics, as
`ifma`): the 12 state elements of a group of nonce streams are 12 vectors held in registers across
all 30 rounds, the S-boxes and both linear layers included; each round is straight-line code and the
rounds are IR loops (`_Goldilocks._loop`: compiles in 1-2 s, runs as fast as fully unrolled code).

Goldilocks (p = 2^64 - 2^32 + 1) in vector code, every value any u64 (x mod p is meant):
- a 64x64 -> 128-bit product from four 32x32 -> 64-bit multiplies (`vpmuludq`; LLVM selects it for
  `mul` of operands whose high halves are known zero), three for a square;
- its reduction with 2^64 = 2^32 - 1 and 2^96 = -1 (mod p): one subtract and one `vpmuludq` by
  2^32 - 1, each with a compare-and-correct (masked add/sub on AVX-512, a blend on AVX2);
- linear layers on 32-bit halves: the external layer's additions and the internal layer's sum are
  plain `vpaddq`s on the halves (no carry can occur), folded back once per output; each internal
  output sum + s[i] * DIAG[i] is one product with the sum folded into its partial sums, reduced once.

Both widths scan the same 8 nonce streams per batch with the lane-minor state layout of
`kernels_v2` (element i of lane l at [8 i + l]); the AVX2 kernel runs them as two groups of 4,
one after the other (two groups at once would need 24 state registers; AVX2 has 16).
Everything AVX2 needs is also in AVX-512, so both can be forced and tested on an AVX-512 host.
The width is a compile-time literal: each width is its own compiled (and cached) specialisation.
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils, errors
from numba.extending import intrinsic

from ..core import qpow2
from . import kernels_v2 as scalar
from .kernels_v2 import _compare_words, _load_block2, add, canonical

LANES = 8  # nonce streams per batch, both widths (the state layout of kernels_v2)
assert scalar.LANES == LANES
W = qpow2.WIDTH
M64 = (1 << 64) - 1
M32 = 0xFFFF_FFFF
EPS = M32  # 2^64 mod p
P = qpow2.P
U0, U1 = np.uint64(0), np.uint64(1)

I32 = ir.IntType(32)
I64 = ir.IntType(64)
ARRAY = types.Array(types.uint64, 1, "C")


class _Goldilocks:
    """Straight-line Goldilocks and Poseidon2 IR on `<n x i64>` vectors for one builder."""

    def __init__(self, builder: ir.IRBuilder, n: int):
        self.b = builder
        self.n = n
        self.V = ir.VectorType(I64, n)
        self.bswap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.V, [self.V]),
                                                    f"llvm.bswap.v{n}i64")

    def c(self, x: int) -> ir.Constant:
        return ir.Constant(self.V, [ir.Constant(I64, x & M64)] * self.n)

    # -- memory -----------------------------------------------------------------------------

    def _ptr(self, base, index: int):
        return self.b.bitcast(self.b.gep(base, [ir.Constant(I64, index)]), self.V.as_pointer())

    def load(self, base, index: int):
        return self.b.load(self._ptr(base, index), align=8, typ=self.V)

    def store(self, value, base, index: int) -> None:
        self.b.store(value, self._ptr(base, index), align=8)

    def splat(self, scalar):
        b = self.b
        one = b.insert_element(ir.Constant(self.V, ir.Undefined), scalar, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(self.V, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, self.n), [0] * self.n))

    # -- field --------------------------------------------------------------------------------

    def lo32(self, x):
        return self.b.and_(x, self.c(M32))

    def hi32(self, x):
        return self.b.lshr(x, self.c(32))

    def _combine(self, ll, lh, hl, hh):
        """(hi, lo) of ll + (lh + hl) 2^32 + hh 2^64; no partial sum overflows 64 bits."""
        b = self.b
        t0 = b.add(hl, self.hi32(ll))  # <= (2^32-1)^2 + 2^32-1 < 2^64
        t1 = b.add(lh, self.lo32(t0))
        hi = b.add(b.add(hh, self.hi32(t0)), self.hi32(t1))
        lo = b.or_(b.shl(t1, self.c(32)), self.lo32(ll))
        return hi, lo

    def mul128(self, x, y):
        b = self.b
        xl, xh, yl, yh = self.lo32(x), self.hi32(x), self.lo32(y), self.hi32(y)
        return self._combine(b.mul(xl, yl), b.mul(xl, yh), b.mul(xh, yl), b.mul(xh, yh))

    def reduce(self, hi, lo):
        """hi 2^64 + lo mod p as a u64 (not always < p); exact for all hi, lo (as kernels_v2.reduce128)."""
        b = self.b
        eps = self.c(EPS)
        hh = self.hi32(hi)
        t0 = b.sub(lo, hh)
        t0 = b.select(b.icmp_unsigned("<", lo, hh), b.sub(t0, eps), t0)  # borrowed 2^64 = EPS; cannot underflow
        t1 = b.mul(self.lo32(hi), eps)
        r = b.add(t0, t1)
        return b.select(b.icmp_unsigned("<", r, t1), b.add(r, eps), r)  # carried 2^64 = EPS; cannot overflow

    def mul(self, x, y):
        return self.reduce(*self.mul128(x, y))

    def square(self, x):
        b = self.b
        xl, xh = self.lo32(x), self.hi32(x)
        lh = b.mul(xl, xh)
        return self.reduce(*self._combine(b.mul(xl, xl), lh, lh, b.mul(xh, xh)))

    def add_small(self, x, y):
        """x + y for y < p (a constant): after a carry s < p - 1, so adding EPS cannot carry again."""
        b = self.b
        s = b.add(x, y)
        return b.select(b.icmp_unsigned("<", s, x), b.add(s, self.c(EPS)), s)

    def canonical(self, x):
        b = self.b
        return b.select(b.icmp_unsigned(">=", x, self.c(P)), b.sub(x, self.c(P)), x)

    # -- Poseidon2 ----------------------------------------------------------------------------

    def sbox(self, x):
        x2 = self.square(x)
        x4 = self.square(x2)
        return self.mul(self.mul(x2, x), x4)

    @staticmethod
    def _linear_exact(x, add):
        """The external layer with the integer additions `add` (no reduction): circ(2 M4, M4, M4)."""
        def mat4(a, b, c, d):
            # [[2,3,1,1],[1,2,3,1],[1,1,2,3],[3,1,1,2]] with 8 additions and 2 doublings (Plonky3)
            t01, t23 = add(a, b), add(c, d)
            t0123 = add(t01, t23)
            t01123, t01233 = add(t0123, b), add(t0123, d)
            return add(t01123, t01), add(t01123, add(c, c)), add(t01233, t23), add(t01233, add(a, a))

        blocks = [mat4(*x[k:k + 4]) for k in range(0, W, 4)]
        column = [add(add(blocks[0][i], blocks[1][i]), blocks[2][i]) for i in range(4)]
        return [add(blocks[k][i], column[i]) for k in range(3) for i in range(4)]

    def external_linear(self, x):
        """The external layer on the 32-bit halves: M x = M lo + 2^32 M hi, where every entry of M lo and M hi
        stays below 28 * 2^32 < 2^37 (a row of M sums to 28), so the 50 additions of each half are plain
        `vpaddq`s with no carry to correct (measured: ~4 % faster than 50 field additions of 5 operations)."""
        b = self.b
        lo = self._linear_exact([self.lo32(xi) for xi in x], b.add)
        hi = self._linear_exact([self.hi32(xi) for xi in x], b.add)
        return [self._fold_halves(a, h) for a, h in zip(lo, hi)]

    def _rc(self, rcp, index):
        """The round constant at rc[index] (index an IR i64), broadcast."""
        return self.splat(self.b.load(self.b.gep(rcp, [index]), typ=I64))

    def external_round(self, x, rcp, base):
        b = self.b
        rc = [self._rc(rcp, b.add(base, ir.Constant(I64, i))) for i in range(W)]
        return self.external_linear([self.sbox(self.add_small(xi, r)) for xi, r in zip(x, rc)])

    def _fold_halves(self, lo, hi):
        """lo + hi 2^32 mod p for lo, hi < 2^38: (hi >> 32) 2^64 = (hi >> 32) EPS joins lo, below p."""
        b = self.b
        small = b.add(lo, b.mul(self.hi32(hi), self.c(EPS)))
        return self.add_small(b.shl(hi, self.c(32)), small)

    def internal_round(self, x, rcp, index):
        """x0 <- sbox(x0 + rc); x_i <- sum(x) + DIAG[i] x_i: each output one product, one reduction.

        The sum is taken on the 32-bit halves the products split anyway (plain adds, < 12 * 2^32 each),
        folded to one u64 S, and S's halves join the product's partial sums where they cannot overflow."""
        b = self.b
        x = [self.sbox(self.add_small(x[0], self._rc(rcp, index))), *x[1:]]
        lows = [self.lo32(xi) for xi in x]
        highs = [self.hi32(xi) for xi in x]
        sum_lo, sum_hi = lows[1], highs[1]
        for i in [*range(2, W), 0]:  # x[1..11] first: they need not wait for the S-box
            sum_lo, sum_hi = b.add(sum_lo, lows[i]), b.add(sum_hi, highs[i])
        s = self._fold_halves(sum_lo, sum_hi)
        s_lo, s_hi = self.lo32(s), self.hi32(s)
        out = []
        for i in range(W):
            d = qpow2.MATRIX_DIAG[i]
            dl, dh = self.c(d & M32), self.c(d >> 32)
            # x D + S: ll + lo32(S) and hl + hi32(ll') + hi32(S) stay below 2^64 ((2^32-1)^2 + 2 (2^32-1) < 2^64)
            ll = b.add(b.mul(lows[i], dl), s_lo)
            t0 = b.add(b.add(b.mul(highs[i], dl), self.hi32(ll)), s_hi)
            t1 = b.add(b.mul(lows[i], dh), self.lo32(t0))
            hi = b.add(b.add(b.mul(highs[i], dh), self.hi32(t0)), self.hi32(t1))
            lo = b.or_(b.shl(t1, self.c(32)), self.lo32(ll))
            out.append(self.reduce(hi, lo))
        return out

    def _loop(self, x, count: int, body):
        """x after `count` rounds x <- body(x, r) as an IR loop (r an i64 from 0): one round's code, not 30.

        Measured against the fully unrolled permutation: as fast or faster (the unrolled code is
        ~150 KB per permutation, past the micro-op cache) and it compiles in seconds instead of minutes."""
        b = self.b
        fn = b.function
        pre = b.block
        loop = fn.append_basic_block("p2.rounds")
        after = fn.append_basic_block("p2.done")
        b.branch(loop)
        b.position_at_end(loop)
        r = b.phi(I64)
        r.add_incoming(ir.Constant(I64, 0), pre)
        phis = []
        for xi in x:
            phi = b.phi(self.V)
            phi.add_incoming(xi, pre)
            phis.append(phi)
        new = body(phis, r)
        r_next = b.add(r, ir.Constant(I64, 1))
        end = b.block
        r.add_incoming(r_next, end)
        for phi, xi in zip(phis, new):
            phi.add_incoming(xi, end)
        b.cbranch(b.icmp_unsigned("<", r_next, ir.Constant(I64, count)), loop, after)
        b.position_at_end(after)
        return new

    def permute(self, x, rcp):
        """Poseidon2 on x (12 vectors); rcp: the `RC` table (external rounds' constants, then the internal)."""
        b = self.b
        twelve = ir.Constant(I64, W)
        half = len(qpow2.INITIAL_EXTERNAL)
        x = self.external_linear(list(x))  # Poseidon2 mixes once before the first round
        x = self._loop(x, half, lambda x, r: self.external_round(x, rcp, b.mul(r, twelve)))
        internal0 = ir.Constant(I64, 2 * half * W)
        x = self._loop(x, len(qpow2.INTERNAL), lambda x, r: self.internal_round(x, rcp, b.add(r, internal0)))
        terminal0 = ir.Constant(I64, half * W)
        return self._loop(x, half, lambda x, r: self.external_round(x, rcp, b.add(b.mul(r, twelve), terminal0)))


# The permutation's round constants in one table: 4 x 12 initial external, 4 x 12 terminal external, 22 internal
RC = np.array([c for rnd in qpow2.INITIAL_EXTERNAL + qpow2.TERMINAL_EXTERNAL for c in rnd] + list(qpow2.INTERNAL),
              dtype=np.uint64)


def _width(w) -> int:
    if not isinstance(w, types.IntegerLiteral):
        raise errors.RequireLiteralValue(w)
    n = w.literal_value
    if n not in (4, 8):
        raise errors.TypingError(f"vector width must be 4 or 8, not {n}")
    return n


def _data(context, builder, aryty, value):
    return context.make_array(aryty)(context, builder, value).data


def _groups(context, builder, signature, args, n: int):
    """(emitter, state pointer, RC pointer, group offsets): LANES // n groups of n lanes."""
    em = _Goldilocks(builder, n)
    sp = _data(context, builder, signature.args[0], args[0])
    rcp = _data(context, builder, signature.args[1], args[1])
    return em, sp, rcp, range(0, LANES, n)


@intrinsic
def _blocks23(typingctx, s, rc, t0, width):
    """Blocks 2 and 3 of every lane of `s` (loaded with midstate + block 2) in registers: permute, add
    [1, 1], permute; store the state back and return the lanes (bit l) whose h1 leading word is <= t0."""
    n = _width(width)
    sig = types.uint64(ARRAY, ARRAY, types.uint64, width)

    def codegen(context, builder, signature, args):
        em, sp, rcp, groups = _groups(context, builder, signature, args, n)
        tv = em.splat(args[2])
        bits = ir.Constant(I64, 0)
        for g in groups:
            x = em.permute([em.load(sp, i * LANES + g) for i in range(W)], rcp)
            x[0], x[1] = em.add_small(x[0], em.c(1)), em.add_small(x[1], em.c(1))
            x = em.permute(x, rcp)
            for i in range(W):
                em.store(x[i], sp, i * LANES + g)
            lead = builder.call(em.bswap, [em.canonical(x[0])])  # h1's first big-endian word
            hits = builder.icmp_unsigned("<=", lead, tv)
            mask = builder.zext(builder.bitcast(hits, ir.IntType(n)), I64)
            bits = builder.or_(bits, builder.shl(mask, ir.Constant(I64, g)))
        return bits

    return sig, codegen


@intrinsic
def _permute(typingctx, s, rc, width):
    """The permutation of every lane of `s` (12 * LANES words), in place."""
    n = _width(width)
    sig = types.uint64(ARRAY, ARRAY, width)

    def codegen(context, builder, signature, args):
        em, sp, rcp, groups = _groups(context, builder, signature, args, n)
        for g in groups:
            x = em.permute([em.load(sp, i * LANES + g) for i in range(W)], rcp)
            for i in range(W):
                em.store(x[i], sp, i * LANES + g)
        return ir.Constant(I64, 0)

    return sig, codegen


@njit(inline="always")
def _scan(mid, low, count, high_zero, t_hi, t_lo, flag, width):
    """`kernels_v2.scan_segment` with the two permutations of a batch in vector registers."""
    L = LANES
    s = np.empty(W * L, dtype=np.uint64)
    s2 = np.empty(W * L, dtype=np.uint64)
    b0, b1, b2, b3 = low[0], low[1], low[2], low[3]
    t0 = t_hi[0]
    done = 0
    while done < count:
        if flag[0] != 0:
            return done, -1, True
        n = min(L, count - done)
        _load_block2(s, mid, b0, b1, b2, b3)
        hits = _blocks23(s, RC, t0, width)
        # almost always the first word of h1 already exceeds the target's: hits == 0
        if hits & ((U1 << np.uint64(n)) - U1):
            h2_ready = False
            for l in range(n):
                if high_zero and done == 0 and l == 0 and (b0 | b1 | b2 | b3) == U0:
                    continue  # nonce 0
                order = _compare_words(s, l, t_hi)
                if order == 0:  # h1 ties the target's high half: h2 decides (the 5th permutation)
                    if not h2_ready:
                        s2[:] = s
                        _permute(s2, RC, width)
                        h2_ready = True
                    order = _compare_words(s2, l, t_lo)
                if order < 0:
                    return done + l + 1, done + l, False
        done += n
        c0 = b0 + np.uint64(n)
        k = np.uint64(c0 < b0)
        b0 = c0
        b1 += k
        k = k & np.uint64(b1 == U0)
        b2 += k
        k = k & np.uint64(b2 == U0)
        b3 += k
    return done, -1, False


@njit(nogil=True, cache=True)
def scan_segment_avx512(mid, low, count, high_zero, t_hi, t_lo, flag):
    """As `kernels_v2.scan_segment`, on `<8 x i64>` vectors."""
    return _scan(mid, low, count, high_zero, t_hi, t_lo, flag, 8)


@njit(nogil=True, cache=True)
def scan_segment_avx2(mid, low, count, high_zero, t_hi, t_lo, flag):
    """As `kernels_v2.scan_segment`, on two groups of `<4 x i64>` vectors."""
    return _scan(mid, low, count, high_zero, t_hi, t_lo, flag, 4)


@njit(inline="always")
def _absorb(state, block, width):
    """`kernels_v2.absorb_block` (the sponge step, canonical out) on the vector permutation: midstates are
    computed by the kernel that uses them, and `auto` compiles no scalar Poseidon2 code at all."""
    s = np.empty(W * LANES, dtype=np.uint64)
    for i in range(W):
        x = state[i] if i >= 8 else add(state[i], block[i])
        for l in range(LANES):
            s[i * LANES + l] = x
    _permute(s, RC, width)
    out = np.empty(W, dtype=np.uint64)
    for i in range(W):
        out[i] = canonical(s[i * LANES])
    return out


@njit(nogil=True, cache=True)
def absorb_block_avx512(state, block):
    """Absorb one block, 8 lanes wide."""
    return _absorb(state, block, 8)


@njit(nogil=True, cache=True)
def absorb_block_avx2(state, block):
    """Absorb one block, 4 lanes wide."""
    return _absorb(state, block, 4)


@njit(nogil=True, cache=True)
def permute_many_avx512(s, rounds):
    """Permute the lane state `rounds` times (the permutation alone, for `bench --profile`)."""
    for _ in range(rounds):
        _permute(s, RC, 8)


@njit(nogil=True, cache=True)
def permute_many_avx2(s, rounds):
    """Run `rounds` permutations in place, 4 lanes wide."""
    for _ in range(rounds):
        _permute(s, RC, 4)


__all__ = ["LANES", "absorb_block_avx2", "absorb_block_avx512", "permute_many_avx2", "permute_many_avx512",
           "scan_segment_avx2", "scan_segment_avx512"]
