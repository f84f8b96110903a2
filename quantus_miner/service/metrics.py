"""Prometheus metrics (docs/metrics.md), pulled at scrape time: the runtime knows nothing of Prometheus.

Job-labelled series come from the runtime's job snapshots on every scrape, so they match
`/result` exactly, rate series vanish the moment a job or worker ends, and everything about
a job disappears when the job is forgotten: series stay bounded under endless churn. The
runtime's totals (nonces, ended jobs) are read from its `statistics()`; only the HTTP layer
counts its own requests here.

>>> from prometheus_client import CollectorRegistry
>>> from quantus_miner.core.config import ServiceConfig
>>> from quantus_miner.engines import get_engine
>>> from quantus_miner.pipeline.runtime import MinerRuntime
>>> registry = CollectorRegistry()
>>> m = MinerMetrics(registry)
>>> m.observe(MinerRuntime(ServiceConfig(cores=1), get_engine("cpu-baseline")))
>>> registry.get_sample_value("miner_active_jobs"), registry.get_sample_value("miner_hashes_total")
(0, 0)
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..core.config import ENGINE_NAMES
from ..core.jobs import END_STATUSES, STATUSES, JobSnapshot, JobStatus
from ..pipeline.runtime import MinerRuntime, RuntimeStatistics

MINE_RESULTS = ("accepted", "duplicate", "invalid", "error")


@attrs.frozen
class Family:
    """One metric family: the collectors, `describe()`, docs/metrics.md and the tests read this table."""

    name: str  # without `_total`
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...] = ()
    only: str | None = None  # "cluster" or "gpu": registered in that mode only

    def new(self, created: float | None = None):
        """An empty family to add samples to."""
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels, created=created)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)


J, T = ("engine", "job_id"), ("engine", "job_id", "thread_id")
FAMILIES = {f.name: f for f in (
    Family("miner_hashes", "counter", "Nonces tested, all jobs"),
    Family("miner_hash_rate", "gauge", "Sum of running jobs' hash rates (nonces/s)"),
    Family("miner_jobs", "counter", "Jobs that reached an end status", ("status",)),
    Family("miner_jobs_by_engine", "counter", "Jobs that reached an end status, per engine", ("engine", "status")),
    Family("miner_active_jobs", "gauge", "Jobs in state running"),
    Family("miner_mine_requests", "counter", "/mine outcomes", ("result",)),
    Family("miner_http_requests", "counter", "API requests by route template and status code", ("endpoint", "code")),
    Family("miner_job_hashes", "counter", "Nonces tested per job", J),
    Family("miner_job_hash_rate", "gauge", "Sum of the job's worker EMAs (nonces/s)", J),
    Family("miner_job_status", "gauge", "1 for the job's current status", (*J, "status")),
    Family("miner_thread_hashes", "counter", "Nonces tested per worker", T),
    Family("miner_thread_hash_rate", "gauge", "EMA of the worker's delta rate (nonces/s)", T),
    Family("miner_cluster_connected", "gauge", "1 while the Dask scheduler answers", only="cluster"),
    Family("miner_cluster_workers", "gauge", "Dask workers in the cluster", only="cluster"),
    Family("miner_cluster_threads", "gauge", "Mining threads of all Dask workers", only="cluster"),
    Family("miner_cluster_chunks", "counter", "Chunk tasks completed on the cluster", only="cluster"),
    Family("miner_cluster_chunks_retried", "counter",
           "Chunks Dask re-ran on another worker after their worker was lost", only="cluster"),
    Family("miner_cluster_worker_hash_rate", "gauge",
           "A worker's measured nonces/s (its threads' EMA rate x threads)", ("worker",), only="cluster"),
    Family("miner_cluster_worker_hashes", "counter", "Nonces counted from a worker's chunks", ("worker",),
           only="cluster"),
    Family("miner_device_hash_rate", "gauge", "A GPU's nonces/s: its workers' EMA rates, running jobs", ("device",),
           only="gpu"),
    Family("miner_device_info", "gauge", "1 per GPU in use: its name and the kernel it runs",
           ("device", "name", "kernel"), only="gpu"),
)}
RUNTIME = ("miner_hashes", "miner_jobs", "miner_jobs_by_engine", "miner_hash_rate", "miner_active_jobs",
           "miner_job_hashes", "miner_job_hash_rate", "miner_job_status", "miner_thread_hashes",
           "miner_thread_hash_rate")
CLUSTER = tuple(name for name, f in FAMILIES.items() if f.only == "cluster")
DEVICES = tuple(name for name, f in FAMILIES.items() if f.only == "gpu")


def describe(names: tuple[str, ...]) -> list:
    """Empty families of `names` (what a collector's describe() returns)."""
    return [FAMILIES[n].new() for n in names]


class JobCollector:
    """Collects the runtime's families: totals from its statistics, job series from its job snapshots."""

    def __init__(self, runtime: MinerRuntime):
        self._runtime = runtime
        # set while a worker thread renders (see `render`): state read on the trio thread
        self.pinned: tuple[RuntimeStatistics, list[JobSnapshot]] | None = None

    def read(self) -> tuple[RuntimeStatistics, list[JobSnapshot]]:
        """The runtime's statistics and job snapshots, read at scrape time."""
        return self._runtime.statistics(), self._runtime.metric_snapshots()

    def describe(self):
        """The runtime's families."""
        return describe(RUNTIME)

    def collect(self):
        """The runtime's families with their samples as of this scrape."""
        stats, snapshots = self.pinned if self.pinned is not None else self.read()
        created = stats.started_at
        f = {name: FAMILIES[name].new(created) for name in RUNTIME}
        f["miner_hashes"].add_metric([], stats.hashes, created=created)
        engines = dict.fromkeys([*ENGINE_NAMES, *(engine for engine, _ in stats.ended)])
        for status in END_STATUSES:
            f["miner_jobs"].add_metric([status], sum(n for (_, s), n in stats.ended.items() if s == status),
                                       created=created)
            for engine in engines:
                f["miner_jobs_by_engine"].add_metric([engine, status], stats.ended.get((engine, str(status)), 0),
                                                     created=created)
        total_rate, running = 0.0, 0
        for snap in snapshots:
            labels = [snap.engine, snap.job_id]
            f["miner_job_hashes"].add_metric(labels, snap.hash_count)
            for status in STATUSES:
                f["miner_job_status"].add_metric([*labels, status], 1.0 if snap.status == status else 0.0)
            for w in snap.workers:
                f["miner_thread_hashes"].add_metric([*labels, str(w.worker)], w.hashes)
            if snap.status is not JobStatus.RUNNING:
                continue  # remove-on-end: no rate series for an ended job
            running += 1
            total_rate += snap.rate
            f["miner_job_hash_rate"].add_metric(labels, snap.rate)
            for w in snap.workers:
                if w.rate is not None and not w.finished:
                    f["miner_thread_hash_rate"].add_metric([*labels, str(w.worker)], w.rate)
        f["miner_hash_rate"].add_metric([], total_rate)
        f["miner_active_jobs"].add_metric([], running)
        yield from f.values()


class ClusterCollector:
    """Cluster-mode families, read from the executor's `ClusterStats` at scrape time.

    Per-worker series carry the worker's name and vanish when it leaves: bounded by the cluster's
    size (and by `MAX_WORKER_SERIES` whatever that is).
    """

    def __init__(self, stats: Callable):  # -> cluster.executor.ClusterStats
        self._stats = stats

    def describe(self):
        """The cluster's families."""
        return describe(CLUSTER)

    def collect(self):
        """The cluster's families with their samples as of this scrape."""
        stats = self._stats()
        f = {name: FAMILIES[name].new() for name in CLUSTER}
        for name, value in (("miner_cluster_connected", 1.0 if stats.connected else 0.0),
                            ("miner_cluster_workers", stats.worker_count), ("miner_cluster_threads", stats.threads),
                            ("miner_cluster_chunks", stats.chunks), ("miner_cluster_chunks_retried", stats.retried)):
            f[name].add_metric([], value)
        for w in stats.workers:
            f["miner_cluster_worker_hash_rate"].add_metric([w.name], w.rate)
            f["miner_cluster_worker_hashes"].add_metric([w.name], w.hashes)
        yield from f.values()


class DeviceCollector:
    """GPU engines: per-device families, read at scrape time; one series per device in use (bounded by the
    devices present, at most `MAX_DEVICE_SERIES`)."""

    def __init__(self, devices: Callable[[], list[tuple[str, str, float]]], kernel: str):
        self._devices = devices
        self._kernel = kernel

    def describe(self):
        """The GPU devices' families."""
        return describe(DEVICES)

    def collect(self):
        """The GPU devices' families with their samples as of this scrape."""
        rate, info = (FAMILIES[name].new() for name in DEVICES)
        for label, name, value in self._devices()[:MAX_DEVICE_SERIES]:
            rate.add_metric([label], value)
            info.add_metric([label, name, self._kernel], 1.0)
        yield from (rate, info)


MAX_DEVICE_SERIES = 64


class MinerMetrics:
    """The miner's metric set on a caller-supplied registry (never the global one)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        mine, http = FAMILIES["miner_mine_requests"], FAMILIES["miner_http_requests"]
        self.mine_requests = Counter(mine.name, mine.help, mine.labels, registry=registry)
        self.http_requests = Counter(http.name, http.help, http.labels, registry=registry)
        for result in MINE_RESULTS:
            self.mine_requests.labels(result)

    def observe(self, runtime: MinerRuntime) -> None:
        """Expose `runtime`'s totals and job series, read at each scrape."""
        self._collector = JobCollector(runtime)
        self._render_lock = trio.Lock()
        self.registry.register(self._collector)

    async def render(self) -> bytes:
        """The exposition: job snapshots taken here on the trio thread (consistent, ~1 ms), the text
        formatted in a worker thread (tens of ms of Python that would otherwise stall the API)."""
        async with self._render_lock:
            self._collector.pinned = self._collector.read()
            try:
                return await trio.to_thread.run_sync(generate_latest, self.registry)
            finally:
                self._collector.pinned = None

    def observe_cluster(self, stats: Callable) -> None:
        """Expose the cluster families (cluster mode only) from whatever `stats()` returns at each scrape."""
        self.registry.register(ClusterCollector(stats))

    def observe_devices(self, devices: Callable[[], list[tuple[str, str, float]]], kernel: str) -> None:
        """Expose the per-device families (GPU engines only) from whatever `devices()` returns at each scrape."""
        self.registry.register(DeviceCollector(devices, kernel))

