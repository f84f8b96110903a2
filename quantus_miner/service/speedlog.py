"""The periodic speed line: the runtime's running hash total sampled every second, logged every N seconds."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from ..core.speed import DEFAULT_WINDOWS, SpeedMeter, speed_line
from ..pipeline.runtime import MinerRuntime

log = logging.getLogger("quantus_miner.speed")

SAMPLE_S = 1.0  # sampling period of the running total; the ring holds 15 min of it (~900 samples)


async def log_speed(runtime: MinerRuntime, every_s: float, *, windows: Sequence[float] = DEFAULT_WINDOWS,
                    sample_s: float = SAMPLE_S) -> None:
    """Every `every_s`, log the hash rate over `windows`, active jobs and jobs completed since start.

    The totals grow when workers report a chunk (every `--progress-chunk-ms`), the same counts `/result`
    shows, so a window much shorter than the chunk time reads coarse.
    """
    meter = SpeedMeter(windows, resolution=sample_s)
    meter.add(trio.current_time(), runtime.hashes)
    next_line = trio.current_time() + every_s
    while True:
        await trio.sleep(min(sample_s, max(0.0, next_line - trio.current_time())))
        now = trio.current_time()
        meter.add(now, runtime.hashes)
        if now >= next_line:
            stats = runtime.statistics()
            log.info("%s", speed_line(meter.rates(), meter.windows, active_jobs=stats.active_jobs,
                                      jobs_completed=stats.jobs_completed, jobs_ended=stats.jobs_ended))
            next_line += every_s * max(1, int((now - next_line) // every_s) + 1)
