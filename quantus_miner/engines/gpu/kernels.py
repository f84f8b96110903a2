"""The CUDA kernels of gpu-cuda (QPoW v1) and gpu-cuda-v2 (QPoW v2), written with numba-cuda.

Imported only through `engines.gpu.load_cuda()` (numba-cuda is the optional `gpu` extra). Every
launch scans `count` nonces at offsets 0..count-1 from a base; thread g of T takes offsets g, g+T,
g+2T, ... so consecutive threads hash consecutive nonces. A hit lowers `found[0]` (atomic min) to its
offset; a thread stops once its next offset lies above `found[0]`, so every offset below the final
minimum was tested and the minimum is the first valid nonce of the launch, in nonce order. Cancel is
the host's: launches are short (tens of ms) and the host polls its flag between them.

Arithmetic: all values are uint64 (NumPy scalars in the simulator, i64 registers in PTX) and every
constant is a typed uint64, so Numba never promotes to float and the simulator computes exactly what
the compiled code does. v1's 32-bit limbs sit in uint64 variables; NVVM narrows what it can.
"""

from __future__ import annotations

import linecache
import warnings

import numpy as np
from numba import cuda

from ...core import qpow2
from ..keccak import PAD_WORD8, ROUND_CONSTANTS
from . import codegen

SIMULATED = bool(getattr(cuda, "simulator_enabled", False)) or cuda.jit.__module__.startswith(
    "numba.cuda.simulator")
if SIMULATED:  # NumPy warns on every wrapping scalar operation; the wrap is intended (see the docstring)
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)

U0, U1 = np.uint64(0), np.uint64(1)
S32, M32, B32 = np.uint64(32), np.uint64(0xFFFF_FFFF), np.uint64(1 << 32)
EPS = np.uint64(0xFFFF_FFFF)  # 2^64 mod p
P = np.uint64(qpow2.P)
PAD8 = np.uint64(PAD_WORD8)
RC = np.array(ROUND_CONSTANTS, dtype=np.uint64)
NOT_FOUND = np.iinfo(np.int64).max

# forceinline: NVVM inlines every helper (one straight-line kernel); the simulator has no such option
_device = cuda.jit(device=True) if SIMULATED else cuda.jit(device=True, forceinline=True)


def _exec(name: str, source: str) -> None:
    """Define generated `source` in this module (and keep its text for tracebacks)."""
    filename = f"<quantus_miner.engines.gpu.codegen:{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), globals())  # noqa: S102 - our own generated code


# ---------------------------------------------------------------------------------------------
# shared helpers


@_device
def bswap32(x):
    return ((x & np.uint64(0xFF)) << np.uint64(24)) | ((x & np.uint64(0xFF00)) << np.uint64(8)) | (
        (x >> np.uint64(8)) & np.uint64(0xFF00)) | ((x >> np.uint64(24)) & np.uint64(0xFF))


@_device
def bswap64(x):
    return (bswap32(x & M32) << S32) | bswap32(x >> S32)


@_device
def rotl(v, r):
    return (v << np.uint64(r)) | (v >> np.uint64(64 - r))


# ---------------------------------------------------------------------------------------------
# QPoW v1: y -> SHA3-512(be64(y)) -> distance <= threshold; y steps by Montgomery multiplication

_exec("montmul", codegen.montmul_source())
_exec("keccak_y", codegen.keccak_source())
montmul = _device(montmul)  # noqa: F821 - defined by _exec
keccak_y = _device(keccak_y)  # noqa: F821


