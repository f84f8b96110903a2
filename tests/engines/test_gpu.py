"""GPU engines (gpu-cuda, gpu-cuda-v2) without a GPU: the CUDA kernels run in numba-cuda's simulator against the
references, compile to PTX for sm_80 and sm_90 (ptxas: registers, no spills), and run through the commands.

conftest.py turns the simulator on for this process (NUMBA_ENABLE_CUDASIM=1, before Numba is imported). Every
test here is skipped, with the reason, when the optional `gpu` extra cannot be used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import trio
from hypothesis import given, settings, strategies as st

from quantus_miner.core import qpow, qpow2
from quantus_miner.core.outcomes import ChunkOutcome
from quantus_miner.engines import engine_problem, get_engine
from quantus_miner.engines.base import new_cancel_flag
from quantus_miner.engines.gpu import extra_problem, gpu_problem, simulated

from ..support import MAX, ZERO_HEADER, run

problem = extra_problem() or gpu_problem()
if problem:
    print(f"\ntests/engines/test_gpu.py skipped: {problem}", file=sys.stderr)
pytestmark = pytest.mark.skipif(problem is not None, reason=f"GPU engines unusable here: {problem}")

_engines: dict[str, object] = {}


def engine(name: str):
    """One warmed engine per name for the module (warm-up runs the self-test: a second each in the simulator)."""
    if name not in _engines:
        e = get_engine(name)
        e.warm_up()
        _engines[name] = e
    return _engines[name]


def test_the_simulator_is_on_for_these_tests_and_the_engines_pass_their_self_tests():
    assert simulated()
    for name in ("gpu-cuda", "gpu-cuda-v2"):
        e = engine(name)
        assert e.device == "CUDA simulator" and e.device_labels() == ["gpu0"]
        assert e.self_test() is None


@settings(max_examples=4, deadline=None, derandomize=True)
@given(header=st.binary(min_size=32, max_size=32), start=st.integers(1, MAX - 12), size=st.integers(1, 10),
       difficulty=st.integers(1, 8))
def test_v1_kernel_matches_the_reference_on_random_headers_and_ranges(header, start, size, difficulty):
    # a low difficulty makes finds common, so both "found first" and "none" are exercised
    assert engine("gpu-cuda").check(header, MAX // difficulty, start, start + size - 1) is None


@settings(max_examples=4, deadline=None, derandomize=True)
@given(header=st.binary(min_size=32, max_size=32), start=st.integers(0, MAX - 12), size=st.integers(1, 10),
       difficulty=st.integers(1, 8))
def test_v2_kernel_matches_the_reference_on_random_headers_and_ranges(header, start, size, difficulty):
    assert engine("gpu-cuda-v2").check(header, qpow2.target_of(difficulty), start, start + size - 1) is None


@pytest.mark.parametrize("name, bound", [("gpu-cuda", MAX), ("gpu-cuda-v2", MAX)])
def test_the_first_valid_nonce_is_reported_across_launches_and_threads(name, bound):
    # every nonce but 0 is valid: the lowest offset wins even though 8 threads and several launches race
    e = engine(name)
    job = e.prepare_header(bytes(32), bound)
    out = e.search(job, 0, 40, new_cancel_flag())
    assert out.tested == 2 and out.found.nonce == 1  # nonce 0 counted, never valid
    out = e.search(job, 37, 90, new_cancel_flag())
    assert out.tested == 1 and out.found.nonce == 37


def test_v1_edges_2_64_and_saturation_and_v2_edge_2_256_match_the_reference():
    v1, v2 = engine("gpu-cuda"), engine("gpu-cuda-v2")
    ctx = qpow.JobContext.from_header(bytes(range(32)))
    sat = ctx.saturation_nonce + 1  # the first nonce whose exponent is clamped
    for lo, hi in ((2**64 - 20, 2**64 + 3), (sat - 17, sat + 5)):  # spans several simulator launches
        best = min(qpow.distance(ctx, k) for k in range(lo, hi + 1))
        assert v1.check(ctx.header, best, lo, hi) is None
    lo, hi = 2**256 - 18, 2**256 + 5
    hashes = [qpow2.pow_hash(bytes(32), k) for k in range(lo, hi + 1)]
    for bound in (min(hashes), min(hashes) + 1, sorted(hashes)[3]):
        assert v2.check(bytes(32), bound, lo, hi) is None


def test_a_range_with_no_valid_nonce_counts_every_nonce():
    e = engine("gpu-cuda-v2")
    assert e.search(e.prepare(bytes(32), 0), 5, 60, new_cancel_flag()) == ChunkOutcome(56)


@pytest.mark.parametrize("name", ["gpu-cuda", "gpu-cuda-v2"])
def test_cancel_stops_a_running_search_between_launches_with_an_exact_count(name):
    e = engine(name)
    job = e.prepare_header(bytes(32), 0)
    flag = new_cancel_flag()
    flag[0] = 1
    assert e.search(job, 1, MAX, flag) == ChunkOutcome(0, cancelled=True)
    flag = new_cancel_flag()
    result = []
    worker = threading.Thread(target=lambda: result.append(e.search(job, 1, MAX, flag)))
    worker.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    flag[0] = 1
    worker.join(30)
    assert not worker.is_alive()
    out = result[0]
    # stopped within one launch (a simulator launch is slow; on a GPU one is LAUNCH_S, 25 ms), whole launches counted
    assert out.cancelled and out.found is None and out.tested > 0
    assert time.monotonic() - t0 < 10


def test_launches_are_sized_from_the_measured_rate_to_bound_cancel_latency():
    from quantus_miner.engines.gpu.engine import LAUNCH_S, Device

    dev = Device(0, "test", 528, 256, 1 << 31)
    assert dev.launch_size() == 4 * dev.grid  # before any measurement
    dev.measured(10**9, 1.0)
    assert dev.launch_size() == int(10**9 * LAUNCH_S)  # 25 ms at 1 G/s: cancel well inside 100 ms
    dev.measured(10, 1.0)  # a slow measurement never shrinks a launch below one nonce per thread
    assert dev.launch_size() >= dev.grid


def test_an_executor_slot_is_pinned_to_one_device():
    e = engine("gpu-cuda-v2")
    slot = e.for_slot(3)
    assert slot.dev is e.devices[0] and slot.name == "gpu-cuda-v2" and slot.pow == "v2"
    job = slot.prepare(bytes(32), qpow2.target_of(5000))
    assert slot.search(job, 7410, 7420, new_cancel_flag()).found.nonce == 7414


# -- GPUs and CPU threads in one job -----------------------------------------------------------------

_cpu: dict[str, object] = {}


def cpu_lane(gpu_name: str, threads: int = 1):
    """The CPU lane `--cores threads` adds beside `gpu_name`'s devices (its engine warmed once per module)."""
    from quantus_miner.core.config import CPU_ENGINE_OF_GPU
    from quantus_miner.pipeline.local import Lane

    name = CPU_ENGINE_OF_GPU[gpu_name]
    if name not in _cpu:
        _cpu[name] = get_engine(name)
        _cpu[name].warm_up()
    return Lane(_cpu[name], threads, 1e6)


