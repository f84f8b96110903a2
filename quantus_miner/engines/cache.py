"""Where Numba caches compiled kernels: a writable directory, never the installed package tree.

Numba's default puts its cache next to the source (`__pycache__` in the package) when that is
writable, and does the same when `NUMBA_CACHE_DIR` cannot be written. So the miner always names
a directory: `NUMBA_CACHE_DIR` if it is writable, else `$XDG_CACHE_HOME/quantus-miner/numba`
(`~/.cache/...`), else one under the system temp dir, with one warning line when the requested
directory (or the user's cache) could not be used.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

log = logging.getLogger("quantus_miner")

_chosen: str | None = None


def writable(path: str) -> bool:
    """Whether files can be created in `path` (made if missing), tested for real as Numba does."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def candidates(env) -> list[str]:
    """Numba cache directories to try, in order: the user's cache, then a per-user temp directory."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(base, "quantus-miner", "numba"),
            os.path.join(tempfile.gettempdir(), f"quantus-miner-numba-{os.getuid()}")]


def choose_cache_dir(env=None) -> tuple[str | None, str | None]:
    """(directory, warning or None); directory None when nothing is writable (no cache then)."""
    env = os.environ if env is None else env
    requested = env.get("NUMBA_CACHE_DIR", "")
    if requested and writable(requested):
        return requested, None
    for i, path in enumerate(candidates(env)):
        if writable(path):
            if requested:
                return path, f"NUMBA_CACHE_DIR={requested!r} is not writable; caching compiled kernels in {path}"
            if i:
                return path, f"no writable user cache directory; caching compiled kernels in {path}"
            return path, None
    return None, "no writable cache directory, not even under the temp dir: kernels may be compiled at every start"


def configure_numba_cache() -> str | None:
    """Point Numba at a writable cache directory (once per process); returns it, None for no cache."""
    global _chosen
    if _chosen is not None:
        return _chosen or None
    path, warning = choose_cache_dir()
    if warning:
        log.warning("%s", warning)
    if path is not None:  # None: not even the temp dir is writable; Numba then caches nowhere it can
        os.environ["NUMBA_CACHE_DIR"] = path
        numba_config = sys.modules.get("numba.core.config")
        if numba_config is not None:  # Numba already imported: it read the variable at import
            numba_config.CACHE_DIR = path
    _chosen = path or ""
    return path


__all__ = ["choose_cache_dir", "configure_numba_cache", "writable"]
