"""Rate and chunk-size arithmetic: the one sizer every executor's slots use (pure).

>>> ema(None, 100.0, 0.2), ema(100.0, 200.0, 0.2)
(100.0, 120.0)
>>> seed_chunk(2000)
200000
"""

from __future__ import annotations

import attrs

SEED_RATE = 100_000  # the seed's conservative nonces/s estimate for the first chunk
MIN_SEED_CHUNK = 5_000
MAX_CHUNK = 1 << 32  # bounds a chunk whatever the measurements say
MAX_GROWTH = 8  # a chunk is at most this many times its predecessor
MIN_TAIL_CHUNK = 50_000  # smallest chunk cut near a range's end (a few ms of cpu-fast)


def ema(previous: float | None, instant: float, alpha: float) -> float:
    """Exponential moving average; the first report sets it."""
    if previous is None:
        return instant
    return alpha * instant + (1.0 - alpha) * previous


def instant_rate(nonces: int, dt: float) -> float:
    """Nonces per second over `dt` (0 when no time passed)."""
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


def tail_capped(size: int, remaining: int, lanes: int) -> int:
    """Near the end of a finite range, cut chunks smaller (guided self-scheduling): every slot then
    finishes within about one small chunk of the others, instead of idling while one long last chunk runs.

    >>> tail_capped(10**6, 10**9, 4), tail_capped(10**6, 4 * 10**6, 4), tail_capped(10**6, 10, 4)
    (1000000, 500000, 50000)
    """
    return max(1, min(size, max(MIN_TAIL_CHUNK, remaining // (2 * max(1, lanes)))))


@attrs.define
class ChunkSizer:
    """One slot's chunk size: seeded, then resized after each chunk to last about `target_ms`.

    `rate` is a measured nonces/s of this slot's device (a cluster worker's thread), trusted as is;
    `probe` an engine's warm-up estimate, which only caps the conservative seed (`seed_chunk`).

    >>> s = ChunkSizer.start(100, probe=50_000.0); s.size
    5000
    >>> s.update(5000, 0.05); s.size
    10000
    """

    target_ms: int
    size: int

    @classmethod
    def start(cls, target_ms: int, *, rate: float | None = None, probe: float | None = None) -> ChunkSizer:
        """A sizer for a slot: from its measured `rate`, else from the warm-up `probe`."""
        size = max(1, min(int(rate * target_ms / 1000), MAX_CHUNK)) if rate else seed_chunk(target_ms, probe)
        return cls(target_ms, size)

    def update(self, tested: int, busy_s: float) -> None:
        """Resize from the last chunk's count and busy time towards `target_ms` per chunk."""
        self.size = next_chunk_size(self.size, tested, busy_s, self.target_ms)
