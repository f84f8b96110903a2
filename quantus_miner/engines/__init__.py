"""Mining engines behind one interface (`base.Engine`): the registry of engines by CLI name.

>>> get_engine("cpu-baseline").kernel, get_engine("cpu-baseline-v2").pow
('python-reference', 'v2')
"""

from __future__ import annotations

import os

from ..core.config import ENGINE_NAMES
from .base import Engine
from .baseline import BaselineEngine
from .baseline_v2 import BaselineV2Engine


def get_engine(name: str) -> Engine:
    if name == "cpu-baseline":
        return BaselineEngine()
    if name == "cpu-fast":
        from .fast import FastEngine  # imports Numba only when asked for

        return FastEngine.for_host(os.environ.get("MINER_KERNEL", "auto"))
    if name == "cpu-baseline-v2":
        return BaselineV2Engine()
    if name == "cpu-fast-v2":
        from .fast_v2 import FastV2Engine  # imports Numba only when asked for

        return FastV2Engine()
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINE_NAMES)})")


__all__ = ["ENGINE_NAMES", "Engine", "get_engine"]
