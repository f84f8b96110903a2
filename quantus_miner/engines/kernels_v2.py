"""Numba kernels for QPoW v2: Goldilocks arithmetic and the Poseidon2 permutation over L lanes.

Kernels take plain numpy arrays and return plain values; orchestration lives in `fast_v2` (hand-written, like `kernels.py`).
A lane state is a flat uint64 array of 12 * L words, element i of lane l at [i * L + l], so
every step of the permutation is a loop over lanes on contiguous words, which LLVM turns into
SIMD (AVX-512 / AVX2) code.

Field elements are kept as any u64 (possibly >= p, the value meant is x mod p); only outputs
that are hashed or compared are made canonical. Every primitive is exact for all u64 inputs.
"""

import numpy as np
from numba import njit

from ..core import qpow2

# Nonce streams per batch: one AVX-512 vector of u64. Measured (nonces/s, 1 thread): 4 lanes
# ~405 k, 8 lanes ~440 k, 16 lanes ~150 k (register spills). These are compile-time constants:
# Numba's cache does not key on global values, so they must not come from the environment.
LANES = 8
KERNEL_NAME = f"v2-lanes{LANES}-mul32"

W = 12  # state width
U0, U1 = np.uint64(0), np.uint64(1)
S32 = np.uint64(32)
M32 = np.uint64(0xFFFF_FFFF)
EPS = np.uint64(0xFFFF_FFFF)  # 2^64 mod p = 2^32 - 1
P = np.uint64(qpow2.P)

RC_INITIAL = np.array(qpow2.INITIAL_EXTERNAL, dtype=np.uint64)
RC_INTERNAL = np.array(qpow2.INTERNAL, dtype=np.uint64)
RC_TERMINAL = np.array(qpow2.TERMINAL_EXTERNAL, dtype=np.uint64)
DIAG = np.array(qpow2.MATRIX_DIAG, dtype=np.uint64)


# ---------------------------------------------------------------------------------------------
# 64x64 -> 128-bit product


@njit(inline="always")
def mul128(a, b):
    """(hi, lo) of the full product, schoolbook on 32-bit halves.

    Four u64 products that cannot overflow; LLVM maps them to vpmuludq across lanes. A single
    `mul i128` (llvmlite intrinsic) is one mulx per lane but does not vectorise: measured on
    this host (Zen 4, AVX-512), 8 lanes, ~372 k nonces/s against ~440 k/s for this version.
    """
    al, ah = a & M32, a >> S32
    bl, bh = b & M32, b >> S32
    ll, lh, hl, hh = al * bl, al * bh, ah * bl, ah * bh
    mid = (ll >> S32) + (lh & M32) + (hl & M32)  # < 3 * 2^32
    lo = (mid << S32) | (ll & M32)
    hi = hh + (lh >> S32) + (hl >> S32) + (mid >> S32)
    return hi, lo


# ---------------------------------------------------------------------------------------------
# Goldilocks arithmetic on u64 representatives


@njit(inline="always")
def reduce128(hi, lo):
    """hi * 2^64 + lo mod p, as a u64 (< 2^64, not always < p); exact for all hi, lo."""
    # 2^64 = 2^32 - 1 and 2^96 = -1 (mod p): value = lo - hi_hi + hi_lo * (2^32 - 1)
    hh, hl = hi >> S32, hi & M32
    t0 = lo - hh
    t0 -= EPS * np.uint64(lo < hh)  # borrowed 2^64 = EPS: take it back; cannot underflow
    t1 = hl * EPS
    r = t0 + t1
    return r + EPS * np.uint64(r < t1)  # carried 2^64 = EPS; cannot overflow again


@njit(inline="always")
def mul(a, b):
    """a * b in the Goldilocks field."""
    hi, lo = mul128(a, b)
    return reduce128(hi, lo)


@njit(inline="always")
def add(a, b):
    """a + b in the Goldilocks field (inputs < 2^64, result not canonical)."""
    s = a + b
    s2 = s + EPS * np.uint64(s < a)  # carried 2^64 = EPS
    return s2 + EPS * np.uint64(s2 < s)  # adding EPS can carry once more (only then)


@njit(inline="always")
def square(a):
    # a * a with three half products: the cross term al * ah appears twice
    """a * a in the Goldilocks field."""
    al, ah = a & M32, a >> S32
    ll, lh, hh = al * al, al * ah, ah * ah
    mid = (ll >> S32) + ((lh & M32) << U1)  # < 3 * 2^32
    lo = (mid << S32) | (ll & M32)
    hi = hh + ((lh >> S32) << U1) + (mid >> S32)
    return reduce128(hi, lo)


@njit(inline="always")
def canonical(x):
    """x reduced to [0, P)."""
    return x - P if x >= P else x


