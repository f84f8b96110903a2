"""QUIC endpoint driver for trio around aioquic's sans-I/O QuicConnection.

Mirrors aioquic/asyncio/{protocol,client,server}.py: feed received datagrams into the
connection, process its events, send `datagrams_to_send(now)`, and re-arm one timer from
`get_timer()`. Here a single driver task per connection does all event processing and
sending, woken by "something changed" (datagram in, app data queued, close requested) or by
its deadline; that keeps QuicConnection single-threaded without locks.

One bidirectional stream per connection, opened by the client, carrying length-prefixed JSON
frames (core/quic_messages.py). Both sides: `async send(msg)`, `async for msg in conn`,
`close(reason)`. The client opens connections with `connect()`; the server side is server.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicErrorCode
from cryptography.hazmat.primitives import serialization

from ..core.quic_messages import MAX_PAYLOAD, FrameDecoder, FrameError, encode_frame

log = logging.getLogger("quantus_miner.quic")

ALPN = "quantus-miner/2"
MAX_DATAGRAM = 65536
MAX_QUEUED_MESSAGES = 64  # a peer flooding faster than we consume gets disconnected
CLOSE_FLUSH_TIMEOUT = 1.0  # bound on sending the CONNECTION_CLOSE at shutdown

Address = tuple[str, int]


class ConnectError(ConnectionError):
    """The QUIC handshake did not complete (timeout, refused, peer closed)."""


class PinMismatch(ConnectError):
    """The server certificate's SHA-256 is not the pinned one. Permanent: do not retry."""

    def __init__(self, expected: str, got: str | None):
        super().__init__(f"server certificate pin mismatch: expected {expected}, got {got}")
        self.expected, self.got = expected, got


class ConnectionClosed(ConnectionError):
    """Sending or receiving on a connection that has ended."""


def _peer_close_reason(quic: QuicConnection) -> str | None:
    """The reason phrase if the connection was just closed by the peer's datagram.

    aioquic only reports ConnectionTerminated after the 3*PTO draining period and does not
    say who closed; its private `_close_event` / `_close_pending` tell us at once (a peer
    close sets the event without a pending local close). Caveat: private API (aioquic 1.7).
    """
    ev = getattr(quic, "_close_event", None)
    if ev is not None and not getattr(quic, "_close_pending", False):
        return ev.reason_phrase
    return None


