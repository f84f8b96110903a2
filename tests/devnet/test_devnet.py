"""Devnet end to end: a real miner driven by the node simulator, blocks verified with the reference.

Charter: loopback only, port 0; the simulator polls every 500 ms exactly as the node does;
every test runs under `trio.fail_after`.
"""

import json
import os
import sys

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core import qpow
from quantus_miner.core.config import ServiceConfig
from quantus_miner.devnet import chain
from quantus_miner.devnet.simulator import NodeSimulator
from quantus_miner.service.server import serve_miner


def assert_seal(block):
    header = bytes.fromhex(block.header)
    nonce = int.from_bytes(bytes.fromhex(block.work), "big")
    assert len(bytes.fromhex(block.work)) == 64 and block.nonce == format(nonce, "x")
    assert qpow.is_valid(qpow.JobContext.from_header(header), nonce, block.threshold)


@pytest.mark.parametrize("engine, block_time", [("cpu-fast", 0.5), ("cpu-baseline", 1.0)])
async def test_devnet_mines_verified_blocks_and_cleans_up(nursery, engine, block_time):
    with trio.fail_after(90):
        registry = CollectorRegistry()
        config = ServiceConfig(port=0, metrics_port=0, cores=2, engine=engine, progress_chunk_ms=200)
        running = await nursery.start(lambda task_status: serve_miner(config, registry=registry,
                                                                      task_status=task_status))
        running_jobs = []
        sim = NodeSimulator(running.api_url, block_time=block_time, network_block_rate=0.5, seed=3, blocks=4,
                            on_block=lambda b, s: running_jobs.append(running.runtime.statistics().active_jobs))
        stats = await sim.run()
        assert len(stats.blocks) == 4 and stats.rejected == 0
        for block in stats.blocks:
            if block.source == "miner":
                assert_seal(block)
            else:
                assert block.nonce is None and block.work is None
        assert max(running_jobs) <= 1  # every new block cancelled the previous job first
        network = sum(b.source == "network" for b in stats.blocks)
        assert registry.get_sample_value("miner_jobs_total", {"status": "cancelled"}) >= network + 1  # + the probe
        assert running.runtime.statistics().active_jobs == 0
        with trio.fail_after(1):
            for snap in running.runtime.snapshots():
                await running.runtime.wait_settled(snap.job_id)  # every worker thread returned
        heights = [b.height for b in stats.blocks]
        assert heights == [1, 2, 3, 4]


def test_difficulty_moves_toward_the_block_time():
    t = chain.threshold_for(1e6, 10.0)
    assert chain.expected_tries(t) == pytest.approx(1e7, rel=1e-6)
    assert chain.adjust_threshold(t, actual_s=20.0, target_s=10.0) > t  # slow block: easier
    assert chain.adjust_threshold(t, actual_s=5.0, target_s=10.0) < t  # fast block: harder
    assert chain.adjust_threshold(t, actual_s=1000.0, target_s=10.0) == (t + 1) * 2 - 1  # clamped
    assert chain.adjust_threshold(t, actual_s=0.0, target_s=10.0) == (t + 1) // 2 - 1
    assert chain.adjust_threshold(qpow.MAX_U512, 100.0, 1.0) == qpow.MAX_U512


def test_header_chain_is_reproducible_from_the_seed():
    assert chain.genesis_header(1) == chain.genesis_header(1) != chain.genesis_header(2)
    g = chain.genesis_header(1)
    assert chain.next_header(g, 1, 0) == chain.next_header(g, 1, 0) != chain.next_header(g, 2, 0)


async def test_devnet_command_prints_one_json_object_per_verified_block():
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, "-m", "quantus_miner", "devnet", "--blocks", "3", "--block-time", "0.5", "--json"],
            capture_stdout=True, capture_stderr=True, check=False, env=dict(os.environ))
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3
    for height, line in enumerate(lines, 1):
        block = json.loads(line)
        assert list(block) == ["height", "header", "threshold", "nonce", "work", "hash_count", "elapsed_time",
                               "source"]
        assert block["height"] == height and block["source"] == "miner"
        nonce = int(block["work"], 16)
        assert qpow.is_valid(qpow.JobContext.from_header(bytes.fromhex(block["header"])), nonce,
                             int(block["threshold"]))
    assert "metrics at http://127.0.0.1:" in result.stderr.decode()


async def test_devnet_drives_an_already_running_miner(nursery):
    with trio.fail_after(60):
        running = await nursery.start(lambda task_status: serve_miner(
            ServiceConfig(port=0, cores=2), registry=CollectorRegistry(), task_status=task_status))
        stats = await NodeSimulator(running.api_url, block_time=0.5, blocks=2, seed=9).run()
        assert [b.source for b in stats.blocks] == ["miner", "miner"]
        async with httpx.AsyncClient(base_url=running.api_url) as c:
            assert (await c.get("/health")).json()["active_jobs"] == 0
