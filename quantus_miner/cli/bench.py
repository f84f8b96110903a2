"""`quantus-miner bench`: nonces/s on a fixed header, the kernel that ran, warm-up time, cancel latency."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np

from ..core import qpow
from ..engines import Engine, get_engine
from ..engines.base import BENCH_HEADER, new_cancel_flag, prepare_job
from ..engines.local import LocalResult, solve
from .args import add_settings, positive_float, resolve_settings
from .signals import Interrupted, SignalStop
from .status import StatusLine

HELP = "measure nonces per second"


def add_args(p: argparse.ArgumentParser) -> None:
    add_settings(p, "bench")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="measuring time after warm-up")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = resolve_settings(args, parser, "bench")
    status = StatusLine("bench", quiet=args.quiet, log_s=config.progress_log_s)
    with SignalStop() as stop:
        engine = get_engine(config.engine)
        t0 = time.monotonic()
        try:
            engine.warm_up()  # cold: compiles the kernels; warm: loads them from the on-disk cache
        except Interrupted:  # before any kernel ran: nothing measured
            warmup_s = time.monotonic() - t0
            result = LocalResult(None, 0, 0.0, 1, stopped=True)
        else:
            warmup_s = time.monotonic() - t0
            flag = new_cancel_flag()
            stop.arm(lambda signum: flag.__setitem__(0, 1))  # the kernels poll it: stopped within milliseconds
            # bound 0 (v1 threshold / v2 target) never matches in practice: every nonce of the window is scanned
            result = solve(engine, BENCH_HEADER, 0, 1, qpow.MAX_NONCE, config.cores, seconds=args.seconds, flag=flag,
                           on_progress=lambda frontier, elapsed: status.update(frontier.tested, elapsed))
        status.clear()
        latency = None if stop.signum else cancel_latency(engine, stop_flag=flag)
        report = {
            "engine": engine.name,
            "pow": engine.pow,
            "cores": config.cores,
            "seconds": result.elapsed_time,
            "hashes": result.hash_count,
            "hash_rate": result.hash_count / result.elapsed_time if result.elapsed_time > 0 else 0.0,
            "kernel": engine.kernel,
            "warmup_s": warmup_s,
            "cancel_latency_ms": None if latency is None or stop.signum else latency * 1000,
        }
        if stop.signum:
            report["stopped"] = stop.name
        if args.json:
            print(json.dumps(report))
        else:
            measured = (f"{engine.name} ({engine.kernel}) on {config.cores} core(s): "
                        f"{report['hash_rate'] / 1e6:.3f} M nonces/s ({result.hash_count:,} nonces in "
                        f"{result.elapsed_time:.2f} s); warm-up {warmup_s:.2f} s")
            if stop.signum:
                print(f"stopped by {stop.name} after {result.elapsed_time:.2f} of {args.seconds:g} s: {measured}; "
                      "cancel latency not measured")
            else:
                print(f"{measured}, cancel latency {report['cancel_latency_ms']:.2f} ms")
        sys.stdout.flush()
        return stop.exit_status or 0


def cancel_latency(engine: Engine, stop_flag: np.ndarray) -> float:
    """Seconds from setting a running search's cancel flag to the search returning.

    A signal sets `stop_flag` meanwhile: the flag under test is set at once and the figure is discarded.
    """
    job = prepare_job(engine, BENCH_HEADER, 0)
    flag = new_cancel_flag()
    stopped = []
    worker = threading.Thread(target=lambda: (engine.search(job, 1, qpow.MAX_NONCE, flag),
                                              stopped.append(time.monotonic())))
    worker.start()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline and not stop_flag[0]:
        time.sleep(0.01)
    t0 = time.monotonic()
    flag[0] = 1
    worker.join()
    return stopped[0] - t0
