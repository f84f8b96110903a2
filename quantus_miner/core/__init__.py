"""The sans-I/O core: consensus math (QPoW v1 `qpow`, QPoW v2 `qpow2`), node-protocol formats (HTTP
`protocol`/`requests`, QUIC `quic_messages`), request parsing, chunk sizing and
partitioning, the job state machine and table, and the settings table.

Nothing here does I/O or imports trio, quart, hypercorn, numba, numpy or prometheus_client
(`tests/test_layout.py` enforces it); the trio shell in `quantus_miner.service` drives it.
"""
