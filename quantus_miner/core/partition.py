"""A job's one cursor: chunks cut in order from a shared frontier (pure).

>>> next_chunk(1, 10, 4)
(1, 4)
"""


def next_chunk(cursor: int, end: int, size: int) -> tuple[int, int]:
    """The next chunk [cursor, min(cursor + size - 1, end)]."""
    return cursor, min(cursor + max(size, 1) - 1, end)


class Frontier:
    """Chunks handed out in order from one shared cursor, and the lowest nonce not yet tested.

    Workers `take` chunks and report back with `done`; everything below `resume_point()` has been
    tested, so a stopped search resumes from there (re-testing at most the chunks that were in flight).
    Not thread-safe by itself: callers hold a lock.

    >>> f = Frontier(1, 100)
    >>> a, b = f.take(10), f.take(10)
    >>> a, b
    ((1, 10), (11, 20))
    >>> f.done(b, 10); f.resume_point()  # chunk a is still in flight
    1
    >>> f.done(a, 4); f.resume_point(), f.tested  # a was stopped after 4 nonces
    (5, 14)
    >>> Frontier(1, 3).take(10), f.share()
    ((1, 3), 0.14)
    """

    def __init__(self, start: int, end: int):
        if start > end:
            raise ValueError("nonce_start must be <= nonce_end")
        self.start, self.end = start, end
        self.cursor = start  # next nonce not handed out
        self.tested = 0
        self._in_flight: set[int] = set()  # lo of each chunk being searched
        self._gap: int | None = None  # lowest untested nonce of a chunk that stopped early

    def take(self, size: int) -> tuple[int, int] | None:
        """The next chunk of at most `size` nonces, or None when the range is all handed out."""
        if self.cursor > self.end:
            return None
        lo, hi = next_chunk(self.cursor, self.end, size)
        self.cursor = hi + 1
        self._in_flight.add(lo)
        return lo, hi

    def done(self, chunk: tuple[int, int], tested: int) -> None:
        """Chunk `chunk` returned after testing its first `tested` nonces."""
        lo, hi = chunk
        self._in_flight.discard(lo)
        self.tested += tested
        if lo + tested <= hi:
            self._gap = lo + tested if self._gap is None else min(self._gap, lo + tested)

    def resume_point(self) -> int:
        """The lowest nonce not known to be tested (end + 1 once the whole range is)."""
        return min([self.cursor, *self._in_flight, *([self._gap] if self._gap is not None else [])])

    @property
    def remaining(self) -> int:
        """Nonces not yet handed out."""
        return max(0, self.end - self.cursor + 1)

    @property
    def exhausted(self) -> bool:
        """Every nonce has been handed out (some may still be in flight)."""
        return self.cursor > self.end

    def share(self) -> float:
        """Fraction of the range tested."""
        return self.tested / (self.end - self.start + 1)
