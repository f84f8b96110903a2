"""The devnet's simulated chain: header derivation and difficulty adjustment (pure functions).

>>> len(genesis_header(7)), next_header(genesis_header(7), 1, 0) != next_header(genesis_header(7), 1, 1)
(32, True)
>>> adjust_threshold(1000, actual_s=20.0, target_s=10.0)  # slow block: easier
2001
"""

import hashlib

from ..core.qpow import MAX_U512

MAX_STEP = 2.0  # difficulty moves at most x2 (or /2) per block


def genesis_header(seed: int) -> bytes:
    """The devnet's first header for `seed` (reproducible runs)."""
    return hashlib.sha256(b"quantus-devnet genesis " + seed.to_bytes(8, "big", signed=False)).digest()


def next_header(parent: bytes, height: int, counter: int) -> bytes:
    """Header pre-hash of block `height` on `parent`; `counter` tells apart competing blocks."""
    return hashlib.sha256(parent + height.to_bytes(8, "big") + counter.to_bytes(8, "big")).digest()


def threshold_for(rate: float, block_time_s: float) -> int:
    """A threshold whose expected tries (2^512 / (t + 1)) take `block_time_s` at `rate` nonces/s."""
    tries = max(1.0, rate * block_time_s)
    return min(MAX_U512, max(0, int((1 << 512) / tries) - 1))


def adjust_threshold(threshold: int, actual_s: float, target_s: float) -> int:
    """Scale the threshold by actual/target block time, clamped to [1/MAX_STEP, MAX_STEP] per step."""
    ratio = min(MAX_STEP, max(1 / MAX_STEP, actual_s / target_s if target_s > 0 else 1.0))
    scaled = (threshold + 1) * round(ratio * 1_000_000) // 1_000_000 - 1
    return min(MAX_U512, max(0, scaled))


def expected_tries(threshold: int) -> float:
    """Expected nonces per block at a QPoW v1 `threshold`."""
    return (1 << 512) / (threshold + 1)
