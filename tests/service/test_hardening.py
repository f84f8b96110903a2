"""Hardening: bad input, load, faults and exposure, against real servers on 127.0.0.1 port 0.

Test charter:
- Loopback only; servers on port 0, in-process (through `nursery.start`) or as `quantus-miner serve`
  subprocesses when the test measures the server's own RSS, fds and threads from /proc.
- Load comes from scripts/load.py in its own process, a raw-socket keep-alive client that costs little
  CPU; latency is measured with its monotonic clock around each request.
- Every test runs under `trio.fail_after`. CI runs short variants; `--run-slow` runs the long ones
  (>= 10 000 fuzz cases, a 60 s load run and 10 000 job lifecycles) and prints their figures.
"""

import json
import os
import random
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantus_miner.core import qpow
from quantus_miner.core.config import ServiceConfig
from quantus_miner.service.api import BODY_TIMEOUT_S

from ..support import EASY, MAX, SyncServer, mine_body

ROOT = Path(__file__).resolve().parents[2]

ERROR_KEYS = {"status", "job_id", "message"}


def check_response(r: httpx.Response) -> None:
    """Zero 5xx; every 4xx is JSON with the error shape (or the protocol's not_found bodies)."""
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400 and r.request.method != "HEAD":
        assert r.headers["content-type"] == "application/json", r.text
        body = r.json()
        assert set(body) == ERROR_KEYS or body.get("status") == "not_found", body
    if r.status_code == 200 and r.request.method != "HEAD":
        r.json()


async def assert_anchor_undisturbed(miner, job_id: str, before: int) -> None:
    body = await miner.result(job_id)
    assert body["status"] == "running" and body["hash_count"] > before, body


# -- bad input ---------------------------------------------------------------------------------


async def test_openapi_document_is_served_and_describes_the_protocol(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        r = await miner.client.get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        spec = r.json()
        packaged = Path(__file__).resolve().parents[2] / "quantus_miner" / "service" / "openapi.json"
        assert spec == json.loads(packaged.read_text())
        assert set(spec["paths"]) == {"/mine", "/result/{job_id}", "/cancel/{job_id}", "/health", "/openapi.json"}


async def run_schemathesis(start_miner, max_examples: int, timeout: float, workdir: Path) -> str:
    miner = await start_miner(max_jobs=32, progress_chunk_ms=200, job_retention_s=5)
    anchor = str(uuid.uuid4())
    await miner.mine(anchor, 0)
    while (before := (await miner.result(anchor))["hash_count"]) == 0:
        await trio.sleep(0.02)
    cli = Path(sys.executable).with_name("schemathesis")
    with trio.fail_after(timeout):
        result = await trio.run_process(
            [str(cli), "run", f"{miner.running.api_url}/openapi.json", "-n", str(max_examples), "--seed", "7",
             "--generation-database", "none", "--request-timeout", "10",
             # schema-valid bodies with nonce_start > nonce_end are rightly refused (docs/protocol.md)
             "--exclude-checks", "positive_data_acceptance"],
            capture_stdout=True, capture_stderr=True, check=False, env={**os.environ, "NO_COLOR": "1"},
            cwd=workdir)  # schemathesis keeps a cache in its working directory: not in the tree
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, out[-6000:]
    await assert_anchor_undisturbed(miner, anchor, before)
    return out


async def test_schemathesis_fuzz_finds_no_5xx_and_no_schema_violations(start_miner, tmp_path):
    with trio.fail_after(300):
        await run_schemathesis(start_miner, max_examples=15, timeout=240, workdir=tmp_path)


@pytest.mark.slow
async def test_schemathesis_fuzz_long(start_miner, tmp_path):
    with trio.fail_after(3000):
        out = await run_schemathesis(start_miner, max_examples=1000, timeout=2900, workdir=tmp_path)
        print([line for line in out.splitlines() if "generated" in line])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**600), 2**600) | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=20)
