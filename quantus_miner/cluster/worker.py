"""`quantus-miner worker`: a Dask worker whose engines (QPoW v1 and v2) are warm before it takes a task,
reconnecting when its scheduler comes back.

A plain Dask worker closes when it loses its scheduler; this one starts a fresh worker (same name,
same warm engine) and waits for the scheduler to return, so a restarted scheduler gets its cluster
back without anyone touching the worker machines.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

from distributed import Worker

from ..core.config import OTHER_POW_ENGINE, ServiceConfig
from . import tasks
from .tasks import totals  # noqa: F401  (the worker command's summary line)

log = logging.getLogger("quantus_miner.worker")

RECONNECT_PAUSE_S = 0.5


class SchedulerUnreachable(OSError):
    """The first connection to the scheduler failed within the configured timeout."""


async def run_worker(config: ServiceConfig, stop: asyncio.Event, *, ready=None) -> None:
    """Serve chunk tasks until `stop` is set; `ready(worker)` is called each time the worker registers."""
    first = True
    while not stop.is_set():
        # memory_limit=0: chunk results are a few hundred bytes; Dask's memory monitor has nothing to manage
        worker = Worker(config.cluster, nthreads=config.nthreads, name=config.worker_name, dashboard=False,
                        memory_limit=0, death_timeout=config.cluster_timeout_s if first else None)
        try:
            await worker
        except (OSError, TimeoutError) as exc:
            await worker.close(reason="could not register")
            if first:
                raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {config.cluster} within "
                                           f"{config.cluster_timeout_s:g} s: {exc}") from None
            continue
        first = False
        log.info("worker %s (%d thread(s), engine %s) registered with %s", worker.name, config.nthreads,
                 config.engine, config.cluster)
        if ready is not None:
            ready(worker)
        finished = asyncio.ensure_future(worker.finished())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([finished, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            await worker.close(reason="worker stopped")
            finished.cancel()
            return
        log.warning("lost the scheduler at %s; reconnecting", config.cluster)
        await asyncio.sleep(RECONNECT_PAUSE_S)


def main(config: ServiceConfig, arm_stop: Callable[[Callable[[], None]], None] | None = None) -> None:
    """Warm the engine, then serve as a Dask worker until stopped (raises `SchedulerUnreachable`).

    `arm_stop(request_stop)` hands the caller a thread- and signal-safe way to stop the worker (the
    command's `SignalStop`); without it SIGINT/SIGTERM stop it directly. Both proofs of work are
    served: the configured engine is compiled or loaded before the worker registers, its twin for
    the other one (cpu-fast-v2 for cpu-fast, say) in the background meanwhile (a first chunk of it
    waits for that, never compiles twice).
    """
    tasks.use_kernel(config.kernel, config.gpu_devices)
    tasks.engine(config.engine)
    threading.Thread(target=tasks.engine, args=(OTHER_POW_ENGINE[config.engine],), daemon=True,
                     name="warm-twin").start()

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if arm_stop is None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        else:
            arm_stop(lambda: loop.call_soon_threadsafe(stop.set))
        await run_worker(config, stop)

    asyncio.run(amain())
