"""`quantus-miner bench`: nonces/s on a fixed header, the kernel that ran, warm-up time, cancel latency."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np
import trio
from prometheus_client import CollectorRegistry

from ..cluster.executor import ClusterUnavailable
from ..core import qpow
from ..core.config import ServiceConfig
from ..core.requests import MineRequest
from ..engines import Engine, get_engine, slots
from ..service.compose import open_executor, start_pipeline
from ..engines.base import BENCH_HEADER, new_cancel_flag, prepare_job
from ..pipeline.local import beside_lane
from ..pipeline.solve import LocalResult, solve
from .args import add_settings, positive_float, positive_int, resolve_settings
from .signals import Interrupted, SignalStop
from .status import StatusLine



def add_args(p: argparse.ArgumentParser) -> None:
    """The `bench` options."""
    add_settings(p, "bench")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="measuring time after warm-up")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--profile", action="store_true",
                   help="also measure, on one thread per CPU-second (each for --seconds, at most 1 s), the kernel's "
                        "parts alone and the scan kernel alone: cpu-fast's hashing (absorb + Keccak + compare) and "
                        "stepping (Montgomery multiply) halves; cpu-fast-v2's Poseidon2 permutation")
    p.add_argument("--nonces", type=positive_int, default=None,
                   help="with --cluster: mine nonces 1..N at threshold 0 to exhaustion (exact count) "
                        "instead of for --seconds")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `bench`: the engine's rate and cancel latency on this machine, or the cluster's with --cluster."""
    config = resolve_settings(args, parser, "bench")
    if config.cluster is not None:
        return run_cluster(args, config)
    status = StatusLine("bench", quiet=args.quiet, log_s=config.progress_log_s)
    with SignalStop(command="bench") as stop:
        engine = get_engine(config.engine, config.kernel, config.gpu_devices)
        if args.profile and not hasattr(engine, "profile"):
            parser.error(f"--profile: engine {engine.name} has no separate halves to measure")
        t0 = time.monotonic()
        beside = None
        try:
            engine.warm_up()  # cold: compiles the kernels; warm: loads them from the on-disk cache
            beside = beside_lane(config)  # --cores N with a GPU engine: N CPU threads beside the devices
        except Interrupted:  # before any kernel ran: nothing measured
            warmup_s = time.monotonic() - t0
            result = LocalResult(None, 0, 0.0, 1, stopped=True)
        else:
            warmup_s = time.monotonic() - t0
            flag = new_cancel_flag()
            stop.arm(lambda signum: flag.__setitem__(0, 1))  # the kernels poll it: stopped within milliseconds
            # bound 0 (v1 threshold / v2 target) never matches in practice: every nonce of the window is scanned
            result = solve(engine, BENCH_HEADER, 0, 1, qpow.MAX_NONCE, slots(engine, config.cores), seconds=args.seconds,
                           flag=flag, on_progress=status.update, beside=beside)
        status.clear()
        latency = None if stop.signum else cancel_latency(engine, stop_flag=flag)
        report = {
            "engine": engine.name,
            "pow": engine.pow,
            # a GPU engine: its slots, one per device and one per CPU thread beside them (as /health)
            "cores": slots(engine, config.cores) + (beside.count if beside else 0),
            "seconds": result.elapsed_time,
            "hashes": result.hash_count,
            "hash_rate": result.hash_count / result.elapsed_time if result.elapsed_time > 0 else 0.0,
            # nonces per CPU-second of a worker thread: one core's rate with no one else on it, which a
            # shared machine's wall clock cannot show (OpenSSL's `speed` also counts CPU time)
            "cpu_seconds": result.cpu_time,
            "cpu_hash_rate": result.hash_count / result.cpu_time if result.cpu_time else 0.0,
            "kernel": engine.kernel,
            "warmup_s": warmup_s,
            "cancel_latency_ms": None if latency is None or stop.signum else latency * 1000,
        }
        if hasattr(engine, "device"):  # a GPU engine: the devices that passed warm-up, one worker each
            report.update(device=engine.device, devices=slots(engine, config.cores))
        if beside is not None:  # and the CPU threads beside them (cancel latency: the devices')
            cpu = result.lane_hashes[1]
            report["cpu"] = {**beside.describe(), "hashes": cpu,
                             "hash_rate": cpu / result.elapsed_time if result.elapsed_time > 0 else 0.0}
        if stop.signum:
            report["stopped"] = stop.name
        elif args.profile:
            report["profile"] = engine.profile(min(args.seconds, 1.0))
        if args.json:
            print(json.dumps(report))
        else:
            where = f"{engine.device}" if hasattr(engine, "device") else f"{config.cores} core(s)"
            if beside is not None:
                where += (f" and {beside.count} CPU thread(s) of {beside.engine.name} ({beside.engine.kernel}, "
                          f"{report['cpu']['hash_rate'] / 1e6:.3f} M nonces/s of the total)")
            measured = (f"{engine.name} ({engine.kernel}) on {where}: "
                        f"{report['hash_rate'] / 1e6:.3f} M nonces/s ({result.hash_count:,} nonces in "
                        f"{result.elapsed_time:.2f} s); warm-up {warmup_s:.2f} s")
            if stop.signum:
                print(f"stopped by {stop.name} after {result.elapsed_time:.2f} of {args.seconds:g} s: {measured}; "
                      "cancel latency not measured")
            else:
                print(f"{measured}, cancel latency {report['cancel_latency_ms']:.2f} ms; "
                      f"{report['cpu_hash_rate'] / 1e6:.3f} M nonces per CPU-second of a worker")
            if "profile" in report and "permutation_rate" in report["profile"]:
                prof = report["profile"]
                ceiling = prof["permutation_rate"] / 2  # about 2 permutations per nonce (midstate + lazy squeeze)
                print(f"profile, per CPU-second of one thread: permutation alone {prof['permutation_rate'] / 1e6:.3f} M/s "
                      f"(ceiling {ceiling / 1e6:.3f} M nonces/s at 2 per nonce), whole kernel "
                      f"{prof['kernel_rate'] / 1e6:.3f} M nonces/s ({prof['kernel_rate'] / ceiling:.0%} of the ceiling)")
            elif "profile" in report:
                prof = report["profile"]
                print(f"profile, per CPU-second of one thread: hashing half {prof['hash_rate'] / 1e6:.3f} M/s, "
                      f"stepping half {prof['step_rate'] / 1e6:.3f} M/s, whole kernel "
                      f"{prof['kernel_rate'] / 1e6:.3f} M/s (the halves' serial sum allows "
                      f"{serial_rate(prof) / 1e6:.3f} M/s)")
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


