"""The node-facing HTTP API (docs/protocol.md) as a Quart-Trio app over a `MinerRuntime`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from quart import Response, request
from quart.wrappers import ClientDisconnectedError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .. import __version__
from ..core.jobs import JobSnapshot
from ..core.results import Result
from ..core.requests import DuplicateJob, InvalidRequest, Refused, TooManyJobs, parse_mine_request
from .metrics import MinerMetrics
from ..pipeline.runtime import MinerRuntime

log = logging.getLogger("quantus_miner.api")

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 5
OPENAPI = (Path(__file__).with_name("openapi.json")).read_bytes()
MINE_RESULT = {InvalidRequest: "invalid", DuplicateJob: "duplicate", TooManyJobs: "error"}  # miner_mine_requests_total


def json_response(body: dict, status: int = 200) -> Response:
    """A JSON response."""
    return Response(json.dumps(body), status=status, mimetype="application/json")


def error_response(status: int, message: str, job_id: str = "") -> Response:
    """The API's JSON error shape."""
    return json_response({"status": "error", "job_id": job_id, "message": message}, status)


def result_body(snap: JobSnapshot) -> dict:
    """The `/result` body of a job: the shared result model's six fields."""
    return Result.of(snap).fields(snap.job_id)


def route_template(rule: str) -> str:
    """Quart's `/result/<job_id>` as the protocol's `/result/{job_id}`."""
    return rule.replace("<", "{").replace(">", "}")


def create_app(runtime: MinerRuntime, metrics: MinerMetrics) -> QuartTrio:
    """The HTTP API (docs/protocol.md) over `runtime`, counting requests in `metrics`."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # Quart does not notice a client that vanished mid-body; this bounds how long such a
    # connection is held (the node's bodies are a few hundred bytes, sent at once).
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT_S  # no empty 200s for OPTIONS: a JSON 405 like any other method

    @app.before_request
    async def consume_body() -> None:
        # Read every body (capped at MAX_BODY_BYTES) before answering, even on a 404/405: a
        # response sent over an unread body now and then left a keep-alive connection stuck.
        await request.get_data(cache=True)
        if request.headers.get("Upgrade", "").strip().lower() == "websocket":
            # the server layer (connections.HTTP11Only) turned the upgrade into a plain request
            return error_response(400, "WebSocket is not served here")

    @app.after_request
    async def count_request(response: Response) -> Response:
        rule = request.url_rule
        endpoint = route_template(rule.rule) if rule is not None else "unmatched"
        metrics.http_requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        message = {404: f"no such endpoint: {request.method} {request.path}",
                   405: f"method {request.method} not allowed on {request.path}",
                   413: f"request body over {MAX_BODY_BYTES} bytes"}.get(exc.code, exc.description or exc.name)
        if request.path == "/mine" and request.method == "POST":
            metrics.mine_requests.labels("invalid").inc()
        response = error_response(exc.code or 400, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # RFC 9110 requires it on a 405
        if exc.code == 413:
            # the rest of the body is never read, so the connection cannot carry another request
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        if isinstance(exc, ClientDisconnectedError):  # the client left: no fault, and nobody reads this
            log.debug("client left during %s %s", request.method, request.path)
            return error_response(400, "client disconnected")
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, "internal error")

    @app.post("/mine")
    async def mine() -> Response:
        body = await request.get_data(as_text=False)
        try:
            snap = runtime.submit(parse_mine_request(body))
        except Refused as exc:
            metrics.mine_requests.labels(MINE_RESULT[type(exc)]).inc()
            return error_response(exc.status, exc.message, exc.job_id)
        metrics.mine_requests.labels("accepted").inc()
        return json_response({"status": "accepted", "job_id": snap.job_id})

    @app.get("/result/<job_id>")
    async def result(job_id: str) -> Response:
        snap = runtime.result(job_id)
        if snap is None:
            return json_response(Result("not_found").fields(job_id), 404)
        return json_response(result_body(snap))

    @app.post("/cancel/<job_id>")
    async def cancel(job_id: str) -> Response:
        if runtime.cancel(job_id) is None:
            return json_response({"status": "not_found", "job_id": job_id, "message": "Job not found"}, 404)
        return json_response({"status": "cancelled", "job_id": job_id})

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return Response(OPENAPI, status=200, mimetype="application/json")

    @app.get("/health")
    async def health() -> Response:
        stats = runtime.statistics()
        body = {"status": "ok", "engine": stats.engine, "kernel": stats.kernel, "cores": stats.cores,
                "version": __version__, "active_jobs": stats.active_jobs}
        if stats.device is not None:  # a GPU engine: its devices (cores then counts the slots: one per device,
            body["device"] = stats.device  # and one per CPU thread beside them)
            body["devices"] = stats.devices
        if stats.beside is not None:  # CPU threads beside the GPUs: {"engine", "kernel", "threads"}
            body["cpu"] = stats.beside
        if stats.cluster is not None:  # cluster mode: scheduler, connected, workers, threads
            body["cluster"] = stats.cluster
        return json_response(body)

    return app
