"""Source text of the CUDA kernels' straight-line bodies, generated once at import (pure: no CUDA here).

A GPU keeps a thread's working set in registers only when every index is a compile-time constant, so
the 512-bit Montgomery multiplication (16 x 32-bit limbs, CIOS), Keccak-f[1600]'s rounds and the
Poseidon2 rounds are written out as code on scalar variables rather than loops over arrays. The same
text runs as plain Python in the CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`), which is how the tests
check it against the references. Every intermediate of the v1 code stays below 2^64 (no wrap-around);
v2's Goldilocks arithmetic wraps by design, as the CPU kernels' does.

>>> "def montmul(" in montmul_source()
True
"""

from __future__ import annotations

from ..keccak import ROT

LIMBS = 16  # 32-bit limbs of a 512-bit number, least significant first


def _limbs(prefix: str, count: int = LIMBS) -> str:
    return ", ".join(f"{prefix}{i}" for i in range(count))


def montmul_source() -> str:
    """`montmul(a0..a15, b, row, n, ninv) -> (r0..r15)`: a * b[row] * 2^-512 mod n, fully reduced.

    CIOS (Koc et al.): per limb of b a multiply pass and a reduction pass over 17 words. `b` is a 2-D
    array of limb rows, `n` the modulus' limbs; inputs below n give an output below n. Each
    `t + x*y + c` is below 2^64 for 32-bit x, y, t, c.
    """
    lines = [f"def montmul({_limbs('a')}, b, row, n, ninv):"]
    lines += [f"    t{j} = U0" for j in range(LIMBS + 2)]
    for i in range(LIMBS):
        lines.append(f"    bi = b[row, {i}]")
        lines.append("    c = U0")
        for j in range(LIMBS):
            lines.append(f"    p = t{j} + a{j} * bi + c")
            lines.append(f"    t{j} = p & M32")
            lines.append("    c = p >> S32")
        lines.append(f"    p = t{LIMBS} + c")
        lines.append(f"    t{LIMBS} = p & M32")
        lines.append(f"    t{LIMBS + 1} = p >> S32")
        lines.append("    m = (t0 * ninv) & M32")
        lines.append("    c = (t0 + m * n[0]) >> S32")
        for j in range(1, LIMBS):
            lines.append(f"    p = t{j} + m * n[{j}] + c")
            lines.append(f"    t{j - 1} = p & M32")
            lines.append("    c = p >> S32")
        lines.append(f"    p = t{LIMBS} + c")
        lines.append(f"    t{LIMBS - 1} = p & M32")
        lines.append(f"    t{LIMBS} = t{LIMBS + 1} + (p >> S32)")
    # t < 2n: subtract n once if t >= n (borrow chain on 33-bit sums, never negative)
    lines.append("    bw = U0")
    for j in range(LIMBS):
        lines.append(f"    p = t{j} + B32 - n[{j}] - bw")
        lines.append(f"    d{j} = p & M32")
        lines.append("    bw = U1 - (p >> S32)")
    lines.append(f"    if t{LIMBS} != U0 or bw == U0:")
    lines.append(f"        return {_limbs('d')}")
    lines.append(f"    return {_limbs('t', LIMBS)}")
    return "\n".join(lines) + "\n"


def keccak_source() -> str:
    """`keccak_y(y0..y15) -> (h0..h7)`: SHA3-512 of y's 64 big-endian bytes, as 8 big-endian words.

    The 64-byte message and its padding fill one 72-byte block: lanes 0-7 are y's bytes, lane 8 the
    padding, lanes 9-24 zero. 24 rounds as a loop over one written-out round on 25 scalar lanes.
    """
    lines = [f"def keccak_y({_limbs('y')}):"]
    # lane w holds bytes 8w..8w+7 of be64(y) little-endian: limbs 15-2w then 14-2w, each byte-swapped
    for w in range(8):
        lines.append(f"    a{w} = bswap32(y{15 - 2 * w}) | (bswap32(y{14 - 2 * w}) << S32)")
    lines.append("    a8 = PAD8")
    lines += [f"    a{i} = U0" for i in range(9, 25)]
    lines.append("    for r in range(24):")
    body = []
    for x in range(5):
        body.append(f"c{x} = a{x} ^ a{x + 5} ^ a{x + 10} ^ a{x + 15} ^ a{x + 20}")
    for x in range(5):
        body.append(f"d{x} = c{(x - 1) % 5} ^ rotl(c{(x + 1) % 5}, 1)")
    # theta, rho and pi together: b[y, 2x+3y] = rot(a[x, y] ^ d[x], ROT[x][y])
    for x in range(5):
        for y in range(5):
            src, dst = x + 5 * y, y + 5 * ((2 * x + 3 * y) % 5)
            rot = ROT[x][y]
            expr = f"a{src} ^ d{x}"
            body.append(f"b{dst} = rotl({expr}, {rot})" if rot else f"b{dst} = {expr}")
    for y in range(5):
        for x in range(5):
            i = x + 5 * y
            body.append(f"a{i} = b{i} ^ (~b{(x + 1) % 5 + 5 * y} & b{(x + 2) % 5 + 5 * y})")
    body.append("a0 ^= RC[r]")
    lines += [f"        {line}" for line in body]
    lines.append(f"    return {', '.join(f'bswap64(a{w})' for w in range(8))}")
    return "\n".join(lines) + "\n"


def poseidon2_source() -> str:
    """`permute(s0..s11) -> (s0..s11)`: the Poseidon2 width-12 permutation (a linear layer, then 4 external,
    22 internal and 4 external rounds). Each round is written out on 12 scalars; the rounds are loops over
    the constant tables RC_INITIAL, RC_INTERNAL, RC_TERMINAL and DIAG (written-out rounds with literal
    constants made a 20k-instruction body that NVVM took minutes to compile, for nothing)."""
    s = [f"s{i}" for i in range(12)]
    state = ", ".join(s)
    lines = [f"def permute({state}):", f"    {state} = external({state})"]
    for table in ("RC_INITIAL", None, "RC_TERMINAL"):
        if table is None:
            lines.append("    for r in range(22):")
            lines.append("        x0 = sbox(add(s0, RC_INTERNAL[r]))")
            # the sum as (carries, low) so each s_i * DIAG_i + sum is reduced once (as kernels_v2)
            lines.append("        lo = s1")
            lines.append("        k = U0")
            for i in range(2, 12):
                lines.append(f"        lo += s{i}")
                lines.append(f"        k += np.uint64(lo < s{i})")
            lines.append("        lo += x0")
            lines.append("        k += np.uint64(lo < x0)")
            for i in range(12):
                src = "x0" if i == 0 else f"s{i}"
                lines.append(f"        s{i} = diag_term({src}, DIAG[{i}], lo, k)")
            continue
        lines.append("    for r in range(4):")
        args = ", ".join(f"sbox(add(s{i}, {table}[r, {i}]))" for i in range(12))
        lines.append(f"        {state} = external({args})")
    lines.append(f"    return {state}")
    return "\n".join(lines) + "\n"


__all__ = ["LIMBS", "keccak_source", "montmul_source", "poseidon2_source"]
