"""A job's bound (pure): the QPoW v1 distance threshold or the QPoW v2 difficulty, and the one
decimal U512 rule both are read with.

Engines, the cluster and the re-verification take the bound as one integer (`Bound.value`): the v1
threshold (a nonce is valid iff its distance <= it) or the v2 target (2^512 - 1) // difficulty
(valid iff its hash < it).

>>> Bound.threshold(5).admits(5), Bound.difficulty(5000).value == qpow2.target_of(5000)
(True, True)
>>> parse_u512("0", least=1)
Traceback (most recent call last):
quantus_miner.core.bounds.BoundError: 0 is below 1
"""

from __future__ import annotations

import re

import attrs

from . import qpow2
from .config import Pow
from .qpow import MAX_U512

DECIMAL_RE = re.compile(r"[0-9]{1,155}")  # 2^512 - 1 has 155 digits


class BoundError(ValueError):
    """A text that is no decimal U512 in range; `kind` says which rule it broke: type, syntax, low, high."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def parse_u512(text: object, *, least: int = 0) -> int:
    """A decimal string (1 to 155 ASCII digits) of an integer in [least, 2^512 - 1]; raise BoundError."""
    if not isinstance(text, str):
        raise BoundError("type", "not a string")
    if not DECIMAL_RE.fullmatch(text):
        raise BoundError("syntax", "not a decimal integer of at most 155 digits")
    value = int(text)
    if value < least:
        raise BoundError("low", f"{value} is below {least}")
    if value > MAX_U512:
        raise BoundError("high", "above 2^512 - 1")
    return value


@attrs.frozen
class Bound:
    """What a nonce must meet: `value` is the v1 threshold or the v2 target, as `pow` reads it."""

    pow: Pow
    value: int

    @classmethod
    def threshold(cls, threshold: int) -> Bound:
        """QPoW v1: valid iff distance <= `threshold` (in [0, 2^512 - 1])."""
        if not 0 <= threshold <= MAX_U512:
            raise BoundError("high" if threshold > 0 else "low", "a threshold lies in [0, 2^512 - 1]")
        return cls(Pow.V1, threshold)

    @classmethod
    def difficulty(cls, difficulty: int) -> Bound:
        """QPoW v2: valid iff hash < (2^512 - 1) // `difficulty` (in [1, 2^512 - 1])."""
        if not 0 < difficulty <= MAX_U512:
            raise BoundError("high" if difficulty > 0 else "low", "a difficulty lies in [1, 2^512 - 1]")
        return cls(Pow.V2, qpow2.target_of(difficulty))

    def admits(self, measure: int) -> bool:
        """Whether a nonce whose distance (v1) or hash (v2) is `measure` is valid."""
        return measure <= self.value if self.pow is Pow.V1 else measure < self.value
