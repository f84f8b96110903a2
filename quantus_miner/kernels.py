"""The cpu-fast scan kernel: 8 nonce streams stepped by Montgomery multiplication, hashed with Keccak.

Kernels take plain arrays and return plain values; orchestration lives in `engines`. The
lane bodies come from `kernels_unrolled` (generated). Lane `l` at step `i` holds nonce
`base + L*i + l`, so all lanes step by the same multiplier m^L and a chunk is one
contiguous nonce range.
"""

import numpy as np
from numba import njit

from .kernels_unrolled import L, LIMBS, LIMB_BITS, U0, U1, absorb_lanes, bswap64, keccak_lanes, montmul_lanes

POLL_MASK = 63  # poll the cancel flag every 64 steps (512 nonces, well under a millisecond)
SCRATCH_WORDS = 25 * L

__all__ = ["L", "LIMBS", "LIMB_BITS", "SCRATCH_WORDS", "scan_lanes"]


@njit(nogil=True, cache=True)
def scan_lanes(y, c, n, ninv, target, threshold, steps, flag, st, out):
    """Scan `steps` steps of L lanes, advancing `y` in place.

    Returns 1 when a lane's distance <= threshold (out = [step, lane], `y` left at
    that step), 0 when all steps ran, -1 when `flag[0]` became non-zero (out[0] =
    steps done). `target`, `threshold` are 8 big-endian 64-bit words, most
    significant first.
    """
    tgt0 = target[0]
    thr0 = threshold[0]
    for it in range(steps):
        if (it & POLL_MASK) == 0 and flag[0] != 0:
            out[0] = it
            return -1
        absorb_lanes(y, st)
        keccak_lanes(st)
        hits = U0
        for ln in range(L):
            hits |= np.uint64((bswap64(st[ln]) ^ tgt0) <= thr0) << np.uint64(ln)
        if hits != U0:  # rare: the leading word ties or beats the threshold, compare the rest
            for ln in range(L):
                if (hits >> np.uint64(ln)) & U1:
                    verdict = 0  # 0: equal so far, 1: below, 2: above
                    for w in range(8):
                        d = bswap64(st[w * L + ln]) ^ target[w]
                        if d != threshold[w]:
                            verdict = 1 if d < threshold[w] else 2
                            break
                    if verdict != 2:
                        out[0] = it
                        out[1] = ln
                        return 1
        montmul_lanes(y, c, n, ninv)
    out[0] = steps
    return 0
