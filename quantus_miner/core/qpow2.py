"""QPoW v2 reference: Poseidon2 over Goldilocks, as the Quantus chain computes it (pure Python).

The proof of work of chain v0.10.0 and later (see ``docs/qpow2.md``): the 96-byte input
``header (32 bytes) || nonce (64 bytes, big-endian)`` is hashed with the Poseidon2 sponge
``hash_squeeze_twice`` of qp-poseidon-core; the 64 output bytes, read big-endian, must be below
``(2^512 - 1) // difficulty``, and the all-zero nonce is never valid.

This module is the consensus yardstick: stdlib only, written for clarity, checked
against the public vectors computed by the upstream Rust crate. Fast engines are tested
against it and every nonce they report is re-verified with it.

>>> pow_hash(bytes(32), 1) >> 496
39448
>>> is_valid(bytes(32), 7414, difficulty=5000)
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .qpow import MAX_U512  # the one 512-bit bound

P = 0xFFFF_FFFF_0000_0001  # the Goldilocks prime 2^64 - 2^32 + 1
WIDTH, RATE = 12, 8
HALF_NONCE_BYTES = 32  # one rate block of 8 felts holds 32 input bytes (4 bytes per felt)

State = tuple[int, ...]

# Round constants and the internal diagonal of the Poseidon2 instance (width 12, x^7 S-box,
# 4 + 22 + 4 rounds), copied from qp-poseidon-core v3.0.2 src/poseidon2.rs
# (Quantus-Network/qp-poseidon, commit 60f7f4c5) as listed in the public vectors file
# qpow2_vectors_public.json ("constants"; the same values in the 3.1.0 era). They are
# Quantus-specific (ChaCha20 seeded with 0x3141592653589793), not Plonky3's defaults;
# MATRIX_DIAG is Plonky3's MATRIX_DIAG_12_GOLDILOCKS.
INITIAL_EXTERNAL = (
    (
        0xc002e770975b1607, 0xbca51a8dfe14593a, 0x72938dfbe774f7f9, 0xe4f2fe29e03234ac,
        0xd5e0ba2f541b6449, 0xec33b868f3cc46c1, 0x486dcb55419d475a, 0x6c1cb2a358cc24f1,
        0xe3f30d509a1436bb, 0xd9a64f068dca7c29, 0xe59b3f57aabba1ae, 0x2a3dd4505b478fdc,
    ),
    (
        0xada1f8dc7676ed25, 0x2711aa8b5509d516, 0x4ae6acd0c9c92897, 0x56eb3d6b5256d67a,
        0x1f7a9d55923bf51e, 0x3600427d397a7f68, 0xe5076df75b72c3d0, 0xfcd59aa12c6090ad,
        0xcd895e8c68b57a9e, 0x41df7ef9d730ae3e, 0xee3e2b889abe977d, 0xd29bb7edbeb9c405,
    ),
    (
        0x7d5c08eef608e382, 0x89ae889caaf0802c, 0xb35a8e976d2af617, 0xdb14234eafaf5173,
        0x78f04462d48b1c98, 0x265293b0e47ce88a, 0x999a649b69b9d32f, 0x64b0a186698e01d3,
        0xee0b22d0dfae8bb8, 0x4fd53e50ca04a7ee, 0x5762bfe181f25047, 0xf51593e2beb5e3bd,
    ),
    (
        0x1e5e2b5760e32477, 0x622462a1f9aaaeed, 0xaa284b3ecdb222ae, 0x63c8e72f542bf3fc,
        0x3ba588cacb43b5e0, 0x23eda6f3c99150dd, 0xaad3bea4baac9a5a, 0xe9da8d699b94184a,
        0xcdb13f4cd93e024c, 0x902cbd0956f655e3, 0x5b4e40ffc759532f, 0xde795c20a2357af7,
    ),
)
INTERNAL = (
    0x97f7798a784ad863, 0xd1d2bf082f60d4f0, 0x69a377a79f9ad206, 0xa9d06906a3858e24,
    0x295275001eede5b5, 0x5874e441117bd746, 0x8a084bbba8ed86cc, 0x3defd7645cde6425,
    0x3998cfe6871cc137, 0x3e52ef8bca48314a, 0x964a209f85dc9ecc, 0x3fcc9ee82cc4577e,
    0x8e79b4a5d0096d6d, 0x8492362ad2392556, 0xee72f470262574d6, 0x1e0e18496da2444a,
    0x0f3a74bf215eaac6, 0x1b061b76a1c0ded3, 0x192c42d86803d7a6, 0xf6d49ff997ae0260,
    0x3ec372e7a0fa3786, 0x5538cdf4f23445d3,
)
TERMINAL_EXTERNAL = (
    (
        0x7b72c539e0ea4c6e, 0x144573dae2ce9976, 0x802028b68f35fc88, 0x6d36c5022c4fe7c2,
        0xa205d0ffa9b9def3, 0xf6e7e38b1ea6ba2f, 0x34f7909ae5258d64, 0xb0464d9d77b97fca,
        0x64ddb9d5de7e00a6, 0x0ed0d75c27975d97, 0x1cbb36f11127338b, 0x6673e505cfd0b6ba,
    ),
    (
        0x605f902830872e01, 0x3fd5eb927e95fe4f, 0xe81025b5a24c69cd, 0xf7d0ce75de23f74e,
        0xf39942b6a8585089, 0x6d808a08f7b71df6, 0xf8806b6588f49a8b, 0x57df2d8c2a32107a,
        0x16e7c2074d654a2d, 0x213de241fcf33835, 0xb0f2b8905a0976f6, 0xd8e3cf2bbd355417,
    ),
    (
        0xe498691679d9330f, 0x763b45d2a3821b28, 0x0908bf65eb0a1f0d, 0x7691eb2d194b24f4,
        0x0e43551233ae13b2, 0x93c393dbfc2fe76f, 0x98f607485d48cdea, 0xe3d95f30309819c0,
        0x1ef581a93eaf6acf, 0x0b24c1b7a030fca4, 0x624370be5670b327, 0x5f1e28615a11e486,
    ),
    (
        0xfe04051f909e042b, 0x7257e5b147fd3803, 0xe6ae134bb82f2e78, 0x5711fd5cf4784511,
        0xf83a42660c08c0bc, 0x2cd8c96d9a3ce855, 0x7d2ffb1bb0e17271, 0x85ae1528caea3811,
        0x52a345d5c7adb0b8, 0x504c4c51f3faee94, 0xbce34a649cfccaf9, 0xe0a3389266fb6dc9,
    ),
)
MATRIX_DIAG = (
    0xc3b6c08e23ba9300, 0xd84b5de94a324fb6, 0x0d0c371c5b35b84f, 0x7964f570e7188037,
    0x5daf18bbd996604b, 0x6743bc47b9595257, 0x5528b9362c59bb70, 0xac45e25b7127b68b,
    0xa2077d7dfbb606b5, 0xf3faac6faee378ae, 0x0c6388b51545e883, 0xd27dbb6944917b60,
)


# ---------------------------------------------------------------------------------------------
# Goldilocks field


def f_add(a: int, b: int) -> int:
    """Sum in the field; inputs may be any non-negative ints."""
    return (a + b) % P


def f_mul(a: int, b: int) -> int:
    """Product in the field; inputs may be any non-negative ints (e.g. non-canonical u64).

    >>> f_mul(P - 1, P - 1)
    1
    """
    return (a * b) % P


def _sbox(x: int) -> int:
    return pow(x, 7, P)


# ---------------------------------------------------------------------------------------------
# Poseidon2 permutation


def _mat4(a: int, b: int, c: int, d: int) -> tuple[int, int, int, int]:
    # the 4x4 MDS block [[2,3,1,1],[1,2,3,1],[1,1,2,3],[3,1,1,2]]
    return (
        2 * a + 3 * b + c + d,
        a + 2 * b + 3 * c + d,
        a + b + 2 * c + 3 * d,
        3 * a + b + c + 2 * d,
    )


def _external_layer(s: list[int]) -> None:
    blocks = [_mat4(*s[i : i + 4]) for i in range(0, WIDTH, 4)]
    column = [sum(block[i] for block in blocks) for i in range(4)]
    for k, block in enumerate(blocks):
        for i in range(4):
            s[4 * k + i] = (block[i] + column[i]) % P


def _internal_layer(s: list[int]) -> None:
    total = sum(s)
    for i in range(WIDTH):
        s[i] = (total + s[i] * MATRIX_DIAG[i]) % P


def permute(state: Sequence[int]) -> State:
    """The Poseidon2 width-12 permutation (Poseidon2::permute_mut); canonical in and out.

    >>> hex(permute([0] * 12)[0])
    '0xc9bc9432e1686884'
    """
    if len(state) != WIDTH:
        raise ValueError(f"state must have {WIDTH} elements")
    s = [x % P for x in state]
    _external_layer(s)  # Poseidon2 mixes once before the first round
    for rc in INITIAL_EXTERNAL:
        s = [_sbox(x + c) for x, c in zip(s, rc)]
        _external_layer(s)
    for rc in INTERNAL:
        s[0] = _sbox(s[0] + rc)
        _internal_layer(s)
    for rc in TERMINAL_EXTERNAL:
        s = [_sbox(x + c) for x, c in zip(s, rc)]
        _external_layer(s)
    return tuple(s)


# ---------------------------------------------------------------------------------------------
# Byte packing and the sponge


def pack_bytes(data: bytes) -> list[int]:
    """Felts of `data`: 4 bytes each as little-endian u32, then the terminator felt.

    The terminator holds the 0-3 leftover bytes followed by 0x01, zero-padded.

    >>> pack_bytes(bytes([1, 0, 0, 0, 7]))
    [1, 263]
    """
    whole = len(data) - len(data) % 4
    felts = [int.from_bytes(data[i : i + 4], "little") for i in range(0, whole, 4)]
    felts.append(int.from_bytes(data[whole:] + b"\x01", "little"))
    return felts


def absorb(state: Sequence[int], block: Sequence[int]) -> State:
    """Add one rate block (8 felts) into state[0..8] and permute."""
    if len(block) != RATE:
        raise ValueError(f"block must have {RATE} elements")
    s = list(state)
    for i, x in enumerate(block):
        s[i] = (s[i] + x) % P
    return permute(s)


def _absorb_all(felts: Iterable[int]) -> State:
    state: State = (0,) * WIDTH
    block: list[int] = []
    for x in felts:
        block.append(x)
        if len(block) == RATE:
            state, block = absorb(state, block), []
    # finalisation: the element 1, then zeros up to the rate boundary
    block.append(1)
    return absorb(state, block + [0] * (RATE - len(block)))


def _digest(state: Sequence[int]) -> bytes:
    return b"".join(x.to_bytes(8, "little") for x in state[:4])


def hash_squeeze_twice(data: bytes) -> bytes:
    """qp_poseidon_core::hash_squeeze_twice: 64 bytes, h1 || h2 (h2 = h1's state permuted once more).

    >>> hash_squeeze_twice(b"").hex()[:16]
    '4d8d22af81f6c27a'
    """
    state = _absorb_all(pack_bytes(data))
    return _digest(state) + _digest(permute(state))


def hash_bytes(data: bytes) -> bytes:
    """qp_poseidon_core::hash_bytes: the 32-byte h1 alone (the first half of hash_squeeze_twice).

    >>> hash_bytes(b"hello world").hex()[:16]
    'fd1f5d7d4701c25b'
    """
    return _digest(_absorb_all(pack_bytes(data)))


# ---------------------------------------------------------------------------------------------
# Proof of work


def _check_header(header: bytes) -> None:
    if len(header) != 32:
        raise ValueError("header must be 32 bytes")


def _check_nonce(nonce: int) -> None:
    if not 0 <= nonce <= MAX_U512:
        raise ValueError("nonce must be in [0, 2^512 - 1]")


def pow_input(header: bytes, nonce: int) -> bytes:
    """The 96 hashed bytes: header || nonce as 64 big-endian bytes."""
    _check_header(header)
    _check_nonce(nonce)
    return header + nonce.to_bytes(64, "big")


def pow_hash(header: bytes, nonce: int) -> int:
    """The chain's nonce hash: hash_squeeze_twice(header || be64(nonce)) read big-endian (512 bits).

    >>> hex(pow_hash(bytes(32), 0))[:18]
    '0x8e64e3d8e0f38f88'
    """
    return int.from_bytes(hash_squeeze_twice(pow_input(header, nonce)), "big")


def target_of(difficulty: int) -> int:
    """The bound a hash must stay strictly below: (2^512 - 1) // difficulty.

    >>> target_of(1) == MAX_U512
    True
    """
    if difficulty <= 0:
        raise ValueError("difficulty must be positive")
    return MAX_U512 // difficulty


def is_valid(
    header: bytes, nonce: int, difficulty: int | None = None, *, target: int | None = None
) -> bool:
    """Whether the chain accepts `nonce`: non-zero and pow_hash < target (strict).

    Give exactly one of `difficulty` (target = target_of(difficulty)) or `target`.

    >>> is_valid(bytes(32), 7414, 5000), is_valid(bytes(32), 0, target=MAX_U512)
    (True, False)
    """
    if (difficulty is None) == (target is None):
        raise TypeError("give exactly one of difficulty or target")
    bound = target_of(difficulty) if difficulty is not None else target
    return nonce != 0 and pow_hash(header, nonce) < bound


# ---------------------------------------------------------------------------------------------
# Midstates: what a miner can compute once per job (block 0) and once per 2^256 nonces (block 1)

# The 96-byte input is 24 felts plus the terminator 1; with the finalisation 1 the blocks are:
# block 0 = header, block 1 = nonce's high 32 bytes, block 2 = its low 32 bytes, block 3 = FINAL_BLOCK.
FINAL_BLOCK = (1, 1, 0, 0, 0, 0, 0, 0)


def header_midstate(header: bytes) -> State:
    """The sponge state after absorbing block 0 (the header).

    >>> hex(header_midstate(bytes(32))[0])
    '0xc9bc9432e1686884'
    """
    _check_header(header)
    return absorb((0,) * WIDTH, pack_bytes(header)[:RATE])


def nonce_midstate(header: bytes, nonce: int) -> State:
    """The state after blocks 0 and 1; equal for all nonces sharing ``nonce >> 256``.

    >>> nonce_midstate(bytes(32), 5) == nonce_midstate(bytes(32), 2**256 - 1)
    True
    """
    _check_nonce(nonce)
    high = (nonce >> 256).to_bytes(HALF_NONCE_BYTES, "big")
    return absorb(header_midstate(header), pack_bytes(high)[:RATE])


def pow_hash_from_midstate(midstate: Sequence[int], nonce: int) -> int:
    """pow_hash from `nonce_midstate(header, nonce)`: blocks 2 and 3, then the second squeeze.

    >>> n = 2**300 + 5
    >>> pow_hash_from_midstate(nonce_midstate(bytes(32), n), n) == pow_hash(bytes(32), n)
    True
    """
    _check_nonce(nonce)
    low = (nonce & ((1 << 256) - 1)).to_bytes(HALF_NONCE_BYTES, "big")
    state = absorb(absorb(midstate, pack_bytes(low)[:RATE]), FINAL_BLOCK)
    return int.from_bytes(_digest(state) + _digest(permute(state)), "big")
