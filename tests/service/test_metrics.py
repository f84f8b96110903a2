"""Metrics against a real miner: scraped over HTTP from the metrics port, and read from the app's own registry.

Charter: as in test_service_api (loopback, port 0, real parts, `trio.fail_after` on every test).
Cadence is measured on the workers' own report timestamps, never on wall-clock sleeps.
"""

import re
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from ..support import EASY, MAX

from quantus_miner.service.metrics import FAMILIES

# the one family table (service/metrics.FAMILIES) is what the collectors build and what the docs list
LABEL_FREE = {n: f.kind for n, f in FAMILIES.items() if not f.labels and not f.only}
TYPES = {n: f.kind for n, f in FAMILIES.items() if not f.only}
LABELS = {n: set(f.labels) for n, f in FAMILIES.items() if f.labels and not f.only}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_the_family_table_the_collectors_and_the_docs_agree():
    rows = re.findall(r"^\| `(miner_[a-z_]+)` \| (counter|gauge) \| ([^|]+) \|", DOCS.read_text(), re.M)
    documented = {name.removesuffix("_total") if kind == "counter" else name:
                  (kind, tuple(re.findall(r"`([a-z_]+)`", labels))) for name, kind, labels in rows}
    assert documented == {n: (f.kind, f.labels) for n, f in FAMILIES.items()}
    assert TYPES["miner_hashes"] == "counter" and LABELS["miner_thread_hashes"] == {"engine", "job_id", "thread_id"}
    dashboards = " ".join(p.read_text() for p in (DOCS.parents[1] / "grafana").rglob("*.json"))
    used = {re.sub(r"_total$", "", name) for name in re.findall(r"\b(miner_[a-z_]+)", dashboards)}
    assert used and used <= set(FAMILIES), used - set(FAMILIES)  # the dashboards chart only families of the table


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str, **labels) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def series_count(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


async def test_idle_miner_exports_every_label_free_metric_and_known_labels(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        text = await miner.scrape()
        fams = families(text)
        for name, kind in LABEL_FREE.items():
            assert fams[name].type == kind
        assert samples(text, "miner_active_jobs")[0].value == 0
        assert samples(text, "miner_hash_rate")[0].value == 0
        assert samples(text, "miner_hashes_total")[0].value == 0
        for status in ("completed", "failed", "cancelled"):
            assert samples(text, "miner_jobs_total", status=status)[0].value == 0
            for engine in ("cpu-fast", "cpu-baseline"):
                assert samples(text, "miner_jobs_by_engine_total", engine=engine, status=status)[0].value == 0
        for result in ("accepted", "duplicate", "invalid", "error"):
            assert samples(text, "miner_mine_requests_total", result=result)[0].value == 0


async def test_metric_types_and_labels_during_mining(start_miner):
    with trio.fail_after(30):
        miner = await start_miner(progress_chunk_ms=100)
        await miner.mine("m1", 0)
        while not samples(text := await miner.scrape(), "miner_thread_hash_rate", job_id="m1"):
            await trio.sleep(0.02)
        fams = families(text)
        for name, kind in TYPES.items():
            assert fams[name].type == kind, name
            for s in fams[name].samples:
                if s.name.endswith("_created"):
                    continue
                assert set(s.labels) == LABELS.get(name, set()), name


async def test_rates_are_live_while_running_and_removed_at_each_end(start_miner):
    with trio.fail_after(60):
        miner = await start_miner(progress_chunk_ms=100)
        ends = {"done": ("completed", EASY["cpu-fast"], MAX), "spent": ("failed", 0, 4_000_000),
                "stopped": ("cancelled", 0, MAX)}
        for job_id, (_, threshold, end) in ends.items():
            await miner.mine(job_id, threshold, end=end)
        # a live scrape: the cancel target is mining on both workers
        while len(samples(text := await miner.scrape(), "miner_thread_hash_rate", job_id="stopped")) < 2:
            await trio.sleep(0.02)
        threads = samples(text, "miner_thread_hash_rate", job_id="stopped")
        job_rate = samples(text, "miner_job_hash_rate", job_id="stopped")[0].value
        assert job_rate == pytest.approx(sum(s.value for s in threads)) and job_rate > 0
        running_rates = sum(s.value for s in samples(text, "miner_job_hash_rate"))
        assert samples(text, "miner_hash_rate")[0].value == pytest.approx(running_rates)
        await miner.client.post("/cancel/stopped")
        for job_id, (status, _, _) in ends.items():
            assert (await miner.wait_status(job_id, status))["status"] == status
        text = await miner.scrape()
        for job_id, (status, _, _) in ends.items():
            assert samples(text, "miner_thread_hash_rate", job_id=job_id) == []
            assert samples(text, "miner_job_hash_rate", job_id=job_id) == []
            assert samples(text, "miner_job_status", job_id=job_id, status=status)[0].value == 1
            assert sum(s.value for s in samples(text, "miner_job_status", job_id=job_id)) == 1
        assert samples(text, "miner_hash_rate")[0].value == 0
        assert samples(text, "miner_active_jobs")[0].value == 0
        for status in ("completed", "failed", "cancelled"):
            assert samples(text, "miner_jobs_total", status=status)[0].value == 1
            assert samples(text, "miner_jobs_by_engine_total", engine="cpu-fast", status=status)[0].value == 1


async def test_active_jobs_follows_accept_and_every_end(start_miner):
    with trio.fail_after(60):
        miner = await start_miner()
        value = lambda: miner.registry.get_sample_value("miner_active_jobs")  # noqa: E731
        await miner.mine("a", 0)
        await miner.mine("b", 0, end=2_000_000)
        assert value() == 2
        await miner.client.post("/cancel/a")
        assert value() == 1
        await miner.wait_status("b", "failed")
        assert value() == 0
        await miner.mine("c", EASY["cpu-fast"])
        await miner.wait_status("c", "completed")
        assert value() == 0


async def test_request_counters_per_result_and_route_templates(start_miner):
    with trio.fail_after(30):
        miner = await start_miner(max_jobs=1)
        await miner.mine("x", 0)
        await miner.mine("x", 0)  # duplicate
        await miner.mine("y", 0)  # over --max-jobs: error
        await miner.client.post("/mine", content=b"{")  # invalid
        await miner.client.get("/result/x")
        await miner.client.get("/result/unknown-job")
        await miner.client.post("/cancel/x")
        await miner.client.get("/no/such/path")
        get = miner.registry.get_sample_value
        for result, n in {"accepted": 1, "duplicate": 1, "error": 1, "invalid": 1}.items():
            assert get("miner_mine_requests_total", {"result": result}) == n
        text = await miner.scrape()
        endpoints = {s.labels["endpoint"] for s in samples(text, "miner_http_requests_total")}
        assert endpoints == {"/mine", "/result/{job_id}", "/cancel/{job_id}", "unmatched"}
        assert get("miner_http_requests_total", {"endpoint": "/result/{job_id}", "code": "200"}) == 1
        assert get("miner_http_requests_total", {"endpoint": "/result/{job_id}", "code": "404"}) == 1
        assert get("miner_http_requests_total", {"endpoint": "/mine", "code": "409"}) == 1


async def test_hash_totals_agree_with_result_once_the_job_ended(start_miner, engine_name):
    with trio.fail_after(60):
        miner = await start_miner(engine=engine_name, progress_chunk_ms=100)
        await miner.mine("j", EASY[engine_name] // 4)
        body = await miner.wait_status("j", "completed")
        get = miner.registry.get_sample_value
        assert get("miner_job_hashes_total", {"engine": engine_name, "job_id": "j"}) == body["hash_count"]
        threads = sum(get("miner_thread_hashes_total", {"engine": engine_name, "job_id": "j", "thread_id": t}) or 0
                      for t in ("0", "1"))
        assert threads == body["hash_count"] == get("miner_hashes_total")


async def test_chunk_reports_arrive_every_chunk_ms_on_both_engines(start_miner, engine_name):
    with trio.fail_after(60):
        miner = await start_miner(engine=engine_name, progress_chunk_ms=200)
        await miner.mine("cadence", 0)

        async def reports_at_least(n):
            while min(w.reports for w in miner.runtime.result("cadence").workers) < n:
                await trio.sleep(0.05)
            return [(w.reports, w.last_report_at) for w in miner.runtime.result("cadence").workers]

        early = await reports_at_least(4)  # chunk sizing has converged after a few reports
        late = await reports_at_least(early[0][0] + 5)
        for (n0, t0), (n1, t1) in zip(early, late):
            interval = (t1 - t0) / (n1 - n0)
            assert 0.1 <= interval <= 0.4, f"{engine_name}: {interval * 1000:.0f} ms between reports"


async def test_series_count_is_flat_after_500_jobs_past_retention(start_miner):
    with trio.fail_after(120):
        miner = await start_miner(job_retention_s=0.2)

        async def lifecycle(job_id):
            await miner.mine(job_id, 0, start=1, end=1)
            await miner.wait_status(job_id, "failed", poll=0.005)
            await miner.client.post(f"/cancel/{job_id}")

        await lifecycle("warm-up")  # creates the per-endpoint request series
        # and the 404 series of a cancel that comes after retention (a slow machine makes that happen)
        await miner.client.post("/cancel/forgotten")
        while (await miner.result("warm-up"))["status"] != "not_found":
            await trio.sleep(0.05)
        before = series_count(await miner.scrape())
        for i in range(500):
            await lifecycle(f"churn-{i}")
        while (await miner.result("churn-499"))["status"] != "not_found":
            await trio.sleep(0.05)
        assert miner.runtime.statistics().retained_jobs == 0
        assert series_count(await miner.scrape()) == before


async def test_finished_job_series_are_bounded_below_the_results_kept_and_counters_stay_exact(start_miner):
    with trio.fail_after(60):
        miner = await start_miner(metrics_finished_jobs=3, max_finished_jobs=20, job_retention_s=300)
        for i in range(12):
            assert (await miner.mine(f"f{i}", 0, start=1, end=1 << 40)).status_code == 200
            await miner.client.post(f"/cancel/f{i}")
        assert (await miner.mine("live", 0, start=1, end=1 << 40)).status_code == 200
        text = await miner.scrape()
        exposed = {s.labels["job_id"] for s in samples(text, "miner_job_hashes_total")}
        assert exposed == {"f9", "f10", "f11", "live"}  # running jobs, then the 3 latest finished ones
        assert samples(text, "miner_jobs_total", status="cancelled")[0].value == 12
        for i in range(12):  # /result still knows every one of them
            assert (await miner.result(f"f{i}"))["status"] == "cancelled"
        await miner.client.post("/cancel/live")


async def test_scrapes_within_the_cache_interval_share_one_exposition(start_miner):
    with trio.fail_after(30):
        miner = await start_miner(metrics_cache_s=60)
        first = await miner.scrape()
        await miner.client.get("/health")  # changes miner_http_requests_total
        assert await miner.scrape() == first


async def test_concurrent_scrapes_over_the_cap_get_503_at_once():
    # the metrics app under a stand-in ASGI server whose sends block: N scrapes stay in flight
    from prometheus_client import CollectorRegistry, generate_latest

    from quantus_miner.service.metrics_app import create_metrics_app

    async def render():
        return generate_latest(CollectorRegistry())

    app = create_metrics_app(render, cache_s=0, max_scrapes=4, rate=1000, burst=100)
    release, statuses = trio.Event(), []
    scope = {"type": "http", "path": "/metrics", "method": "GET"}

    async def scrape():
        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
                if message["status"] == 200:
                    await release.wait()
        await app(scope, None, send)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(scrape)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                await scrape()  # answered at once, without waiting for the blocked ones
            assert statuses == [200] * 4 + [503] * 3
            release.set()
        await scrape()
        assert statuses[-1] == 200


async def test_scrapes_are_paced_and_those_that_would_wait_too_long_get_503(autojump_clock):
    from prometheus_client import CollectorRegistry, generate_latest

    from quantus_miner.service import metrics_app

    async def render():
        return generate_latest(CollectorRegistry())

    app = metrics_app.create_metrics_app(render, cache_s=0, max_scrapes=1000, rate=10, burst=1)
    answered: list[tuple[float, int]] = []
    scope = {"type": "http", "path": "/metrics", "method": "GET"}

    async def scrape():
        async def send(message):
            if message["type"] == "http.response.start":
                answered.append((trio.current_time(), message["status"]))
        await app(scope, None, send)

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(scrape)
    ok = sorted(t - t0 for t, status in answered if status == 200)
    refused = [t - t0 for t, status in answered if status == 503]
    # 10 a second, at most MAX_WAIT_S ahead; the rest refused at once
    assert len(ok) == 10 * metrics_app.MAX_WAIT_S + 1 and len(refused) == 40 - len(ok)
    assert all(t == 0 for t in refused)
    assert all(abs(b - a - 0.1) < 1e-6 for a, b in zip(ok, ok[1:]))
