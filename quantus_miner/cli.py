"""The `quantus-miner` command line: serve (default), mine, bench, devnet."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from . import __version__, protocol, qpow
from .config import available_cores

SUBCOMMANDS = ("serve", "mine", "bench", "devnet")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_engine_args(p: argparse.ArgumentParser) -> None:
    from .engines import ENGINE_NAMES

    p.add_argument("--engine", choices=ENGINE_NAMES, default="cpu-fast", help="mining engine (default cpu-fast)")
    p.add_argument("--cores", "--num-cores", type=positive_int, default=None,
                   help="worker threads (default: all CPUs this process may use)")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="quantus-miner", description="External QPoW miner for the Quantus node.")
    parser.add_argument("--version", action="version", version=f"quantus-miner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{serve,mine,bench,devnet}")

    subs = {}
    mine = subs["mine"] = sub.add_parser("mine", help="solve one job locally")
    mine.add_argument("--header", required=True, help="32-byte header pre-hash, 64 hex chars")
    mine.add_argument("--threshold", required=True, help="distance threshold, decimal, < 2^512")
    mine.add_argument("--start", default="1", help="first nonce, hex (default 1)")
    mine.add_argument("--end", default="f" * 128, help="last nonce, hex (default 2^512 - 1)")
    add_engine_args(mine)
    mine.add_argument("--json", action="store_true", help="print one JSON object")

    bench = subs["bench"] = sub.add_parser("bench", help="measure nonces per second")
    add_engine_args(bench)
    bench.add_argument("--seconds", type=positive_float, default=5.0, help="measuring time after warm-up")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    from .service_cli import add_devnet_args, add_serve_args

    subs["serve"] = sub.add_parser("serve", help="serve the node's HTTP API (default)")
    subs["devnet"] = sub.add_parser("devnet", help="mine blocks against a built-in node simulator")
    add_serve_args(subs["serve"])
    add_devnet_args(subs["devnet"])
    return parser, subs


def cmd_mine(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .engines import get_engine
    from .local import solve

    try:
        header = protocol.parse_hex(args.header, length=64, name="--header")
        threshold = protocol.parse_threshold(args.threshold, name="--threshold")
        start = protocol.parse_hex(args.start.removeprefix("0x"), length=None, max_length=128, name="--start")
        end = protocol.parse_hex(args.end.removeprefix("0x"), length=None, max_length=128, name="--end")
        if start > end:
            raise ValueError("--start must be <= --end")
    except ValueError as exc:
        parser.error(str(exc))
    cores = args.cores or available_cores()
    engine = get_engine(args.engine)
    ctx = qpow.JobContext.from_header(header.to_bytes(32, "big"))
    engine.warm_up()
    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(count: int, elapsed: float) -> None:
            rate = count / elapsed if elapsed > 0 else 0.0
            sys.stderr.write(f"\r{count:>16,} nonces  {rate / 1e6:8.3f} M/s  {elapsed:7.1f} s")
            sys.stderr.flush()
    result = solve(engine, ctx, threshold, start, end, cores, on_progress=progress)
    if progress:
        sys.stderr.write("\n")
    found = result.found
    report = {
        "status": "completed" if found else "failed",
        "nonce": protocol.nonce_hex(found.nonce) if found else None,
        "work": protocol.work_hex(found.nonce) if found else None,
        "distance": protocol.work_hex(found.distance) if found else None,
        "hash_count": result.hash_count,
        "elapsed_time": result.elapsed_time,
        "engine": engine.name,
        "cores": cores,
    }
    if args.json:
        print(json.dumps(report))
    elif found:
        print(f"completed: nonce {report['nonce']} (distance {report['distance']}) "
              f"after {result.hash_count:,} nonces in {result.elapsed_time:.2f} s")
    else:
        print(f"failed: no valid nonce in the range ({result.hash_count:,} nonces in {result.elapsed_time:.2f} s)")
    return 0 if found else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .engines import BENCH_HEADER, get_engine
    from .local import solve

    cores = args.cores or available_cores()
    engine = get_engine(args.engine)
    t0 = time.monotonic()
    engine.warm_up()  # cold: compiles the kernels; warm: loads them from the on-disk cache
    warmup_s = time.monotonic() - t0
    ctx = qpow.JobContext.from_header(BENCH_HEADER)
    # threshold 0 never matches in practice, so every nonce of the window is scanned
    result = solve(engine, ctx, 0, 1, qpow.MAX_NONCE, cores, seconds=args.seconds)
    report = {
        "engine": engine.name,
        "cores": cores,
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
        print(f"{engine.name} ({engine.kernel}) on {cores} core(s): {report['hash_rate'] / 1e6:.3f} M nonces/s "
              f"({result.hash_count:,} nonces in {result.elapsed_time:.2f} s); warm-up {warmup_s:.2f} s, "
              f"cancel latency {report['cancel_latency_ms']:.2f} ms")
    return 0


def cancel_latency(engine, ctx: qpow.JobContext) -> float:
    """Seconds from setting a running search's cancel flag to the search returning."""
    from .engines import new_cancel_flag

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # bare `quantus-miner [flags]` serves, as the seed-era miner did
    parser, subs = build_parser()
    args = parser.parse_args(argv)
    sub = subs[args.command]
    if args.command == "mine":
        return cmd_mine(args, sub)
    if args.command == "bench":
        return cmd_bench(args)
    from . import service_cli

    return service_cli.run(args, sub)


if __name__ == "__main__":
    sys.exit(main())
