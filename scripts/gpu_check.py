"""The GPU engines measured through their engine API: one JSON (run by scripts/gpu_check; also standalone).

Needs only numpy, attrs and numba-cuda (plus this checkout on PYTHONPATH), so it runs on a GPU machine's own
Python (e.g. a 3.12 image with numba-cuda preinstalled, no network) where the full miner cannot be installed.
Per engine: warm-up (compile + known-answer self-test on every device), the public vectors on every device,
a timed search on all devices at once (`--seconds`), the cancel latency of a running search; then PTX and
`ptxas -v` for sm_80, sm_90 (and the device's own architecture). With `--cli`, also the command
`bench --engine E --seconds S --json`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("numpy", "numba", "numba-cuda", "llvmlite", "cuda-bindings", "nvidia-cuda-nvcc-cu12"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def vectors(engine, name: str, slot: int, simulator: bool) -> list[str]:
    from quantus_miner.core import qpow, qpow2
    from quantus_miner.engines.base import new_cancel_flag

    v1 = json.loads((ROOT / "tests/data/qpow_vectors_public.json").read_text())
    v2 = json.loads((ROOT / "tests/data/qpow2_vectors_public.json").read_text())
    e, failures = engine.for_slot(slot), []
    if name == "gpu-cuda":
        for v in [] if simulator else v1["mining"]:  # thousands of nonces: too slow for the simulator
            job = e.prepare(qpow.JobContext.from_header(bytes.fromhex(v["header"])), int(v["threshold_dec"]))
            got = e.search(job, int(v["start_nonce"]), 1 << 40, new_cancel_flag())
            if got.found is None or got.found.nonce != v["nonce"] or got.tested != v["checked"]:
                failures.append(f"device {slot} vector {v['label']}: {got}")
        return failures
    for v in [] if simulator else v2["mining"]:
        job = e.prepare(bytes.fromhex(v["header"]), int(v["target"], 16))
        got = e.search(job, int(v["start_nonce"], 16), 1 << 40, new_cancel_flag())
        if got.found is None or got.found.nonce != int(v["nonce_dec"]) or got.tested != v["tested"]:
            failures.append(f"device {slot} vector {v['label']}: {got}")
    for v in v2["pow_hash"] + v2["pow_hash_upstream_golden"]:
        header, nonce, h = bytes.fromhex(v["header"]), int(v["nonce"], 16), int(v["hash"], 16)
        if nonce == 0 or h == qpow2.MAX_U512:
            continue
        for bound, want in ((h + 1, nonce), (h, None)):  # the exact hash: valid just above it, not at it
            got = e.search(e.prepare(header, bound), nonce, nonce, new_cancel_flag())
            if (got.found.nonce if got.found else None) != want:
                failures.append(f"device {slot} pow_hash {v['label']} bound {'h+1' if want else 'h'}: {got}")
    return failures


def timed(engine, seconds: float) -> dict:
    """All devices at once, one host thread each, threshold/target 0 (never found): nonces/s."""
    from quantus_miner.engines.base import BENCH_HEADER, new_cancel_flag, prepare_job

    job = prepare_job(engine, BENCH_HEADER, 0)
    flag = new_cancel_flag()
    counts = [0] * len(engine.devices)

    def run(slot: int) -> None:
        e = engine.for_slot(slot)
        cursor = 1 + slot * (1 << 100)
        while not flag[0]:
            out = e.search(job, cursor, cursor + (1 << 40), flag)
            counts[slot] += out.tested
            cursor += out.tested

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(engine.devices))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(seconds)
    flag[0] = 1
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return {"seconds": elapsed, "hashes": sum(counts), "hash_rate": sum(counts) / elapsed,
            "per_device": [c / elapsed for c in counts], "launch_size": [d.launch_size() for d in engine.devices]}


def cancel_latency(engine) -> float:
    from quantus_miner.engines.base import BENCH_HEADER, new_cancel_flag, prepare_job

    job = prepare_job(engine, BENCH_HEADER, 0)
    flag, done = new_cancel_flag(), []
    e = engine.for_slot(0)
    worker = threading.Thread(target=lambda: (e.search(job, 1, 1 << 200, flag), done.append(time.monotonic())))
    worker.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    flag[0] = 1
    worker.join()
    return (done[0] - t0) * 1000


PTX_CODE = """
import json, sys
sys.path.insert(0, {root!r})
from quantus_miner.engines.gpu import ptx
rows = []
for k in ptx.KERNELS:
    for cc in {ccs!r}:
        t = ptx.compile_kernel(k, tuple(cc))
        r = {{"kernel": k, "cc": cc}}
        if ptx.ptxas_path():
            r.update(ptx.ptxas_report(t, f"sm_{{cc[0]}}{{cc[1]}}", ptx.ptxas_path()))
        rows.append(r)
print(json.dumps(rows))
"""


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cli", action="store_true", help="also run `quantus-miner bench` for both engines")
    args = p.parse_args()
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0")
    report: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
                    "simulator": simulator, "versions": versions()}
    try:
        report["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as exc:
        report["nvidia_smi"] = f"unavailable: {exc}"
    from quantus_miner.engines import engine_problem, get_engine

    report["problem"] = engine_problem("gpu-cuda")
    ccs = [[8, 0], [9, 0]]
    for name in ("gpu-cuda", "gpu-cuda-v2"):
        entry = report[name] = {}
        try:
            t = time.monotonic()
            engine = get_engine(name)
            engine.warm_up()  # compile + the known-answer self-test on every device
            entry.update(warmup_s=time.monotonic() - t, device=engine.device, kernel=engine.kernel,
                         devices=[d.label for d in engine.devices])
            failures = [f for slot in range(len(engine.devices)) for f in vectors(engine, name, slot, simulator)]
            entry["vectors"] = "pass" if not failures else failures
            entry["timed"] = timed(engine, args.seconds)
            entry["cancel_latency_ms"] = cancel_latency(engine)
            if not simulator:
                from numba import cuda

                cc = list(cuda.get_current_device().compute_capability)
                if cc not in ccs:
                    ccs.append(cc)
        except Exception:
            entry["error"] = traceback.format_exc()[-3000:]
        print(f"{name}: {json.dumps({k: v for k, v in entry.items() if k != 'error'})[:400]}", file=sys.stderr)
        if args.cli:
            proc = subprocess.run([sys.executable, "-m", "quantus_miner", "bench", "--engine", name, "--seconds",
                                   str(args.seconds), "--json", "--quiet"], capture_output=True, text=True,
                                  timeout=300, cwd=ROOT)
            entry["bench_cli"] = json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}  # PTX needs the real numba-cuda
    try:
        proc = subprocess.run([sys.executable, "-c", PTX_CODE.format(root=str(ROOT), ccs=ccs)], capture_output=True,
                              text=True, env=env, timeout=300)
        report["ptxas"] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 \
            else proc.stderr[-3000:]
    except Exception as exc:
        report["ptxas"] = f"failed: {exc}"
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
