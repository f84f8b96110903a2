"""Hex and decimal formats of the node protocol (docs/protocol.md), pure functions.

>>> nonce_hex(4330), work_hex(1)[-4:]
('10ea', '0001')
"""

import re

from .bounds import BoundError, parse_u512

HEX_RE = re.compile(r"[0-9a-fA-F]+")


def nonce_hex(nonce: int) -> str:
    """Rust `{:x}` of a U512: lowercase, no leading zeros, no 0x."""
    return format(nonce, "x")


def work_hex(value: int) -> str:
    """64 big-endian bytes as 128 lowercase hex chars."""
    return format(value, "0128x")


def parse_hex(text: str, *, length: int | None, name: str, max_length: int | None = None) -> int:
    """Parse hex of an exact (or at most `max_length`) length, no 0x; raise ValueError naming the field."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a string")
    if length is not None and len(text) != length:
        raise ValueError(f"{name} must be exactly {length} hex characters")
    if max_length is not None and not 0 < len(text) <= max_length:
        raise ValueError(f"{name} must be 1 to {max_length} hex characters")
    if not HEX_RE.fullmatch(text):
        raise ValueError(f"{name} must contain only hex characters 0-9a-f")
    return int(text, 16)


def parse_threshold(text: str, *, name: str = "distance_threshold") -> int:
    """A decimal string of an unsigned integer < 2^512 (the U512 rule of `bounds.parse_u512`)."""
    try:
        return parse_u512(text)
    except BoundError as exc:
        detail = "must be a string" if exc.kind == "type" else "must be a decimal integer below 2^512"
        raise ValueError(f"{name} {detail}") from None
