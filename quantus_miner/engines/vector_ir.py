"""What the explicit-vector v1 kernels share: `<N x i64>` IR for loads, stores, the final reduction of a
Montgomery product, the SHA3-512 absorb of a 512-bit number and Keccak-f[1600].

`ifma` (AVX-512 IFMA, 52-bit limbs) and `avx2` (29-bit limbs) subclass `VectorEmitter` with their lane
count and limb layout and add their own Montgomery multiply.
"""

from __future__ import annotations

import llvmlite.ir as ir
from numba.core import cgutils

from .keccak import PAD_WORD8, ROT, ROUND_CONSTANTS

I32 = ir.IntType(32)
I64 = ir.IntType(64)


class VectorEmitter:
    """Straight-line vector IR for one builder; subclasses set `lanes`, `limbs` and `limb_bits`."""

    lanes: int
    limbs: int
    limb_bits: int

    def __init__(self, builder: ir.IRBuilder):
        self.b = builder
        self.v = v = ir.VectorType(I64, self.lanes)
        fn3 = ir.FunctionType(v, [v, v, v])
        self.fshl = cgutils.get_or_insert_function(builder.module, fn3, f"llvm.fshl.v{self.lanes}i64")
        self.bswap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v, [v]),
                                                    f"llvm.bswap.v{self.lanes}i64")

    def const(self, x: int) -> ir.Constant:
        return ir.Constant(self.v, [ir.Constant(I64, x & (2**64 - 1))] * self.lanes)

    def _ptr(self, base, index):
        """Vector at base[index]; index an int or an IR i64."""
        if isinstance(index, int):
            index = ir.Constant(I64, index)
        return self.b.bitcast(self.b.gep(base, [index]), self.v.as_pointer())

    def load(self, base, index):
        return self.b.load(self._ptr(base, index), align=8, typ=self.v)

    def store(self, value, base, index) -> None:
        self.b.store(value, self._ptr(base, index), align=8)

    def splat(self, scalar):
        b, v = self.b, self.v
        one = b.insert_element(ir.Constant(v, ir.Undefined), scalar, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(v, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))

    def splat_load(self, base, index: int):
        return self.splat(self.b.load(self.b.gep(base, [ir.Constant(I64, index)]), typ=I64))

    def reduce(self, t, n):
        """Carry-normalise the Montgomery accumulators `t` (T < 2n) into limbs and subtract n once if T >= n."""
        b = self.b
        zero, mask = self.const(0), self.const((1 << self.limb_bits) - 1)
        k = zero
        norm = []
        for j in range(self.limbs):
            s = b.add(t[j], k)
            norm.append(b.and_(s, mask))
            k = b.lshr(s, self.const(self.limb_bits))
        borrow = zero
        diff = []
        for j in range(self.limbs):
            d = b.sub(b.sub(norm[j], n[j]), borrow)
            diff.append(b.and_(d, mask))
            borrow = b.lshr(d, self.const(63))
        keep_diff = b.icmp_unsigned("==", borrow, zero)  # no final borrow: T >= n
        return [b.select(keep_diff, diff[j], norm[j]) for j in range(self.limbs)]

    def absorb(self, y):
        """The 25 Keccak lanes of SHA3-512(be64(y)): word w is the little-endian read of bytes 8w..8w+7."""
        b, bits = self.b, self.limb_bits
        state = [self.const(0)] * 25
        for k in range(8):  # 64-bit word k of y, k = 0 least significant
            word = None
            for j in range(self.limbs):
                lo = bits * j
                if lo + bits <= 64 * k or lo >= 64 * (k + 1):
                    continue
                part = b.shl(y[j], self.const(lo - 64 * k)) if lo >= 64 * k else b.lshr(y[j], self.const(64 * k - lo))
                word = part if word is None else b.or_(word, part)
            state[7 - k] = b.call(self.bswap, [word])  # big-endian: the most significant word first
        state[8] = self.const(PAD_WORD8)
        return state

    def rol(self, x, r: int):
        return self.b.call(self.fshl, [x, x, self.const(r)]) if r else x

    def keccak(self, a):
        """Keccak-f[1600] on 25 vectors; the caller uses what it needs and LLVM drops the rest of the last round."""
        b = self.b
        ones = self.const(-1)
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
            a[0] = b.xor(a[0], self.const(rc))
        return a
