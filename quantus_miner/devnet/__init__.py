"""The devnet: a simulated Quantus chain and nodes (HTTP 2025 `simulator`, QUIC 2026 `quic_node`) that
drive a miner exactly as the real node does."""