def serial_rate(profile: dict[str, float]) -> float:
    """The whole's rate if its halves ran one after the other with no overlap and no overhead.

    >>> serial_rate({"hash_rate": 2.0, "step_rate": 2.0})
    1.0
    """
    return 1 / (1 / profile["hash_rate"] + 1 / profile["step_rate"])


def run_cluster(args: argparse.Namespace, config: ServiceConfig) -> int:
    """`bench --cluster`: the service's own runtime and cluster executor, one job, no HTTP."""
    try:
        report = trio.run(cluster_bench, config, args.seconds, args.nonces)
    except ClusterUnavailable as exc:
        print(f"quantus-miner: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['engine']} on the Dask cluster at {config.cluster} ({report['workers']} worker(s), "
              f"{report['threads']} thread(s)): {report['hash_rate'] / 1e6:.3f} M nonces/s "
              f"({report['hashes']:,} nonces in {report['seconds']:.2f} s, {report['chunks']} chunk(s)); "
              f"coordinator {report['coordinator_ms_per_chunk']:.2f} ms of worker-thread time per chunk, miner CPU "
              f"{report['miner_cpu_ms_per_chunk']:.2f} ms per chunk")
    return 0


async def cluster_bench(config: ServiceConfig, seconds: float, nonces: int | None) -> dict:
    """Measure the Dask cluster: `seconds` of mining, or nonces 1..`nonces` to exhaustion (exact count)."""
    engine = get_engine(config.engine, config.kernel)  # names the workers' engine; nothing runs here
    executor = await open_executor(config, engine, None)  # raised plainly (not in a group): exit 2
    async with trio.open_nursery() as nursery:
        runtime, _ = await start_pipeline(nursery, config, engine, None, executor, CollectorRegistry())
        while executor.capacity() == 0:  # a job waits for workers; so does the clock of the benchmark
            await trio.sleep(0.1)
        cpu0 = time.process_time()  # this process is the coordinator: runtime, executor, Dask client
        runtime.submit(MineRequest("bench", BENCH_HEADER, 0, 1, nonces or qpow.MAX_NONCE))
        with trio.move_on_after(float("inf") if nonces else seconds):
            while runtime.result("bench").status == "running":
                await trio.sleep(0.05)
        runtime.cancel("bench")
        snap = runtime.result("bench")
        await runtime.wait_settled("bench")
        cpu = time.process_time() - cpu0
        stats = executor.stats()
        # thread-seconds not spent in kernels (dispatch, result, queue, the range's ramp-up and tail), per chunk
        idle = max(0.0, snap.elapsed_time * stats.threads - executor.busy_s)
        nursery.cancel_scope.cancel()
    return {"engine": engine.name, "cluster": config.cluster, "workers": len(stats.workers),
            "threads": stats.threads, "seconds": snap.elapsed_time, "hashes": snap.hash_count,
            "hash_rate": snap.hash_count / snap.elapsed_time, "chunks": stats.chunks,
            "coordinator_ms_per_chunk": idle / stats.chunks * 1000 if stats.chunks else None,
            "miner_cpu_ms_per_chunk": cpu / stats.chunks * 1000 if stats.chunks else None,
            "progress_chunk_ms": config.progress_chunk_ms}
