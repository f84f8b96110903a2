"""Start the miner service: warm-up, bind, then serve the API (and metrics) until cancelled.

The parts every miner command shares (engine, probe, executor, runtime, metrics) come from
`compose`; this module adds the HTTP servers.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from functools import partial

import attrs
import trio
from hypercorn.config import Config as HypercornConfig, Sockets
from hypercorn.utils import wrap_app
from prometheus_client import CollectorRegistry

from ..core.config import ServiceConfig
from ..core.speed import DEFAULT_WINDOWS
from ..pipeline.runtime import MinerRuntime
from .api import BODY_TIMEOUT_S, create_app
from .compose import open_executor, start_engine, start_pipeline, where
from .connections import ConnectionGuard, QuietApp, connection_cap, raise_fd_limit, serve_http
from .metrics import MinerMetrics
from .metrics_app import create_metrics_app
from .speedlog import SAMPLE_S, log_speed

log = logging.getLogger("quantus_miner")


METRICS_MAX_CONNECTIONS = 8  # the metrics port serves a scraper or two; more are answered 503 at once
GC_THRESHOLDS = (5000, 10, 10)


class BindError(OSError):
    """A port could not be bound: the service starts nothing."""


@attrs.frozen
class RunningMiner:
    """What `serve_miner` hands back once ready."""
    api_url: str
    metrics_url: str | None
    runtime: MinerRuntime
    registry: CollectorRegistry
    connections: ConnectionGuard  # the API port's live connections


def hypercorn_config(host: str, port: int, idle_timeout_s: float) -> HypercornConfig:
    """Hypercorn's configuration for one port on `host`."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("quantus_miner.http")  # our handlers, not a second stream
    config.graceful_timeout = 0.5
    # the node polls every 500 ms, well inside this; `connections.ConnectionGuard` enforces it
    # (hypercorn's own timer left connections open under load)
    config.keep_alive_timeout = idle_timeout_s
    return config


ANSWER_MARGIN_S = 1.0  # how long after the body timeout the idle backstop may close a connection


def body_grace(idle_timeout_s: float) -> float:
    """Extra idle time the API's connection guard allows, so the app's 408 always comes first.

    >>> body_grace(5.0), body_grace(1.0), body_grace(30.0)
    (1.0, 5.0, 0.0)
    """
    return max(0.0, BODY_TIMEOUT_S + ANSWER_MARGIN_S - idle_timeout_s)


def bind(config: HypercornConfig, what: str) -> Sockets:
    """Bind the configured sockets; BindError naming `what` (API, metrics) if the port is taken."""
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        raise BindError(f"cannot bind the {what} port {config.bind[0]}: {exc.strerror or exc}") from None
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    return sockets


def url_of(sockets: Sockets) -> str:
    """The URL of the first bound socket."""
    host, port = sockets.insecure_sockets[0].getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def tune_gc() -> None:
    """Keep full garbage collections off the request path.

    Numba and LLVM leave hundreds of thousands of long-lived objects; a full collection that
    walks them stalls the event loop for tens of milliseconds. Freeze what start-up made and
    collect the young generation a little less often (measured: /result p99 35 ms -> ~7 ms).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve_metrics(nursery: trio.Nursery, config: ServiceConfig, metrics: MinerMetrics,
                        hyper_config: HypercornConfig, sockets: Sockets) -> str:
    """Serve `GET /metrics` on bound `sockets` behind its own small connection guard; return its URL."""
    guard = ConnectionGuard("metrics", METRICS_MAX_CONNECTIONS, config.idle_timeout_s, evict=False)
    app = create_metrics_app(metrics.render, cache_s=config.metrics_cache_s)
    await nursery.start(partial(serve_http, QuietApp(wrap_app(app, None, "asgi")), hyper_config, sockets, guard))
    return url_of(sockets) + "/metrics"


async def serve_miner(config: ServiceConfig, *, registry: CollectorRegistry | None = None,
                      speed_windows: Sequence[float] = DEFAULT_WINDOWS, speed_sample_s: float = SAMPLE_S,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the miner until cancelled; `nursery.start` hands back a `RunningMiner` once it is ready.

    `speed_windows` are the speed line's windows and `speed_sample_s` its sampling period, in seconds
    (tests shorten them).
    """
    engine, probe, config, beside = await start_engine(config)
    registry = registry if registry is not None else CollectorRegistry()
    _, fd_limit = raise_fd_limit()
    api_guard = ConnectionGuard("API", connection_cap(config.max_connections, fd_limit, METRICS_MAX_CONNECTIONS),
                                config.idle_timeout_s, grace_s=body_grace(config.idle_timeout_s))
    if api_guard.max_connections < config.max_connections:
        log.warning("--max-connections %d lowered to %d to fit the fd limit %d", config.max_connections,
                    api_guard.max_connections, fd_limit)
    api_config = hypercorn_config(config.host, config.port, config.idle_timeout_s)
    metrics_config = (hypercorn_config(config.host, config.metrics_port, config.idle_timeout_s)
                      if config.metrics_port is not None else None)
    api_sockets = bind(api_config, "API")
    try:
        metrics_sockets = bind(metrics_config, "metrics") if metrics_config else None
    except BindError:
        for sock in api_sockets.insecure_sockets:
            sock.close()
        raise
    executor = await open_executor(config, engine, probe, (api_sockets, metrics_sockets))
    async with trio.open_nursery() as nursery:
        runtime, metrics = await start_pipeline(nursery, config, engine, probe, executor, registry, beside)
        app = create_app(runtime, metrics)
        await nursery.start(partial(serve_http, QuietApp(wrap_app(app, None, "asgi")), api_config,
                                    api_sockets, api_guard))
        metrics_url = None
        if metrics_sockets is not None:
            metrics_url = await serve_metrics(nursery, config, metrics, metrics_config, metrics_sockets)
        api_url = url_of(api_sockets)
        if config.log_speed_s > 0:
            nursery.start_soon(partial(log_speed, runtime, config.log_speed_s, windows=speed_windows,
                                               sample_s=speed_sample_s))
        # the probe only sizes first chunks: 0.1 s on one thread near nonce 2^511, cold caches, no
        # neighbours; said so, lest it be read as the mining rate (the speed line gives that)
        log.info("ready: engine %s (%s) on %s; warm-up probe %.0f nonces/s on one core near nonce "
                 "2^511 (sizes first chunks; not the mining rate, see the speed line); API %s%s", engine.name,
                 engine.kernel, where(config, runtime), probe, api_url, f", metrics {metrics_url}" if metrics_url else "")
        tune_gc()
        task_status.started(RunningMiner(api_url, metrics_url, runtime, registry, api_guard))
