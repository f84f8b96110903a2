"""The composition root every miner command shares: engine, warm-up and probe, executor, runtime, metrics,
and the graceful stop on a signal.

`serve`, `connect`, `devnet` (both networks) and `bench --cluster` build their miner here, so they
cannot drift apart; each adds only its front end (HTTP API, QUIC client, benchmark loop). Which signal
stops a command with which exit status is `cli.signals`' one policy table; here is only what a stop does.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import attrs
import trio
from prometheus_client import CollectorRegistry

from ..cluster.executor import ClusterExecutor
from ..core.config import ServiceConfig
from ..engines import Engine, get_engine, slots
from ..engines.base import measure_rate
from ..pipeline.local import Lane, LocalExecutor, beside_lane
from ..pipeline.runtime import MinerRuntime
from .metrics import MinerMetrics

log = logging.getLogger("quantus_miner")

GIL_SWITCH_S = 0.0005


class Stopper(Protocol):
    """What arms a graceful stop: `cli.signals.SignalStop` (`name`: the signal that came, or None)."""

    name: str | None

    def arm(self, on_signal: Callable[[int], None]) -> None:
        """From now on the first signal calls `on_signal(signum)`."""


def describe(config: ServiceConfig) -> str:
    """The settings as one `key=value ...` log line."""
    return " ".join(f"{k}={v}" for k, v in attrs.asdict(config).items())


async def start_engine(config: ServiceConfig) -> tuple[Engine, float, ServiceConfig, Lane | None]:
    """The configured engine, warmed (kernels compiled or loaded), its one-thread probe rate, the
    configuration to run with (a GPU engine: `cores` = its devices, one executor slot each), and the CPU
    lane beside a GPU engine's devices (an explicit `--cores N`: N threads of cpu-fast / cpu-fast-v2)."""
    log.info("configuration: %s", describe(config))
    # Job set-up (Miller-Rabin in Python) runs in threads that hold the GIL; a short switch
    # interval hands it back to the event loop quickly, keeping the node's polls fast.
    sys.setswitchinterval(GIL_SWITCH_S)
    engine = get_engine(config.engine, config.kernel, config.gpu_devices)
    # abandoned on cancel: a stop during a first start's compile (~10 s) need not wait for it
    await trio.to_thread.run_sync(engine.warm_up, abandon_on_cancel=True)
    config = attrs.evolve(config, cores=slots(engine, config.cores))  # a GPU engine: one slot per device
    probe = await trio.to_thread.run_sync(measure_rate, engine, abandon_on_cancel=True)
    beside = await trio.to_thread.run_sync(beside_lane, config, abandon_on_cancel=True)
    if beside is not None:
        log.info("%d CPU thread(s) of %s (%s) mine beside the GPU(s); probe %.0f nonces/s on one core",
                 beside.count, beside.engine.name, beside.engine.kernel, beside.rate)
    return engine, probe, config, beside


async def open_executor(config: ServiceConfig, engine: Engine, probe: float | None,
                        sockets: Sequence[Sockets | None] = ()) -> ClusterExecutor | None:
    """The cluster executor with `--cluster` (bounded by --cluster-timeout-s), else None (local threads).

    On `ClusterUnavailable` the bound `sockets` are closed and the error raised plainly (the commands exit 2).
    """
    if config.cluster is None:
        return None
    try:
        return await ClusterExecutor.open(config, engine, measured_rate=probe, clock=time.monotonic)
    except BaseException:
        for sock in [s for bound in sockets if bound is not None for s in bound.insecure_sockets]:
            sock.close()
        raise


async def start_pipeline(nursery: trio.Nursery, config: ServiceConfig, engine: Engine, probe: float | None,
                         executor: ClusterExecutor | None, registry: CollectorRegistry, beside: Lane | None = None
                         ) -> tuple[MinerRuntime, MinerMetrics]:
    """Start the executor and the runtime in `nursery`, with metrics that read them at scrape time.

    No cluster: this machine's threads (`LocalExecutor`), with `beside`'s CPU threads next to a GPU engine's devices.
    """
    metrics = MinerMetrics(registry)
    if executor is not None:
        await nursery.start(executor.run)
        metrics.observe_cluster(executor.stats)
    else:
        executor = LocalExecutor(config, engine, measured_rate=probe, beside=beside)
    runtime = MinerRuntime(config, engine, measured_rate=probe, clock=time.monotonic, executor=executor)
    await nursery.start(runtime.run)
    metrics.observe(runtime)
    if getattr(engine, "devices", None):  # a GPU engine: per-device series
        metrics.observe_devices(runtime.device_rates, engine.kernel)
    return runtime, metrics


def where(config: ServiceConfig, runtime: MinerRuntime) -> str:
    """Where the miner mines, for the ready line."""
    if config.cluster is not None:
        return f"the Dask cluster at {config.cluster} ({runtime.executor.capacity()} thread(s) now)"
    if (device := getattr(runtime.engine, "device", None)) is None:
        return f"{runtime.config.cores} core(s)"
    beside = getattr(runtime.executor, "beside", None)
    return device if beside is None else \
        f"{device} and {beside.count} CPU thread(s) of {beside.engine.name} ({beside.engine.kernel})"




def halt_on_signal(stop: Stopper | None, nursery: trio.Nursery, runtimes: Callable[[], Iterable[MinerRuntime]],
                   note: str | None = None) -> Callable[[], None]:
    """Arm `stop` (when given) to halt on its first signal; return the halt, for a front end that ends itself.

    The halt cancels every job of `runtimes()` (kernel flags first: threads return within milliseconds),
    then `nursery`; `note` is logged first, after the signal's name. Call this inside trio.
    """
    token = trio.lowlevel.current_trio_token()

    def halt() -> None:
        if note is not None and stop is not None:
            log.info("%s: %s (again: exit at once)", stop.name, note)
        for runtime in runtimes():
            runtime.stop_all()
        nursery.cancel_scope.cancel()

    if stop is not None:
        stop.arm(lambda signum: token.run_sync_soon(halt))  # safe from a signal handler
    return halt
