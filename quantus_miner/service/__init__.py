"""The trio shell: the job runtime, the node-facing HTTP API, Prometheus metrics, and process wiring."""
