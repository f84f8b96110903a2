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

import trio
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..core.config import ENGINE_NAMES
from ..core.jobs import END_STATUSES, STATUSES, JobSnapshot, JobStatus
from ..pipeline.runtime import MinerRuntime, RuntimeStatistics

MINE_RESULTS = ("accepted", "duplicate", "invalid", "error")


class JobCollector:
    """Collects the runtime's families: totals from its statistics, job series from its job snapshots."""

    def __init__(self, runtime: MinerRuntime):
        self._runtime = runtime
        # set while a worker thread renders (see `render`): state read on the trio thread
        self.pinned: tuple[RuntimeStatistics, list[JobSnapshot]] | None = None

    def read(self) -> tuple[RuntimeStatistics, list[JobSnapshot]]:
        return self._runtime.statistics(), self._runtime.metric_snapshots()

    def describe(self):
        return []  # families are built from live state at collect time

    def collect(self):
        stats, snapshots = self.pinned if self.pinned is not None else self.read()
        created = stats.started_at
        hashes = CounterMetricFamily("miner_hashes", "Nonces tested, all jobs", created=created)
        hashes.add_metric([], stats.hashes, created=created)
        jobs = CounterMetricFamily("miner_jobs", "Jobs that reached an end status", labels=["status"])
        by_engine = CounterMetricFamily("miner_jobs_by_engine", "Jobs that reached an end status, per engine",
                                        labels=["engine", "status"])
        engines = dict.fromkeys([*ENGINE_NAMES, *(engine for engine, _ in stats.ended)])
        for status in END_STATUSES:
            jobs.add_metric([status], sum(n for (_, s), n in stats.ended.items() if s == status), created=created)
            for engine in engines:
                by_engine.add_metric([engine, status], stats.ended.get((engine, str(status)), 0), created=created)
        yield from (hashes, jobs, by_engine)
        hash_rate = GaugeMetricFamily("miner_hash_rate", "Sum of running jobs' hash rates (nonces/s)")
        active = GaugeMetricFamily("miner_active_jobs", "Jobs in state running")
        job_hashes = CounterMetricFamily("miner_job_hashes", "Nonces tested per job", labels=["engine", "job_id"])
        job_rate = GaugeMetricFamily("miner_job_hash_rate", "Sum of the job's worker EMAs (nonces/s)",
                                     labels=["engine", "job_id"])
        job_status = GaugeMetricFamily("miner_job_status", "1 for the job's current status",
                                       labels=["engine", "job_id", "status"])
        thread_hashes = CounterMetricFamily("miner_thread_hashes", "Nonces tested per worker",
                                            labels=["engine", "job_id", "thread_id"])
        thread_rate = GaugeMetricFamily("miner_thread_hash_rate", "EMA of the worker's delta rate (nonces/s)",
                                        labels=["engine", "job_id", "thread_id"])
        total_rate, running = 0.0, 0
        for snap in snapshots:
            labels = [snap.engine, snap.job_id]
            job_hashes.add_metric(labels, snap.hash_count)
            for status in STATUSES:
                job_status.add_metric([*labels, status], 1.0 if snap.status == status else 0.0)
            for w in snap.workers:
                thread_hashes.add_metric([*labels, str(w.worker)], w.hashes)
            if snap.status is not JobStatus.RUNNING:
                continue  # remove-on-end: no rate series for an ended job
            running += 1
            total_rate += snap.rate
            job_rate.add_metric(labels, snap.rate)
            for w in snap.workers:
                if w.rate is not None and not w.finished:
                    thread_rate.add_metric([*labels, str(w.worker)], w.rate)
        hash_rate.add_metric([], total_rate)
        active.add_metric([], running)
        yield from (hash_rate, active, job_hashes, job_rate, job_status, thread_hashes, thread_rate)


class ClusterCollector:
    """Cluster-mode families, read from the executor's `ClusterStats` at scrape time.

    Per-worker series carry the worker's name and vanish when it leaves: bounded by the cluster's
    size (and by `MAX_WORKER_SERIES` whatever that is).
    """

    def __init__(self, stats: Callable):  # -> cluster.executor.ClusterStats
        self._stats = stats

    def describe(self):
        return []

    def collect(self):
        stats = self._stats()
        connected = GaugeMetricFamily("miner_cluster_connected", "1 while the Dask scheduler answers")
        connected.add_metric([], 1.0 if stats.connected else 0.0)
        workers = GaugeMetricFamily("miner_cluster_workers", "Dask workers in the cluster")
        workers.add_metric([], stats.worker_count)
        threads = GaugeMetricFamily("miner_cluster_threads", "Mining threads of all Dask workers")
        threads.add_metric([], stats.threads)
        chunks = CounterMetricFamily("miner_cluster_chunks", "Chunk tasks completed on the cluster")
        chunks.add_metric([], stats.chunks)
        retried = CounterMetricFamily("miner_cluster_chunks_retried",
                                      "Chunks Dask re-ran on another worker after their worker was lost")
        retried.add_metric([], stats.retried)
        rate = GaugeMetricFamily("miner_cluster_worker_hash_rate",
                                 "A worker's measured nonces/s (its threads' EMA rate x threads)", labels=["worker"])
        hashes = CounterMetricFamily("miner_cluster_worker_hashes", "Nonces counted from a worker's chunks",
                                     labels=["worker"])
        for w in stats.workers:
            rate.add_metric([w.name], w.rate)
            hashes.add_metric([w.name], w.hashes)
        yield from (connected, workers, threads, chunks, retried, rate, hashes)


class MinerMetrics:
    """The miner's metric set on a caller-supplied registry (never the global one)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.mine_requests = Counter("miner_mine_requests", "/mine outcomes", ["result"], registry=registry)
        self.http_requests = Counter("miner_http_requests", "API requests by route template and status code",
                                     ["endpoint", "code"], registry=registry)
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
