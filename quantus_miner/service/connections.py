"""Bounded connections for the HTTP ports: a cap, idle and send deadlines, closes that really close.

Under hypercorn's own `worker_serve` nothing capped the connections it accepted, its keep-alive
timer left idle connections open, and closing after `Connection: close`/HTTP/1.0/408/413 never
happened (its `send_eof` ran in a task Quart-Trio had just cancelled). One host could fill the
fd table and silence the miner. `serve_http` runs hypercorn's per-connection protocol over
`GuardedStream`s from one accept loop that enforces, on every connection:

- a cap: at `max_connections`, accepting a new connection first closes the one that has been
  quiet longest, so a fresh client (the node) is always served and a flood cannot queue it out;
  an accept that fails for lack of fds does the same. On the metrics port (`evict=False`) a
  connection past the cap is answered at once with a canned `503` and `Retry-After: 1` (as
  node_exporter does past `--web.max-requests`), at most `REFUSALS_MAX` at a time;
- an idle deadline: no byte in either direction for `idle_timeout_s` closes it; while a request
  body is still awaited, `grace_s` more (the API port), so that a stalled body gets its 408 from
  the app's body timeout before this backstop can close the connection unanswered;
- a send deadline: a response the peer does not read within `idle_timeout_s` closes it;
- a lingering close when hypercorn ends a connection: FIN at once (no await, so no cancellation
  can skip it), what the peer still sends is discarded, the socket closes when the peer closes
  or after `LINGER_S`;
- HTTP/1.x only (`HTTP11Only`): no h2c, no WebSocket.

One reaper task checks the deadlines every `REAP_PERIOD_S`; a close is `socket.close()`, which
frees the fd at once and wakes hypercorn's tasks with `ClosedResourceError`.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig, Sockets
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
import h11
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr
from quart.wrappers import ClientDisconnectedError

log = logging.getLogger("quantus_miner.http")

LINGER_S = 1.0  # after a closing response: how long the peer may still send before a hard close
REAP_PERIOD_S = 0.25
FD_RESERVE = 64  # fds kept free for logs, threads, the metrics port and the node's own connection
FD_SHORTAGE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
REFUSALS_MAX = 64  # connections past the metrics cap being answered 503 at once (each for <= REFUSAL_S)
REFUSAL_S = 1.0
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 17\r\n"
           b"retry-after: 1\r\nconnection: close\r\n\r\ntoo many scrapes\n")


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft fd limit to the hard limit; returns (soft before, soft now) and logs both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = soft
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            new = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the fd limit %d to %d: %s", soft, hard, exc)
    log.info("fd limit: soft %d -> %d (hard %s)", soft, new,
             "unlimited" if hard == resource.RLIM_INFINITY else hard)
    return soft, new


def connection_cap(requested: int, fd_limit: int, reserved: int) -> int:
    """The most connections one port may hold: what was asked, within the fds this process has.

    >>> connection_cap(512, 1024, 32), connection_cap(512, 256, 32)
    (512, 160)
    """
    return max(1, min(requested, fd_limit - FD_RESERVE - reserved))


class GuardedStream:
    """A `trio.SocketStream` that records its last activity and can be closed from outside.

    It has no `do_handshake`, so hypercorn's `TCPServer` treats it as plain TCP, as it is.
    """

    def __init__(self, stream: trio.SocketStream, guard: ConnectionGuard):
        self._stream = stream
        self.socket = stream.socket
        self.guard = guard
        self.last_active = trio.current_time()
        self.sending_since: float | None = None
        self.closing_since: float | None = None  # a closing response went out: discard, then close
        self.closed = False
        # set by the HTTP protocol: whether a request body is still awaited (its stall earns a 408 first)
        self.body_pending: Callable[[], bool] = lambda: False

    def deadline(self) -> float:
        """When the guard closes this connection if nothing happens."""
        if self.closing_since is not None:
            return self.closing_since + LINGER_S
        # a send that does not finish (a reader that does not read) gets as long as silence does
        if self.sending_since is not None:
            return self.sending_since + self.guard.idle_timeout_s
        grace = self.guard.grace_s if self.body_pending() else 0.0
        return self.last_active + self.guard.idle_timeout_s + grace

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive bytes, marking the connection active."""
        while True:
            data = await self._stream.receive_some(max_bytes)
            self.last_active = trio.current_time()
            if self.closing_since is None or not data:
                return data
            # lingering close: the answer is out; what the peer still sends is dropped unread

    async def send_all(self, data: bytes) -> None:
        """Send bytes (refused once closing), timing the send for the deadline."""
        if self.closing_since is not None:
            raise trio.BrokenResourceError("connection is closing")
        self.sending_since = trio.current_time()
        try:
            await self._stream.send_all(data)
        finally:
            self.sending_since = None
            self.last_active = trio.current_time()

    async def wait_send_all_might_not_block(self) -> None:
        """As the wrapped stream."""
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        # hypercorn calls this to end a connection from a task that Quart may be cancelling (it
        # cancels the request's tasks on the http.disconnect hypercorn sends first), so trio's
        # send_eof would die at its checkpoint before the FIN and the socket stayed open: no await
        """End the connection without awaiting (see the comment)."""
        self.close_soon()

    def close_soon(self) -> None:
        """End the connection: FIN now, hard close within `LINGER_S` (at once if the peer closes)."""
        if self.closing_since is not None or self.closed:
            return
        self.closing_since = trio.current_time()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            self.close_now()

    def close_now(self) -> None:
        """Free the fd at once; hypercorn's pending reads and writes fail with ClosedResourceError."""
        if not self.closed:
            self.closed = True
            self.guard.forget(self)
            self.socket.close()

    async def aclose(self) -> None:
        """Close now, unless the connection is already lingering."""
        if self.closing_since is None:  # lingering: the reaper closes it at its deadline, or EOF does
            self.close_now()
        await trio.lowlevel.checkpoint()