@njit(inline="always")
def sbox(x):
    """x^7, Poseidon2's S-box."""
    x2 = square(x)
    x4 = square(x2)
    x3 = mul(x2, x)
    return mul(x3, x4)


# ---------------------------------------------------------------------------------------------
# Poseidon2 over lanes


@njit(inline="always")
def _mat4(a, b, c, d):
    # [[2,3,1,1],[1,2,3,1],[1,1,2,3],[3,1,1,2]] with 8 additions and 2 doublings (Plonky3)
    t01 = add(a, b)
    t23 = add(c, d)
    t0123 = add(t01, t23)
    t01123 = add(t0123, b)
    t01233 = add(t0123, d)
    return add(t01123, t01), add(t01123, add(c, c)), add(t01233, t23), add(t01233, add(a, a))


@njit(inline="always")
def _external_store(s, l, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11):
    """Store the external layer of (x0..x11) into lane l: mat4 per block of 4 plus the block sum."""
    L = LANES
    a0, a1, a2, a3 = _mat4(x0, x1, x2, x3)
    b0, b1, b2, b3 = _mat4(x4, x5, x6, x7)
    c0, c1, c2, c3 = _mat4(x8, x9, x10, x11)
    k0, k1 = add(add(a0, b0), c0), add(add(a1, b1), c1)
    k2, k3 = add(add(a2, b2), c2), add(add(a3, b3), c3)
    s[0 * L + l], s[1 * L + l] = add(a0, k0), add(a1, k1)
    s[2 * L + l], s[3 * L + l] = add(a2, k2), add(a3, k3)
    s[4 * L + l], s[5 * L + l] = add(b0, k0), add(b1, k1)
    s[6 * L + l], s[7 * L + l] = add(b2, k2), add(b3, k3)
    s[8 * L + l], s[9 * L + l] = add(c0, k0), add(c1, k1)
    s[10 * L + l], s[11 * L + l] = add(c2, k2), add(c3, k3)


@njit(inline="always")
def _external_linear(s, l):
    L = LANES
    _external_store(
        s, l, s[0 * L + l], s[1 * L + l], s[2 * L + l], s[3 * L + l], s[4 * L + l], s[5 * L + l],
        s[6 * L + l], s[7 * L + l], s[8 * L + l], s[9 * L + l], s[10 * L + l], s[11 * L + l],
    )


@njit(inline="always")
def _external_round(s, l, rc):
    # all 12 S-boxes kept in registers (a loop over i, storing each, measured 40% slower)
    L = LANES
    _external_store(
        s, l,
        sbox(add(s[0 * L + l], rc[0])), sbox(add(s[1 * L + l], rc[1])),
        sbox(add(s[2 * L + l], rc[2])), sbox(add(s[3 * L + l], rc[3])),
        sbox(add(s[4 * L + l], rc[4])), sbox(add(s[5 * L + l], rc[5])),
        sbox(add(s[6 * L + l], rc[6])), sbox(add(s[7 * L + l], rc[7])),
        sbox(add(s[8 * L + l], rc[8])), sbox(add(s[9 * L + l], rc[9])),
        sbox(add(s[10 * L + l], rc[10])), sbox(add(s[11 * L + l], rc[11])),
    )


@njit(inline="always")
def _internal_round(s, l, rc):
    L = LANES
    x0 = sbox(add(s[l], rc))
    # the sum as a 128-bit (carries, low) pair, so each output sum + s[i] * DIAG[i] is reduced
    # once; s[1..11] go first because they need not wait for the S-box (the critical path)
    lo, carries = s[L + l], U0
    for i in range(2, W):
        lo += s[i * L + l]
        carries += np.uint64(lo < s[i * L + l])
    lo += x0
    carries += np.uint64(lo < x0)
    for i in range(W):
        xi = x0 if i == 0 else s[i * L + l]
        hi, pl = mul128(xi, DIAG[i])
        pl2 = pl + lo
        # hi < DIAG[i] <= 0xf3fa..., so adding carries (<= 11) and 1 cannot overflow
        s[i * L + l] = reduce128(hi + carries + np.uint64(pl2 < lo), pl2)


@njit(nogil=True, cache=True)
def permute_lanes(s):
    """The Poseidon2 permutation of every lane of `s` (12 * LANES words), in place."""
    # each step is a loop over lanes on contiguous words: LLVM vectorises it across lanes
    for l in range(LANES):
        _external_linear(s, l)  # Poseidon2 mixes once before the first round
    for r in range(4):
        for l in range(LANES):
            _external_round(s, l, RC_INITIAL[r])
    for r in range(22):
        for l in range(LANES):
            _internal_round(s, l, RC_INTERNAL[r])
    for r in range(4):
        for l in range(LANES):
            _external_round(s, l, RC_TERMINAL[r])


