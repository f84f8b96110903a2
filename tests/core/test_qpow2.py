"""QPoW v2: the reference against the public vectors, the fast engine against the reference.

Test charter: CPU only, one thread besides the cancellation test's; the first run compiles the
Numba kernels (~20 s, cached in NUMBA_CACHE_DIR, which scripts/test sets); the whole file runs in
well under a minute. The vectors are the repository's copy (tests/data/README.md: provenance).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from quantus_miner.core import qpow2
from quantus_miner.core.outcomes import ChunkOutcome, ConsensusError, Found
from quantus_miner.engines import baseline_v2, fast_v2
from quantus_miner.engines import kernels_v2 as kernels

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "qpow2_vectors_public.json").read_text())
P = qpow2.P
L = kernels.LANES
MAX = qpow2.MAX_U512
SEGMENT = 1 << 256

FAST = fast_v2.FastV2Engine()
BASE = baseline_v2.BaselineV2Engine()
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def flag() -> np.ndarray:
    return np.zeros(1, dtype=np.uint8)


def u512(hex_string: str) -> int:
    return int(hex_string, 16)


def pow_cases() -> list[dict]:
    return VECTORS["pow_hash"] + VECTORS["pow_hash_upstream_golden"]


# ---------------------------------------------------------------------------------------------
# Public vectors: the reference


def test_constants_match_the_vectors_file():
    c = VECTORS["constants"]
    assert hex(P) == c["field_prime"]
    assert qpow2.INITIAL_EXTERNAL == tuple(tuple(int(x, 16) for x in r) for r in c["initial_external"])
    assert qpow2.INTERNAL == tuple(int(x, 16) for x in c["internal"])
    assert qpow2.TERMINAL_EXTERNAL == tuple(tuple(int(x, 16) for x in r) for r in c["terminal_external"])
    assert qpow2.MATRIX_DIAG == tuple(int(x, 16) for x in c["matrix_diag"])


@pytest.mark.parametrize("case", VECTORS["permutation"], ids=lambda c: c["label"])
def test_permutation(case):
    state = [int(x, 16) for x in case["input"]]
    expected = tuple(int(x, 16) for x in case["output"])
    assert qpow2.permute(state) == expected
    got = kernels.absorb_block(np.array(state, dtype=np.uint64), np.zeros(8, dtype=np.uint64))
    assert tuple(int(x) for x in got) == expected


@pytest.mark.parametrize("case", VECTORS["hash_bytes"], ids=lambda c: c["label"])
def test_hash_bytes(case):
    data = bytes.fromhex(case["input"])
    assert qpow2.hash_bytes(data).hex() == case["hash_bytes"]
    assert qpow2.hash_squeeze_twice(data).hex() == case["hash_squeeze_twice"]


@pytest.mark.parametrize("case", pow_cases(), ids=lambda c: c["label"])
def test_pow_hash(case):
    header, nonce = bytes.fromhex(case["header"]), u512(case["nonce"])
    assert qpow2.pow_hash(header, nonce) == u512(case["hash"])
    assert qpow2.pow_hash_from_midstate(qpow2.nonce_midstate(header, nonce), nonce) == u512(case["hash"])


@pytest.mark.parametrize("case", VECTORS["mining"], ids=lambda c: c["label"])
def test_mining_target_and_reference(case):
    header, nonce = bytes.fromhex(case["header"]), int(case["nonce_dec"])
    target = qpow2.target_of(int(case["difficulty"]))
    assert target == u512(case["target"])
    assert qpow2.pow_hash(header, nonce) == u512(case["hash"])
    assert qpow2.is_valid(header, nonce, int(case["difficulty"]))
    # the baseline from just below the answer (the full scan is ~10 s of pure Python)
    start = nonce - 20
    outcome = BASE.search(BASE.prepare(header, target), start, nonce + 100, flag())
    assert outcome == ChunkOutcome(21, Found(nonce, u512(case["hash"])))


def test_boundary_targets():
    b = VECTORS["boundary"]
    header, nonce = bytes.fromhex(b["header"]), u512(b["nonce"])
    assert qpow2.pow_hash(header, nonce) == u512(b["hash"])
    for t in b["targets"]:
        assert qpow2.is_valid(header, nonce, target=u512(t["target"])) is t["valid"], t["label"]
    for d in b["difficulties"]:
        assert qpow2.target_of(int(d["difficulty"])) == u512(d["target"])
        assert qpow2.is_valid(header, nonce, int(d["difficulty"])) is d["valid"], d["label"]


def test_zero_nonce_is_never_valid():
    z = VECTORS["zero_nonce"]
    header = bytes.fromhex(z["header"])
    assert qpow2.pow_hash(header, 0) == u512(z["hash"])
    assert qpow2.pow_hash(header, 0) < qpow2.target_of(int(z["difficulty"]))
    assert qpow2.is_valid(header, 0, int(z["difficulty"])) is False


def test_reference_rejects_misuse():
    with pytest.raises(ValueError, match=r"^difficulty must be positive$"):
        qpow2.target_of(0)
    with pytest.raises(TypeError, match=r"^give exactly one of difficulty or target$"):
        qpow2.is_valid(bytes(32), 1)
    with pytest.raises(ValueError, match=r"^header must be 32 bytes$"):
        qpow2.pow_hash(bytes(31), 1)
    with pytest.raises(ValueError, match=r"^nonce must be in \[0, 2\^512 - 1\]$"):
        qpow2.pow_hash(bytes(32), 1 << 512)


# ---------------------------------------------------------------------------------------------
# Public vectors: the fast engine


@pytest.mark.parametrize("case", pow_cases(), ids=lambda c: c["label"])
def test_fast_engine_hash_is_exact(case):
    # target = hash + 1 is valid and target = hash is not: the kernel's 512-bit hash is exact
    header, nonce, h = bytes.fromhex(case["header"]), u512(case["nonce"]), u512(case["hash"])
    valid = FAST.search(FAST.prepare(header, h + 1), nonce, nonce, flag())
    assert valid == (ChunkOutcome(1, Found(nonce, h)) if nonce else ChunkOutcome(1))
    assert FAST.search(FAST.prepare(header, h), nonce, nonce, flag()) == ChunkOutcome(1)


@pytest.mark.parametrize("case", VECTORS["mining"], ids=lambda c: c["label"])
def test_fast_engine_mining(case):
    header, target = bytes.fromhex(case["header"]), u512(case["target"])
    start, nonce = u512(case["start_nonce"]), int(case["nonce_dec"])
    outcome = FAST.search(FAST.prepare(header, target), start, start + 100_000, flag())
    assert outcome == ChunkOutcome(case["tested"], Found(nonce, u512(case["hash"])))
    # from 0: nonce 0 is hashed and counted, never found
    outcome = FAST.search(FAST.prepare(header, target), 0, nonce, flag())
    assert outcome == ChunkOutcome(case["tested"] + 1, Found(nonce, u512(case["hash"])))


@pytest.mark.parametrize("case", VECTORS["boundary"]["targets"], ids=lambda c: c["label"])
@pytest.mark.parametrize("lanes_before", [0, 1, L - 1, L, L + 3])
def test_fast_engine_boundary_needs_second_squeeze(case, lanes_before):
    # h1 equals the target's high half: only the lazy 5th permutation can decide
    b = VECTORS["boundary"]
    header, nonce, target = bytes.fromhex(b["header"]), u512(b["nonce"]), u512(case["target"])
    job = FAST.prepare(header, target)
    start = nonce - lanes_before
    expected = BASE.search(BASE.prepare(header, target), start, nonce + 2, flag())
    assert FAST.search(job, start, nonce + 2, flag()) == expected
    assert (expected.found is not None and expected.found.nonce == nonce) is case["valid"]


def test_fast_engine_zero_nonce():
    header = bytes.fromhex(VECTORS["zero_nonce"]["header"])
    job = FAST.prepare(header, MAX)  # difficulty 1: every non-zero nonce is valid
    assert FAST.search(job, 0, 0, flag()) == ChunkOutcome(1)
    assert FAST.search(job, 0, 5, flag()) == ChunkOutcome(2, Found(1, qpow2.pow_hash(header, 1)))
    assert FAST.search(job, 2**256, 2**256 + 5, flag()).found.nonce == 2**256  # low half 0 is fine


# ---------------------------------------------------------------------------------------------
# Midstate


@given(header=st.binary(min_size=32, max_size=32), nonce=st.integers(0, MAX))
@PROPERTY
def test_midstates_match_reference(header, nonce):
    ctx = fast_v2.prepare_context(header, 0)
    assert tuple(int(x) for x in ctx.header_state) == qpow2.header_midstate(header)
    assert tuple(int(x) for x in fast_v2.nonce_midstate(ctx, nonce)) == qpow2.nonce_midstate(header, nonce)


# ---------------------------------------------------------------------------------------------
# Fast engine against the reference on random and edge ranges

ANCHORS = [0, 1, SEGMENT - 1, SEGMENT, 5 * SEGMENT, (1 << 511), MAX]
LENGTHS = [1, 2, L - 1, L, L + 1, 2 * L + 3, 21]


def agree(header: bytes, target: int, start: int, end: int) -> None:
    expected = BASE.search(BASE.prepare(header, target), start, end, flag())
    assert FAST.search(FAST.prepare(header, target), start, end, flag()) == expected


@given(
    header=st.binary(min_size=32, max_size=32),
    difficulty=st.sampled_from([1, 2, 3, 7, 16, 1 << 40]),
    start=st.integers(0, MAX - 40),
    length=st.integers(1, 24),
)
@PROPERTY
def test_fast_matches_reference_random(header, difficulty, start, length):
    agree(header, qpow2.target_of(difficulty), start, start + length - 1)


@given(
    header=st.binary(min_size=32, max_size=32),
    difficulty=st.sampled_from([2, 5, 13, 1 << 40]),
    anchor=st.sampled_from(ANCHORS),
    before=st.sampled_from([0, 1, 3, L - 1, L, L + 1]),
    length=st.sampled_from(LENGTHS),
)
@PROPERTY
def test_fast_matches_reference_at_edges(header, difficulty, anchor, before, length):
    # ranges containing 0, crossing 2^256 boundaries (midstate change), ending at 2^512 - 1
    start = max(0, anchor - before)
    end = min(MAX, start + length - 1)
    agree(header, qpow2.target_of(difficulty), start, end)


@pytest.mark.parametrize("start,end", [(SEGMENT - 3, SEGMENT + 4), (MAX - 10, MAX), (0, L + 1), (7, 7)])
def test_fast_matches_reference_nothing_found(start, end):
    header = bytes(range(32))
    agree(header, 0, start, end)  # target 0: nothing valid; tested is the full length
    assert FAST.search(FAST.prepare(header, 0), start, end, flag()) == ChunkOutcome(end - start + 1)


def test_first_valid_nonce_across_many_segments():
    # a range spanning several 2^256 segments stops at the first valid nonce
    header = bytes(32)
    outcome = FAST.search(FAST.prepare(header, MAX), SEGMENT - 1, 4 * SEGMENT, flag())
    assert outcome == ChunkOutcome(1, Found(SEGMENT - 1, qpow2.pow_hash(header, SEGMENT - 1)))


# ---------------------------------------------------------------------------------------------
# Cancellation, misuse, re-verification


@pytest.mark.parametrize("engine", [FAST, BASE], ids=lambda e: e.name)
def test_cancel_flag_set_before_the_call(engine):
    cancel = np.ones(1, dtype=np.uint8)
    outcome = engine.search(engine.prepare(bytes(32), MAX), 1, 1000, cancel)
    assert outcome == ChunkOutcome(0, cancelled=True)


def test_cancel_during_a_search_stops_within_milliseconds():
    cancel, result = flag(), []
    job = FAST.prepare(bytes(32), 0)
    worker = threading.Thread(target=lambda: result.append(FAST.search(job, 1, 1 << 40, cancel)))
    worker.start()  # the kernel releases the GIL (nogil)
    threading.Event().wait(0.05)
    cancel[0] = 1
    worker.join(timeout=2)
    assert not worker.is_alive(), "the kernel did not notice the cancel flag"
    (outcome,) = result
    assert outcome.cancelled and outcome.found is None
    assert 0 < outcome.tested < 1 << 40 and outcome.tested % L == 0


def test_empty_range_and_misuse():
    job = FAST.prepare(bytes(32), MAX)
    assert FAST.search(job, 10, 9, flag()) == ChunkOutcome(0)
    with pytest.raises(ValueError, match=r"^nonces must be in \[0, 2\^512 - 1\]$"):
        FAST.search(job, 1, MAX + 1, flag())
    with pytest.raises(ValueError, match=r"^target must be in \[0, 2\^512 - 1\]$"):
        FAST.prepare(bytes(32), MAX + 1)
    with pytest.raises(ValueError, match=r"^header must be 32 bytes$"):
        FAST.prepare(bytes(33), 1)


def test_engine_identity():
    assert (FAST.name, FAST.kernel) == ("cpu-fast-v2", f"v2-lanes{L}-mul32")
    assert BASE.name == "cpu-baseline-v2"
    FAST.warm_up()


def test_a_nonce_the_reference_rejects_raises(monkeypatch):
    job = FAST.prepare(bytes(32), qpow2.target_of(1 << 40))
    monkeypatch.setattr(kernels, "scan_segment", lambda *args: (3, 2, False))  # a lying kernel
    with pytest.raises(ConsensusError, match=r"^engine reported nonce 3, which the reference rejects$"):
        FAST.search(job, 1, 100, flag())


# ---------------------------------------------------------------------------------------------
# Goldilocks arithmetic edge cases, in the kernel's own primitives


@njit  # not cached: Numba's cache would not notice changes in kernels_v2, inlined here
def _field_ops(a, b, out):
    for i in range(a.size):
        hi, lo = kernels.mul128(a[i], b[i])
        out[i, 0], out[i, 1] = hi, lo
        out[i, 2] = kernels.mul(a[i], b[i])
        out[i, 3] = kernels.add(a[i], b[i])
        out[i, 4] = kernels.square(a[i])
        out[i, 5] = kernels.reduce128(a[i], b[i])  # a as the high word, b as the low word
        out[i, 6] = kernels.canonical(a[i])
        out[i, 7] = kernels.sbox(a[i])


EDGES = sorted(
    {0, 1, 2, P - 1, P, P + 1, 2**64 - 1, 2**64 - 2, 2**63, 2**32 - 1, 2**32, 2**32 + 1, 2**33}
    | {k << 32 for k in (3, 2**31, 2**32 - 2, 2**32 - 1)}
    | {P - (k << 32) for k in (1, 2, 7)}
)


def check_field_ops(pairs: list[tuple[int, int]]) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.uint64)
    b = np.array([y for _, y in pairs], dtype=np.uint64)
    out = np.zeros((len(pairs), 8), dtype=np.uint64)
    _field_ops(a, b, out)
    for (x, y), row in zip(pairs, out.tolist()):
        assert (row[0] << 64) | row[1] == x * y, (x, y)
        # kernel values may exceed p (they stand for value mod p); canonical() makes them unique
        assert row[2] % P == qpow2.f_mul(x, y), ("mul", x, y)
        assert row[3] % P == qpow2.f_add(x, y), ("add", x, y)
        assert row[4] % P == qpow2.f_mul(x, x), ("square", x)
        assert row[5] % P == ((x << 64) | y) % P, ("reduce128", x, y)
        assert row[6] == x % P, ("canonical", x)
        assert row[7] % P == pow(x, 7, P), ("sbox", x)


def test_field_edge_cases():
    check_field_ops([(x, y) for x in EDGES for y in EDGES])


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), min_size=1, max_size=64))
@settings(max_examples=50, deadline=None)
def test_field_random(pairs):
    check_field_ops(pairs)
