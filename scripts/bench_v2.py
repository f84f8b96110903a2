"""Single-thread throughput of QPoW v2: cpu-fast-v2, the pure-Python reference, one permutation.

    .venv/bin/python scripts/bench_v2.py [--repeat 3]

Each figure is measured for a fixed wall time (3 s, 2 s, 1 s) after the kernels are compiled,
as nonces per wall second and per CPU second of the thread (the machine may be shared; the CPU
figure is what an uncontended core does). --repeat N prints every run and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# before Numba is imported; the same cache as scripts/test, never the source tree
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.expanduser("~/.cache/quantus-miner/numba"))

import numpy as np

from quantus_miner.engines import baseline_v2, fast_v2
from quantus_miner.engines import kernels_v2 as kernels

HEADER = bytes.fromhex("6ca041ed49dfd5093883ec0e4b0aa1e3c0b7f02ca5decb756ddd783efaa7eadd")
START = 0x1234 << 400  # an arbitrary nonce with a non-zero high half
UPSTREAM_NONCES_PER_S = 64_000  # qp-poseidon-core, one core of this machine (5 permutations)


def engine_rate(engine, chunk: int, seconds: float) -> tuple[float, float]:
    """Nonces per wall second and per CPU second of this thread, scanning chunks with target 0.

    The machine is shared: the CPU-time figure is what one uncontended core would do.
    """
    job = engine.prepare(HEADER, 0)
    flag = np.zeros(1, dtype=np.uint8)
    tested, cursor = 0, START
    t0, c0 = time.perf_counter(), time.thread_time()
    while (elapsed := time.perf_counter() - t0) < seconds:
        tested += engine.search(job, cursor, cursor + chunk - 1, flag).tested
        cursor += chunk
    return tested / elapsed, tested / (time.thread_time() - c0)


def permutation_us(seconds: float) -> float:
    """CPU microseconds per single permutation (one lane's share of a LANES-wide permutation)."""
    state = np.arange(12 * kernels.LANES, dtype=np.uint64)
    rounds, calls, t0, c0 = 1024, 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        kernels.permute_many(state, rounds)
        calls += 1
    return (time.thread_time() - c0) / (calls * rounds * kernels.LANES) * 1e6


def run_once() -> dict[str, float]:
    fast, fast_cpu = engine_rate(fast_v2.FastV2Engine(), 1 << 15, 3.0)
    reference, reference_cpu = engine_rate(baseline_v2.BaselineV2Engine(), 64, 2.0)
    return {
        "fast": fast,
        "fast_cpu": fast_cpu,
        "reference": reference,
        "reference_cpu": reference_cpu,
        "perm_us": permutation_us(1.0),
    }


def report(label: str, r: dict[str, float]) -> None:
    print(
        f"{label}: cpu-fast-v2 {r['fast'] / 1e3:.1f} k nonces/s "
        f"({r['fast'] / UPSTREAM_NONCES_PER_S:.2f}x upstream; {r['fast_cpu'] / 1e3:.1f} k per CPU-s), "
        f"reference {r['reference']:.0f} nonces/s ({r['reference_cpu']:.0f} per CPU-s), "
        f"permutation {r['perm_us']:.3f} CPU-us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    engine = fast_v2.FastV2Engine()
    engine.warm_up()
    permutation_us(0.01)
    print(f"kernel {engine.kernel}, 1 thread")
    runs = [run_once() for _ in range(args.repeat)]
    for i, r in enumerate(runs, 1):
        report(f"run {i}", r)
    if len(runs) > 1:
        report("median", {k: statistics.median(r[k] for r in runs) for k in runs[0]})


if __name__ == "__main__":
    main()