# ---------------------------------------------------------------------------------------------
# Mining


@njit(inline="always")
def bswap32(x):
    """Byte-swap the low 32 bits."""
    return ((x & np.uint64(0xFF)) << np.uint64(24)) | ((x & np.uint64(0xFF00)) << np.uint64(8)) | (
        (x >> np.uint64(8)) & np.uint64(0xFF00)
    ) | ((x >> np.uint64(24)) & np.uint64(0xFF))


@njit(inline="always")
def bswap64(x):
    """Byte-swap 64 bits."""
    return (bswap32(x & M32) << S32) | bswap32(x >> S32)


@njit(nogil=True, cache=True)
def absorb_block(state, block):
    """The sponge step: state[0..8] += block, then permute; returns the new canonical state."""
    s = np.empty(W * LANES, dtype=np.uint64)
    for i in range(W):
        x = state[i] if i >= 8 else add(state[i], block[i])
        for l in range(LANES):
            s[i * LANES + l] = x
    permute_lanes(s)
    out = np.empty(W, dtype=np.uint64)
    for i in range(W):
        out[i] = canonical(s[i * LANES])
    return out


@njit(inline="always")
def _load_block2(s, mid, b0, b1, b2, b3):
    """Lane l gets midstate + block 2 of nonce low half (b3:b2:b1:b0) + l, and the rest of mid."""
    L = LANES
    for l in range(L):
        # nonce low half + l; lanes past the segment's end may wrap, harmlessly: never reported
        c0 = b0 + np.uint64(l)
        k = np.uint64(c0 < b0)
        c1 = b1 + k
        k = k & np.uint64(c1 == U0)
        c2 = b2 + k
        k = k & np.uint64(c2 == U0)
        c3 = b3 + k
        # felt e = LE u32 of big-endian bytes 4e..4e+4 of the low half = bswap32(word 7 - e)
        s[0 * L + l] = mid[0] + bswap32(c3 >> S32)  # mid < p, felt < 2^32: the sum fits in u64
        s[1 * L + l] = mid[1] + bswap32(c3 & M32)
        s[2 * L + l] = mid[2] + bswap32(c2 >> S32)
        s[3 * L + l] = mid[3] + bswap32(c2 & M32)
        s[4 * L + l] = mid[4] + bswap32(c1 >> S32)
        s[5 * L + l] = mid[5] + bswap32(c1 & M32)
        s[6 * L + l] = mid[6] + bswap32(c0 >> S32)
        s[7 * L + l] = mid[7] + bswap32(c0 & M32)
        for i in range(8, W):
            s[i * L + l] = mid[i]


@njit(inline="always")
def _compare_words(s, l, t):
    """-1, 0, 1 as h (state[0..4] of lane l, as 4 big-endian u64 words) is <, ==, > t."""
    for k in range(4):
        h = bswap64(canonical(s[k * LANES + l]))
        if h != t[k]:
            return -1 if h < t[k] else 1
    return 0


@njit(nogil=True, cache=True)
def scan_segment(mid, low, count, high_zero, t_hi, t_lo, flag):
    """Test `count` (>= 1) nonces from the one whose low 256 bits are `low` (4 u64 limbs, least
    significant first) upward, all sharing the high half whose midstate (blocks 0 and 1) is `mid`.

    Valid: hash < target, target = t_hi || t_lo (4 big-endian u64 words each); the all-zero
    nonce (high_zero and low == 0) is hashed and counted, never valid.
    Returns (tested, found_offset or -1, cancelled); on a find, tested counts the nonces up to
    and including it, in scan order (lanes after it in its batch are not counted). Polls
    flag[0] before every batch of LANES nonces (~20 us of work).
    """
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
        permute_lanes(s)
        for l in range(L):  # block 3 = [1, 1, 0, ...]
            s[l] = add(s[l], U1)
            s[L + l] = add(s[L + l], U1)
        permute_lanes(s)
        # almost always the first word of h1 already exceeds the target's: one pass to find out
        maybe = False
        for l in range(n):
            maybe |= bswap64(canonical(s[l])) <= t0
        if maybe:
            h2_ready = False
            for l in range(n):
                if high_zero and done == 0 and l == 0 and (b0 | b1 | b2 | b3) == U0:
                    continue  # nonce 0
                order = _compare_words(s, l, t_hi)
                if order == 0:  # h1 ties the target's high half: h2 decides (the 5th permutation)
                    if not h2_ready:
                        s2[:] = s
                        permute_lanes(s2)
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
def permute_many(s, rounds):
    """Permute the lane state `rounds` times (benchmarks the permutation alone)."""
    for _ in range(rounds):
        permute_lanes(s)