FIELDS = ["job_id", "mining_hash", "distance_threshold", "nonce_start", "nonce_end"]
near_valid = st.fixed_dictionaries({}, optional={f: json_values | st.text(max_size=200) for f in FIELDS}).map(
    lambda d: json.dumps(d).encode())
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid,
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),  # deeply nested, up to oversized
    st.sampled_from([b"", b"\xff\xfe", b'{"job_id": "\xc3\x28"}', b"null", b"1e999999", b"{}" * 40_000]),
)
paths = st.one_of(
    st.sampled_from(["/mine", "/result/x", "/cancel/x", "/health", "/openapi.json", "/", "/metrics",
                     "/result/", "/cancel/", "/result/" + "a" * 5000, "/mine/extra", "//mine", "/%ff", "/result/%00"]),
    st.text(min_size=1, max_size=40).map(lambda s: "/" + s),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
content_types = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", "\u00e9/\u00e9"])


@pytest.fixture
def fuzz_server():
    server = SyncServer("--port", "0", "--max-jobs", "8", "--progress-chunk-ms", "200", "--job-retention-s", "5")
    with httpx.Client(base_url=server.api_url, timeout=10) as client:
        anchor = "anchor-" + uuid.uuid4().hex
        assert client.post("/mine", json=mine_body(anchor, 0)).status_code == 200
        while (before := client.get(f"/result/{anchor}").json()["hash_count"]) == 0:
            time.sleep(0.02)
        yield client
        body = client.get(f"/result/{anchor}").json()  # the running job was never disturbed
        assert body["status"] == "running" and body["hash_count"] > before, body
    assert server.stop() == 0  # a daemon's clean SIGTERM stop


def raw_fuzz(client: httpx.Client, examples: int) -> int:
    cases = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(method=methods, path=paths, body=bodies, ctype=content_types)
    def one(method, path, body, ctype):
        nonlocal cases
        headers = {"content-type": ctype} if ctype and ctype.isascii() else {}
        try:
            r = client.request(method, path, content=body if method not in ("GET", "HEAD") else None,
                               headers=headers)
        except httpx.InvalidURL:
            return  # the client refuses to send it: nothing reached the server
        cases += 1
        check_response(r)

    one()
    return cases


@pytest.mark.timeout(300)
def test_raw_fuzz_bodies_methods_paths_and_content_types(fuzz_server):
    assert raw_fuzz(fuzz_server, 400) >= 300


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_raw_fuzz_long(fuzz_server):
    cases = raw_fuzz(fuzz_server, 12_500)  # some generated URLs never leave the client
    print(f"raw fuzz: {cases} requests, 0 server errors")
    assert cases >= 10_000


# -- faults ------------------------------------------------------------------------------------


async def test_engine_fault_fails_only_its_job_with_a_logged_reason(start_miner, caplog, monkeypatch):
    # Fault injection at the engine boundary: the engine raises for one header only.
    with trio.fail_after(30):
        miner = await start_miner()
        engine_class = type(miner.runtime.engine)
        real_search = engine_class.search
        bad_header = bytes.fromhex("ee" * 32)

        def search(self, job, lo, hi, flag):
            if job.ctx.header == bad_header:
                raise RuntimeError("injected engine fault")
            return real_search(self, job, lo, hi, flag)

        monkeypatch.setattr(engine_class, "search", search)
        await miner.mine("healthy", 0)
        await miner.client.post("/mine", json=mine_body("faulty", 0, header="ee" * 32))
        body = await miner.wait_status("faulty", "failed")
        assert body["nonce"] is None
        assert "worker crashed: RuntimeError('injected engine fault')" in caplog.text
        assert miner.runtime.result("faulty").reason.startswith("worker crashed")
        h1 = (await miner.result("healthy"))["hash_count"]
        while (await miner.result("healthy"))["hash_count"] == h1:
            await trio.sleep(0.02)
        await miner.mine("after", EASY["cpu-fast"])
        assert (await miner.wait_status("after", "completed"))["status"] == "completed"


async def test_half_bodies_and_dropped_clients_leak_nothing(spawn_server):
    with trio.fail_after(60):
        server = await spawn_server("--port", "0")
        host, port = "127.0.0.1", server.port
        async with httpx.AsyncClient(base_url=server.api_url) as client:
            await client.get("/health")
            baseline = server.resources()
            for i in range(200):
                with socket.create_connection((host, port)) as s:
                    if i % 3 == 0:  # headers promise a body that never fully arrives
                        s.sendall(b"POST /mine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 1000\r\n\r\n{\"job_id\": \"half")
                    elif i % 3 == 1:  # half the headers
                        s.sendall(b"GET /result/x HTTP/1.1\r\nHo")
                    # else: connect and drop at once
            r = await client.get("/health")
            assert r.status_code == 200
            # half bodies time out, silent peers are dropped after the keep-alive timeout
            with trio.fail_after(max(BODY_TIMEOUT_S, ServiceConfig().idle_timeout_s) + 5):
                while server.resources()["fds"] > baseline["fds"] + 2:
                    await trio.sleep(0.05)
        server.proc.terminate()
        assert await server.proc.wait() == 0  # a daemon's clean SIGTERM stop


async def test_polls_during_cancel_and_retirement_are_always_consistent(start_miner):
    with trio.fail_after(60):
        miner = await start_miner(job_retention_s=0.05, progress_chunk_ms=50)
        seen = {"running": 0, "cancelled": 0, "completed": 0, "failed": 0, "not_found": 0}
        done = trio.Event()

        async def churn():
            for i in range(150):
                threshold = EASY["cpu-fast"] if i % 3 == 0 else 0
                await miner.mine(f"c{i}", threshold, end=MAX if i % 3 != 2 else 5000)
                await trio.sleep(0.01)
                await miner.client.post(f"/cancel/c{i}")
            done.set()

        async def poll():
            i = 0
            while not done.is_set():
                for k in (i, i - 1, i - 2):
                    r = await miner.client.get(f"/result/c{max(k, 0)}")
                    assert r.status_code in (200, 404), r.text
                    body = r.json()
                    seen[body["status"]] += 1
                    if r.status_code == 404:
                        assert body["status"] == "not_found" and body["hash_count"] == 0
                    elif body["status"] == "completed":
                        nonce = int(body["work"], 16)
                        assert body["nonce"] == format(nonce, "x") and len(body["work"]) == 128
                    else:
                        assert body["nonce"] is None and body["work"] is None
                i += 1

        async with trio.open_nursery() as n:
            n.start_soon(churn)
            for _ in range(4):
                n.start_soon(poll)
        assert seen["cancelled"] and seen["not_found"] and seen["running"]


# -- exposure ----------------------------------------------------------------------------------


async def test_no_cors_headers_and_metrics_port_serves_metrics_only(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        r = await miner.client.get("/health", headers={"Origin": "http://evil.example"})
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
        r = await miner.client.options("/mine", headers={"Origin": "http://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
        assert r.status_code == 405 and not [h for h in r.headers if h.lower().startswith("access-control-")]
        base = miner.running.metrics_url.removesuffix("/metrics")
        async with httpx.AsyncClient(base_url=base) as c:
            assert (await c.get("/metrics")).status_code == 200
            for method, path in [("POST", "/mine"), ("GET", "/result/x"), ("GET", "/health"), ("POST", "/metrics"),
                                 ("GET", "/")]:
                assert (await c.request(method, path)).status_code == 404, (method, path)


# -- load --------------------------------------------------------------------------------------


async def load_run(seconds: float, lifecycles: int) -> dict:
    """Run scripts/load.py (its own process, so the test runner's work never counts as latency)."""
    result = await trio.run_process(
        [sys.executable, str(ROOT / "scripts" / "load.py"), "--seconds", str(seconds), "--lifecycles", str(lifecycles)],
        capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


# The target is 20 ms (10 s runs here: p50 ~1.5 ms, p99 10-46 ms). CI asserts a sanity bound of
# 100 ms: the load generator, the test runner and two mining threads share this VM's 2 cores, and its
# speed drifts by up to 30 % from minute to minute. The long variant's figures go in the issue note.
P99_BOUND_MS = 100


def assert_flat(report: dict) -> None:
    start, end = report["start"], report["end"]
    assert report["errors"] == 0 and report["main_job_running"] and report["exit_code"] == 0
    assert report["p99_ms"] < P99_BOUND_MS, report
    assert end["series"] == start["series"], report
    assert end["fds"] <= start["fds"] + 4, report
    assert end["threads"] <= start["threads"] + 4, report
    assert end["rss_mib"] <= start["rss_mib"] + 25, report


async def test_load_200_pollers_with_mine_cancel_churn():
    with trio.fail_after(240):
        report = await load_run(seconds=10, lifecycles=1000)
        print(json.dumps(report))
        assert_flat(report)


@pytest.mark.slow
async def test_load_long():
    with trio.fail_after(1800):
        report = await load_run(seconds=60, lifecycles=10_000)
        print(json.dumps(report))
        assert_flat(report)


def test_nonce_zero_is_never_valid_even_at_max_threshold():
    ctx = qpow.JobContext.from_header(bytes(32))
    assert not qpow.is_valid(ctx, 0, MAX)


async def test_keep_alive_survives_error_answers_to_requests_with_bodies(spawn_server):
    # Regression (found by schemathesis): a 405 sent before its request body was read now and then
    # left the next request on that keep-alive connection unanswered.
    with trio.fail_after(120):
        server = await spawn_server("--port", "0")
        rng = random.Random(5)
        for _ in range(300):
            async with httpx.AsyncClient(base_url=server.api_url, timeout=2) as client:
                for method in rng.choices(["PUT", "DELETE", "GET", "PATCH", "QUERY", "POST"], k=rng.randint(2, 6)):
                    body = mine_body(uuid.uuid4().hex[:8], 0, start=0, end=0)
                    r = await client.request(method, "/mine", json=body)
                    assert r.status_code == (200 if method == "POST" else 405)
        server.proc.terminate()
        assert await server.proc.wait() == 0  # a daemon's clean SIGTERM stop
