"""The devnet: a simulated Quantus chain and node that drive a miner exactly as the real node does."""
