"""Prometheus metrics (docs/metrics.md): service counters plus job series read from job snapshots at scrape time.

Job-labelled series come from the runtime's job snapshots on every scrape, so they match
`/result` exactly, rate series vanish the moment a job or worker ends, and everything about
a job disappears when the job is forgotten: series stay bounded under endless churn.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = MinerMetrics(registry)
>>> m.observe(lambda: [])
>>> registry.get_sample_value("miner_active_jobs"), registry.get_sample_value("miner_hashes_total")
(0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..cluster.executor import ClusterStats
from ..core.config import ENGINE_NAMES
from ..core.jobs import END_STATUSES, STATUSES, JobSnapshot, JobStatus

MINE_RESULTS = ("accepted", "duplicate", "invalid", "error")


class JobCollector:
    """Collects the job-labelled families and the two live gauges from job snapshots."""

    def __init__(self, snapshots: Callable[[], list[JobSnapshot]]):
        self._snapshots = snapshots
        self.pinned: list[JobSnapshot] | None = None  # set while a worker thread renders (see `render`)

    def describe(self):
        return []  # families are built from live state at collect time

    def collect(self):
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
        for snap in self.pinned if self.pinned is not None else self._snapshots():
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

    def __init__(self, stats: Callable[[], ClusterStats]):
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


class DeviceCollector:
    """GPU engines: per-device families, read at scrape time; one series per device in use (bounded by the
    devices present, at most `MAX_DEVICE_SERIES`)."""

    def __init__(self, devices: Callable[[], list[tuple[str, str, float]]], kernel: str):
        self._devices = devices
        self._kernel = kernel

    def describe(self):
        return []

    def collect(self):
        rate = GaugeMetricFamily("miner_device_hash_rate", "A GPU's nonces/s: its workers' EMA rates, running jobs",
                                 labels=["device"])
        info = GaugeMetricFamily("miner_device_info", "1 per GPU in use: its name and the kernel it runs",
                                 labels=["device", "name", "kernel"])
        for label, name, value in self._devices()[:MAX_DEVICE_SERIES]:
            rate.add_metric([label], value)
            info.add_metric([label, name, self._kernel], 1.0)
        yield from (rate, info)


MAX_DEVICE_SERIES = 64


class MinerMetrics:
    """The miner's metric set on a caller-supplied registry (never the global one)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.hashes = Counter("miner_hashes", "Nonces tested, all jobs", registry=registry)
        self.jobs = Counter("miner_jobs", "Jobs that reached an end status", ["status"], registry=registry)
        self.jobs_by_engine = Counter("miner_jobs_by_engine", "Jobs that reached an end status, per engine",
                                      ["engine", "status"], registry=registry)
        self.mine_requests = Counter("miner_mine_requests", "/mine outcomes", ["result"], registry=registry)
        self.http_requests = Counter("miner_http_requests", "API requests by route template and status code",
                                     ["endpoint", "code"], registry=registry)
        for status in END_STATUSES:
            self.jobs.labels(status)
            for engine in ENGINE_NAMES:
                self.jobs_by_engine.labels(engine, status)
        for result in MINE_RESULTS:
            self.mine_requests.labels(result)

    def observe(self, snapshots: Callable[[], list[JobSnapshot]]) -> None:
        """Expose the job series of whatever `snapshots()` returns at each scrape."""
        self._collector = JobCollector(snapshots)
        self._render_lock = trio.Lock()
        self.registry.register(self._collector)

    async def render(self) -> bytes:
        """The exposition: job snapshots taken here on the trio thread (consistent, ~1 ms), the text
        formatted in a worker thread (tens of ms of Python that would otherwise stall the API)."""
        async with self._render_lock:
            self._collector.pinned = self._collector._snapshots()
            try:
                return await trio.to_thread.run_sync(generate_latest, self.registry)
            finally:
                self._collector.pinned = None

    def observe_cluster(self, stats: Callable[[], ClusterStats]) -> None:
        """Expose the cluster families (cluster mode only) from whatever `stats()` returns at each scrape."""
        self.registry.register(ClusterCollector(stats))

    def observe_devices(self, devices: Callable[[], list[tuple[str, str, float]]], kernel: str) -> None:
        """Expose the per-device families (GPU engines only) from whatever `devices()` returns at each scrape."""
        self.registry.register(DeviceCollector(devices, kernel))

    def job_ended(self, engine: str, status: str) -> None:
        self.jobs.labels(status).inc()
        self.jobs_by_engine.labels(engine, status).inc()
