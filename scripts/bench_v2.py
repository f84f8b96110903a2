"""Single-thread throughput of QPoW v2, every cpu-fast-v2 kernel this host runs, side by side.

    .venv/bin/python scripts/bench_v2.py [--repeat 3] [--kernels v2-avx512,v2-lanes8] [--reference]

For each kernel, in turn within each repeat (so old and new share the same minutes of a shared
machine): the engine scanning chunks of 2^15 nonces at target 0 for 3 s, and the 8-lane
permutation alone for 1 s, as nonces (permutations) per CPU second of the thread: what one
uncontended core does. `v2-lanes8` is the scalar kernel of earlier releases, unchanged.
What an AVX2-only CPU would run can be built here: NUMBA_CPU_NAME=haswell and NUMBA_CPU_FEATURES
(the host's list with every avx512* feature turned to "-") make Numba target Haswell.
--reference adds the pure-Python reference (2 s). --repeat N prints every run and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

# before Numba is imported; the same cache as scripts/test, never the source tree
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.expanduser("~/.cache/quantus-miner/numba"))

import numpy as np

from quantus_miner.core import qpow2
from quantus_miner.engines import baseline_v2, fast_v2

HEADER = bytes.fromhex("6ca041ed49dfd5093883ec0e4b0aa1e3c0b7f02ca5decb756ddd783efaa7eadd")
START = 0x1234 << 400  # an arbitrary nonce with a non-zero high half


def engine_rate(engine, chunk: int, seconds: float) -> float:
    """Nonces per CPU second of this thread, scanning chunks with target 0."""
    job = engine.prepare(HEADER, 0)
    flag = np.zeros(1, dtype=np.uint8)
    tested, cursor = 0, START
    t0, c0 = time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        tested += engine.search(job, cursor, cursor + chunk - 1, flag).tested
        cursor += chunk
    return tested / (time.thread_time() - c0)


def permutation_rate(spec: fast_v2.V2KernelSpec, seconds: float) -> float:
    """Single permutations (one lane's share of an 8-lane permutation) per CPU second."""
    state = np.arange(qpow2.WIDTH * 8, dtype=np.uint64)
    rounds, calls, t0, c0 = 1024, 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        spec.permute_many(state, rounds)
        calls += 1
    return calls * rounds * 8 / (time.thread_time() - c0)


def run_once(engines: dict[str, fast_v2.FastV2Engine], reference: bool) -> dict[str, float]:
    r = {}
    for name, engine in engines.items():
        r[f"{name} nonces/CPU-s"] = engine_rate(engine, 1 << 15, 3.0)
        r[f"{name} perms/CPU-s"] = permutation_rate(engine.spec, 1.0)
    if reference:
        r["reference nonces/CPU-s"] = engine_rate(baseline_v2.BaselineV2Engine(), 64, 2.0)
    return r


def report(label: str, r: dict[str, float]) -> None:
    print(f"{label}: " + ", ".join(f"{k} {v / 1e3:,.1f} k" for k, v in r.items()))


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kernels", default=None, help="comma-separated (default: every kernel this host runs)")
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    features = fast_v2.host_features()
    names = args.kernels.split(",") if args.kernels else [k for k, s in fast_v2.SPECS.items() if not s.missing(features)]
    engines = {}
    for name in names:
        engines[name] = fast_v2.FastV2Engine.for_host(name)
        t0 = time.perf_counter()
        engines[name].warm_up()
        engines[name].spec.permute_many(np.zeros(qpow2.WIDTH * 8, dtype=np.uint64), 1)  # compile or load it too
        print(f"{name} ({engines[name].kernel}): warm-up {time.perf_counter() - t0:.2f} s")
    print(f"{cpu_name()}, 1 thread, per CPU-second")
    runs = [run_once(engines, args.reference) for _ in range(args.repeat)]
    for i, r in enumerate(runs, 1):
        report(f"run {i}", r)
    if len(runs) > 1:
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        report("median", median)
        base = median.get("v2-lanes8 nonces/CPU-s")
        if base:
            print("vs v2-lanes8: " + ", ".join(f"{n} {median[f'{n} nonces/CPU-s'] / base:.2f}x" for n in engines))


if __name__ == "__main__":
    main()
