"""Both engines agree bit for bit with the reference QPoW on random jobs and ranges.

Expected result of a search over [start, end]: the lowest valid nonce (nonce 0 never
is), with tested = nonce - start + 1, or none with tested = the range size. The fast
engine's lanes scan contiguous nonces, so it must find exactly the same nonce.
"""

import logging
import os
import subprocess
import sys
import threading
import time
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantus_miner.core import qpow
from quantus_miner.core.outcomes import ChunkOutcome, ConsensusError, verified
from quantus_miner.engines import get_engine
from quantus_miner.engines.base import new_cancel_flag
from quantus_miner.engines import kernels as lanes8_module
from quantus_miner.engines.fast import KERNELS, SPECS, FastEngine, KernelSpec, KernelUnavailable, host_features
from quantus_miner.pipeline.solve import solve

MAX = qpow.MAX_U512
# every cpu-fast kernel this host can run is held to the reference, not just the one `auto` picks
RUNNABLE = [k for k in KERNELS if not SPECS[k].missing(host_features())]
ENGINES = ["cpu-baseline", *(f"cpu-fast:{k}" for k in RUNNABLE)]


def make_engine(name):
    if name.startswith("cpu-fast:"):
        return FastEngine.for_host(name.split(":")[1])
    return get_engine(name)


def expected(ctx, threshold, start, end):
    for k in range(start, end + 1):
        if qpow.is_valid(ctx, k, threshold):
            return ChunkOutcome(k - start + 1, verified(ctx, threshold, k))
    return ChunkOutcome(end - start + 1)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    e = make_engine(request.param)
    e.warm_up()
    return e


headers = st.binary(min_size=32, max_size=32)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(header=headers, start=st.integers(0, 2**64) | st.integers(0, MAX - 200), size=st.integers(1, 70),
       pick=st.integers(0, 69), data=st.data())
def test_threshold_at_a_nonce_distance_finds_the_first_valid_nonce(engine, header, start, size, pick, data):
    ctx = qpow.JobContext.from_header(header)
    end = min(start + size - 1, MAX)
    chosen = start + pick % (end - start + 1)
    threshold = qpow.distance(ctx, chosen) if chosen else data.draw(st.integers(0, MAX))
    job = engine.prepare(ctx, threshold)
    assert engine.search(job, start, end, new_cancel_flag()) == expected(ctx, threshold, start, end)


@SETTINGS
@given(header=headers, before=st.integers(0, 40), after=st.integers(0, 40), offset=st.integers(0, 30))
def test_ranges_across_the_saturation_point(engine, header, before, after, offset):
    ctx = qpow.JobContext.from_header(header)
    first_saturated = MAX - ctx.h + 1
    start, end = first_saturated - before, min(first_saturated + after, MAX)
    if start > end:
        start = end
    k = min(start + offset, end)
    threshold = qpow.distance(ctx, k)
    job = engine.prepare(ctx, threshold)
    assert engine.search(job, start, end, new_cancel_flag()) == expected(ctx, threshold, start, end)


@SETTINGS
@given(header=headers, threshold=st.integers(0, 2**500))
def test_small_thresholds_on_a_range_from_zero(engine, header, threshold):
    ctx = qpow.JobContext.from_header(header)
    job = engine.prepare(ctx, threshold)
    assert engine.search(job, 0, 40, new_cancel_flag()) == expected(ctx, threshold, 0, 40)


def test_range_starting_at_zero_with_max_threshold_never_reports_nonce_zero(engine):
    ctx = qpow.JobContext.from_header(bytes(32))
    outcome = engine.search(engine.prepare(ctx, MAX), 0, 100, new_cancel_flag())
    assert outcome == ChunkOutcome(2, verified(ctx, MAX, 1))


def test_only_nonce_zero_is_never_found(engine):
    ctx = qpow.JobContext.from_header(bytes(32))
    assert engine.search(engine.prepare(ctx, MAX), 0, 0, new_cancel_flag()) == ChunkOutcome(1)


def test_public_mining_vector(engine):
    ctx = qpow.JobContext.from_header(bytes(32))
    threshold = MAX // 5000
    outcome = engine.search(engine.prepare(ctx, threshold), 1, 10_000, new_cancel_flag())
    assert (outcome.found.nonce, outcome.tested) == (4330, 4330)


