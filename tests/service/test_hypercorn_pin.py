"""`service/connections.py` copies two hypercorn functions; a hypercorn release that changes either fails here, by name.

The copies (`GuardedTCPServer.run`, `serve_http`) follow hypercorn 0.18's `TCPServer.run` and
`trio.run.worker_serve`; pyproject.toml pins the range they were tested with. When this fails, diff
the named function against the copy, port the change, and record the new hash.
"""

from __future__ import annotations

import hashlib
import inspect

import hypercorn.trio.run
import hypercorn.trio.tcp_server

COPIED = {  # hypercorn function -> (sha256 of its source as copied, our copy)
    "hypercorn.trio.tcp_server.TCPServer.run": (
        hypercorn.trio.tcp_server.TCPServer.run,
        "fd34b021d1a86c9859514de9472306ea47f4a6763732b26b7a5945278ded0e08", "connections.GuardedTCPServer.run"),
    "hypercorn.trio.run.worker_serve": (
        hypercorn.trio.run.worker_serve,
        "8dc8347a9fc357ca334f8c3e4bcf0368176510a96d434f21a5eb4c9ec4103726", "connections.serve_http"),
}


def test_the_hypercorn_functions_we_copied_are_unchanged():
    changed = [f"{name} changed (copied as quantus_miner.service.{copy})"
               for name, (func, digest, copy) in COPIED.items()
               if hashlib.sha256(inspect.getsource(func).encode()).hexdigest() != digest]
    assert not changed, "; ".join(changed)
