"""`quantus-miner mine`: solve one job locally; exit 0 found, 1 range exhausted, 2 bad arguments."""

from __future__ import annotations

import argparse
import json
import sys

from ..core import protocol, qpow
from ..engines import get_engine
from ..engines.local import solve
from .args import add_settings, resolve_settings

HELP = "solve one job locally"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--header", required=True, help="32-byte header pre-hash, 64 hex chars")
    p.add_argument("--threshold", required=True, help="distance threshold, decimal, < 2^512")
    p.add_argument("--start", default="1", help="first nonce, hex (default 1)")
    p.add_argument("--end", default="f" * 128, help="last nonce, hex (default 2^512 - 1)")
    add_settings(p, "mine")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = resolve_settings(args, parser, "mine")
    try:
        header = protocol.parse_hex(args.header, length=64, name="--header")
        threshold = protocol.parse_threshold(args.threshold, name="--threshold")
        start = protocol.parse_hex(args.start.removeprefix("0x"), length=None, max_length=128, name="--start")
        end = protocol.parse_hex(args.end.removeprefix("0x"), length=None, max_length=128, name="--end")
        if start > end:
            raise ValueError("--start must be <= --end")
    except ValueError as exc:
        parser.error(str(exc))
    engine = get_engine(config.engine, config.kernel)
    ctx = qpow.JobContext.from_header(header.to_bytes(32, "big"))
    engine.warm_up()
    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(count: int, elapsed: float) -> None:
            rate = count / elapsed if elapsed > 0 else 0.0
            sys.stderr.write(f"\r{count:>16,} nonces  {rate / 1e6:8.3f} M/s  {elapsed:7.1f} s")
            sys.stderr.flush()
    result = solve(engine, ctx, threshold, start, end, config.cores, on_progress=progress)
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
        "cores": config.cores,
    }
    if args.json:
        print(json.dumps(report))
    elif found:
        print(f"completed: nonce {report['nonce']} (distance {report['distance']}) "
              f"after {result.hash_count:,} nonces in {result.elapsed_time:.2f} s")
    else:
        print(f"failed: no valid nonce in the range ({result.hash_count:,} nonces in {result.elapsed_time:.2f} s)")
    return 0 if found else 1