@cuda.jit
def scan_v1(y0, consts, levels, ninv, target, threshold, count, found):
    """v1: nonces base + offset, offset in [0, count); y0 = m^(h + base) mod n (16 limbs).

    consts rows: 0 the modulus n, 1 the stride m^T * 2^512 mod n (T: threads in the grid), 2 + k
    m^(2^k) * 2^512 mod n for k < levels; a thread starts at y0 * m^g by the bits of g.
    """
    g = cuda.grid(1)
    stride = cuda.gridsize(1)
    if g >= count:
        return
    n = consts[0]
    (y0_, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10, y11, y12, y13, y14, y15) = (
        y0[0], y0[1], y0[2], y0[3], y0[4], y0[5], y0[6], y0[7],
        y0[8], y0[9], y0[10], y0[11], y0[12], y0[13], y0[14], y0[15])
    for k in range(levels):
        if (g >> k) & 1:
            (y0_, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10, y11, y12, y13, y14, y15) = montmul(
                y0_, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10, y11, y12, y13, y14, y15, consts, 2 + k, n, ninv)
    t0 = target[0]
    r0 = threshold[0]
    offset = g
    while offset < count:
        # a lower offset already hit: nothing below is left (a stale read only costs extra work)
        if offset > found[0]:
            return
        h0, h1, h2, h3, h4, h5, h6, h7 = keccak_y(
            y0_, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10, y11, y12, y13, y14, y15)
        d = h0 ^ t0
        if d <= r0:  # rare: the leading word ties or beats the threshold's, compare the rest
            verdict = 0 if d == r0 else -1
            if verdict == 0:
                for w, h in ((1, h1), (2, h2), (3, h3), (4, h4), (5, h5), (6, h6), (7, h7)):
                    dw = h ^ target[w]
                    if dw != threshold[w]:
                        verdict = -1 if dw < threshold[w] else 1
                        break
            if verdict <= 0:
                cuda.atomic.min(found, 0, offset)
                return
        (y0_, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10, y11, y12, y13, y14, y15) = montmul(
            y0_, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10, y11, y12, y13, y14, y15, consts, 1, n, ninv)
        offset += stride


# ---------------------------------------------------------------------------------------------
# QPoW v2: Goldilocks arithmetic (as kernels_v2, on one nonce per thread) and Poseidon2


@_device
def mul128(a, b):
    al, ah = a & M32, a >> S32
    bl, bh = b & M32, b >> S32
    ll, lh, hl, hh = al * bl, al * bh, ah * bl, ah * bh
    mid = (ll >> S32) + (lh & M32) + (hl & M32)
    lo = (mid << S32) | (ll & M32)
    hi = hh + (lh >> S32) + (hl >> S32) + (mid >> S32)
    return hi, lo


@_device
def reduce128(hi, lo):
    hh, hl = hi >> S32, hi & M32
    t0 = lo - hh
    t0 -= EPS * np.uint64(lo < hh)
    t1 = hl * EPS
    r = t0 + t1
    return r + EPS * np.uint64(r < t1)


@_device
def add(a, b):
    s = a + b
    s2 = s + EPS * np.uint64(s < a)
    return s2 + EPS * np.uint64(s2 < s)


@_device
def mul(a, b):
    hi, lo = mul128(a, b)
    return reduce128(hi, lo)


@_device
def sbox(x):
    x2 = mul(x, x)
    x4 = mul(x2, x2)
    return mul(mul(x2, x), x4)


@_device
def mat4(a, b, c, d):
    t01 = add(a, b)
    t23 = add(c, d)
    t0123 = add(t01, t23)
    t01123 = add(t0123, b)
    t01233 = add(t0123, d)
    return add(t01123, t01), add(t01123, add(c, c)), add(t01233, t23), add(t01233, add(a, a))


@_device
def external(x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11):
    a0, a1, a2, a3 = mat4(x0, x1, x2, x3)
    b0, b1, b2, b3 = mat4(x4, x5, x6, x7)
    c0, c1, c2, c3 = mat4(x8, x9, x10, x11)
    k0, k1 = add(add(a0, b0), c0), add(add(a1, b1), c1)
    k2, k3 = add(add(a2, b2), c2), add(add(a3, b3), c3)
    return (add(a0, k0), add(a1, k1), add(a2, k2), add(a3, k3), add(b0, k0), add(b1, k1),
            add(b2, k2), add(b3, k3), add(c0, k0), add(c1, k1), add(c2, k2), add(c3, k3))


