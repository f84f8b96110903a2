"""What runs on a Dask worker: one chunk of a job's nonce range, with the job prepared once per process.

A chunk task is a plain module-level function, so Dask ships it by reference: the worker imports
this module and runs the same engine as the local mode, for either proof of work (the task names
the engine; the service re-verifies every candidate with the matching reference). Each worker process keeps a small cache of
engines (warmed before the worker takes tasks) and of prepared jobs keyed by the job's cluster key,
each with the one-byte cancel flag every thread mining that job polls. `cancel(key)` (run on every
worker with `Client.run`) sets that flag, so the kernels return within milliseconds, and remembers
the key so a chunk that arrives later returns at once.

>>> r = run_chunk("doc-1", "doc", "cpu-baseline", bytes(32), 0, 5, 9)
>>> r["tested"], r["nonce"], r["cancelled"]
(5, None, False)
>>> cancel("doc-1"); run_chunk("doc-1", "doc", "cpu-baseline", bytes(32), 0, 10, 19)["tested"]
0
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import attrs
import numpy as np

from ..core.config import KERNELS_OF_ENGINE
from ..engines import Engine, get_engine
from ..engines.base import PreparedJob, new_cancel_flag, prepare_job

MAX_JOBS = 64  # prepared jobs kept per worker process (a job's constants are a few hundred bytes)
MAX_CANCELLED = 1024  # cancelled keys remembered, so late chunks of a cancelled job stop at once
MAX_STOPS = 64  # per job: when cancelled kernels returned (cancel latency, read by tests and operators)

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_building: dict[str, threading.Lock] = {}
_kernel = "auto"  # set by `use_kernel` in a `quantus-miner worker` process
_gpu_devices: int | None = None  # GPU engines: devices to use (None: all); set by `use_kernel` too
_jobs: OrderedDict[str, WorkerJob] = OrderedDict()
_cancelled: OrderedDict[str, None] = OrderedDict()
_stops: OrderedDict[str, tuple[str, list[float]]] = OrderedDict()  # key -> (job id, stop times)


@attrs.define
class WorkerJob:
    """A job prepared in this worker process, with the cancel flag its kernels poll."""

    prepared: PreparedJob
    flag: np.ndarray


def use_kernel(kernel: str, gpu_devices: int | None = None) -> None:
    """The cpu-fast kernel (`--kernel`, default auto) and the GPUs (`--gpu-devices`, default all) of this worker."""
    global _kernel, _gpu_devices
    _kernel, _gpu_devices = kernel, gpu_devices


def engine(name: str) -> Engine:
    """This process's engine `name`, built and warmed (kernels compiled or loaded) once, on first use."""
    with _lock:
        found = _engines.get(name)
        building = _building.setdefault(name, threading.Lock())  # one entry per engine name
    if found is None:
        with building:  # a second caller waits for the first one's compile instead of starting its own
            with _lock:
                found = _engines.get(name)
            if found is None:
                # a forced kernel belongs to one engine; the twin of the other proof of work picks its own
                kernel = _kernel if _kernel in KERNELS_OF_ENGINE.get(name, ()) else "auto"
                found = get_engine(name, kernel, _gpu_devices)
                found.warm_up()
                with _lock:
                    _engines[name] = found
    return found


def _job(key: str, engine_name: str, header: bytes, threshold: int) -> WorkerJob:
    with _lock:
        job = _jobs.get(key)
        if job is not None:
            _jobs.move_to_end(key)
            return job
    eng = engine(engine_name)
    prepared = prepare_job(eng, header, threshold)  # outside the lock: ms of Miller-Rabin
    with _lock:
        job = _jobs.setdefault(key, WorkerJob(prepared, new_cancel_flag()))
        if key in _cancelled:
            job.flag[0] = 1
        while len(_jobs) > MAX_JOBS:
            _jobs.popitem(last=False)
    return job


def worker_name() -> str:
    """The Dask worker's name (its address when it has none); "local" outside a worker."""
    try:
        from distributed import get_worker

        w = get_worker()
    except (ImportError, ValueError):
        return "local"
    return str(w.name)


_totals = [0, 0]  # chunks run and nonces tested by this process (the worker's summary line)


def totals() -> tuple[int, int]:
    """(chunks, nonces) this process has searched."""
    with _lock:
        return _totals[0], _totals[1]


def run_chunk(key: str, job_id: str, engine_name: str, header: bytes, threshold: int, lo: int, hi: int) -> dict:
    """Search nonces lo..hi of the job `key`; the result is plain data (exact count, nonce or None).

    `nonce` is a candidate only: the service re-verifies it with the reference before reporting it.
    """
    job = _job(key, engine_name, header, threshold)
    eng = engine(engine_name)
    t0 = time.monotonic()
    outcome = eng.search(job.prepared, lo, hi, job.flag)
    busy = time.monotonic() - t0
    stopped_at = time.time()
    with _lock:
        _totals[0] += 1
        _totals[1] += outcome.tested
    if outcome.cancelled or job.flag[0]:
        with _lock:
            _, stops = _stops.setdefault(key, (job_id, []))
            _stops.move_to_end(key)
            if len(stops) < MAX_STOPS:
                stops.append(stopped_at)
            while len(_stops) > MAX_JOBS:
                _stops.popitem(last=False)
    return {"tested": outcome.tested, "nonce": outcome.found.nonce if outcome.found else None,
            "cancelled": outcome.cancelled, "busy_s": busy, "worker": worker_name(), "stopped_at": stopped_at,
            "job_id": job_id}


def cancel(key: str) -> None:
    """Stop every kernel of job `key` in this process (and any chunk of it that arrives later)."""
    with _lock:
        _cancelled[key] = None
        while len(_cancelled) > MAX_CANCELLED:
            _cancelled.popitem(last=False)
        job = _jobs.get(key)
    if job is not None:
        job.flag[0] = 1


async def cancel_soon(key: str) -> None:
    """`cancel` in the worker's event loop: `Client.run(cancel_soon, key, wait=False)` returns at once."""
    cancel(key)


def kernel_stops(job_id: str) -> list[float]:
    """Wall-clock times (time.time()) at which this process's cancelled kernels of job `job_id` returned.

    Read with `Client.run(kernel_stops, job_id)`: the cancel latency on every worker.
    """
    with _lock:
        return [t for jid, stops in _stops.values() if jid == job_id for t in stops]