def _peer_cert_sha256(quic: QuicConnection) -> str | None:
    # aioquic exposes no public accessor for the peer certificate; with CERT_NONE the TLS
    # context still parses it into the private `_peer_certificate`.
    cert = getattr(getattr(quic, "tls", None), "_peer_certificate", None)
    if cert is None:
        return None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class QuicStreamConnection:
    """One QUIC connection carrying one framed-JSON bidirectional stream.

    Created by `connect()` (client) or `serve()` (server); not meant to be built directly.
    """

    def __init__(
        self,
        quic: QuicConnection,
        send_datagram: Callable[[bytes, Address], Awaitable[None]],
        *,
        is_client: bool,
        pin_sha256: str | None = None,
        ping_interval: float | None = None,
        max_payload: int = MAX_PAYLOAD,
        on_cid_issued: Callable[[bytes, QuicStreamConnection], None] | None = None,
        on_cid_retired: Callable[[bytes, QuicStreamConnection], None] | None = None,
    ):
        self._quic = quic
        self._send_datagram = send_datagram
        self._is_client = is_client
        self._pin = pin_sha256.lower() if pin_sha256 else None
        self._ping_interval = ping_interval
        self._max_payload = max_payload
        self._on_cid_issued = on_cid_issued
        self._on_cid_retired = on_cid_retired

        self._decoder = FrameDecoder(max_payload)
        self._msg_in, self._msg_out = trio.open_memory_channel[dict[str, Any]](MAX_QUEUED_MESSAGES)
        self._stream_id: int | None = None
        self._wake = trio.Event()
        self._timer_at: float | None = None
        self._ping_at: float | None = None
        self._ping_uid = 0

        self._close_requested = False
        self._terminated = False
        self.handshake_done = trio.Event()  # handshake complete and (client) pin verified
        self.settled = trio.Event()  # handshake_done or terminated, whichever first
        self.closed = trio.Event()  # fully terminated

        #: reason of the peer's CONNECTION_CLOSE (None if we closed, or it timed out)
        self.peer_close_reason: str | None = None
        #: reason we closed with, if we closed first
        self.local_close_reason: str | None = None
        #: the final reason aioquic reported (e.g. "Idle timeout"), or a network error
        self.close_reason: str | None = None
        #: set when we closed because the peer sent a bad frame
        self.frame_error: FrameError | None = None
        self.pin_mismatch: PinMismatch | None = None
        #: counters, for diagnostics and tests
        self.stream_bytes_received = 0
        self.pings_acked = 0

    # --- application API -------------------------------------------------------------

    async def send(self, msg: dict[str, Any]) -> None:
        """Queue one message on the stream. The client opens the stream on its first send."""
        await trio.lowlevel.checkpoint()
        self.send_raw(encode_frame(msg, max_payload=self._max_payload))

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes to the stream (no framing). For simulators/tests of bad peers."""
        if self._terminated or self._close_requested:
            raise ConnectionClosed(self.close_reason or self.local_close_reason or "closed")
        if not self.handshake_done.is_set():
            # Nothing may be sent before the pin has been checked.
            raise ConnectionClosed("handshake not complete")
        if self._stream_id is None:
            if not self._is_client:
                raise ConnectionClosed("the client has not opened the stream yet")
            self._stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(self._stream_id, data)
        self._wake.set()

    async def receive(self) -> dict[str, Any]:
        """Next message; raises ConnectionClosed when the connection has ended."""
        try:
            return await self._msg_out.receive()
        except trio.EndOfChannel:
            raise ConnectionClosed(self.close_reason or self.peer_close_reason or "closed") from None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        # iteration ends when the connection closes (or we close it)
        return self._msg_out.__aiter__()

    def close(self, reason: str = "", error_code: int = QuicErrorCode.NO_ERROR) -> None:
        """Start closing (idempotent). The close frame goes out on the driver's next pass."""
        if self._terminated or self._close_requested:
            return
        self._close_requested = True
        self.local_close_reason = reason
        self._quic.close(error_code=error_code, reason_phrase=reason)
        self._msg_in.close()
        self._wake.set()

    async def wait_closed(self) -> None:
        """Wait until the connection has closed."""
        await self.closed.wait()

    @property
    def is_closing(self) -> bool:
        """Whether either side has started to close."""
        return self._close_requested or self._terminated or self.peer_close_reason is not None

    @property
    def stream_id(self) -> int | None:
        """The one bidirectional stream's id, or None before it opened."""
        return self._stream_id

    # --- driver side -----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Feed one UDP datagram from `addr` to the QUIC state machine."""
        if self._terminated:
            return
        try:
            self._quic.receive_datagram(data, addr, now=trio.current_time())
        except Exception as exc:  # contain an aioquic bug to this one connection
            log.exception("QUIC receive failed")
            self.abort(f"internal error: {exc}")
            return
        if self.peer_close_reason is None and not self._close_requested:
            self.peer_close_reason = _peer_close_reason(self._quic)
        self._wake.set()

    def abort(self, reason: str) -> None:
        """End without a close handshake (network error, driver failure)."""
        if not self._terminated:
            log.debug("connection aborted: %s", reason)
            self._finish(reason)
            self._wake.set()

    async def drive(self) -> None:
        """Run until the connection terminates: timers, events, outgoing datagrams."""
        try:
            while not self._terminated:
                now = trio.current_time()
                if self._timer_at is not None and now >= self._timer_at:
                    self._timer_at = None
                    self._quic.handle_timer(now=now)
                if self._ping_at is not None and now >= self._ping_at and not self.is_closing:
                    # Keep-alive: the node's idle timeout is 60 s and it sends no pings.
                    self._ping_uid += 1
                    self._quic.send_ping(self._ping_uid)
                    self._ping_at = now + self._ping_interval
                self._process_events()
                if self.peer_close_reason is not None:
                    self._msg_in.close()  # after delivering what came with the close
                if self._terminated:
                    break
                await self._flush(now)
                self._timer_at = self._quic.get_timer()
                deadline = min(
                    math.inf if self._timer_at is None else self._timer_at,
                    math.inf if self._ping_at is None or self.is_closing else self._ping_at,
                )
                with trio.move_on_at(deadline):
                    await self._wake.wait()
                self._wake = trio.Event()
        except Exception as exc:  # an aioquic bug must not take the whole endpoint down
            log.exception("QUIC driver failed")
            self._finish(f"internal error: {exc}")

    async def _flush(self, now: float) -> None:
        for data, addr in self._quic.datagrams_to_send(now=now):
            await self._send_datagram(data, addr)

    def _process_events(self) -> None:
        while (event := self._quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                self._on_stream_data(event)
            elif isinstance(event, events.HandshakeCompleted):
                self._on_handshake(event)
            elif isinstance(event, events.ConnectionIdIssued) and self._on_cid_issued:
                self._on_cid_issued(event.connection_id, self)
            elif isinstance(event, events.ConnectionIdRetired) and self._on_cid_retired:
                self._on_cid_retired(event.connection_id, self)
            elif isinstance(event, (events.StreamReset, events.StopSendingReceived)):
                if event.stream_id == self._stream_id:
                    self.close("stream reset by peer")
            elif isinstance(event, events.PingAcknowledged):
                self.pings_acked += 1
            elif isinstance(event, events.ConnectionTerminated):
                self._finish(event.reason_phrase)

    def _on_handshake(self, event: events.HandshakeCompleted) -> None:
        if self._is_client and self._pin is not None:
            got = _peer_cert_sha256(self._quic)
            # Checked before the application can send anything (send() needs handshake_done).
            if got is None or not hmac.compare_digest(got, self._pin):
                self.pin_mismatch = PinMismatch(self._pin, got)
                self.close("certificate pin mismatch", error_code=QuicErrorCode.APPLICATION_ERROR)
                self.settled.set()
                return
        if self._ping_interval:
            self._ping_at = trio.current_time() + self._ping_interval
        self.handshake_done.set()
        self.settled.set()

    def _on_stream_data(self, event: events.StreamDataReceived) -> None:
        if self._close_requested:
            return
        if self._stream_id is None and not self._is_client and event.stream_id % 4 == 0:
            self._stream_id = event.stream_id  # the first client-initiated bidi stream
        if event.stream_id != self._stream_id:
            self.close("unexpected stream", error_code=QuicErrorCode.APPLICATION_ERROR)
            return
        self.stream_bytes_received += len(event.data)
        try:
            # messages before a bad frame are still delivered, then the connection ends
            for msg in self._decoder.feed(event.data):
                try:
                    self._msg_in.send_nowait(msg)
                except trio.WouldBlock:
                    self.close("receive queue overflow", error_code=QuicErrorCode.APPLICATION_ERROR)
                    return
                except trio.ClosedResourceError:
                    return
            if event.end_stream and self._decoder.pending_bytes:
                raise FrameError("stream ended inside a frame")
        except FrameError as exc:
            self.frame_error = exc
            self.close(f"frame error: {exc}", error_code=QuicErrorCode.APPLICATION_ERROR)
            return
        if event.end_stream:
            self.close("stream finished by peer")

    def _finish(self, reason: str) -> None:
        self._terminated = True
        if self.close_reason is None:
            self.close_reason = reason
        self._msg_in.close()
        self.settled.set()
        self.closed.set()

    async def shutdown(self, reason: str = "") -> None:
        """Close and send the close frame now (bounded, shielded).

        Flushes directly rather than via the driver, which may itself be cancelled already
        (e.g. the surrounding scope is being cancelled). Draining is left to the peer.
        """
        self.close(reason)
        if self._terminated:
            return
        with trio.CancelScope(shield=True) as cs:
            cs.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
            await self._flush(trio.current_time())


# --- client --------------------------------------------------------------------------


def client_configuration(alpn: str, idle_timeout: float) -> QuicConfiguration:
    """The aioquic configuration of a client speaking `alpn` (the pin is checked separately)."""
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=[alpn],  # required: the node refuses connections without it
        server_name="localhost",  # SNI of the node's self-signed certificate
        verify_mode=ssl.CERT_NONE,  # trust comes from the pin only (no name/expiry/chain)
        idle_timeout=idle_timeout,
        max_data=256 * 1024,  # small windows: frames are <= 1 KiB
        max_stream_data=128 * 1024,
    )


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    pin_sha256: str,
    alpn: str = ALPN,
    idle_timeout: float = 60.0,
    ping_interval: float | None = 5.0,
    handshake_timeout: float = 10.0,
    max_payload: int = MAX_PAYLOAD,
) -> AsyncIterator[QuicStreamConnection]:
    """Connect, verify the pin, and yield the connection (an async context manager).

    Raises PinMismatch (permanent) or ConnectError (retryable) before yielding. On exit the
    connection is closed (if still open) and the close frame flushed.
    """
    infos = await trio.socket.getaddrinfo(host, port, family=trio.socket.AF_INET,
                                          type=trio.socket.SOCK_DGRAM)
    addr: Address = infos[0][4][:2]
    quic = QuicConnection(configuration=client_configuration(alpn, idle_timeout))
    error: BaseException | None = None
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("0.0.0.0", 0))
        # A connected UDP socket only accepts the server's datagrams and surfaces ICMP
        # "port unreachable" as ConnectionRefusedError: a stopped node is noticed at once.
        await sock.connect(addr)

        async def send_datagram(data: bytes, _addr: Address) -> None:
            try:
                await sock.send(data)
            except OSError as exc:
                conn.abort(f"network error: {exc}")

        conn = QuicStreamConnection(quic, send_datagram, is_client=True, pin_sha256=pin_sha256,
                                    ping_interval=ping_interval, max_payload=max_payload)

        async def receive_loop() -> None:
            while not conn.closed.is_set():
                try:
                    data = await sock.recv(MAX_DATAGRAM)
                except OSError as exc:
                    conn.abort(f"network error: {exc}")
                    return
                conn.datagram_received(data, addr)

        quic.connect(addr, now=trio.current_time())
        # Outside-nursery error hand-off: raising inside the nursery would wrap the error in
        # an ExceptionGroup; callers want a plain PinMismatch / ConnectError / their own error.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.drive)
            nursery.start_soon(receive_loop)
            try:
                with trio.move_on_after(handshake_timeout):
                    await conn.settled.wait()
                if conn.pin_mismatch is not None:
                    raise conn.pin_mismatch
                if not conn.handshake_done.is_set():
                    raise ConnectError(
                        f"QUIC handshake with {host}:{port} failed: "
                        f"{conn.peer_close_reason or conn.close_reason or 'timeout'}"
                    )
                yield conn
            except Exception as exc:
                error = exc
            finally:
                await conn.shutdown()
                nursery.cancel_scope.cancel()
    if error is not None:
        raise error
