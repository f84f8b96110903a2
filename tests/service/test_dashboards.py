"""Dashboards and Prometheus rules: generated, consistent, and proven against a real Prometheus.

The end-to-end test starts Debian's `prometheus` (installed by scripts/bootstrap) on 127.0.0.1 with a
1 s scrape of a real in-process miner that mines real jobs, then evaluates every panel expression of
every dashboard and every recording rule through Prometheus' HTTP API. Template variables become
`.*`; subquery resolutions `:1m]` become `:1s]` so a run of seconds has subquery steps.
"""

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from quantus_miner.engines.gpu import gpu_problem

from ..support import EASY, Cluster, free_port

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
PROM = GRAFANA / "prometheus"
NAMES = ["miner-dashboard.json", "engines-comparison-dashboard.json", "instances-comparison-dashboard.json"]
EXPORTED = {  # docs/metrics.md, as exposed (counters with _total)
    "miner_hashes_total", "miner_hash_rate", "miner_jobs_total", "miner_jobs_by_engine_total", "miner_active_jobs",
    "miner_mine_requests_total", "miner_http_requests_total", "miner_job_hashes_total", "miner_job_hash_rate",
    "miner_job_status", "miner_thread_hashes_total", "miner_thread_hash_rate",
    # cluster mode only
    "miner_cluster_connected", "miner_cluster_workers", "miner_cluster_threads", "miner_cluster_chunks_total",
    "miner_cluster_chunks_retried_total", "miner_cluster_worker_hash_rate", "miner_cluster_worker_hashes_total",
}
GPU_EXPORTED = {"miner_device_hash_rate", "miner_device_info"}  # GPU engines only
VARIABLE = re.compile(r"\$\{?([A-Za-z_]+)\}?")


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_dashboards", ROOT / "scripts" / "gen_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict:
    return {name: json.loads((GRAFANA / name).read_text()) for name in NAMES}


def panel_targets():
    for name, dash in dashboards().items():
        for panel in dash["panels"]:
            for t in panel["targets"]:
                yield name, panel, t


def rules() -> list[dict]:
    return [r for g in yaml.safe_load((PROM / "rules.yml").read_text())["groups"] for r in g["rules"]]


def all_expressions() -> list[str]:
    exprs = [t["expr"] for _, _, t in panel_targets()]
    exprs += [v["definition"] for d in dashboards().values() for v in d["templating"]["list"] if "definition" in v]
    return exprs + [r["expr"] for r in rules()]


def concrete(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")
    return VARIABLE.sub(".*", expr).replace(":1m]", ":1s]")


def test_committed_dashboards_match_the_generator():
    gen = load_generator()
    for name in NAMES:
        assert (GRAFANA / name).read_text() == gen.render(name), f"{name}: run python scripts/gen_dashboards.py"


def test_every_metric_a_dashboard_or_rule_mentions_is_exported():
    mentioned = {m for e in all_expressions() for m in re.findall(r"\bminer_[a-z_]+", e)}
    assert mentioned and mentioned <= EXPORTED | GPU_EXPORTED, mentioned - EXPORTED - GPU_EXPORTED


def test_panels_have_clean_legends_honest_titles_and_the_datasource_variable():
    for name, panel, t in panel_targets():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        legend = t["legendFormat"]
        assert legend == "__auto" or re.fullmatch(r"(\{\{[a-z_]+\}\}|[ ,/])+", legend), legend
        exprs = " ".join(x["expr"] for x in panel["targets"])
        for window in ("1m", "5m", "1h", "24h"):  # a title's window is one the panel's queries use
            if re.search(rf"\b{window}\b", panel["title"]):
                assert re.search(rf"\[{window}[]:]|:{window}\]", exprs), (name, panel["title"])
    for name, dash in dashboards().items():
        names = {v["name"] for v in dash["templating"]["list"]}
        assert {"datasource", "job", "instance"} <= names, name
    assert {"engine", "job_id", "thread_id"} <= {v["name"] for v in dashboards()[NAMES[0]]["templating"]["list"]}


def test_delta_column_is_a_percent_with_colour_thresholds():
    table = next(p for p in dashboards()[NAMES[2]]["panels"] if p["type"] == "table")
    props = {p["id"]: p["value"] for p in table["fieldConfig"]["overrides"][0]["properties"]}
    assert props["unit"] == "percentunit" and len(props["thresholds"]["steps"]) == 3


@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"],
                                  ["test", "rules", "rules_test.yml"]], ids=" ".join)
