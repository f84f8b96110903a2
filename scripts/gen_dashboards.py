"""Generate the Grafana dashboards under grafana/ (a test fails when the committed JSON differs).

Run: python scripts/gen_dashboards.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GRAFANA = Path(__file__).resolve().parents[1] / "grafana"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance"'
SEL_E = SEL + ', engine=~"$engine"'
SEL_J = SEL_E + ', job_id=~"$job_id"'
SEL_T = SEL_J + ', thread_id=~"$thread_id"'


def variable(name: str, query: str, label: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"var-{name}"},
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


DATASOURCE_VAR = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                  "current": {}, "refresh": 1}
JOB = variable("job", "label_values(miner_active_jobs, job)", "Scrape job (chain)")
INSTANCE = variable("instance", 'label_values(miner_active_jobs{job=~"$job"}, instance)', "Instance")
ENGINE = variable("engine", 'label_values(miner_jobs_by_engine_total{job=~"$job"}, engine)', "Engine")
JOB_ID = variable("job_id", f"label_values(miner_job_status{{{SEL_E}}}, job_id)", "Mining job")
THREAD = variable("thread_id", f"label_values(miner_thread_hashes_total{{{SEL_J}}}, thread_id)", "Worker thread")


def engine_choice(name: str, label: str, default: str) -> dict:
    query = 'label_values(miner_jobs_by_engine_total{job=~"$job"}, engine)'
    return {"name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
            "query": {"query": query, "refId": f"var-{name}"}, "includeAll": False, "multi": False,
            "refresh": 2, "sort": 1, "current": {"selected": True, "text": default, "value": default}}


class Layout:
    def __init__(self):
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos


def target(expr: str, legend: str = "", ref: str = "A", **extra) -> dict:
    return {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend or "__auto", **extra}


def panel(layout: Layout, kind: str, title: str, targets: list[dict], *, w=12, h=8, unit="short",
          options=None, field_defaults=None, transformations=None, description="") -> dict:
    p = {"id": layout.next_id, "type": kind, "title": title, "description": description, "datasource": DS,
         "gridPos": layout.place(w, h), "targets": targets,
         "fieldConfig": {"defaults": {"unit": unit, **(field_defaults or {})}, "overrides": []},
         "options": options or {}}
    if transformations:
        p["transformations"] = transformations
    layout.next_id += 1
    return p


def timeseries(layout, title, targets, unit="short", **kw):
    return panel(layout, "timeseries", title, targets, unit=unit,
                 options={"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}, **kw)


def stat(layout, title, targets, unit="short", sparkline=True, w=6, h=5, **kw):
    return panel(layout, "stat", title, targets, unit=unit, w=w, h=h,
                 options={"graphMode": "area" if sparkline else "none", "colorMode": "value",
                          "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "textMode": "auto"}, **kw)


def dashboard(uid: str, title: str, description: str, variables: list[dict], panels: list[dict]) -> dict:
    return {"uid": uid, "title": title, "description": description, "tags": ["quantus", "miner"],
            "editable": True, "schemaVersion": 39, "version": 1, "refresh": "10s", "graphTooltip": 1,
            "time": {"from": "now-1h", "to": "now"}, "timezone": "browser",
            "templating": {"list": [DATASOURCE_VAR, *variables]}, "annotations": {"list": []},
            "panels": panels}


def miner_dashboard() -> dict:
    L = Layout()
    panels = [
        stat(L, "Hash rate now, all running jobs (nonces/s)", [target(f"sum(miner_hash_rate{{{SEL}}})")],
             unit="none"),
        stat(L, "Hash rate peak over 24h (1m subquery)",
             [target(f"max_over_time(sum(miner_hash_rate{{{SEL}}})[24h:1m])")], unit="none", sparkline=False),
        stat(L, "Active jobs now", [target(f"sum(miner_active_jobs{{{SEL}}})")]),
        stat(L, "Nonces tested in the last 5m", [target(f"sum(increase(miner_hashes_total{{{SEL}}}[5m]))")],
             unit="none"),
        timeseries(L, "Job hash rate, max over 1m", [target(
            f"max_over_time(miner_job_hash_rate{{{SEL_J}}}[1m])", "{{engine}}, {{job_id}}")], unit="none"),
        timeseries(L, "Thread hash rate, max over 1m", [target(
            f"max_over_time(miner_thread_hash_rate{{{SEL_T}}}[1m])", "{{engine}}, {{job_id}}, {{thread_id}}")],
            unit="none"),
        timeseries(L, "Nonces tested per instance, 1m increase", [target(
            f"sum by (instance) (increase(miner_hashes_total{{{SEL}}}[1m]))", "{{instance}}")], unit="none"),
        timeseries(L, "Active jobs by instance", [target(f"sum by (instance) (miner_active_jobs{{{SEL}}})",
                                                         "{{instance}}")]),
        timeseries(L, "Jobs ended by status, 5m increase", [target(
            f"sum by (status) (increase(miner_jobs_total{{{SEL}}}[5m]))", "{{status}}")]),
        timeseries(L, "/mine requests by instance and result, 5m increase", [target(
            f"sum by (instance, result) (increase(miner_mine_requests_total{{{SEL}}}[5m]))",
            "{{instance}}, {{result}}")]),
        timeseries(L, "API requests by endpoint and code, 1m increase", [target(
            f"sum by (endpoint, code) (increase(miner_http_requests_total{{{SEL}}}[1m]))",
            "{{endpoint}} {{code}}")]),
        panel(L, "table", "Job status now (current status per job)", [target(
            f"miner_job_status{{{SEL_J}}} == 1", "{{engine}}, {{job_id}}, {{status}}", format="table",
            instant=True)], w=12,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                                              "__name__": True}}}]),
        # cluster mode (serve --cluster): these series exist only on a miner fed by a Dask cluster
        stat(L, "Cluster: workers now", [target(f"sum by (instance) (miner_cluster_workers{{{SEL}}})",
                                                "{{instance}}")]),
        stat(L, "Cluster: scheduler connected now (1 = yes)",
             [target(f"min by (instance) (miner_cluster_connected{{{SEL}}})", "{{instance}}")], sparkline=False),
        stat(L, "Cluster: mining threads now", [target(f"sum by (instance) (miner_cluster_threads{{{SEL}}})",
                                                       "{{instance}}")]),
        stat(L, "Cluster: chunks retried after worker loss, 1h increase",
             [target(f"sum(increase(miner_cluster_chunks_retried_total{{{SEL}}}[1h]))")], sparkline=False),
        timeseries(L, "Cluster: worker hash rate, max over 1m", [target(
            f"max_over_time(miner_cluster_worker_hash_rate{{{SEL}}}[1m])", "{{instance}}, {{worker}}")],
            unit="none"),
        timeseries(L, "Cluster: nonces per worker, 1m increase", [target(
            f"sum by (worker) (increase(miner_cluster_worker_hashes_total{{{SEL}}}[1m]))", "{{worker}}")],
            unit="none"),
        # GPU engines (gpu-cuda, gpu-cuda-v2): these series exist only on a miner mining with GPUs
        timeseries(L, "GPU: device hash rate, max over 1m", [target(
            f"max_over_time(miner_device_hash_rate{{{SEL}}}[1m])", "{{instance}}, {{device}}")], unit="none"),
        panel(L, "table", "GPU: devices in use now (name, kernel)", [target(
            f"miner_device_info{{{SEL}}} == 1", "{{instance}}, {{device}}, {{name}}, {{kernel}}", format="table",
            instant=True)], w=12,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                                              "__name__": True}}}]),
    ]
    return dashboard("quantus-miner", "Quantus miner", "Operator overview: hash rates, jobs and requests.",
                     [JOB, INSTANCE, ENGINE, JOB_ID, THREAD], panels)


def engines_dashboard() -> dict:
    L = Layout()
    left = 'engine=~"$left_engine"'
    right = 'engine=~"$right_engine"'
    panels = [
        stat(L, "Left engine hash rate, max over 1m",
             [target(f"sum(max_over_time(miner_job_hash_rate{{{SEL}, {left}}}[1m]))")], unit="none", w=8),
        stat(L, "Right engine hash rate, max over 1m",
             [target(f"sum(max_over_time(miner_job_hash_rate{{{SEL}, {right}}}[1m]))")], unit="none", w=8),
        stat(L, "Engine ratio left/right, hash rate max over 1m", [target(
            f"sum(max_over_time(miner_job_hash_rate{{{SEL}, {left}}}[1m])) / "
            f"sum(max_over_time(miner_job_hash_rate{{{SEL}, {right}}}[1m]))")], unit="percentunit", w=8),
        timeseries(L, "Hash rate by engine, max over 1m", [target(
            f'sum by (engine) (max_over_time(miner_job_hash_rate{{{SEL}, engine=~"$left_engine|$right_engine"}}[1m]))',
            "{{engine}}")], unit="none"),
        timeseries(L, "Thread hash rate by engine, max over 1m", [target(
            f'max_over_time(miner_thread_hash_rate{{{SEL}, engine=~"$left_engine|$right_engine"}}[1m])',
            "{{engine}}, {{job_id}}, {{thread_id}}")], unit="none"),
        timeseries(L, "Nonces tested by engine, 1m increase", [target(
            f'sum by (engine) (increase(miner_job_hashes_total{{{SEL}, engine=~"$left_engine|$right_engine"}}[1m]))',
            "{{engine}}")], unit="none"),
        timeseries(L, "Jobs ended by engine and status, 5m increase", [target(
            f'sum by (engine, status) (increase(miner_jobs_by_engine_total{{{SEL}, engine=~"$left_engine|$right_engine"}}[5m]))',
            "{{engine}}, {{status}}")]),
    ]
    return dashboard("quantus-miner-engines", "Quantus miner: engines comparison",
                     "Left engine against right engine (set one instance per engine).",
                     [JOB, INSTANCE, engine_choice("left_engine", "Left engine", "cpu-fast"),
                      engine_choice("right_engine", "Right engine", "cpu-baseline")], panels)


def instances_dashboard() -> dict:
    L = Layout()
    current = f"sum by (instance) (max_over_time(miner_job_hash_rate{{{SEL_E}}}[1m]))"
    peak = f"sum by (instance) (max_over_time(miner_job_hash_rate{{{SEL_E}}}[1h:1m]))"
    table = panel(
        L, "table", "Hash rate per instance: current (max over 1m), 1h peak (1m subquery), current/peak",
        [target(current, "", "A", format="table", instant=True),
         target(peak, "", "B", format="table", instant=True),
         target(f"({current}) / ({peak})", "", "C", format="table", instant=True)],
        w=24, h=8, unit="none",
        transformations=[{"id": "merge", "options": {}},
                         {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                        "renameByName": {"Value #A": "Current (1m max)",
                                                                         "Value #B": "Peak (1h)",
                                                                         "Value #C": "Current / peak"}}}])
    table["fieldConfig"]["overrides"] = [{
        "matcher": {"id": "byName", "options": "Current / peak"},
        "properties": [{"id": "unit", "value": "percentunit"},
                       {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                       {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                           {"color": "red", "value": None}, {"color": "orange", "value": 0.5},
                           {"color": "green", "value": 0.9}]}}]}]
    panels = [
        stat(L, "Peak hash rate over 24h (1m subquery), all selected instances",
             [target(f"max_over_time(sum(miner_hash_rate{{{SEL}}})[24h:1m])")], unit="none", sparkline=False, w=8),
        stat(L, "Hash rate by instance, max over 1m (sparklines)",
             [target(f"sum by (instance) (max_over_time(miner_hash_rate{{{SEL}}}[1m]))", "{{instance}}")],
             unit="none", w=16),
        table,
        timeseries(L, "Job hash rate by instance, max over 1m", [target(current, "{{instance}}")], unit="none"),
        timeseries(L, "Active jobs by instance", [target(f"sum by (instance) (miner_active_jobs{{{SEL}}})",
                                                         "{{instance}}")]),
        timeseries(L, "/mine requests by instance and result, 5m increase", [target(
            f"sum by (instance, result) (increase(miner_mine_requests_total{{{SEL}}}[5m]))",
            "{{instance}}, {{result}}")]),
        timeseries(L, "Job status by instance (jobs per status now)", [target(
            f"sum by (instance, status) (miner_job_status{{{SEL_E}}})", "{{instance}}, {{status}}")]),
    ]
    return dashboard("quantus-miner-instances", "Quantus miner: instances comparison",
                     "Per-instance hash rate against its recent peaks.", [JOB, INSTANCE, ENGINE], panels)


DASHBOARDS = {
    "miner-dashboard.json": miner_dashboard,
    "engines-comparison-dashboard.json": engines_dashboard,
    "instances-comparison-dashboard.json": instances_dashboard,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else GRAFANA
    for name in DASHBOARDS:
        (out / name).write_text(render(name))
        print(f"wrote {out / name}")
