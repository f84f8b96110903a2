"""Mine for a 2026 node over QUIC (`quantus-miner connect`): node jobs in, runtime jobs, results out.

Each `NewJob` becomes a runtime job on the same `MinerRuntime` (metrics, chunking, cancel) that
`serve` uses: header = `mining_hash`, bound = the QPoW v2 target `(2^512 - 1) // difficulty`
(carried in the request's `threshold` field), range = [random start, 2^512 - 1]. When the node
sends the next job, the QUIC client cancels this one's scope and `runtime.cancel` sets the kernel
flag: its threads return within milliseconds; the job ends with `Cause.REPLACED` (`NodeMiner.replaced`),
where a lost connection ends it as plain `cancelled`. The job's end becomes the one `JobResult`.

Start nonces: upstream picks a random 512-bit start per worker so that many miners work on one
job uncoordinated. Here the start is drawn uniformly from [1, 2^511] and the range runs to
2^512 - 1: at least 2^511 nonces, which no miner exhausts (so no wrap-around is needed), and
nonce 0 is never in it. The runtime splits the range across the cores.

>>> import random
>>> from quantus_miner.core.quic_messages import NewJob
>>> req = mining_request(NewJob("17", bytes(32), 1000), "17", random.Random(1))
>>> req.threshold == (2**512 - 1) // 1000, 1 <= req.nonce_start <= 2**511, req.nonce_end == 2**512 - 1
(True, True, True)
"""

from __future__ import annotations

import logging
import random

import attrs
import trio
from prometheus_client import CollectorRegistry

from ..core.bounds import Bound
from ..core.config import ServiceConfig
from ..core.job_ids import usable_job_id
from ..core.jobs import Cause
from ..core.qpow import MAX_U512
from ..core.quic_messages import NewJob, show_id
from ..core.requests import MineRequest, Refused
from ..pipeline.runtime import MinerRuntime
from ..quic import tls
from ..quic.client import AuthFailed, JobOutcome, StatusHook, run_miner_client
from ..quic.transport import PinMismatch
from .compose import open_executor, start_engine, start_pipeline, where
from .server import bind, hypercorn_config, serve_metrics, tune_gc
from .speedlog import log_speed

log = logging.getLogger("quantus_miner")

START_MAX = 1 << 511  # random starts lie in [1, START_MAX]: the range to 2^512 - 1 never runs out

__all__ = ["AuthFailed", "NodeMiner", "PinMismatch", "connect_miner", "mining_request"]


def mining_request(job: NewJob, runtime_id: str, rng: random.Random) -> MineRequest:
    """The runtime job for a node job (see the module docstring for the start nonce)."""
    start = rng.randint(1, START_MAX)
    return MineRequest(runtime_id, job.mining_hash, Bound.difficulty(job.difficulty).value, start, MAX_U512)


