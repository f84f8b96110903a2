"""Rate and chunk-size arithmetic (pure functions).

>>> ema(None, 100.0, 0.2), ema(100.0, 200.0, 0.2)
(100.0, 120.0)
>>> seed_chunk(2000)
200000
"""

SEED_RATE = 100_000  # the seed's conservative nonces/s estimate for the first chunk
MIN_SEED_CHUNK = 5_000
MAX_CHUNK = 1 << 32  # bounds a chunk whatever the measurements say
MAX_GROWTH = 8  # a chunk is at most this many times its predecessor


def ema(previous: float | None, instant: float, alpha: float) -> float:
    """Exponential moving average; the first report sets it."""
    if previous is None:
        return instant
    return alpha * instant + (1.0 - alpha) * previous


def instant_rate(nonces: int, dt: float) -> float:
    return nonces / dt if dt > 0 else 0.0


def seed_chunk(progress_chunk_ms: int, measured_rate: float | None = None) -> int:
    """First chunk: max(5000, 100 000/s x ms), capped by the engine's warm-up rate when known.

    The cap keeps a slow engine's first report near the target interval instead of 50x late.
    """
    size = max(MIN_SEED_CHUNK, SEED_RATE * progress_chunk_ms // 1000)
    if measured_rate:
        size = min(size, max(1, int(measured_rate * progress_chunk_ms / 1000)))
    return size


def next_chunk_size(previous: int, nonces: int, busy_s: float, progress_chunk_ms: int) -> int:
    """Size the next chunk so it takes about `progress_chunk_ms` at the throughput just measured."""
    if busy_s <= 0 or nonces <= 0:
        return max(1, min(previous * MAX_GROWTH, MAX_CHUNK))
    target = int(nonces / busy_s * progress_chunk_ms / 1000)
    return max(1, min(target, previous * MAX_GROWTH, MAX_CHUNK))
