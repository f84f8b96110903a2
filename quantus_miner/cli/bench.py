"""`quantus-miner bench`: nonces/s on a fixed header, the kernel that ran, warm-up time, cancel latency."""

from __future__ import annotations

import argparse
import json
import threading
import time

from ..core import qpow
from ..engines import Engine, get_engine
from ..engines.base import BENCH_HEADER, new_cancel_flag
from ..engines.local import solve
from .args import add_settings, positive_float, resolve_settings

HELP = "measure nonces per second"


def add_args(p: argparse.ArgumentParser) -> None:
    add_settings(p, "bench")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="measuring time after warm-up")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = resolve_settings(args, parser, "bench")
    engine = get_engine(config.engine, config.kernel)
    t0 = time.monotonic()
    engine.warm_up()  # cold: compiles the kernels; warm: loads them from the on-disk cache
    warmup_s = time.monotonic() - t0
    ctx = qpow.JobContext.from_header(BENCH_HEADER)
    # threshold 0 never matches in practice, so every nonce of the window is scanned
    result = solve(engine, ctx, 0, 1, qpow.MAX_NONCE, config.cores, seconds=args.seconds)
    report = {
        "engine": engine.name,
        "cores": config.cores,
        "seconds": result.elapsed_time,
        "hashes": result.hash_count,
        "hash_rate": result.hash_count / result.elapsed_time,
        "kernel": engine.kernel,
        "warmup_s": warmup_s,
        "cancel_latency_ms": cancel_latency(engine, ctx) * 1000,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{engine.name} ({engine.kernel}) on {config.cores} core(s): {report['hash_rate'] / 1e6:.3f} "
              f"M nonces/s ({result.hash_count:,} nonces in {result.elapsed_time:.2f} s); warm-up {warmup_s:.2f} s, "
              f"cancel latency {report['cancel_latency_ms']:.2f} ms")
    return 0


def cancel_latency(engine: Engine, ctx: qpow.JobContext) -> float:
    """Seconds from setting a running search's cancel flag to the search returning."""
    job = engine.prepare(ctx, 0)
    flag = new_cancel_flag()
    stopped = []
    worker = threading.Thread(target=lambda: (engine.search(job, 1, qpow.MAX_NONCE, flag),
                                              stopped.append(time.monotonic())))
    worker.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    flag[0] = 1
    worker.join()
    return stopped[0] - t0