@attrs.define
class NodeMiner:
    """Runs node jobs on a runtime: the `on_new_job` callback of the QUIC client."""

    runtime: MinerRuntime
    rng: random.Random = attrs.field(factory=random.SystemRandom)
    _seq: int = 0
    _mining: dict[int, str] = attrs.field(factory=dict)  # id(node job) -> runtime id, while its call runs

    def _runtime_id(self, job_id: str) -> str:
        """The node's id when the runtime can carry it (metrics label, logs), else a fresh alias.

        Aliases are `<id>~<n>` (or `job~<n>` for an id the runtime cannot carry: controls,
        spaces, over 128 characters). `~` is outside the ids used verbatim (`usable_job_id`),
        and `n` counts up, so an alias never equals a node id nor an earlier alias.
        """
        if usable_job_id(job_id) and self.runtime.result(job_id) is None:
            return job_id
        prefix = job_id if usable_job_id(job_id) else "job"
        while True:  # the runtime keeps finished ids for a while; step past any it still holds
            self._seq += 1
            alias = f"{prefix}~{self._seq}"
            if self.runtime.result(alias) is None:
                return alias

    def replaced(self, job: NewJob) -> None:
        """The node superseded `job` with a newer NewJob: end it as replaced (the client's `on_replaced`)."""
        if (rid := self._mining.get(id(job))) is not None:
            self.runtime.cancel(rid, Cause.REPLACED)

    async def __call__(self, job: NewJob) -> JobOutcome:
        """Mine `job` on the runtime until it ends; its outcome is the node's JobResult."""
        rid = self._runtime_id(job.job_id)
        if rid != job.job_id:
            log.info("job %s runs as %s", show_id(job.job_id), rid)
        try:
            self.runtime.submit(mining_request(job, rid, self.rng))
        except Refused as exc:
            log.error("job %s refused by the runtime: %s", show_id(job.job_id), exc)
            return JobOutcome("error")
        self._mining[id(job)] = rid
        try:
            await self.runtime.wait_ended(rid)
        finally:
            del self._mining[id(job)]
            # disconnected (Cancelled; a replaced job ended already): stop the kernels at once
            self.runtime.cancel(rid)
        snap = self.runtime.result(rid)
        if snap is None:  # forgotten already (retention 0): nothing to report but the fact
            return JobOutcome("error")
        return JobOutcome.of(snap)


@attrs.frozen
class RunningNodeMiner:
    """What `connect_miner` hands back once ready."""
    metrics_url: str | None
    runtime: MinerRuntime
    registry: CollectorRegistry


async def connect_miner(
    config: ServiceConfig,
    *,
    registry: CollectorRegistry | None = None,
    on_status: StatusHook | None = None,
    backoff: tuple[float, float] = (1.0, 30.0),
    ping_interval: float | None = 5.0,
    idle_timeout: float = 60.0,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Mine the node's jobs until cancelled; raise AuthFailed / PinMismatch (permanent) or
    tls.CredentialError (unreadable files). `nursery.start` hands back a `RunningNodeMiner`."""
    if not (config.node_addr and config.auth_token_file and config.tls_cert_sha256_file):
        raise ValueError("connect needs node_addr, auth_token_file and tls_cert_sha256_file")
    token = tls.read_token_file(config.auth_token_file)
    pin = tls.read_pin_file(config.tls_cert_sha256_file)
    engine, rate, config, beside = await start_engine(config)
    registry = registry if registry is not None else CollectorRegistry()
    metrics_config = (hypercorn_config(config.host, config.metrics_port, config.idle_timeout_s)
                      if config.metrics_port is not None else None)
    metrics_sockets = bind(metrics_config, "metrics") if metrics_config else None
    executor = await open_executor(config, engine, rate, (metrics_sockets,))
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        runtime, metrics = await start_pipeline(nursery, config, engine, rate, executor, registry, beside)
        metrics_url = None
        if metrics_sockets is not None:
            metrics_url = await serve_metrics(nursery, config, metrics, metrics_config, metrics_sockets)
        if config.log_speed_s > 0:
            nursery.start_soon(log_speed, runtime, config.log_speed_s)
        log.info("ready: engine %s (%s) on %s; warm-up probe %.0f nonces/s on one core (sizes first "
                 "chunks; not the mining rate, see the speed line); node %s:%d%s", engine.name, engine.kernel,
                 where(config, runtime), rate, *config.node_addr, f", metrics {metrics_url}" if metrics_url else "")
        tune_gc()
        task_status.started(RunningNodeMiner(metrics_url, runtime, registry))
        try:
            miner = NodeMiner(runtime)
            await run_miner_client(config.node_addr, token, pin, miner, backoff=backoff, ping_interval=ping_interval,
                                   idle_timeout=idle_timeout, on_status=on_status, on_replaced=miner.replaced)
        except (AuthFailed, PinMismatch) as exc:  # handed out plainly, not in an ExceptionGroup
            failure = exc
        runtime.stop_all()
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
