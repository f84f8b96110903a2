"""The chain's proof of work (QPoW v1, docs/qpow.md), in plain Python integers: the consensus reference.

Every fast path in this project is checked against these functions.

>>> ctx = JobContext.from_header(bytes(32))
>>> distance(ctx, 0)
0
>>> is_valid(ctx, 4330, MAX_NONCE // 5000)
True
"""

from __future__ import annotations

import hashlib
from math import gcd

import attrs

MAX_U512 = (1 << 512) - 1  # the one 512-bit bound: nonces, thresholds, targets (tests/test_layout.py)
MAX_NONCE = MAX_U512
MR_ROUNDS = 32


def be64(x: int) -> bytes:
    """`x` as 64 big-endian bytes."""
    return x.to_bytes(64, "big")


def sha3_512_int(data: bytes) -> int:
    """SHA3-512 of `data` as a big-endian integer."""
    return int.from_bytes(hashlib.sha3_512(data).digest(), "big")


def miller_rabin_decompose(n: int) -> tuple[int, int]:
    """(d, r) with n - 1 = d * 2**r and d odd."""
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    return d, r


def miller_rabin_bases(n: int) -> list[int]:
    """The chain's 32 deterministic bases for `n` (each in [2, n - 3])."""
    nb = be64(n)
    return [sha3_512_int(nb + be64(i)) % (n - 4) + 2 for i in range(MR_ROUNDS)]


def is_prime(n: int) -> bool:
    """The chain's deterministic Miller-Rabin test."""
    if n <= 1:
        return False
    if n in (2, 3):
        return True
    if n % 2 == 0:
        return False
    if n < 5:  # pragma: no cover - only 3 reaches here and it returned above
        return True
    d, r = miller_rabin_decompose(n)
    for base in miller_rabin_bases(n):
        x = pow(base, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
            if x == 1:
                return False
        else:
            return False
    return True


def n_rejection(n: int, m: int) -> str | None:
    """Why `n` cannot be the job's modulus (None when it can)."""
    if n % 2 == 0:
        return "even"
    if n <= m:
        return "n<=m"
    if gcd(m, n) != 1:
        return "gcd(m,n)!=1"
    if is_prime(n):
        return "prime"
    return None


@attrs.frozen
class JobContext:
    """Everything QPoW derives from one 32-byte header, computed once per job."""

    header: bytes
    h: int
    m: int
    n: int
    target: int
    rehash_count: int

    @classmethod
    def from_header(cls, header: bytes) -> JobContext:
        """The job's constants derived from its 32-byte header."""
        if len(header) != 32:
            raise ValueError("header must be 32 bytes")
        h = int.from_bytes(header, "big")
        m = int.from_bytes(hashlib.sha256(header).digest(), "big")
        n = sha3_512_int(header)
        rehashes = 0
        while n_rejection(n, m) is not None:
            n = sha3_512_int(be64(n))
            rehashes += 1
        target = sha3_512_int(be64(pow(m, h, n)))
        return cls(header=header, h=h, m=m, n=n, target=target, rehash_count=rehashes)

    @property
    def saturation_nonce(self) -> int:
        """First nonce whose exponent h + k saturates at 2**512 - 1."""
        return MAX_U512 - self.h


def exponent(ctx: JobContext, nonce: int) -> int:
    """h + nonce, saturating at 2**512 - 1 as the chain does."""
    return min(ctx.h + nonce, MAX_U512)


def y_of(ctx: JobContext, nonce: int) -> int:
    """m^exponent(nonce) mod n: the value whose hash gives the nonce's distance."""
    return pow(ctx.m, exponent(ctx, nonce), ctx.n)


def distance_of_y(ctx: JobContext, y: int) -> int:
    """The distance of a nonce from its `y_of`: target XOR SHA3-512(y)."""
    return ctx.target ^ sha3_512_int(be64(y))


def distance(ctx: JobContext, nonce: int) -> int:
    """The chain's nonce distance; 0 for nonce 0 (which is nonetheless never valid)."""
    if nonce == 0:
        return 0
    return distance_of_y(ctx, y_of(ctx, nonce))


def is_valid(ctx: JobContext, nonce: int, threshold: int) -> bool:
    """Consensus validity: nonce != 0 and distance <= threshold."""
    if not 0 < nonce <= MAX_NONCE:
        return False
    return distance(ctx, nonce) <= threshold


def h512_saturates(ctx: JobContext, nonce: int) -> bool:
    """Whether h + nonce exceeds 2**512 - 1 (the chain then uses 2**512 - 1)."""
    return ctx.h + nonce > MAX_U512