def test_promtool(args):
    assert shutil.which("promtool"), "promtool missing: scripts/bootstrap installs Debian's prometheus"
    result = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_every_dashboard_and_rule_query_works_on_live_data(start_miner, tmp_path):
    assert shutil.which("prometheus"), "prometheus missing: scripts/bootstrap installs Debian's prometheus"
    cluster = Cluster(tmp_path)  # a real Dask scheduler and one worker, for the cluster panels
    try:
        with trio.fail_after(150):
            await live_queries(start_miner, tmp_path, cluster)
    finally:
        await trio.to_thread.run_sync(cluster.close)


async def live_queries(start_miner, tmp_path, cluster):
    await trio.to_thread.run_sync(cluster.start_scheduler)
    cluster.start_worker("dash-w1")
    await trio.to_thread.run_sync(cluster.connect)
    await trio.to_thread.run_sync(cluster.wait_workers, 1)
    miner = await start_miner(progress_chunk_ms=200)
    clustered = await start_miner(progress_chunk_ms=200, cluster=cluster.address)
    # the GPU panels: a gpu-cuda miner in the CUDA simulator (conftest turns it on), when the gpu extra is here
    gpu = await start_miner(progress_chunk_ms=200, engine="gpu-cuda") if gpu_problem() is None else None
    targets = [m.running.metrics_url.removeprefix("http://").removesuffix("/metrics")
               for m in (miner, clustered, gpu) if m is not None]
    rules_copy = tmp_path / "rules.yml"
    rules_copy.write_text((PROM / "rules.yml").read_text())
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_copy)],
        "scrape_configs": [{"job_name": "quantus-miner-test", "scrape_interval": "1s", "scrape_timeout": "900ms",
                            "static_configs": [{"targets": targets}]}]}))
    port = free_port()
    prom = await trio.lowlevel.open_process(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api = f"http://127.0.0.1:{port}/api/v1"
        await miner.mine("running", 0)
        await clustered.mine("clustered", 0)
        if gpu is not None:
            await gpu.mine("gpu", 0)
        await miner.mine("done", EASY["cpu-fast"])
        await miner.mine("stopped", 0)
        await miner.wait_status("done", "completed")
        async with httpx.AsyncClient(timeout=10) as client:

            async def query(expr):
                r = await client.get(f"{api}/query", params={"query": expr})
                return r.status_code, r.json()

            async def samples(expr):
                status, body = await query(expr)
                return body["data"]["result"] if status == 200 else []

            while True:  # Prometheus is up and has scraped for a while
                try:
                    counts = await samples("count_over_time(miner_hash_rate[30s])")
                    if counts and float(counts[0]["value"][1]) >= 8:
                        break
                except httpx.TransportError:
                    pass
                await trio.sleep(0.5)
            await miner.client.post("/cancel/stopped")
            while not await samples('miner_job_status{job_id="stopped", status="cancelled"} == 1'):
                await trio.sleep(0.5)
            while not await samples("job:miner_hash_rate:sum"):
                await trio.sleep(0.5)
            failures, empty = [], []
            for name, panel, t in panel_targets():
                expr = concrete(t["expr"])
                status, body = await query(expr)
                if status != 200 or body.get("status") != "success":
                    failures.append((name, panel["title"], expr, body.get("error")))
                elif not body["data"]["result"] and re.search(r"hash rate|job|request|GPU", panel["title"], re.I) \
                        and (gpu is not None or not panel["title"].startswith("GPU")):
                    empty.append((name, panel["title"], expr))
            for rule in rules():
                status, body = await query(concrete(rule["expr"]))
                if status != 200:
                    failures.append(("rules.yml", rule.get("record") or rule.get("alert"), rule["expr"],
                                     body.get("error")))
                elif "record" in rule and not body["data"]["result"]:
                    empty.append(("rules.yml", rule["record"], rule["expr"]))
                if "record" in rule:
                    assert await samples(rule["record"]), rule["record"]  # Prometheus evaluated it too
            assert failures == []
            assert empty == []
            text = await miner.scrape() + await clustered.scrape() + (await gpu.scrape() if gpu else "")
            scraped = {m for m in re.findall(r"^(miner_[a-z_]+?)(?:_created)?[{ ]", text, re.M)}
            assert EXPORTED | (GPU_EXPORTED if gpu else set()) <= scraped
            await clustered.client.post("/cancel/clustered")
            if gpu is not None:
                await gpu.client.post("/cancel/gpu")
    finally:
        prom.terminate()
        await prom.wait()
