"""Conversions between Python integers and the fast kernels' fixed-size word arrays."""

import numpy as np

from .kernels import L, LIMB_BITS, LIMBS

LIMB_MASK = (1 << LIMB_BITS) - 1
R = 1 << (LIMB_BITS * LIMBS)  # the Montgomery radix, 2^522


def to_limbs(x: int) -> np.ndarray:
    """Little-endian limbs of x (in uint64 slots)."""
    return np.array([(x >> (LIMB_BITS * i)) & LIMB_MASK for i in range(LIMBS)], dtype=np.uint64)


def lanes_to_limbs(values: list[int]) -> np.ndarray:
    """Lane-minor limbs: out[limb * L + lane]."""
    out = np.zeros(LIMBS * L, dtype=np.uint64)
    for lane, v in enumerate(values):
        out[lane::L] = to_limbs(v)
    return out


def lane_from_limbs(arr: np.ndarray, lane: int) -> int:
    return sum(int(v) << (LIMB_BITS * i) for i, v in enumerate(arr[lane::L]))


def to_be_words(x: int) -> np.ndarray:
    """8 big-endian 64-bit words of a 512-bit integer, most significant first."""
    return np.array([(x >> (64 * (7 - w))) & ((1 << 64) - 1) for w in range(8)], dtype=np.uint64)