def mixed_runtime(gpu_name: str, threads: int = 1, chunk_ms: int = 20):
    from quantus_miner.core.config import ServiceConfig
    from quantus_miner.pipeline.local import LocalExecutor
    from quantus_miner.pipeline.runtime import MinerRuntime

    e = engine(gpu_name)
    config = ServiceConfig(cores=len(e.devices), progress_chunk_ms=chunk_ms, max_jobs=2)
    return MinerRuntime(config, e, executor=LocalExecutor(config, e, measured_rate=100.0,
                                                          beside=cpu_lane(gpu_name, threads)))


async def run_mixed(runtime, request):
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        runtime.submit(request)
        with trio.fail_after(120):
            await runtime.wait_ended(request.job_id)
            await runtime.wait_settled(request.job_id)
        nursery.cancel_scope.cancel()
    return runtime.result(request.job_id)


@pytest.mark.parametrize("name, bound, lo, hi, want", [
    ("gpu-cuda", MAX // 5000, 0x10D0, 0x10F0, 4330),  # the published vectors: the range's one valid nonce
    ("gpu-cuda-v2", qpow2.target_of(5000), 0x1CF0, 0x1D00, 7414),
])
def test_a_mixed_job_finds_what_the_reference_and_a_cpu_only_job_find(name, bound, lo, hi, want):
    from quantus_miner.pipeline.solve import solve

    e, lane = engine(name), cpu_lane(name)
    assert [k for k in range(lo, hi + 1) if e.valid(bytes(32), bound, k)] == [want]  # the reference
    mixed = solve(e, bytes(32), bound, lo, hi, len(e.devices), beside=lane)
    cpu_only = solve(lane.engine, bytes(32), bound, lo, hi, 1)
    assert mixed.found == cpu_only.found == e.verify(bytes(32), bound, want)
    # counted: the chunks reported before the find (a slot still searching an earlier chunk is cut off)
    assert 1 <= mixed.hash_count <= hi - lo + 1


@pytest.mark.parametrize("name", ["gpu-cuda", "gpu-cuda-v2"])
async def test_a_mixed_job_counts_every_nonce_once_across_device_and_cpu_slots(name):
    # bound 0: nothing valid; the device slot and the CPU slot share the one cursor to exhaustion
    from quantus_miner.core.requests import MineRequest

    runtime = mixed_runtime(name)
    snap = await run_mixed(runtime, MineRequest("x", bytes(32), 0, 2**64 - 40, 2**64 + 2999))
    assert snap.status == "failed" and snap.hash_count == 3040  # exact: no nonce twice, none skipped
    device, cpu = snap.workers  # slot 0 is the device, slot 1 the CPU thread
    assert device.hashes > 0 and cpu.hashes > 0 and device.hashes + cpu.hashes == 3040
    assert runtime.statistics().beside == {"engine": cpu_lane(name).engine.name,
                                           "kernel": cpu_lane(name).engine.kernel, "threads": 1}
    assert runtime.statistics().cores == 2 and runtime.statistics().devices == 1


async def test_every_find_of_a_mixed_job_is_the_first_valid_nonce_of_its_chunk_and_verified():
    # every nonce but 0 valid: whichever slot reports first wins, as with CPU threads alone, and its
    # nonce is the lowest of the chunk it searched (the device's or the CPU thread's first chunk)
    from quantus_miner.core.requests import MineRequest

    runtime = mixed_runtime("gpu-cuda-v2")
    snap = await run_mixed(runtime, MineRequest("all", bytes(32), qpow2.MAX_U512, 0, 10**6))
    assert snap.status == "completed" and qpow2.is_valid(bytes(32), snap.nonce, target=qpow2.MAX_U512)
    # the device's first chunk is [0, 1] (2 nonces: 20 ms at its probe of 100/s), the CPU thread's starts at 2
    assert snap.nonce in (1, 2)


# -- through the commands ------------------------------------------------------------------------


async def test_mine_with_gpu_cuda_v2_in_the_simulator_end_to_end():
    proc = await run("mine", "--engine", "gpu-cuda-v2", "--header", ZERO_HEADER, "--difficulty", "5000",
                     "--start", "1cf0", "--end", "1d00", "--json", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["status"] == "completed" and int(report["nonce"], 16) == 7414
    assert report["hash_count"] == 7414 - 0x1CF0 + 1
    assert report["device"] == "CUDA simulator" and report["kernel"] == "cuda-poseidon2-midstate-lazy-h2"


async def test_mine_with_gpu_cuda_in_the_simulator_end_to_end():
    proc = await run("mine", "--engine", "gpu-cuda", "--header", ZERO_HEADER, "--threshold", str(MAX // 5000),
                     "--start", "10d0", "--end", "10f0", "--json", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert int(report["nonce"], 16) == 4330 and report["hash_count"] == 4330 - 0x10D0 + 1


async def test_bench_json_names_the_device_and_the_kernel():
    proc = await run("bench", "--engine", "gpu-cuda-v2", "--seconds", "0.5", "--json", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["device"] == "CUDA simulator" and report["devices"] == 1
    assert report["kernel"] == "cuda-poseidon2-midstate-lazy-h2" and report["hashes"] > 0


async def test_choosing_a_gpu_engine_without_a_usable_gpu_exits_2_with_the_reason():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    with trio.fail_after(120):
        proc = await trio.run_process([sys.executable, "-m", "quantus_miner", "mine", "--engine", "gpu-cuda-v2",
                                       "--header", ZERO_HEADER, "--difficulty", "5"], capture_stdout=True,
                                      capture_stderr=True, check=False, env=env)
    if proc.returncode == 0:  # pragma: no cover - a machine with a GPU mines instead
        pytest.skip("this machine has a usable GPU")
    assert proc.returncode == 2
    assert "--engine=gpu-cuda-v2: no usable CUDA GPU" in proc.stderr.decode()


def test_without_the_extra_the_reason_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    assert "pip install 'quantus-miner[gpu]'" in engine_problem("gpu-cuda")
    assert engine_problem("cpu-fast") is None


async def test_serve_with_gpu_cuda_reports_the_device_in_health_and_per_device_metrics(start_miner):
    with trio.fail_after(120):
        miner = await start_miner(engine="gpu-cuda", cores=2)
        health = (await miner.client.get("/health")).json()
        assert health["engine"] == "gpu-cuda" and health["device"] == "CUDA simulator"
        assert health["cores"] == 1  # one executor slot per device
        await miner.mine("gpu-job", 0)  # never found: runs until cancelled
        while 'miner_device_hash_rate{device="gpu0"} 0.0' in (text := await miner.scrape()) or \
                "miner_device_hash_rate{" not in text:
            await trio.sleep(0.05)
        assert 'miner_device_info{device="gpu0",kernel="cuda-mont32-keccak",name="CUDA simulator"} 1.0' in text
        await miner.client.post("/cancel/gpu-job")
        await miner.wait_status("gpu-job", "cancelled")


async def test_cancel_reaches_the_device_and_the_cpu_thread_of_a_mixed_job_mid_chunk(monkeypatch):
    from quantus_miner.core.requests import MineRequest
    from quantus_miner.pipeline.local import ThreadDevice

    entered, returned = set(), {}  # instruments our own thread device: which slots run, when each chunk returned
    search = ThreadDevice._search

    def recorded(self, feed, lo, hi):
        entered.add(self.engine.name)
        r = search(self, feed, lo, hi)
        returned[self.engine.name] = (time.monotonic(), r.cancelled)
        return r

    monkeypatch.setattr(ThreadDevice, "_search", recorded)
    runtime = mixed_runtime("gpu-cuda", chunk_ms=5000)  # chunks of seconds: the cancel comes mid-chunk
    dev = engine("gpu-cuda").devices[0]
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        runtime.submit(MineRequest("c", bytes(32), 0, 1, MAX))
        with trio.fail_after(60):
            while entered != {"gpu-cuda", "cpu-fast"}:  # both slots are searching their first chunk
                await trio.sleep(0.01)
            await trio.sleep(0.1)
            t0 = time.monotonic()
            runtime.cancel("c")
            await runtime.wait_settled("c")
        nursery.cancel_scope.cancel()
    assert returned["cpu-fast"][1] and returned["gpu-cuda"][1]  # both chunks were cut short by the flag
    assert returned["cpu-fast"][0] - t0 < 0.1  # CPU kernels poll the flag every few thousand nonces
    # the device stops between launches: within one (a simulator launch here; LAUNCH_S, 25 ms, on a GPU)
    assert returned["gpu-cuda"][0] - t0 < 0.1 + dev.launch_size() / dev.rate


async def test_serve_mixes_a_gpu_and_a_cpu_thread_in_one_job_over_http(start_miner):
    with trio.fail_after(120):
        miner = await start_miner(engine="gpu-cuda", cores=1, cpu_threads=1, progress_chunk_ms=20)
        health = (await miner.client.get("/health")).json()
        assert health["device"] == "CUDA simulator" and health["devices"] == 1
        assert health["cores"] == 2 and health["cpu"]["engine"] == "cpu-fast" and health["cpu"]["threads"] == 1
        schema = (await miner.client.get("/openapi.json")).json()["components"]["schemas"]["Health"]
        assert set(health) <= set(schema["properties"])  # the documented /health
        assert set(health["cpu"]) == set(schema["properties"]["cpu"]["required"])
        # the published vector: 4330 is the range's one valid nonce, whichever slot searches it
        await miner.mine("one", MAX // 5000, start=0x10D0, end=0x10F0)
        body = await miner.wait_status("one", "completed", "failed")
        assert body["status"] == "completed" and int(body["nonce"], 16) == 4330
        await miner.mine("never", 0)  # never found: both slots mine until cancelled
        text = ""
        while 'thread_id="1"' not in text or 'miner_device_hash_rate{device="gpu0"} 0.0' in text or \
                "miner_device_hash_rate{" not in text:
            await trio.sleep(0.05)
            text = await miner.scrape()
        assert 'miner_thread_hash_rate{engine="gpu-cuda",job_id="never",thread_id="0"}' in text  # the device
        assert 'miner_thread_hash_rate{engine="gpu-cuda",job_id="never",thread_id="1"}' in text  # the CPU thread
        device_rate = float(text.split('miner_device_hash_rate{device="gpu0"} ')[1].split()[0])
        cpu_rate = float(text.split('miner_thread_hash_rate{engine="gpu-cuda",job_id="never",thread_id="1"} ')[1]
                         .split()[0])
        assert 0 < device_rate < cpu_rate  # the CPU thread's rate is not the (simulated) device's
        await miner.client.post("/cancel/never")
        assert (await miner.result("never"))["status"] == "cancelled"  # at once, every slot's flag set
        await miner.runtime.wait_settled("never")  # and every slot returned (the device within one launch)


async def test_mine_and_bench_mix_gpu_and_cpu_threads_end_to_end():
    proc = await run("mine", "--engine", "gpu-cuda-v2", "--cores", "1", "--header", ZERO_HEADER, "--difficulty",
                     "5000", "--start", "1cf0", "--end", "1d00", "--json", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["status"] == "completed" and int(report["nonce"], 16) == 7414
    assert report["devices"] == 1 and report["cores"] == 2
    assert report["cpu"]["engine"] == "cpu-fast-v2" and report["cpu"]["threads"] == 1
    proc = await run("bench", "--engine", "gpu-cuda", "--cores", "1", "--seconds", "0.5", "--json", "--quiet",
                     timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["device"] == "CUDA simulator" and report["devices"] == 1 and report["cores"] == 2
    assert report["cpu"]["engine"] == "cpu-fast" and 0 < report["cpu"]["hashes"] <= report["hashes"]  # its share


# -- PTX and ptxas, with the simulator off (a subprocess) ------------------------------------------------

PTX_SCRIPT = """
import json, sys
from quantus_miner.engines.gpu import ptx
out = []
ptxas = ptx.ptxas_path()
for name in ptx.KERNELS:
    for cc in ((8, 0), (9, 0)):
        text = ptx.compile_kernel(name, cc)
        row = {"kernel": name, "cc": list(cc), "target": f".target sm_{cc[0]}{cc[1]}" in text}
        if ptxas:
            row.update(ptx.ptxas_report(text, f"sm_{cc[0]}{cc[1]}", ptxas))
        out.append(row)
print(json.dumps({"ptxas": ptxas, "rows": out}))
"""


def test_kernels_compile_to_ptx_for_sm_80_and_sm_90_and_ptxas_reports_no_spills():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True, env=env, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["rows"]) == 4 and all(row["target"] for row in report["rows"])
    if report["ptxas"] is None:
        pytest.skip("no ptxas (the nvidia-cuda-nvcc-cu12 wheel) here: PTX compiled, registers not checked")
    for row in report["rows"]:
        print(row)
        assert row["spill_stores"] == 0 and row["spill_loads"] == 0, row
        assert row["registers"] <= 255, row  # docs/gpu.md records the figures
        np.testing.assert_equal(row["stack_frame"], 0)


@pytest.mark.parametrize("devices", [["--gpu-devices", "1"], []])
def test_a_device_failing_its_self_test_is_not_used_and_a_start_without_one_exits_2(devices, monkeypatch, capsys,
                                                                                     caplog):
    from quantus_miner.cli import main
    from quantus_miner.engines.gpu.engine import CudaV2Engine

    monkeypatch.setattr(CudaV2Engine, "self_test", lambda self: "injected: wrong hash")
    status = main(["mine", "--engine", "gpu-cuda-v2", *devices, "--header", ZERO_HEADER, "--difficulty", "5",
                   "--json", "--quiet"])
    assert status == 2
    err = capsys.readouterr().err
    if devices:  # forced: the failure itself stops the start
        assert "gpu-cuda-v2 failed its self-test on device 0 (CUDA simulator): injected: wrong hash" in err
    else:  # all: the device is dropped with one warning, and with none left the start stops
        assert "failed its self-test, not used: injected: wrong hash" in caplog.text
        assert "gpu-cuda-v2: no CUDA device passed the self-test" in err
