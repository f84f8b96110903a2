"""The QUIC server side for trio: one UDP socket, connections routed by connection id.

What the node does (and `devnet.quic_node` simulates): accept handshakes, run a handler per
connection over the same `QuicStreamConnection` the client uses (transport.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio
from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicErrorCode, QuicPacketType, pull_quic_header
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..core.quic_messages import MAX_PAYLOAD
from .transport import ALPN, MAX_DATAGRAM, Address, ConnectionClosed, QuicStreamConnection

log = logging.getLogger("quantus_miner.quic")


def server_configuration(cert, key, alpn: str, idle_timeout: float) -> QuicConfiguration:
    """The aioquic configuration of a server with `cert`/`key` (PEM bytes or objects) and `alpn`."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    if isinstance(key, bytes):
        key = serialization.load_pem_private_key(key, password=None)
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=[alpn],  # aioquic refuses clients offering no/other ALPN
        certificate=cert,
        private_key=key,
        idle_timeout=idle_timeout,
        max_data=256 * 1024,
        max_stream_data=128 * 1024,
    )


@attrs.define
class ServerStats:
    """What the endpoint saw, for simulators and tests."""

    initials_dropped_full: int = 0  # new connections refused because max_connections was hit
    connections_created: int = 0  # QUIC connections started (first Initial packet)
    handshakes_completed: int = 0
    stream_bytes_received: int = 0  # sum over terminated connections
    active: int = 0
    #: called after every change, so a simulator can wake its waiters
    notify: Callable[[], None] = attrs.field(default=lambda: None, repr=False)


async def serve(
    host: str,
    port: int,
    *,
    cert,
    key,
    alpn: str = ALPN,
    handler: Callable[[QuicStreamConnection], Awaitable[None]],
    idle_timeout: float = 60.0,
    max_connections: int = 64,
    max_payload: int = MAX_PAYLOAD,
    stats: ServerStats | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept QUIC connections on one UDP socket; run `handler(conn)` after each handshake.

    Datagrams are routed by destination connection id like aioquic's asyncio QuicServer
    (no retry, no version negotiation). Reports the bound port via task_status. When the
    handler returns the connection is closed; when the connection ends the handler is
    cancelled. On cancellation every connection is closed with "server shutting down".
    """
    config = server_configuration(cert, key, alpn, idle_timeout)
    stats = stats if stats is not None else ServerStats()
    routes: dict[bytes, QuicStreamConnection] = {}
    conns: set[QuicStreamConnection] = set()
    send_lock = trio.Lock()  # two tasks waiting for writability on one trio socket is an error

    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind((host, port))

        # Route by every connection id aioquic issues; retired ones are dropped.
        def routes_add(cid: bytes, conn: QuicStreamConnection) -> None:
            routes[cid] = conn

        def routes_remove(cid: bytes, conn: QuicStreamConnection) -> None:
            if routes.get(cid) is conn:
                del routes[cid]

        async def send_datagram(data: bytes, addr: Address) -> None:
            async with send_lock:
                try:
                    await sock.sendto(data, addr)
                except OSError as exc:  # QUIC recovers from loss; just note it
                    log.debug("sendto %s failed: %s", addr, exc)

        async def run_connection(conn: QuicStreamConnection) -> None:
            async def run_handler() -> None:
                await conn.handshake_done.wait()
                stats.handshakes_completed += 1
                stats.notify()
                try:
                    await handler(conn)
                except ConnectionClosed:
                    pass
                except Exception:
                    log.exception("connection handler failed")
                    conn.close("internal error", error_code=QuicErrorCode.INTERNAL_ERROR)
                else:
                    conn.close("")

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_handler)
                    await conn.drive()
                    nursery.cancel_scope.cancel()
            finally:
                conns.discard(conn)
                for cid in [c for c, v in routes.items() if v is conn]:
                    del routes[cid]
                stats.active = len(conns)
                stats.stream_bytes_received += conn.stream_bytes_received
                stats.notify()

        async with trio.open_nursery() as nursery:
            task_status.started(sock.getsockname()[1])
            try:
                while True:
                    try:
                        data, addr = await sock.recvfrom(MAX_DATAGRAM)
                    except OSError as exc:
                        log.debug("recvfrom failed: %s", exc)
                        continue
                    try:
                        header = pull_quic_header(Buffer(data=data),
                                                  host_cid_length=config.connection_id_length)
                    except ValueError:
                        continue  # not QUIC
                    conn = routes.get(header.destination_cid)
                    if conn is None:
                        if (header.packet_type != QuicPacketType.INITIAL
                                or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
                                or header.version not in config.supported_versions):
                            continue
                        if len(conns) >= max_connections:
                            stats.initials_dropped_full += 1
                            continue  # the client's handshake times out and it backs off
                        quic = QuicConnection(
                            configuration=config,
                            original_destination_connection_id=header.destination_cid,
                        )
                        conn = QuicStreamConnection(
                            quic, send_datagram, is_client=False, max_payload=max_payload,
                            on_cid_issued=routes_add, on_cid_retired=routes_remove,
                        )
                        routes[header.destination_cid] = conn
                        routes[quic.host_cid] = conn
                        conns.add(conn)
                        stats.connections_created += 1
                        stats.active = len(conns)
                        stats.notify()
                        nursery.start_soon(run_connection, conn)
                    conn.datagram_received(data, addr)
            finally:
                # Tell every peer we are going away instead of letting them idle out.
                for conn in list(conns):
                    await conn.shutdown("server shutting down")
                nursery.cancel_scope.cancel()
