"""`quantus-miner mine`: solve one job locally; exit 0 found, 1 range exhausted, 2 bad arguments, 130/143 stopped."""

from __future__ import annotations

import argparse
import json
import sys

from ..core import protocol, qpow
from ..engines import get_engine
from ..engines.base import new_cancel_flag
from ..engines.local import LocalResult, solve
from .args import add_settings, resolve_settings
from .signals import Interrupted, SignalStop
from .status import StatusLine

HELP = "solve one job locally"


SHARE_SHOWN_BELOW = 1 << 64  # ranges smaller than this show the share done (a whole 2^512 range never moves)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--header", required=True, help="32-byte header pre-hash, 64 hex chars")
    p.add_argument("--threshold", required=True, help="distance threshold, decimal, < 2^512")
    p.add_argument("--start", default="1", help="first nonce, hex (default 1)")
    p.add_argument("--end", default="f" * 128, help="last nonce, hex (default 2^512 - 1)")
    add_settings(p, "mine")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


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
    status = StatusLine("mine", quiet=args.quiet, log_s=config.progress_log_s)
    finite = end - start + 1 < SHARE_SHOWN_BELOW

    def progress(frontier, elapsed: float) -> None:
        status.update(frontier.tested, elapsed, frontier.share() if finite else None)

    with SignalStop() as stop:
        engine = get_engine(config.engine)
        try:
            engine.warm_up()
        except Interrupted:  # before any kernel ran: stopped with nothing tested
            result = LocalResult(None, 0, 0.0, start, stopped=True)
        else:
            flag = new_cancel_flag()
            stop.arm(lambda signum: flag.__setitem__(0, 1))  # the kernels poll it: stopped within milliseconds
            ctx = qpow.JobContext.from_header(header.to_bytes(32, "big"))
            result = solve(engine, ctx, threshold, start, end, config.cores, on_progress=progress, flag=flag)
        status.clear()
        found = result.found
        report = {
            "status": "completed" if found else "stopped" if result.stopped else "failed",
            "nonce": protocol.nonce_hex(found.nonce) if found else None,
            "work": protocol.work_hex(found.nonce) if found else None,
            "distance": protocol.work_hex(found.distance) if found else None,
            "hash_count": result.hash_count,
            "elapsed_time": result.elapsed_time,
            "engine": engine.name,
            "cores": config.cores,
        }
        rate = result.hash_count / result.elapsed_time if result.elapsed_time > 0 else 0.0
        if result.stopped:
            report["resume_start"] = format(result.resume_at, "x")
        if args.json:
            print(json.dumps(report))
        elif found:
            print(f"completed: nonce {report['nonce']} (distance {report['distance']}) "
                  f"after {result.hash_count:,} nonces in {result.elapsed_time:.2f} s")
        elif result.stopped:
            print(f"stopped by {stop.name}: {result.hash_count:,} nonces in {result.elapsed_time:.2f} s "
                  f"({rate / 1e6:.3f} M/s), no valid nonce yet; every nonce below {result.resume_at:x} tested: "
                  f"resume with --start {result.resume_at:x}")
        else:
            print(f"failed: no valid nonce in the range ({result.hash_count:,} nonces in "
                  f"{result.elapsed_time:.2f} s)")
        sys.stdout.flush()
        if result.stopped:
            return stop.exit_status
        return 0 if found else 1
