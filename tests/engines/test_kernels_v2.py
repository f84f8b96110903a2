"""cpu-fast-v2's per-ISA kernels: every kernel this host can run, bit for bit against core/qpow2.py, and their selection.

Test charter: CPU only; the vector kernels compile in a few seconds each on first use (cached in
NUMBA_CACHE_DIR, which scripts/test sets); the field checks compile small uncached test kernels.
The AVX2 kernel runs on an AVX-512 host as it is; `test_avx2_kernel_built_without_avx512` also
builds it for a Haswell target in a child process, so no AVX-512 instruction can hide in it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import llvmlite.ir as ir
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit, types
from numba.extending import intrinsic

from quantus_miner.core import qpow2
from quantus_miner.core.config import V2_KERNELS
from quantus_miner.core.outcomes import ChunkOutcome, ConsensusError, Found
from quantus_miner.engines import baseline_v2, get_engine, kernel_problem
from quantus_miner.engines import fast_v2, kernels_v2, poseidon2_vec
from quantus_miner.engines.fast_v2 import SPECS, FastV2Engine, KernelUnavailable, V2KernelSpec, host_features, self_test

from ..support import run

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "qpow2_vectors_public.json").read_text())
P = qpow2.P
M32 = 2**32 - 1
L = poseidon2_vec.LANES
MAX = qpow2.MAX_U512
SEGMENT = 1 << 256
RUNNABLE = [k for k in V2_KERNELS if not SPECS[k].missing(host_features())]
VECTOR_KERNELS = [k for k in RUNNABLE if k != "v2-lanes8"]
BASE = baseline_v2.BaselineV2Engine()
PROPERTY = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def flag() -> np.ndarray:
    return np.zeros(1, dtype=np.uint8)


@pytest.fixture(scope="module", params=RUNNABLE)
def engine(request):
    e = FastV2Engine.for_host(request.param)
    e.warm_up()
    return e


def agree(engine, header: bytes, target: int, start: int, end: int) -> None:
    expected = BASE.search(BASE.prepare(header, target), start, end, flag())
    assert engine.search(engine.prepare(header, target), start, end, flag()) == expected


# ---------------------------------------------------------------------------------------------
# Every runnable kernel against the reference


def test_known_answer_self_test_passes(engine):
    assert self_test(engine.spec) is None


@given(header=st.binary(min_size=32, max_size=32), difficulty=st.sampled_from([1, 2, 3, 7, 16, 1 << 40]),
       start=st.integers(0, MAX - 40), length=st.integers(1, 2 * L + 3))
@PROPERTY
def test_random_ranges_match_the_reference(engine, header, difficulty, start, length):
    agree(engine, header, qpow2.target_of(difficulty), start, start + length - 1)


@given(header=st.binary(min_size=32, max_size=32), difficulty=st.integers(30, 200),
       start=st.integers(0, MAX - 4 * L), length=st.integers(L + 1, 4 * L + 3))
@PROPERTY
def test_random_ranges_with_finds_past_the_first_lane_match_the_reference(engine, header, difficulty, start, length):
    # a valid nonce every 30-200 tries over up to 4 batches: the first find lands on any lane of any batch
    agree(engine, header, qpow2.target_of(difficulty), start, start + length - 1)


FIRST_FIND_DIFFICULTY = 64
FIRST_FIND_START = (1 << 300) + 12345  # in the second 2^256 segment: a midstate of its own


@pytest.fixture(scope="module")
def first_finds() -> dict[int, int]:
    """For each offset k < 4 batches: a nonce valid at FIRST_FIND_DIFFICULTY whose k predecessors are not.

    From the reference's hashes of 600 consecutive nonces (~0.8 s once): valid nonces come about every 64.
    """
    header, target = bytes(range(32)), qpow2.target_of(FIRST_FIND_DIFFICULTY)
    valid = [n for n in range(FIRST_FIND_START, FIRST_FIND_START + 600) if qpow2.pow_hash(header, n) < target]
    gaps = {v: v - prev - 1 for prev, v in zip([FIRST_FIND_START - 1, *valid], valid)}  # invalid nonces before v
    finds = {}
    for k in range(4 * L):
        v = next((v for v, gap in gaps.items() if gap >= k), None)
        assert v is not None, f"no valid nonce after {k} invalid ones: scan further"
        finds[k] = v
    return finds


def test_the_first_find_on_every_lane_of_four_batches(engine, first_finds):
    """Ranges of 4 batches + 3 whose first valid nonce is the k-th: found there, k + 1 nonces counted."""
    header, target = bytes(range(32)), qpow2.target_of(FIRST_FIND_DIFFICULTY)
    for k, v in first_finds.items():
        start = v - k
        outcome = engine.search(engine.prepare(header, target), start, start + 4 * L + 2, flag())
        assert outcome == ChunkOutcome(k + 1, Found(v, qpow2.pow_hash(header, v))), (engine.kernel, k)


@pytest.mark.parametrize("start,end", [(0, 0), (0, L + 1), (SEGMENT - 3, SEGMENT + L), (MAX - L - 2, MAX),
                                       (MAX, MAX)],
                         ids=["nonce-0", "from-0", "across-2^256", "up-to-2^512-1", "last-nonce"])
@pytest.mark.parametrize("difficulty", [1, 3])
def test_edges_match_the_reference(engine, start, end, difficulty):
    # nonce 0 hashed and counted, never valid; the midstate changes at 2^256; lanes past 2^512 - 1 wrap, unreported
    agree(engine, bytes(range(32)), qpow2.target_of(difficulty), start, end)
    agree(engine, bytes(range(32)), 0, start, end)


@pytest.mark.parametrize("case", VECTORS["pow_hash"] + VECTORS["pow_hash_upstream_golden"], ids=lambda c: c["label"])
def test_hash_equal_to_the_target_is_invalid(engine, case):
    header, nonce, h = bytes.fromhex(case["header"]), int(case["nonce"], 16), int(case["hash"], 16)
    valid = engine.search(engine.prepare(header, min(h + 1, MAX)), nonce, nonce, flag())
    assert valid == (ChunkOutcome(1, Found(nonce, h)) if nonce and h < MAX else ChunkOutcome(1))
    assert engine.search(engine.prepare(header, h), nonce, nonce, flag()) == ChunkOutcome(1)


@pytest.mark.parametrize("case", VECTORS["boundary"]["targets"], ids=lambda c: c["label"])
@pytest.mark.parametrize("lanes_before", [0, 3, L - 1, L + 2])
def test_h1_equal_to_the_targets_high_half_needs_the_second_squeeze(engine, case, lanes_before):
    b = VECTORS["boundary"]
    header, nonce, target = bytes.fromhex(b["header"]), int(b["nonce"], 16), int(case["target"], 16)
    start = nonce - lanes_before
    expected = BASE.search(BASE.prepare(header, target), start, nonce + 2, flag())
    assert engine.search(engine.prepare(header, target), start, nonce + 2, flag()) == expected
    assert (expected.found is not None and expected.found.nonce == nonce) is case["valid"]


@pytest.mark.parametrize("case", VECTORS["mining"], ids=lambda c: c["label"])
def test_mining_vectors(engine, case):
    header, target = bytes.fromhex(case["header"]), int(case["target"], 16)
    start, nonce = int(case["start_nonce"], 16), int(case["nonce_dec"])
    outcome = engine.search(engine.prepare(header, target), start, start + 100_000, flag())
    assert outcome == ChunkOutcome(case["tested"], Found(nonce, int(case["hash"], 16)))


def test_cancel_flag_stops_the_kernel(engine):
    cancel = np.ones(1, dtype=np.uint8)
    assert engine.search(engine.prepare(bytes(32), MAX), 1, 1000, cancel) == ChunkOutcome(0, cancelled=True)


@given(header=st.binary(min_size=32, max_size=32), nonce=st.integers(0, MAX))
@PROPERTY
def test_midstates_match_the_reference(engine, header, nonce):
    ctx = fast_v2.prepare_context(header, 0, engine.spec.absorb_block)
    assert tuple(int(x) for x in ctx.header_state) == qpow2.header_midstate(header)
    mid = fast_v2.nonce_midstate(ctx, nonce, engine.spec.absorb_block)
    assert tuple(int(x) for x in mid) == qpow2.nonce_midstate(header, nonce)


@pytest.mark.parametrize("kernel", VECTOR_KERNELS)
def test_vector_permutation_matches_the_reference(kernel):
    rng = np.random.default_rng(21)
    lanes = [[int(x) for x in rng.integers(0, 2**64, size=12, dtype=np.uint64)] for _ in range(L - 3)]
    lanes += [[P - 1] * 12, [2**64 - 1] * 12, [P] * 12]  # felts near p and 2^64 (non-canonical in)
    state = np.array([lanes[l][i] for i in range(12) for l in range(L)], dtype=np.uint64)
    SPECS[kernel].permute_many(state, 1)
    for l, lane in enumerate(lanes):
        got = tuple(int(state[i * L + l]) % P for i in range(12))
        assert got == qpow2.permute([x % P for x in lane]), l


# ---------------------------------------------------------------------------------------------
# The vector Goldilocks primitives at the field's edges (test kernels built from the same emitter)


def _field_intrinsic(n: int):
    arr = types.Array(types.uint64, 1, "C")

    @intrinsic
    def ops(typingctx, a, b, out):
        def codegen(context, builder, signature, args):
            em = poseidon2_vec._Goldilocks(builder, n)
            ap, bp, op = (context.make_array(arr)(context, builder, v).data for v in args)
            x, y = em.load(ap, 0), em.load(bp, 0)
            hi, lo = em.mul128(x, y)
            results = [hi, lo, em.mul(x, y), em._fold_halves(em.lo32(x), em.hi32(y)), em.square(x), em.reduce(x, y), em.canonical(x),
                       em.sbox(x), em.add_small(x, em.canonical(y))]
            for k, v in enumerate(results):
                em.store(v, op, k * n)
            return ir.Constant(ir.IntType(64), 0)

        return types.uint64(arr, arr, arr), codegen

    @njit  # not cached: the cache would not notice changes in poseidon2_vec's emitter
    def run(a, b, out):
        for i in range(0, a.size, n):
            ops(a[i:i + n], b[i:i + n], out[i // n])

    return run


FIELD = {4: _field_intrinsic(4), 8: _field_intrinsic(8)}
EDGES = sorted({0, 1, 2, P - 1, P, P + 1, 2**64 - 1, 2**64 - 2, 2**63, 2**32 - 1, 2**32, 2**32 + 1}
               | {k << 32 for k in (3, 2**31, 2**32 - 2, 2**32 - 1)} | {P - (k << 32) for k in (1, 2, 7)})


def check_field(width: int, pairs: list[tuple[int, int]]) -> None:
    pairs = pairs + [(0, 0)] * (-len(pairs) % width)
    a = np.array([x for x, _ in pairs], dtype=np.uint64)
    b = np.array([y for _, y in pairs], dtype=np.uint64)
    out = np.zeros((len(pairs) // width, 9 * width), dtype=np.uint64)
    FIELD[width](a, b, out)
    for i, (x, y) in enumerate(pairs):
        row = [int(out[i // width, k * width + i % width]) for k in range(9)]
        assert (row[0] << 64) | row[1] == x * y, (x, y)
        assert row[2] % P == x * y % P, ("mul", x, y)
        assert row[3] % P == ((x & M32) + (y >> 32) * 2**32) % P, ("fold_halves", x, y)
        assert row[4] % P == x * x % P, ("square", x)
        assert row[5] % P == ((x << 64) | y) % P, ("reduce", x, y)
        assert row[6] == x % P, ("canonical", x)
        assert row[7] % P == pow(x, 7, P), ("sbox", x)
        assert row[8] % P == (x + y) % P, ("add_small", x, y)


@pytest.mark.parametrize("width", [4, 8])
def test_vector_field_edge_cases(width):
    check_field(width, [(x, y) for x in EDGES for y in EDGES])


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), min_size=1, max_size=64))
@settings(max_examples=40, deadline=None)
def test_vector_field_random(pairs):
    check_field(8, pairs)
    check_field(4, pairs)


# ---------------------------------------------------------------------------------------------
# Selection


def test_auto_takes_the_widest_kernel_the_host_has():
    assert FastV2Engine.for_host("auto", frozenset({"sse4.2"})).candidates == (SPECS["v2-lanes8"],)
    assert FastV2Engine.for_host("auto", frozenset({"avx2"})).candidates == (SPECS["v2-avx2"], SPECS["v2-lanes8"])
    assert FastV2Engine.for_host("auto", frozenset({"avx2", "avx512f"})).candidates == tuple(SPECS.values())


def test_auto_on_this_host_runs_the_fastest_runnable_kernel():
    engine = get_engine("cpu-fast-v2")
    engine.warm_up()
    assert engine.spec is SPECS[RUNNABLE[0]] and engine.kernel == SPECS[RUNNABLE[0]].label


@pytest.mark.parametrize("kernel", V2_KERNELS)
def test_every_v2_kernel_can_be_forced(kernel):
    if kernel not in RUNNABLE:
        pytest.skip(f"this host lacks {', '.join(SPECS[kernel].missing(host_features()))}")
    engine = get_engine("cpu-fast-v2", kernel)
    engine.warm_up()
    assert engine.kernel == SPECS[kernel].label and engine.kernel.startswith(kernel)
    assert engine.search(engine.prepare(bytes(32), qpow2.target_of(5000)), 1, 10_000, flag()).found.nonce == 7414


def test_forcing_a_kernel_the_host_cannot_run_is_refused():
    with pytest.raises(KernelUnavailable, match=r"^kernel v2-avx512 needs avx512f, which this host lacks$"):
        FastV2Engine.for_host("v2-avx512", frozenset({"avx2"}))


def test_a_kernel_of_the_other_proof_of_work_is_refused_before_anything_starts():
    assert kernel_problem("cpu-fast-v2", "ifma8") == "engine cpu-fast-v2 runs the kernels v2-avx512, v2-avx2, v2-lanes8, not ifma8"
    assert kernel_problem("cpu-fast", "v2-avx2") == "engine cpu-fast runs the kernels ifma8, avx2x8, lanes8, not v2-avx2"
    assert kernel_problem("cpu-fast-v2", "v2-lanes8") is None and kernel_problem("cpu-baseline-v2", "ifma8") is None
    with pytest.raises(ValueError, match=r"^unknown kernel 'ifma8' for cpu-fast-v2 \(choose from auto, v2-avx512, "):
        FastV2Engine.for_host("ifma8")


def miscompiled_kernel() -> V2KernelSpec:
    """A kernel that builds but never finds a nonce: stands in for one LLVM miscompiles on some host, which
    no healthy host produces on demand (the only fake of our own code in this file)."""
    import types as pytypes

    def scan_segment(mid, low, count, high_zero, t_hi, t_lo, flag):
        return count, -1, False

    module = pytypes.SimpleNamespace(scan_segment=scan_segment, permute_many=kernels_v2.permute_many,
                                     absorb_block=kernels_v2.absorb_block)
    return V2KernelSpec("broken", "broken", module, "scan_segment", "permute_many", "absorb_block")


def test_a_kernel_failing_its_self_test_is_skipped_with_a_warning(caplog):
    engine = FastV2Engine((miscompiled_kernel(), SPECS["v2-lanes8"]))
    with caplog.at_level(logging.WARNING, logger="quantus_miner"):
        engine.warm_up()
    assert engine.spec is SPECS["v2-lanes8"]
    assert "kernel broken failed its self-test on this host (range [1, 10000]" in caplog.text


def test_a_forced_kernel_failing_its_self_test_is_refused():
    with pytest.raises(ConsensusError, match=r"^kernel broken failed its self-test on this host: range \[1, 10000\]"):
        FastV2Engine((miscompiled_kernel(),), forced=True).warm_up()


def test_profile_measures_the_permutation_and_the_whole():
    engine = get_engine("cpu-fast-v2")
    profile = engine.profile(0.05)
    assert set(profile) == {"permutation_rate", "kernel_rate"} and all(v > 0 for v in profile.values())


@pytest.mark.skipif("avx2" not in host_features(), reason="this host lacks AVX2")
def test_avx2_kernel_built_without_avx512():
    # a Haswell target: LLVM may use no AVX-512 instruction (none of EVEX, mask registers, ymm16-31)
    flat = ",".join(("-" + f[1:]) if f[1:].startswith(("avx512", "amx", "avxvnni", "avx10")) else f
                    for f in __import__("numba.core.codegen", fromlist=["x"]).get_host_cpu_features().split(","))
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=flat)
    code = ("from quantus_miner.engines import get_engine; e = get_engine('cpu-fast-v2'); e.warm_up(); "
            "from quantus_miner.engines.fast_v2 import host_features; "
            "print(e.kernel, 'avx512f' in host_features())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["v2-avx2-mul32", "False"]


# ---------------------------------------------------------------------------------------------
# The command line


async def test_bench_json_names_the_v2_kernel_and_profiles_the_permutation():
    result = await run("bench", "--engine", "cpu-fast-v2", "--seconds", "0.3", "--cores", "1", "--json", "--profile",
                       timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["engine"] == "cpu-fast-v2" and report["kernel"] == SPECS[RUNNABLE[0]].label
    assert set(report["profile"]) == {"permutation_rate", "kernel_rate"}
    assert all(rate > 0 for rate in report["profile"].values())


async def test_a_v1_kernel_forced_on_the_v2_engine_exits_2():
    result = await run("bench", "--engine", "cpu-fast-v2", "--kernel", "lanes8", "--seconds", "0.1")
    assert result.returncode == 2
    assert ("--kernel/MINER_KERNEL='lanes8': engine cpu-fast-v2 runs the kernels v2-avx512, v2-avx2, v2-lanes8, "
            "not lanes8") in result.stderr.decode()