class ConnectionGuard:
    """The live connections of one port, their cap and their deadlines."""

    def __init__(self, name: str, max_connections: int, idle_timeout_s: float, *, evict: bool = True,
                 grace_s: float = 0.0):
        self.name = name
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.grace_s = grace_s  # added to the idle deadline (see the module docstring)
        # evict: at the cap a new connection closes the quietest one (the API: the node must get in);
        # otherwise a new connection is answered 503 at once (the metrics port: a scraper learns to
        # back off within milliseconds, instead of waiting in the backlog for its own timeout)
        self.evict = evict
        self.refused = 0
        self._refusing = 0
        self._freed = trio.Event()
        self._live: dict[GuardedStream, None] = {}  # insertion-ordered set
        self.evicted = 0
        self._shortage_logged = False

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, stream: trio.SocketStream) -> GuardedStream:
        """Track a new connection, evicting the oldest idle ones past the limit."""
        while len(self._live) >= self.max_connections:
            self.evict_one()
        guarded = GuardedStream(stream, self)
        self._live[guarded] = None
        return guarded

    def forget(self, stream: GuardedStream) -> None:
        """Stop tracking a closed connection."""
        self._live.pop(stream, None)
        self._freed.set()

    def evict_one(self) -> bool:
        """Close the connection that has been quiet longest (a flood's, not the node's)."""
        if not self._live:
            return False
        victim = min(self._live, key=lambda s: s.last_active)
        victim.close_now()
        self.evicted += 1
        log.log(logging.WARNING if self.evicted == 1 else logging.DEBUG,  # once: a flood must not flood the log
                "%s port: connection cap %d reached, closing the quietest connections", self.name,
                self.max_connections)
        return True

    async def reap(self) -> None:
        """Close connections past their deadline, periodically, forever."""
        while True:
            await trio.sleep(REAP_PERIOD_S)
            now = trio.current_time()
            for stream in [s for s in self._live if s.deadline() <= now]:
                stream.close_now()

    async def accept_loop(self, listener: trio.SocketListener, handler: Callable[[GuardedStream], Awaitable],
                          nursery: trio.Nursery) -> None:
        """Accept connections into `handler` tasks, refusing (bounded) past the limit."""
        while True:
            while not self.evict and self._refusing >= REFUSALS_MAX:  # bounded: each refusal ends within 1 s
                self._freed = trio.Event()
                await self._freed.wait()
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in FD_SHORTAGE:
                    raise
                if not self._shortage_logged:  # once: a flood must not flood the log too
                    log.warning("%s: accept failed (%s): closing the quietest connections", self.name,
                                errno.errorcode.get(exc.errno, exc.errno))
                    self._shortage_logged = True
                if not self.evict_one():
                    await trio.sleep(0.05)
                continue
            if not self.evict and len(self._live) >= self.max_connections:
                self._refusing += 1
                nursery.start_soon(self._refuse, stream)
                continue
            nursery.start_soon(self._handle, handler, self.admit(stream))

    async def _refuse(self, stream: trio.SocketStream) -> None:
        """Answer the canned 503, then linger briefly (reading what the client sent) so that closing
        with its request unread does not reset the connection before it has read the answer."""
        self.refused += 1
        if self.refused == 1:
            log.warning("%s port: %d connections in use; answering further ones 503 (Retry-After: 1)",
                        self.name, self.max_connections)
        try:
            with trio.move_on_after(REFUSAL_S):
                await stream.send_all(REFUSAL)
                stream.socket.shutdown(socket.SHUT_WR)
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            stream.socket.close()
            self._refusing -= 1
            self._freed.set()

    async def _handle(self, handler, stream: GuardedStream) -> None:
        try:
            await handler(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
            pass  # the client left or was closed by us: nothing to report
        finally:
            stream.close_now()


class HTTP11Only(H11Protocol):
    """HTTP/1.1 and 1.0 only: no h2c (upgrade or prior knowledge) and no WebSocket.

    An `Upgrade: h2c` request is answered in HTTP/1.1, as RFC 9110 allows; a WebSocket upgrade
    reaches the app as a plain request (its `Upgrade` header intact, `Connection: upgrade` gone),
    which answers it with a JSON 400 and counts it like any other response.
    """

    async def _check_protocol(self, event: h11.Request) -> None:
        pass  # hypercorn would switch to HTTP/2 here

    async def _create_stream(self, request: h11.Request) -> None:
        if any(name == b"upgrade" for name, _ in request.headers):
            request = h11.Request(method=request.method, target=request.target, http_version=request.http_version,
                                  headers=[(n, v) for n, v in request.headers if n != b"connection"])
        await super()._create_stream(request)


class GuardedTCPServer(TCPServer):
    """hypercorn's per-connection server over a `GuardedStream`, speaking `HTTP11Only`."""

    async def run(self) -> None:
        """Serve one connection with hypercorn's protocol over the guarded stream."""
        sock = self.stream.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = HTTP11Only(self.app, self.config, self.context, task_group,
                                           ConnectionState(self.state), False, client, server, self.protocol_send)
                protocol = self.protocol
                self.stream.body_pending = lambda: protocol.connection.their_state is h11.SEND_BODY
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
                # the peer is gone: without this, an idle connection (no request in flight, e.g. a
                # scraper that closed) lingered in the task group until the keep-alive timer fired,
                # holding one of the metrics port's 8 slots for the whole idle timeout
                await self.idle_task.stop()
        except OSError:
            pass
        finally:
            await self._close()


async def serve_http(app, config: HypercornConfig, sockets: Sockets, guard: ConnectionGuard,
                     *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """hypercorn's `worker_serve` for plain-TCP sockets, with `guard` between the listener and hypercorn."""
    config.set_statsd_logger_class(StatsdLogger)
    lifespan_state: dict = {}
    lifespan = Lifespan(app, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        # runs until cancelled (shutdown cancels everything at once: no lifespan.shutdown, the app has
        # no after-serving work, and the runtime stops the jobs itself)
        async with trio.open_nursery() as server_nursery:
            server_nursery.start_soon(guard.reap)
            handler = partial(GuardedTCPServer, app, config, context, ConnectionState(lifespan_state.copy()))
            for sock in sockets.insecure_sockets:
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                server_nursery.start_soon(guard.accept_loop, listener, handler, server_nursery)
            task_status.started()


DISCONNECTS = (ClientDisconnectedError, trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError,
               ConnectionError)


def vanished(exc: BaseException) -> bool:
    """Whether `exc` (or every exception of a group) only says the client went away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(vanished(e) for e in exc.exceptions)
    return isinstance(exc, DISCONNECTS)


class QuietApp:
    """Hypercorn app wrapper: a client that left mid-request is logged at debug, not as an ERROR traceback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send, sync_spawn, call_soon) -> None:
        try:
            await self.app(scope, receive, send, sync_spawn, call_soon)
        except Exception as exc:
            if not vanished(exc):
                raise
            # nothing went wrong on our side, and there is nobody to answer
            log.debug("client %s left during %s %s", scope.get("client"), scope.get("method"), scope.get("path"))
