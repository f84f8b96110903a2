"""Nonces per CPU-second of cpu-fast's `search` on N threads: the kernel A/B on a shared machine.

Uses only the engine interface every commit since the layered package has (get_engine, warm_up,
prepare, search), so an old tree runs it too:
    PYTHONPATH=/tmp/old .venv/bin/python scripts/cpu_rate.py 1 4   # old commit
    .venv/bin/python scripts/cpu_rate.py 1 4                       # this tree
Prints one JSON object: per-thread rates (nonces per CPU-second of that thread), their sum, and the
wall-clock rate (which on a busy machine mostly measures the neighbours).
"""

import json
import sys
import threading
import time

from quantus_miner.core import qpow
from quantus_miner.engines import get_engine
from quantus_miner.engines.base import BENCH_HEADER, new_cancel_flag

CHUNK = 1 << 21


def main(threads: int, seconds: float) -> dict:
    engine = get_engine("cpu-fast")
    engine.warm_up()
    job = engine.prepare(qpow.JobContext.from_header(BENCH_HEADER), 0)
    results = [(0, 1.0, 1.0)] * threads

    def work(i: int) -> None:
        flag = new_cancel_flag()
        cursor, tested = 1 + i * (1 << 80), 0
        c0, w0 = time.thread_time(), time.monotonic()
        while time.monotonic() - w0 < seconds:
            tested += engine.search(job, cursor, cursor + CHUNK - 1, flag).tested
            cursor += CHUNK
        results[i] = (tested, time.thread_time() - c0, time.monotonic() - w0)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    per_thread = [tested / cpu for tested, cpu, _ in results]
    return {"kernel": engine.kernel, "threads": threads, "cpu_rate_per_thread": per_thread,
            "cpu_rate_sum": sum(per_thread), "wall_rate": sum(r[0] for r in results) / max(r[2] for r in results)}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1,
                          float(sys.argv[2]) if len(sys.argv) > 2 else 4.0)))
