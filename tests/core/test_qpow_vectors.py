"""The reference QPoW reproduces every field of the chain's public vectors."""

import json
from pathlib import Path

import pytest

from quantus_miner.core import qpow

VECTORS_PATH = Path(__file__).parents[1] / "data" / "qpow_vectors_public.json"  # provenance: data/README.md
VECTORS = json.loads(VECTORS_PATH.read_text())


def h512(s: str) -> int:
    return int(s, 16)


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["label"])
def test_job_context_matches_chain(case):
    header = bytes.fromhex(case["header"])
    ctx = qpow.JobContext.from_header(header)
    assert ctx.h == h512(case["h"])
    assert ctx.m == h512(case["m"])
    assert qpow.sha3_512_int(header) == h512(case["n0_sha3_512_of_header"])
    assert ctx.rehash_count == case["rehash_count"]
    assert ctx.n == h512(case["n"])
    assert ctx.n.bit_length() == case["n_bits"]
    assert ctx.target == h512(case["target"])
    assert pow(ctx.m, ctx.h, ctx.n) == h512(case["y_nonce0"])
    for rejected in case["n_rejected"]:
        assert qpow.n_rejection(h512(rejected["n"]), ctx.m) == rejected["reason"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["label"])
def test_nonce_distances_match_chain(case):
    ctx = qpow.JobContext.from_header(bytes.fromhex(case["header"]))
    assert qpow.distance(ctx, 0) == h512(case["zero_nonce"]["get_nonce_distance"])
    assert qpow.is_valid(ctx, 0, qpow.MAX_U512) is case["zero_nonce"]["is_valid_nonce_with_threshold_max"]
    for v in case["nonces"]:
        nonce = h512(v["nonce"])
        assert qpow.exponent(ctx, nonce) == h512(v["exponent"])
        assert (qpow.h512_saturates(ctx, nonce)) is v["exponent_saturated"]
        assert qpow.y_of(ctx, nonce) == h512(v["y"])
        assert qpow.distance(ctx, nonce) == h512(v["distance"])


@pytest.mark.parametrize("case", VECTORS["mining"], ids=lambda c: c["label"])
def test_mining_vector_first_valid_nonce(case):
    ctx = qpow.JobContext.from_header(bytes.fromhex(case["header"]))
    threshold = int(case["threshold_dec"])
    assert threshold == h512(case["threshold"])
    first = next(k for k in range(case["start_nonce"], case["start_nonce"] + 10 * case["checked"])
                 if qpow.is_valid(ctx, k, threshold))
    assert case["found"] is True
    assert first == case["nonce"] == h512(case["nonce_hex"])
    assert first - case["start_nonce"] + 1 == case["checked"]
    assert qpow.distance(ctx, first) == h512(case["distance"])


@pytest.mark.parametrize("case", VECTORS["is_prime"], ids=lambda c: c["label"])
def test_is_prime_matches_chain(case):
    n = int(case["n_dec"])
    assert n == h512(case["n"])
    assert qpow.is_prime(n) is case["is_prime"]


@pytest.mark.parametrize("entry", VECTORS["miller_rabin_bases"]["entries"], ids=lambda e: e["n"][-8:])
def test_miller_rabin_bases_match_chain(entry):
    n = h512(entry["n"])
    assert qpow.miller_rabin_decompose(n) == (h512(entry["d"]), entry["r"])
    assert qpow.miller_rabin_bases(n) == [h512(b) for b in entry["bases"]]


@pytest.mark.parametrize("entry", VECTORS["sha3_512_of_u512"], ids=lambda e: e["input"][-4:])
def test_sha3_512_of_u512(entry):
    assert qpow.sha3_512_int(qpow.be64(h512(entry["input"]))) == h512(entry["output"])


def test_header_must_be_32_bytes():
    with pytest.raises(ValueError, match=r"^header must be 32 bytes$"):
        qpow.JobContext.from_header(bytes(31))
