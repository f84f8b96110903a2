"""What a search reports, and the re-verification that guards consensus (pure).

>>> from quantus_miner.core import qpow
>>> verified(qpow.JobContext.from_header(bytes(32)), qpow.MAX_U512 // 5000, 4330).nonce
4330
"""

from __future__ import annotations

import attrs

from . import qpow


class ConsensusError(RuntimeError):
    """An engine reported a nonce the reference rejects: a bug, never a result."""


@attrs.frozen
class Found:
    nonce: int
    distance: int


@attrs.frozen
class ChunkOutcome:
    """What one search call did: nonces tested (exactly), the valid nonce if any, whether it was cancelled."""

    tested: int
    found: Found | None = None
    cancelled: bool = False


def verified(ctx: qpow.JobContext, threshold: int, nonce: int) -> Found:
    """Re-check a candidate with the reference; raise if an engine got consensus wrong."""
    if not qpow.is_valid(ctx, nonce, threshold):
        raise ConsensusError(f"engine reported nonce {nonce:x}, which the reference rejects")
    return Found(nonce, qpow.distance(ctx, nonce))
