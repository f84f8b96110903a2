"""Cluster mode end to end: a real `dask scheduler` and two `quantus-miner worker` processes on 127.0.0.1.

One cluster (scheduler + workers w1, w2, one thread each) is shared by the module; tests that kill a
worker or the scheduler bring it back before they end, and the scheduler test runs last. The miner is
the real service (`serve_miner` with `cluster=`) on port 0, talked to over HTTP. Expected nonces come
from the reference (via the cpu-fast engine, which is checked bit-for-bit against it elsewhere, and
re-checked with `qpow.is_valid` here).
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
import trio

from prometheus_client import CollectorRegistry

from quantus_miner.core import qpow, qpow2
from quantus_miner.core.config import ServiceConfig
from quantus_miner.core.requests import MineRequest
from quantus_miner.engines import get_engine
from quantus_miner.service.compose import open_executor, start_pipeline

from ..support import MAX, ZERO_HEADER, Cluster, free_port, mine_body, run


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_scheduler()
        c.start_worker("w1")
        c.start_worker("w2")
        c.connect()
        c.wait_workers(2)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def first_valid():
    """The first valid nonce from 1 for the zero header at a threshold about 1.5 M tries deep (reference-checked)."""
    threshold = MAX // 1_500_000
    engine = get_engine("cpu-fast")
    ctx = qpow.JobContext.from_header(bytes(32))
    outcome = engine.search(engine.prepare(ctx, threshold), 1, 50_000_000, np.zeros(1, dtype=np.uint8))
    assert outcome.found is not None and qpow.is_valid(ctx, outcome.found.nonce, threshold)
    return threshold, outcome.found.nonce


def body(job_id, threshold, start, end, header=ZERO_HEADER):
    return mine_body(job_id, threshold, start, end, header)


async def wait_status(miner, job_id, *statuses):
    while (b := await miner.result(job_id))["status"] not in statuses:
        await trio.sleep(0.02)
    return b


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_found_nonce_is_the_references_and_result_matches_local_mode(cluster, start_miner, first_valid):
    threshold, nonce = first_valid
    with trio.fail_after(90):
        clustered = await start_miner(cluster=cluster.address, progress_chunk_ms=200)
        local = await start_miner(progress_chunk_ms=200)
        results = {}
        for name, miner in (("cluster", clustered), ("local", local)):
            job = unique(name)
            assert (await miner.client.post("/mine", json=body(job, threshold, 1, nonce))).status_code == 200
            results[name] = await wait_status(miner, job, "completed", "failed")
        c, loc = results["cluster"], results["local"]
        assert c["status"] == "completed" and int(c["nonce"], 16) == nonce == int(loc["nonce"], 16)
        assert c["work"] == loc["work"]
        assert 0 < c["hash_count"] <= nonce  # the one valid nonce of 1..nonce is its last
        assert {k: type(v) for k, v in c.items() if k != "job_id"} == \
            {k: type(v) for k, v in loc.items() if k != "job_id"}
        health = (await clustered.client.get("/health")).json()
        assert health["cluster"] == {"scheduler": cluster.address, "connected": True, "workers": 2, "threads": 2}
        assert "cluster" not in (await local.client.get("/health")).json()


async def test_exhausted_range_counts_every_nonce_once_on_both_workers(cluster, start_miner):
    size = 12_000_000
    with trio.fail_after(90):
        miner = await start_miner(cluster=cluster.address, progress_chunk_ms=200)
        job = unique("exhaust")
        await miner.client.post("/mine", json=body(job, 0, 1, size))
        result = await wait_status(miner, job, "completed", "failed")
        assert result["status"] == "failed" and result["hash_count"] == size
        metrics = await miner.scrape()
        per_worker = {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith("miner_cluster_worker_hashes_total{")}
        assert set(per_worker) == {"w1", "w2"} and sum(per_worker.values()) == size
        assert all(v > 0 for v in per_worker.values())  # both machines mined
        assert "miner_cluster_workers 2.0" in metrics


async def test_worker_killed_mid_job_loses_and_double_counts_nothing(cluster, start_miner):
    size = 30_000_000
    with trio.fail_after(120):
        miner = await start_miner(cluster=cluster.address, progress_chunk_ms=300)
        job = unique("kill")
        await miner.client.post("/mine", json=body(job, 0, 1, size))
        while (await miner.result(job))["hash_count"] < 2_000_000:  # both workers hold chunks by now
            await trio.sleep(0.02)
        await trio.to_thread.run_sync(cluster.kill_worker, "w2")
        result = await wait_status(miner, job, "completed", "failed")
        assert result["status"] == "failed" and result["hash_count"] == size  # exact: nothing lost, nothing twice
        metrics = await miner.scrape()
        retried = next(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("miner_cluster_chunks_retried_total "))
        assert retried >= 1  # w2's chunks were re-run on w1
        assert (await miner.client.get("/health")).json()["cluster"]["workers"] == 1
        cluster.start_worker("w2")
        await trio.to_thread.run_sync(cluster.wait_workers, 2)


async def test_cancel_stops_the_kernel_on_every_worker_within_100_ms(cluster, start_miner):
    with trio.fail_after(90):
        miner = await start_miner(cluster=cluster.address, progress_chunk_ms=2000)
        job = unique("cancel")
        await miner.client.post("/mine", json=body(job, 0, 1, MAX))
        executor = miner.runtime.executor
        while not (len(ws := executor.stats().workers) == 2 and all(w.hashes > 0 for w in ws)):
            await trio.sleep(0.02)  # both workers have finished a chunk of this (the miner's only) job
        await trio.sleep(0.3)  # mid-chunk: chunks here last ~2 s
        t0 = time.time()
        assert (await miner.client.post(f"/cancel/{job}")).json()["status"] == "cancelled"
        while not all((stops := await trio.to_thread.run_sync(cluster.kernel_stops, job)).values()):
            await trio.sleep(0.05)  # until every worker reports its kernel's return (fail_after bounds it)
        assert len(stops) == 2
        latencies = {addr: max(ts) - t0 for addr, ts in stops.items()}
        assert all(0 <= lat < 0.1 for lat in latencies.values()), latencies


async def test_devnet_on_the_cluster_mines_verified_blocks(cluster):
    with trio.fail_after(120):
        done = await run("devnet", "--cluster", cluster.address, "--blocks", "3", "--block-time", "0.5", "--json",
                         "--seed", "5", "--progress-chunk-ms", "200", timeout=110)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    blocks = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [b["height"] for b in blocks] == [1, 2, 3]
    for b in blocks:
        assert b["source"] == "miner"
        ctx = qpow.JobContext.from_header(bytes.fromhex(b["header"]))
        assert qpow.is_valid(ctx, int(b["work"], 16), int(b["threshold"]))


# -- QPoW v2 on the same cluster (issue 18): the workers serve both proofs of work --------------------


async def start_v2_runtime(nursery, cluster, **overrides):
    """The `connect` miner's pipeline (composition root, cluster executor, runtime) for QPoW v2, without QUIC."""
    config = ServiceConfig(**{"cluster": cluster.address, "engine": "cpu-fast-v2", "progress_chunk_ms": 200,
                              **overrides})
    engine = get_engine("cpu-fast-v2")  # names the workers' engine; nothing mines in this process
    executor = await open_executor(config, engine, None)
    runtime, _ = await start_pipeline(nursery, config, engine, None, executor, CollectorRegistry())
    return runtime


