"""quantus-miner: an external QPoW miner for the Quantus Network node."""

# Numba's cache directory is chosen by `engines.cache.configure_numba_cache` when an engine is
# built (never at import, and never by editing the user's environment here).
__version__ = "0.1.0"