@_device
def diag_term(x, diag, lo, k):
    """x * diag + (k * 2^64 + lo) mod p (k <= 11: the internal layer's sum carries)."""
    hi, pl = mul128(x, diag)
    pl2 = pl + lo
    return reduce128(hi + k + np.uint64(pl2 < lo), pl2)


RC_INITIAL = np.array(qpow2.INITIAL_EXTERNAL, dtype=np.uint64)
RC_INTERNAL = np.array(qpow2.INTERNAL, dtype=np.uint64)
RC_TERMINAL = np.array(qpow2.TERMINAL_EXTERNAL, dtype=np.uint64)
DIAG = np.array(qpow2.MATRIX_DIAG, dtype=np.uint64)
_exec("permute", codegen.poseidon2_source())
permute = _device(permute)  # noqa: F821


@_device
def canonical(x):
    return x - P if x >= P else x


@_device
def order4(x0, x1, x2, x3, t, base):
    """-1, 0, 1 as the digest of (x0..x3) (4 big-endian words) is <, ==, > t[base:base+4]."""
    for k, x in ((0, x0), (1, x1), (2, x2), (3, x3)):
        h = bswap64(canonical(x))
        if h != t[base + k]:
            return -1 if h < t[base + k] else 1
    return 0


@cuda.jit
def scan_v2(mid, low, high_zero, target, count, found):
    """v2: nonces with low half `low` + offset (4 limbs, least significant first), offset in [0, count),
    all in one 2^256-aligned segment whose midstate (blocks 0 and 1) is `mid`. Valid: hash < target
    (8 big-endian words); the all-zero nonce (high_zero and low + offset == 0) is never valid.
    The 5th permutation (h2) runs only when h1 ties the target's high half.
    """
    g = cuda.grid(1)
    stride = cuda.gridsize(1)
    m0, m1, m2, m3, m4, m5 = mid[0], mid[1], mid[2], mid[3], mid[4], mid[5]
    m6, m7, m8, m9, m10, m11 = mid[6], mid[7], mid[8], mid[9], mid[10], mid[11]
    b0, b1, b2, b3 = low[0], low[1], low[2], low[3]
    offset = g
    while offset < count:
        if offset > found[0]:
            return
        c0 = b0 + np.uint64(offset)  # the segment never wraps past 2^256 (the host splits there)
        k = np.uint64(c0 < b0)
        c1 = b1 + k
        k = k & np.uint64(c1 == U0)
        c2 = b2 + k
        k = k & np.uint64(c2 == U0)
        c3 = b3 + k
        if not (high_zero and (c0 | c1 | c2 | c3) == U0):  # nonce 0 is hashed by nobody: never valid
            s = permute(m0 + bswap32(c3 >> S32), m1 + bswap32(c3 & M32), m2 + bswap32(c2 >> S32),
                        m3 + bswap32(c2 & M32), m4 + bswap32(c1 >> S32), m5 + bswap32(c1 & M32),
                        m6 + bswap32(c0 >> S32), m7 + bswap32(c0 & M32), m8, m9, m10, m11)
            s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 = s
            s = permute(add(s0, U1), add(s1, U1), s2, s3, s4, s5, s6, s7, s8, s9, s10, s11)  # block 3
            s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 = s
            order = order4(s0, s1, s2, s3, target, 0)
            if order == 0:  # h1 ties the target's high half: h2, the state permuted once more, decides
                r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11 = permute(
                    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11)
                order = order4(r0, r1, r2, r3, target, 4)
            if order < 0:
                cuda.atomic.min(found, 0, offset)
                return
        offset += stride


__all__ = ["NOT_FOUND", "SIMULATED", "scan_v1", "scan_v2"]