async def test_v2_counts_every_nonce_once_across_a_sigkilled_worker(cluster, nursery):
    size = 1_200_000  # QPoW v2 kernels are ~20x slower than v1's
    with trio.fail_after(180):
        runtime = await start_v2_runtime(nursery, cluster)
        job = unique("v2-kill")
        runtime.submit(MineRequest(job, bytes(32), 0, 1, size))  # target 0: no nonce is valid
        while runtime.result(job).hash_count < 100_000:  # both workers hold chunks by now (past warm-up)
            await trio.sleep(0.02)
        await trio.to_thread.run_sync(cluster.kill_worker, "w2")
        await runtime.wait_ended(job)
        result = runtime.result(job)
        assert (result.status, result.reason, result.hash_count) == ("failed", "range exhausted", size)
        assert runtime.executor.stats().retried >= 1  # w2's chunks were re-run on w1
        cluster.start_worker("w2")
        await trio.to_thread.run_sync(cluster.wait_workers, 2)


async def test_v2_cancel_stops_the_kernel_on_every_worker_within_100_ms(cluster, nursery):
    with trio.fail_after(120):
        runtime = await start_v2_runtime(nursery, cluster, progress_chunk_ms=2000)
        job = unique("v2-cancel")
        runtime.submit(MineRequest(job, bytes(32), 0, 1, qpow2.MAX_U512))
        executor = runtime.executor
        while not (len(ws := executor.stats().workers) == 2 and all(w.hashes > 0 for w in ws)):
            await trio.sleep(0.02)
        await trio.sleep(0.3)  # mid-chunk: chunks here last ~2 s
        t0 = time.time()
        assert runtime.cancel(job).status == "cancelled"
        while not all((stops := await trio.to_thread.run_sync(cluster.kernel_stops, job)).values()):
            await trio.sleep(0.05)
        assert len(stops) == 2
        latencies = {addr: max(ts) - t0 for addr, ts in stops.items()}
        assert all(0 <= lat < 0.1 for lat in latencies.values()), latencies


