"""The trio shell: the job runtime, the node-facing HTTP API, Prometheus metrics, process wiring, and the
QUIC node client (`node_client`) that turns a 2026 node's jobs into runtime jobs."""
