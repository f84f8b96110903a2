"""Shared fixtures: a real miner service on 127.0.0.1 port 0, talked to over real HTTP."""

from __future__ import annotations

import os

# The GPU engines' tests run the CUDA kernels in numba-cuda's simulator (no GPU needed); Numba reads this at
# import, so it is set before anything imports Numba. Set it to 0 to test on a real GPU.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core.config import ServiceConfig
from quantus_miner.service.server import serve_miner

from .support import Miner, Server

def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run the long variants")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
async def start_miner(nursery):
    """Start a miner with config overrides; stopped when the test ends."""
    clients = []

    async def start(**overrides) -> Miner:
        # exact scrapes: tests assert on a scrape right after the state changed (the cache has its own test)
        config = ServiceConfig(**{"port": 0, "metrics_port": 0, "cores": 2, "metrics_cache_s": 0, **overrides})
        registry = CollectorRegistry()
        with trio.fail_after(60):
            running = await nursery.start(lambda task_status: serve_miner(config, registry=registry,
                                                                          task_status=task_status))
        client = httpx.AsyncClient(base_url=running.api_url, timeout=10)
        clients.append(client)
        return Miner(running, client, registry)

    yield start
    for c in clients:
        await c.aclose()


@pytest.fixture(params=["cpu-fast", "cpu-baseline"])
def engine_name(request):
    return request.param


@pytest.fixture
async def spawn_server(nursery):
    """Start `quantus-miner serve` subprocesses (log drained); any still running at teardown is killed."""
    servers = []

    async def spawn(*args, env=None, fd_limit=None) -> Server:
        with trio.fail_after(60):
            server = await Server.start(*args, env=env, fd_limit=fd_limit)
        nursery.start_soon(server.drain)
        servers.append(server)
        return server

    yield spawn
    for server in servers:
        if server.proc.returncode is None:
            server.proc.kill()
            await server.proc.wait()
