"""gpu-cuda and gpu-cuda-v2: the `Engine` interface over the CUDA kernels, one or more devices.

`search` runs a chunk as a series of short launches (about `LAUNCH_S` each at the device's measured
rate), polling the cancel flag between them, so a cancel reaches a running device within one launch
(tens of ms). A host thread is bound to one device on its first search (round robin over the devices
that passed warm-up), so an executor with one slot per device drives every device. Every nonce a
kernel reports is re-verified with the reference before it is returned.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import attrs
import numpy as np

from ...core import qpow, qpow2
from ...core.outcomes import ChunkOutcome, ConsensusError, verified, verified_v2
from ..base import PreparedJob, new_cancel_flag
from . import simulated

log = logging.getLogger("quantus_miner")

LAUNCH_S = 0.025  # target seconds per launch: the cancel latency's bound, and small next to the launch cost
THREADS_PER_BLOCK = 256
BLOCKS_PER_SM = 4
MAX_LAUNCH = 1 << 31  # nonces per launch, whatever the rate says
# The simulator runs each CUDA thread as a Python thread: a small grid, tiny launches.
SIM_GRID = (2, 4)
SIM_MAX_LAUNCH = 16
LOW_MASK = (1 << 256) - 1


def _limbs32(x: int) -> np.ndarray:
    return np.array([(x >> (32 * i)) & 0xFFFF_FFFF for i in range(16)], dtype=np.uint64)


def to_be_words(x: int) -> np.ndarray:
    """8 big-endian 64-bit words of a 512-bit integer, most significant first (as the CPU engines' `limbs`)."""
    return np.array([(x >> (64 * (7 - w))) & ((1 << 64) - 1) for w in range(8)], dtype=np.uint64)


def _limbs64(x: int, count: int = 4) -> np.ndarray:
    return np.array([(x >> (64 * i)) & ((1 << 64) - 1) for i in range(count)], dtype=np.uint64)


@attrs.define
class Device:
    index: int
    label: str  # e.g. "NVIDIA H200 (sm_90, 132 SMs)" or "CUDA simulator"
    blocks: int
    threads: int  # per block
    max_launch: int
    rate: float | None = None  # nonces/s measured on the last launches (EMA)

    @property
    def grid(self) -> int:
        return self.blocks * self.threads

    def launch_size(self) -> int:
        if self.rate is None:
            return min(self.max_launch, 4 * self.grid)
        return max(self.grid, min(self.max_launch, int(self.rate * LAUNCH_S)))

    def measured(self, nonces: int, seconds: float) -> None:
        if seconds > 0:
            instant = nonces / seconds
            self.rate = instant if self.rate is None else 0.5 * self.rate + 0.5 * instant


def discover(wanted: int | None) -> list[Device]:
    """The devices to use: the first `wanted` (None: all); the simulator is one small device."""
    from numba import cuda

    if simulated():
        return [Device(0, "CUDA simulator", SIM_GRID[0], SIM_GRID[1], SIM_MAX_LAUNCH)]
    devices = []
    for gpu in list(cuda.gpus)[:wanted]:
        with gpu:
            dev = cuda.get_current_device()
            sms = dev.MULTIPROCESSOR_COUNT
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            cc = "".join(map(str, dev.compute_capability))
            devices.append(Device(gpu.id, f"{name} (sm_{cc}, {sms} SMs)", sms * BLOCKS_PER_SM, THREADS_PER_BLOCK,
                                  MAX_LAUNCH))
    return devices


@attrs.define
class GpuEngine:
    """What gpu-cuda and gpu-cuda-v2 share: devices, thread binding, launch loop, warm-up."""

    wanted: int | None = None  # --gpu-devices: a count (forced: every one must pass) or None for all
    devices: list[Device] = attrs.field(factory=list)  # set by warm-up: those that passed the self-test
    _local: threading.local = attrs.field(factory=threading.local)
    _next: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def device(self) -> str:
        """The devices in use, in words (/health, bench --json)."""
        if not self.devices:
            return "not warmed up"
        labels = [d.label for d in self.devices]
        return labels[0] if len(set(labels)) == 1 and len(labels) == 1 else \
            f"{len(labels)} x " + ", ".join(sorted(set(labels)))

    def device_labels(self) -> list[str]:
        """One label per device in use: `gpu<i>` (metric label values, bounded by the devices present)."""
        return [f"gpu{d.index}" for d in self.devices]

    def for_slot(self, slot: int) -> SlotEngine:
        """This engine bound to device `slot` mod the device count: an executor's slot `slot` searches there."""
        if not self.devices:
            self.warm_up()
        return SlotEngine(self, self.devices[slot % len(self.devices)])

    def _bound(self) -> Device:
        dev = getattr(self._local, "device", None)
        if dev is None:
            if not self.devices:
                self.warm_up()
            with self._lock:
                dev = self.devices[self._next % len(self.devices)]
                self._next += 1
            self._local.device = dev
        return dev

    def _context(self, dev: Device):
        from numba import cuda

        if simulated():
            return contextlib.nullcontext()
        return cuda.gpus[dev.index]

    def _launch(self, dev: Device, kernel, args, count: int) -> int:
        """One launch over `count` nonces; the lowest hit offset or -1 (measures the device's rate)."""
        from numba import cuda

        from . import kernels

        t0 = time.monotonic()
        # explicit copies (a few hundred bytes): numba-cuda would warn on every implicit one
        args = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
        found = cuda.to_device(np.full(1, kernels.NOT_FOUND, dtype=np.int64))
        kernel[dev.blocks, dev.threads](*args, count, found)
        offset = int(found.copy_to_host()[0])  # waits for the kernel
        if offset == kernels.NOT_FOUND:
            dev.measured(count, time.monotonic() - t0)
            return -1
        return offset

    def warm_up(self) -> None:
        """Find the devices, compile the kernel and self-test on each; a failing device is dropped with one
        warning (with --gpu-devices N, any failure stops the start: `ConsensusError`)."""
        if self.devices:
            return
        candidates = discover(self.wanted)
        if self.wanted is not None and len(candidates) < self.wanted:
            raise ConsensusError(f"--gpu-devices {self.wanted}: only {len(candidates)} CUDA device(s) present")
        passed = []
        for dev in candidates:
            self.devices = [dev]
            self._local.device = dev
            try:
                failure = self.self_test()
            except Exception as exc:  # a device or kernel that cannot even run is a failed device
                failure = f"{type(exc).__name__}: {exc}"
            finally:
                self._local.device = None
            if failure is None:
                passed.append(dev)
            elif self.wanted is not None:
                self.devices = []
                raise ConsensusError(f"{self.name} failed its self-test on device {dev.index} ({dev.label}): "
                                     f"{failure}")
            else:
                log.warning("%s: device %d (%s) failed its self-test, not used: %s", self.name, dev.index,
                            dev.label, failure)
        if not passed:
            self.devices = []
            raise ConsensusError(f"{self.name}: no CUDA device passed the self-test")
        self.devices = passed

    def self_test(self) -> str | None:  # pragma: no cover - each engine has its own
        raise NotImplementedError

    def check(self, header: bytes, bound: int, lo: int, hi: int) -> str | None:
        """Search [lo, hi] on the bound device; None if the outcome is exactly the reference's (nonce by nonce)."""
        got = self.search(self.prepare_header(header, bound), lo, hi, new_cancel_flag())
        want = next((k for k in range(lo, hi + 1) if self.valid(header, bound, k)), None)
        expected = ChunkOutcome(hi - lo + 1) if want is None else \
            ChunkOutcome(want - lo + 1, self.verify(header, bound, want))
        return None if got == expected else f"range [{lo:#x}, {hi:#x}] bound {bound:#x}: got {got}, want {expected}"


@attrs.define
class SlotEngine:
    """A GPU engine pinned to one device (one executor slot); otherwise the engine itself."""

    engine: GpuEngine
    dev: Device

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        self.engine._local.device = self.dev  # the calling thread searches on this slot's device
        return self.engine.search(job, start, end, flag)


# ---------------------------------------------------------------------------------------------
# QPoW v1


@attrs.frozen
class V1Constants:
    n: int
    m: int
    ninv: np.uint64
    target: np.ndarray  # 8 big-endian words
    threshold: np.ndarray
    consts: np.ndarray  # rows: n, stride m^T R, then m^(2^k) R for k < levels (in 32-bit limbs)
    levels: int
    first_saturated: int
    y_saturated: int


@attrs.define
class CudaV1Engine(GpuEngine):
    name: str = "gpu-cuda"
    pow: str = "v1"
    kernel: str = "cuda-mont32-keccak"

    def prepare(self, ctx: qpow.JobContext, threshold: int) -> PreparedJob:
        dev = self._bound()
        n, m, radix = ctx.n, ctx.m, 1 << 512
        levels = max(1, (dev.grid - 1).bit_length())
        rows = [_limbs32(n), _limbs32(pow(m, dev.grid, n) * radix % n)]
        rows += [_limbs32(pow(m, 1 << k, n) * radix % n) for k in range(levels)]
        constants = V1Constants(
            n=n, m=m, ninv=np.uint64((-pow(n, -1, 1 << 32)) % (1 << 32)),
            target=to_be_words(ctx.target), threshold=to_be_words(min(threshold, qpow.MAX_U512)),
            consts=np.stack(rows), levels=levels,
            first_saturated=qpow.MAX_U512 - ctx.h + 1, y_saturated=pow(m, qpow.MAX_U512, n),
        )
        return PreparedJob(ctx, threshold, (dev.grid, constants))

    def prepare_header(self, header: bytes, bound: int) -> PreparedJob:
        return self.prepare(qpow.JobContext.from_header(header), bound)

    def verify(self, header: bytes, bound: int, nonce: int):
        return verified(qpow.JobContext.from_header(header), bound, nonce)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        dev = self._bound()
        grid, c = job.constants
        if grid != dev.grid:  # prepared for another device's grid (devices of different sizes)
            grid, c = self.prepare(job.ctx, job.threshold).constants
        ctx = job.ctx
        tested = 0
        if start == 0:  # never valid; counted so a range's tested total equals its size
            tested, start = 1, 1
        if start > end:
            return ChunkOutcome(tested)
        fast_end = min(end, c.first_saturated - 1)
        if start <= fast_end:
            from . import kernels

            cursor, y = start, pow(c.m, ctx.h + start, c.n)
            with self._context(dev):
                while cursor <= fast_end:
                    if flag[0]:
                        return ChunkOutcome(tested, cancelled=True)
                    count = min(fast_end - cursor + 1, dev.launch_size())
                    offset = self._launch(dev, kernels.scan_v1, (_limbs32(y), c.consts, c.levels, c.ninv, c.target,
                                                                 c.threshold), count)
                    if offset >= 0:
                        return ChunkOutcome(tested + offset + 1, verified(ctx, job.threshold, cursor + offset))
                    tested += count
                    cursor += count
                    y = y * pow(c.m, count, c.n) % c.n
        tail_start = max(start, c.first_saturated)
        if tail_start <= end:
            # every nonce here has the same y, hence the same distance: decide the tail at once
            if qpow.distance_of_y(ctx, c.y_saturated) <= job.threshold:
                return ChunkOutcome(tested + 1, verified(ctx, job.threshold, tail_start))
            tested += end - tail_start + 1
        return ChunkOutcome(tested)

    def self_test(self) -> str | None:
        """Known answers, small enough for the simulator: the published vector (4330 at MAX // 5000 for the
        zero header), nonce 0, and the 2^64 and saturation crossings checked nonce by nonce."""
        zero, easy = bytes(32), qpow.MAX_U512 // 5000
        if qpow.distance(qpow.JobContext.from_header(zero), 4330) > easy:  # the published vector itself
            return "reference disagrees with the published vector (nonce 4330)"
        checks = [(zero, easy, 4325, 4334), (zero, easy, 4331, 4336), (zero, qpow.MAX_U512, 0, 3)]
        bench = qpow.JobContext.from_header(bytes(range(32)))
        saturated = qpow.MAX_U512 - bench.h + 1
        for lo, hi in ((2**64 - 3, 2**64 + 2), (saturated - 3, saturated + 1)):
            best = min(qpow.distance(bench, k) for k in range(lo, hi + 1))
            checks += [(bench.header, best, lo, hi), (bench.header, best - 1, lo, hi)]
        return next((f for args in checks if (f := self.check(*args))), None)

    @staticmethod
    def valid(header: bytes, bound: int, nonce: int) -> bool:
        return qpow.is_valid(qpow.JobContext.from_header(header), nonce, bound)


# ---------------------------------------------------------------------------------------------
# QPoW v2


@attrs.frozen
class V2Context:
    header: bytes
    header_state: tuple[int, ...]  # the sponge after block 0, once per job
    target: np.ndarray  # 8 big-endian words: high half, then low half


@attrs.define
class CudaV2Engine(GpuEngine):
    name: str = "gpu-cuda-v2"
    pow: str = "v2"
    kernel: str = "cuda-poseidon2-midstate-lazy-h2"

    def prepare(self, header: bytes, target: int) -> PreparedJob:
        if len(header) != 32:
            raise ValueError("header must be 32 bytes")
        if not 0 <= target <= qpow2.MAX_U512:
            raise ValueError("target must be in [0, 2^512 - 1]")
        return PreparedJob(V2Context(header, qpow2.header_midstate(header), to_be_words(target)), target)

    def prepare_header(self, header: bytes, bound: int) -> PreparedJob:
        return self.prepare(header, bound)

    def verify(self, header: bytes, bound: int, nonce: int):
        return verified_v2(header, bound, nonce)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        from . import kernels

        if not 0 <= start <= qpow2.MAX_U512 or not 0 <= end <= qpow2.MAX_U512:
            raise ValueError("nonces must be in [0, 2^512 - 1]")
        dev = self._bound()
        ctx: V2Context = job.ctx
        tested, cursor = 0, start
        with self._context(dev):
            while cursor <= end:
                # one midstate per 2^256-aligned segment: it changes with the nonce's high half
                last = min(end, cursor | LOW_MASK)
                high = (cursor >> 256).to_bytes(32, "big")
                mid = np.array(qpow2.absorb(ctx.header_state, qpow2.pack_bytes(high)[: qpow2.RATE]), dtype=np.uint64)
                while cursor <= last:
                    if flag[0]:
                        return ChunkOutcome(tested, cancelled=True)
                    count = min(last - cursor + 1, dev.launch_size())
                    offset = self._launch(dev, kernels.scan_v2, (mid, _limbs64(cursor & LOW_MASK), cursor >> 256 == 0,
                                                                 ctx.target), count)
                    if offset >= 0:
                        return ChunkOutcome(tested + offset + 1, verified_v2(ctx.header, job.threshold, cursor + offset))
                    tested += count
                    cursor += count
        return ChunkOutcome(tested)

    def self_test(self) -> str | None:
        """Known answers, small enough for the simulator: the published vector (7414 at difficulty 5000 for
        the zero header), nonce 0, the 2^256 crossing where the midstate changes, and a target tying h1
        (the lazy second squeeze decides, both ways)."""
        zero = bytes(32)
        if not qpow2.is_valid(zero, 7414, 5000):  # the published vector itself
            return "reference disagrees with the published vector (nonce 7414)"
        checks = [(zero, qpow2.target_of(5000), 7410, 7416), (zero, qpow2.MAX_U512, 0, 2)]
        lo, hi = 2**256 - 2, 2**256 + 1
        best = min(qpow2.pow_hash(zero, k) for k in range(lo, hi + 1))
        checks += [(zero, best + 1, lo, hi), (zero, best, lo, hi)]
        return next((f for args in checks if (f := self.check(*args))), None)

    @staticmethod
    def valid(header: bytes, bound: int, nonce: int) -> bool:
        return qpow2.is_valid(header, nonce, target=bound)


__all__ = ["CudaV1Engine", "CudaV2Engine", "Device", "GpuEngine", "LAUNCH_S", "SlotEngine"]
