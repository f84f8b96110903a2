"""Splitting an inclusive nonce range among workers and into chunks (pure functions).

>>> partition(1, 10, 3)
[(1, 4), (5, 7), (8, 10)]
"""


def partition(start: int, end: int, parts: int) -> list[tuple[int, int]]:
    """Split [start, end] into at most `parts` contiguous inclusive ranges, covering it exactly once."""
    if start > end:
        raise ValueError("nonce_start must be <= nonce_end")
    if parts < 1:
        raise ValueError("parts must be >= 1")
    size = end - start + 1
    parts = min(parts, size)
    base, extra = divmod(size, parts)
    out = []
    lo = start
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0) - 1
        out.append((lo, hi))
        lo = hi + 1
    return out


def next_chunk(cursor: int, end: int, size: int) -> tuple[int, int]:
    """The next chunk [cursor, min(cursor + size - 1, end)]."""
    return cursor, min(cursor + max(size, 1) - 1, end)
