"""The QUIC side of the 2026 node protocol, on trio: aioquic's sans-I/O connection driven by a
trio UDP socket (`transport`; the node's side, used by the simulator: `server`), the miner's
session logic (`client`), and the node's credential files (`tls`). The wire format itself is
pure and lives in `core.quic_messages`."""
