"""`quantus-miner mine`: solve one job locally; exit 0 found, 1 range exhausted, 2 bad arguments, 130/143 stopped.

QPoW v1 jobs take `--threshold` (valid iff distance <= threshold) and a v1 engine; QPoW v2 jobs
take `--difficulty` (valid iff hash < (2^512 - 1) // difficulty) and a v2 engine (cpu-fast-v2 by
default when --difficulty is given and no engine is named).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..core import protocol
from ..core.bounds import Bound, BoundError, parse_u512
from ..core.config import ConfigError, Pow, check_pow
from ..core.results import Result
from ..engines import get_engine, slots
from ..engines.base import new_cancel_flag
from ..pipeline.local import beside_lane
from ..pipeline.solve import LocalResult, solve
from .args import add_settings, resolve_settings
from .signals import Interrupted, SignalStop
from .status import StatusLine



SHARE_SHOWN_BELOW = 1 << 64  # ranges smaller than this show the share done (a whole 2^512 range never moves)


def add_args(p: argparse.ArgumentParser) -> None:
    """The `mine` options."""
    p.add_argument("--header", required=True, help="32-byte header pre-hash, 64 hex chars")
    p.add_argument("--threshold", default=None, help="QPoW v1: distance threshold, decimal, < 2^512")
    p.add_argument("--difficulty", default=None,
                   help="QPoW v2: difficulty, decimal > 0 (target = (2^512 - 1) // difficulty)")
    p.add_argument("--start", default="1", help="first nonce, hex (default 1)")
    p.add_argument("--end", default="f" * 128, help="last nonce, hex (default 2^512 - 1)")
    add_settings(p, "mine")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `mine`; the exit status as the module docstring says."""
    if (args.threshold is None) == (args.difficulty is None):
        parser.error("give exactly one of --threshold (QPoW v1) or --difficulty (QPoW v2)")
    v2 = args.difficulty is not None
    if v2 and args.engine is None and not os.environ.get("MINER_ENGINE"):
        args.engine = "cpu-fast-v2"
    config = resolve_settings(args, parser, "mine")
    try:
        check_pow(config.engine, (Pow.V2,) if v2 else (Pow.V1,), "--difficulty" if v2 else "--threshold")
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        header = protocol.parse_hex(args.header, length=64, name="--header")
        if v2:
            try:
                bound = Bound.difficulty(parse_u512(args.difficulty, least=1))
            except BoundError:
                raise ValueError("--difficulty must be a decimal integer in [1, 2^512 - 1]") from None
        else:
            bound = Bound.threshold(protocol.parse_threshold(args.threshold, name="--threshold"))
        start = protocol.parse_hex(args.start.removeprefix("0x"), length=None, max_length=128, name="--start")
        end = protocol.parse_hex(args.end.removeprefix("0x"), length=None, max_length=128, name="--end")
        if start > end:
            raise ValueError("--start must be <= --end")
    except ValueError as exc:
        parser.error(str(exc))
    status = StatusLine("mine", quiet=args.quiet, log_s=config.progress_log_s)
    finite = end - start + 1 < SHARE_SHOWN_BELOW

    def progress(tested: int, elapsed: float) -> None:
        status.update(tested, elapsed, tested / (end - start + 1) if finite else None)

    with SignalStop(command="mine") as stop:
        engine = get_engine(config.engine, config.kernel, config.gpu_devices)
        beside = None
        try:
            engine.warm_up()
            beside = beside_lane(config)  # --cores N with a GPU engine: N CPU threads beside the devices
        except Interrupted:  # before any kernel ran: stopped with nothing tested
            result = LocalResult(None, 0, 0.0, start, stopped=True)
        else:
            flag = new_cancel_flag()
            stop.arm(lambda signum: flag.__setitem__(0, 1))  # the kernels poll it: stopped within milliseconds
            result = solve(engine, header.to_bytes(32, "big"), bound.value, start, end, slots(engine, config.cores),
                           on_progress=progress, flag=flag, beside=beside)
        status.clear()
        found = result.found
        # v1 reports the distance; v2 the hash (Found.distance carries it), both as 128 hex
        key = "hash" if v2 else "distance"
        outcome = Result("completed" if found else "stopped" if result.stopped else "failed",
                         found and found.nonce, result.hash_count, result.elapsed_time, found and found.distance)
        # a GPU engine: its slots, one per device and one per CPU thread beside them (as /health)
        cores = slots(engine, config.cores) + (beside.count if beside else 0)
        report = outcome.fields(None, distance_key=key) | {"engine": engine.name, "cores": cores}
        if hasattr(engine, "device"):  # a GPU engine: its devices (each one worker) and kernel
            report.update(device=engine.device, kernel=engine.kernel, devices=slots(engine, config.cores))
        if beside is not None:  # and the CPU threads beside them
            report["cpu"] = beside.describe()
        rate = result.hash_count / result.elapsed_time if result.elapsed_time > 0 else 0.0
        if result.stopped:
            report["resume_start"] = format(result.resume_at, "x")
        if args.json:
            print(json.dumps(report))
        elif found:
            print(f"completed: nonce {report['nonce']} ({key} {report[key]}) "
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