@pytest.mark.parametrize("kernel", RUNNABLE)
def test_header_with_a_full_512_bit_n_on_a_long_range(kernel):
    # The zero header's n has 512 bits: the top limb and the 2n < 2^513 bound are exercised.
    fast = FastEngine.for_host(kernel)
    ctx = qpow.JobContext.from_header(bytes(32))
    assert ctx.n.bit_length() == 512
    k = 123_457
    threshold = qpow.distance(ctx, k)
    outcome = fast.search(fast.prepare(ctx, threshold), 100_000, 130_000, new_cancel_flag())
    first = next(j for j in range(100_000, k + 1) if qpow.is_valid(ctx, j, threshold))
    assert outcome == ChunkOutcome(first - 100_000 + 1, verified(ctx, threshold, first))


def test_a_valid_nonce_just_past_the_end_is_not_reported(engine):
    # 4330 is the first valid nonce; cpu-fast's last step over [4320, 4329] computes it in a spare lane
    ctx = qpow.JobContext.from_header(bytes(32))
    job = engine.prepare(ctx, MAX // 5000)
    assert engine.search(job, 4320, 4329, new_cancel_flag()) == ChunkOutcome(10)
    assert engine.search(job, 4320, 4330, new_cancel_flag()) == ChunkOutcome(11, verified(ctx, MAX // 5000, 4330))


def test_preset_cancel_flag_stops_before_any_nonce(engine):
    ctx = qpow.JobContext.from_header(bytes(32))
    flag = new_cancel_flag()
    flag[0] = 1
    assert engine.search(engine.prepare(ctx, 0), 1, 10**9, flag) == ChunkOutcome(0, cancelled=True)


def test_setting_the_flag_stops_a_running_search_within_milliseconds(engine):
    ctx = qpow.JobContext.from_header(bytes(32))
    job = engine.prepare(ctx, 0)
    flag = new_cancel_flag()
    result = []
    worker = threading.Thread(target=lambda: result.append(engine.search(job, 1, 10**12, flag)))
    worker.start()
    while not worker.is_alive():
        pass
    time.sleep(0.05)  # let the kernel get going: this is the load, not synchronisation
    t0 = time.monotonic()
    flag[0] = 1
    worker.join(5)
    latency = time.monotonic() - t0
    assert not worker.is_alive()
    assert result[0].cancelled and result[0].found is None and result[0].tested > 0
    assert latency < 0.25, f"cancel took {latency * 1000:.1f} ms"


def test_a_stopped_local_search_reports_a_resume_point_below_which_all_was_tested(engine):
    flag = new_cancel_flag()
    stopper = threading.Timer(0.3, lambda: flag.__setitem__(0, 1))  # as the signal handler does
    stopper.start()
    t0 = time.monotonic()
    result = solve(engine, bytes(32), 0, 5, 10**15, 2, flag=flag)
    assert time.monotonic() - t0 < 2.0
    assert result.stopped and result.found is None and result.hash_count > 0
    # shared frontier: nonces 5 .. resume_at - 1 were all tested, plus at most the chunks in flight
    assert 5 < result.resume_at <= 5 + result.hash_count


def test_a_wrong_candidate_is_rejected_by_verification():
    ctx = qpow.JobContext.from_header(bytes(32))
    with pytest.raises(ConsensusError, match=r"^engine reported nonce 1, which the reference rejects$"):
        verified(ctx, 0, 1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_can_be_forced(kernel):
    if kernel not in RUNNABLE:
        pytest.skip(f"this host lacks {', '.join(SPECS[kernel].missing(host_features()))}")
    engine = get_engine("cpu-fast", kernel)
    engine.warm_up()
    assert engine.kernel.startswith(kernel)
    ctx = qpow.JobContext.from_header(bytes(32))
    assert engine.search(engine.prepare(ctx, MAX // 5000), 1, 5000, new_cancel_flag()).found.nonce == 4330


def test_auto_prefers_ifma_where_the_host_has_it_and_skips_it_where_not():
    assert FastEngine.for_host("auto", frozenset({"sse4.2"})).candidates == (SPECS["lanes8"],)
    assert FastEngine.for_host("auto", frozenset({"avx2"})).candidates == (SPECS["avx2x8"], SPECS["lanes8"])
    assert FastEngine.for_host("auto", frozenset({"avx2", "avx512f", "avx512ifma"})).candidates == tuple(SPECS.values())


def test_host_features_are_what_numba_compiles_for(monkeypatch):
    # NUMBA_CPU_FEATURES narrows the target: the IFMA kernel must then not even be tried
    monkeypatch.setattr("numba.core.config.CPU_FEATURES", "+avx,+avx2,-avx512f,-avx512ifma")
    assert "avx2" in host_features() and "avx512ifma" not in host_features()
    assert FastEngine.for_host("auto").candidates == (SPECS["avx2x8"], SPECS["lanes8"])


def test_forcing_a_kernel_the_host_cannot_run_is_refused():
    with pytest.raises(KernelUnavailable, match=r"^kernel ifma8 needs avx512ifma, which this host lacks$"):
        FastEngine.for_host("ifma8", frozenset({"avx2", "avx512f"}))


def miscompiled_kernel():
    """A kernel that builds but never finds a nonce: stands in for a kernel LLVM miscompiles on some host,
    which no healthy host can produce on demand (the only fake of our own code in this file)."""
    def scan_lanes(y, c, n, ninv, target, threshold, steps, flag, st, out):
        out[0] = steps
        return 0

    module = types.SimpleNamespace(**{k: getattr(lanes8_module, k) for k in lanes8_module.__all__})
    module.scan_lanes = scan_lanes
    return KernelSpec("broken", module)


def test_a_kernel_failing_its_self_test_is_skipped_with_a_warning(caplog):
    engine = FastEngine((miscompiled_kernel(), SPECS["lanes8"]))
    with caplog.at_level(logging.WARNING, logger="quantus_miner"):
        engine.warm_up()
    assert engine.spec is SPECS["lanes8"] and engine.kernel.startswith("lanes8")
    assert "kernel broken failed its self-test on this host (range [1, 5000]" in caplog.text
    ctx = qpow.JobContext.from_header(bytes(32))
    assert engine.search(engine.prepare(ctx, MAX // 5000), 1, 5000, new_cancel_flag()).found.nonce == 4330


def test_a_forced_kernel_failing_its_self_test_is_refused():
    engine = FastEngine((miscompiled_kernel(),), forced=True)
    with pytest.raises(ConsensusError, match=r"^kernel broken failed its self-test on this host: range \[1, 5000\]"):
        engine.warm_up()


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match=r"^unknown kernel 'avx9' \(choose from auto, ifma8, avx2x8, lanes8\)$"):
        FastEngine.for_host("avx9")


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match=r"^unknown engine 'gpu' \(choose from cpu-fast, cpu-baseline, cpu-fast-v2, cpu-baseline-v2, gpu-cuda, gpu-cuda-v2\)$"):
        get_engine("gpu")


def test_committed_kernels_match_their_generator():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("gen_kernels", root / "scripts" / "gen_kernels.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (root / "quantus_miner" / "engines" / "_generated_kernels.py").read_text()
    assert committed == gen.render(), "run python scripts/gen_kernels.py"


def test_an_unwritable_numba_cache_dir_falls_back_with_one_warning_never_into_the_package(tmp_path):
    import subprocess
    import sys

    import quantus_miner

    blocker = tmp_path / "a-file"  # nothing can be created under a file, not even by root
    blocker.write_text("")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR")}
    env.update(NUMBA_CACHE_DIR=str(blocker / "numba"), HOME=str(blocker), TMPDIR=str(tmp))
    code = "import quantus_miner.engines.kernels as k; print(k.scan_lanes._cache._cache_path)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    cache_path = result.stdout.strip()
    assert cache_path.startswith(str(tmp)), cache_path
    assert not cache_path.startswith(os.path.dirname(quantus_miner.__file__))
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and "NUMBA_CACHE_DIR=" in warnings[0] and "not writable" in warnings[0], result.stderr


@pytest.mark.skipif("avx2" not in host_features(), reason="this host lacks AVX2")
def test_avx2_kernel_built_without_avx512():
    # a Haswell target: LLVM may use no AVX-512 instruction; auto then takes avx2x8, which passes its self-test
    from numba.core.codegen import get_host_cpu_features

    flat = ",".join(("-" + f[1:]) if f[1:].startswith(("avx512", "amx", "avxvnni", "avx10")) else f
                    for f in get_host_cpu_features().split(","))
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=flat)
    code = ("from quantus_miner.engines import get_engine; e = get_engine('cpu-fast'); e.warm_up(); "
            "print(e.kernel)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["avx2x8-29bit-avx2"]