async def test_bench_and_the_quic_devnet_mine_v2_through_the_cluster(cluster):
    with trio.fail_after(200):
        done = await run("bench", "--cluster", cluster.address, "--engine", "cpu-fast-v2", "--nonces", "300000",
                         "--json", "--progress-chunk-ms", "200", timeout=90)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        report = json.loads(done.stdout)
        assert (report["engine"], report["hashes"], report["workers"]) == ("cpu-fast-v2", 300_000, 2)
        done = await run("devnet", "--network", "2026", "--cluster", cluster.address, "--blocks", "2",
                         "--block-time", "0.5", "--json", "--seed", "3", "--progress-chunk-ms", "200", timeout=100)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "the Dask cluster at " + cluster.address in done.stderr.decode()
    blocks = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [b["height"] for b in blocks] == [1, 2]
    for b in blocks:  # sealed through the cluster, re-checked here with the reference
        header, nonce = bytes.fromhex(b["header"]), int(b["nonce"], 16)
        assert qpow2.pow_hash(header, nonce) < qpow2.target_of(int(b["difficulty"]))


async def test_unreachable_scheduler_exits_2_with_a_clear_message():
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with trio.fail_after(60):
        for argv in (["serve", "--port", "0", "--cluster", address, "--cluster-timeout-s", "1"],
                     ["worker", address, "--cluster-timeout-s", "1", "--nthreads", "1"]):
            done = await run(*argv, timeout=50)
            assert done.returncode == 2, argv
            assert f"cannot reach the Dask scheduler at {address} within 1 s" in done.stderr.decode(), argv
    bad = await run("serve", "--cluster", "http://x:1", timeout=30)
    assert bad.returncode == 2 and "--cluster='http://x:1' must be a scheduler address" in bad.stderr.decode()
    bad = await run("worker", address, env={"MINER_WORKER_NTHREADS": "0"}, timeout=30)  # the same settings table
    assert bad.returncode == 2 and "MINER_WORKER_NTHREADS='0' must be a positive integer" in bad.stderr.decode()


async def test_scheduler_lost_fails_jobs_and_the_miner_recovers_when_it_returns(cluster, start_miner):
    # runs last in the module: it restarts the shared scheduler
    with trio.fail_after(120):
        miner = await start_miner(cluster=cluster.address, progress_chunk_ms=300, cluster_timeout_s=2.0)
        job = unique("lost")
        await miner.client.post("/mine", json=body(job, 0, 1, MAX))
        while (await miner.result(job))["hash_count"] == 0:
            await trio.sleep(0.02)
        await trio.to_thread.run_sync(cluster.stop_scheduler)
        assert (await wait_status(miner, job, "failed", "completed", "cancelled"))["status"] == "failed"
        assert miner.runtime.result(job).reason == f"lost the Dask scheduler at {cluster.address}"
        while (await miner.client.get("/health")).json()["cluster"]["connected"]:
            await trio.sleep(0.05)
        health = (await miner.client.get("/health")).json()
        assert health["status"] == "ok" and health["cluster"]["workers"] == 0
        away = unique("away")  # accepted and failed at once while the scheduler is away
        assert (await miner.client.post("/mine", json=body(away, 0, 1, 1000))).status_code == 200
        assert (await wait_status(miner, away, "failed"))["hash_count"] == 0
        assert "miner_cluster_connected 0.0" in await miner.scrape()

        await trio.to_thread.run_sync(cluster.start_scheduler)
        while (h := (await miner.client.get("/health")).json()["cluster"])["workers"] < 2 or not h["connected"]:
            await trio.sleep(0.05)  # the miner reconnected and both workers re-registered by themselves
        again = unique("again")
        await miner.client.post("/mine", json=body(again, 0, 1, 3_000_000))
        result = await wait_status(miner, again, "completed", "failed")
        assert result["status"] == "failed" and result["hash_count"] == 3_000_000
    await trio.to_thread.run_sync(cluster.client.close)
    cluster.client = None


def test_worker_side_caches_are_bounded():
    from quantus_miner.cluster import tasks

    for i in range(tasks.MAX_JOBS + 5):
        tasks.run_chunk(f"bound-{i}", "bound", "cpu-baseline", bytes(32), 0, 1, 2)
    assert len(tasks._jobs) == tasks.MAX_JOBS and "bound-0" not in tasks._jobs
    for i in range(tasks.MAX_CANCELLED + 5):
        tasks.cancel(f"gone-{i}")
    assert len(tasks._cancelled) == tasks.MAX_CANCELLED
    assert tasks.run_chunk("gone-10", "gone", "cpu-baseline", bytes(32), 0, 1, 2)["tested"] == 0  # late chunk


async def test_per_worker_series_are_capped_whatever_the_cluster_size():
    from quantus_miner.cluster.executor import MAX_WORKER_SERIES, ClusterExecutor

    executor = ClusterExecutor(ServiceConfig(cluster="tcp://127.0.0.1:1"), None, get_engine("cpu-fast"))
    executor._set_workers({f"tcp://10.0.0.{i}:1": {"name": f"w{i}", "nthreads": 2} for i in range(300)})
    stats = executor.stats()
    assert len(stats.workers) == MAX_WORKER_SERIES and (stats.worker_count, stats.threads) == (300, 600)
    assert executor.health()["workers"] == 300
    executor._set_workers({})  # every worker left: its series go with it
    assert executor.stats().workers == () and executor.health()["workers"] == 0
