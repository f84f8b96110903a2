"""Conversions between Python integers and the fast kernels' fixed-size word arrays.

Each kernel has its own limb size (29 bits for `kernels`, 52 for `ifma`); the defaults are `kernels`'.

>>> [int(v) for v in to_limbs(2**52 + 5, bits=52, count=2)]
[5, 1]
"""

import numpy as np

from .kernels import LIMB_BITS, LIMBS


def aligned_words(count: int) -> np.ndarray:
    """A zeroed uint64 array whose data starts on a 64-byte boundary: a kernel's 8-lane vector loads
    and stores then never straddle two cache lines.

    >>> aligned_words(3).ctypes.data % 64
    0
    """
    raw = np.zeros(count + 8, dtype=np.uint64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip:skip + count]


def to_limbs(x: int, bits: int = LIMB_BITS, count: int = LIMBS) -> np.ndarray:
    """Little-endian limbs of x (in uint64 slots)."""
    mask = (1 << bits) - 1
    return np.array([(x >> (bits * i)) & mask for i in range(count)], dtype=np.uint64)


def lanes_to_limbs(values: list[int], bits: int = LIMB_BITS, count: int = LIMBS) -> np.ndarray:
    """Lane-minor limbs, one lane per value: out[limb * lanes + lane]."""
    lanes = len(values)
    out = aligned_words(count * lanes)
    for lane, v in enumerate(values):
        out[lane::lanes] = to_limbs(v, bits, count)
    return out


def to_be_words(x: int) -> np.ndarray:
    """8 big-endian 64-bit words of a 512-bit integer, most significant first."""
    return np.array([(x >> (64 * (7 - w))) & ((1 << 64) - 1) for w in range(8)], dtype=np.uint64)
