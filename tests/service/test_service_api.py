"""Integration tests of the node-facing API against a real miner service.

Test charter:
- Loopback only: every server listens on 127.0.0.1, port 0 (the OS picks), started through
  `nursery.start`, which hands back the bound URLs once the engine has warmed up.
- Real parts: the real Quart-Trio app under hypercorn, real engines and threads, an httpx client
  over real TCP. Nothing of ours is mocked.
- Clocks: job timing is the miner's monotonic clock, read from `/result`; polling loops mimic the
  node's `/result` polling (faster) and never stand in for synchronisation with the miner's internals.
- Every test runs under `trio.fail_after` (plus the global pytest timeout), so a hang fails fast.
"""

import os
import threading

import trio

from quantus_miner.core import qpow
from ..support import EASY, MAX, mine_body


def assert_error_shape(r, status: int, job_id: str = ""):
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"status", "job_id", "message"}
    assert body["status"] == "error" and body["job_id"] == job_id and body["message"]
    return body


async def test_health_reports_engine_kernel_cores_version_and_active_jobs(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        r = await miner.client.get("/health")
        assert r.status_code == 200
        kernel = miner.runtime.engine.kernel  # the kernel the engine chose on this host
        assert kernel.startswith(("ifma8", "lanes8"))
        assert r.json() == {"status": "ok", "engine": "cpu-fast", "kernel": kernel, "cores": 2, "version": "0.1.0",
                            "active_jobs": 0}


async def test_job_completes_with_a_seal_the_reference_accepts(start_miner, engine_name):
    with trio.fail_after(60):
        miner = await start_miner(engine=engine_name)
        threshold = EASY[engine_name]
        r = await miner.mine("job-1", threshold)
        assert r.status_code == 200
        assert r.content == b'{"status": "accepted", "job_id": "job-1"}'
        body = await miner.wait_status("job-1", "completed", "failed")
        assert body["status"] == "completed"
        assert list(body) == ["status", "job_id", "nonce", "work", "hash_count", "elapsed_time"]
        work = bytes.fromhex(body["work"])
        assert len(work) == 64 and body["work"] == body["work"].lower()
        nonce = int.from_bytes(work, "big")
        assert body["nonce"] == format(nonce, "x") and not body["nonce"].startswith("0")
        assert qpow.is_valid(qpow.JobContext.from_header(bytes(32)), nonce, threshold)
        assert body["hash_count"] >= 1
        later = await miner.result("job-1")
        assert later == body  # elapsed_time and hash_count are frozen once the job ended


async def test_exhausted_range_fails_with_exact_hash_count(start_miner, engine_name):
    with trio.fail_after(60):
        miner = await start_miner(engine=engine_name)
        await miner.mine("tiny", 0, start=5, end=104)
        body = await miner.wait_status("tiny", "failed", "completed")
        assert body == {"status": "failed", "job_id": "tiny", "nonce": None, "work": None,
                        "hash_count": 100, "elapsed_time": body["elapsed_time"]}


async def test_range_from_zero_with_max_threshold_never_yields_nonce_zero(start_miner, engine_name):
    with trio.fail_after(60):
        miner = await start_miner(engine=engine_name)
        await miner.mine("from-zero", MAX, start=0, end=1000)
        body = await miner.wait_status("from-zero", "completed", "failed")
        assert body["status"] == "completed" and int(body["nonce"], 16) != 0
        await miner.mine("only-zero", MAX, start=0, end=0)
        body = await miner.wait_status("only-zero", "completed", "failed")
        assert (body["status"], body["nonce"], body["hash_count"]) == ("failed", None, 1)


async def test_cancel_stops_workers_and_freezes_hash_count(start_miner):
    with trio.fail_after(30):
        miner = await start_miner(progress_chunk_ms=100)
        await miner.mine("long", 0)
        while (await miner.result("long"))["hash_count"] == 0:
            await trio.sleep(0.02)
        r = await miner.client.post("/cancel/long")
        assert r.status_code == 200 and r.content == b'{"status": "cancelled", "job_id": "long"}'
        first = await miner.result("long")
        assert first["status"] == "cancelled" and first["nonce"] is None and first["work"] is None
        with trio.fail_after(0.2):  # every worker thread saw the flag and returned
            await miner.runtime.wait_settled("long")
        assert await miner.result("long") == first
        assert (await miner.client.get("/health")).json()["active_jobs"] == 0


async def test_cancel_of_a_finished_job_answers_cancelled_but_keeps_its_result(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        await miner.mine("done", EASY["cpu-fast"])
        done = await miner.wait_status("done", "completed")
        r = await miner.client.post("/cancel/done")
        assert r.status_code == 200 and r.json() == {"status": "cancelled", "job_id": "done"}
        assert await miner.result("done") == done


async def test_unknown_job_answers_the_protocols_404_bodies(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        r = await miner.client.get("/result/nope")
        assert r.status_code == 404
        assert r.content == (b'{"status": "not_found", "job_id": "nope", "nonce": null, "work": null, '
                             b'"hash_count": 0, "elapsed_time": 0.0}')
        r = await miner.client.post("/cancel/nope")
        assert r.status_code == 404
        assert r.json() == {"status": "not_found", "job_id": "nope", "message": "Job not found"}


async def test_duplicate_job_id_is_a_409_and_leaves_the_first_job_alone(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        assert (await miner.mine("dup", 0)).status_code == 200
        body = assert_error_shape(await miner.mine("dup", MAX), 409, "dup")
        assert body["message"] == "job dup already exists"
        assert (await miner.result("dup"))["status"] == "running"


BAD_BODIES = {  # name: (body, status, echoed job_id, message prefix)
    "not json": (b"{nope", 400, "", "body is not valid JSON"),
    "invalid utf-8": (b'{"job_id": "\xff"}', 400, "", "body is not valid UTF-8"),
    "array": (b"[]", 400, "", "body must be a JSON object"),
    "empty": (b"", 400, "", "body is not valid JSON"),
    "deeply nested": (b"[" * 30_000 + b"]" * 30_000, 400, "", "body is not valid JSON"),
    "oversized": (b"[" * 40_000 + b"]" * 40_000, 413, "", "request body over 65536 bytes"),
    "missing fields": (b'{"job_id": "x"}', 400, "x",
                       "missing field(s): mining_hash, distance_threshold, nonce_start, nonce_end"),
}


def with_field(**changes) -> dict:
    body = mine_body("bad", 1)
    body.update(changes)
    return body


BAD_FIELDS = {
    "extra field": (with_field(extra=1), "unknown field(s): extra"),
    "job_id number": (with_field(job_id=5), "job_id must be a string"),
    "job_id empty": (with_field(job_id=""), "job_id must be 1 to 128 characters"),
    "job_id too long": (with_field(job_id="a" * 129), "job_id must be 1 to 128 characters"),
    "job_id with slash": (with_field(job_id="a/b"), "job_id may contain only letters, digits and . _ : -"),
    "hash too short": (with_field(mining_hash="00" * 31), "mining_hash must be exactly 64 hex characters"),
    "hash with 0x": (with_field(mining_hash="0x" + "00" * 31), "mining_hash must contain only hex characters 0-9a-f"),
    "hash not string": (with_field(mining_hash=None), "mining_hash must be a string"),
    "threshold number": (with_field(distance_threshold=5), "distance_threshold must be a string"),
    "threshold hex": (with_field(distance_threshold="ff"), "distance_threshold must be a decimal integer below 2^512"),
    "threshold negative": (with_field(distance_threshold="-1"),
                           "distance_threshold must be a decimal integer below 2^512"),
    "threshold 2^512": (with_field(distance_threshold=str(2**512)),
                        "distance_threshold must be a decimal integer below 2^512"),
    "start short": (with_field(nonce_start="01"), "nonce_start must be exactly 128 hex characters"),
    "end non-hex": (with_field(nonce_end="g" * 128), "nonce_end must contain only hex characters 0-9a-f"),
    "start > end": (with_field(nonce_start="0" * 127 + "2", nonce_end="0" * 127 + "1"),
                    "nonce_start must be <= nonce_end"),
}


async def test_invalid_bodies_get_400_with_the_json_error_shape(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        for name, (raw, status, job_id, message) in BAD_BODIES.items():
            r = await miner.client.post("/mine", content=raw, headers={"content-type": "application/json"})
            body = assert_error_shape(r, status, job_id)
            assert body["message"].startswith(message), name
        for name, (doc, message) in BAD_FIELDS.items():
            r = await miner.client.post("/mine", json=doc)
            job_id = "bad" if isinstance(doc["job_id"], str) and doc["job_id"] == "bad" else ""
            body = assert_error_shape(r, 400, job_id)
            assert body["message"] == message, name
        assert (await miner.client.get("/health")).json()["active_jobs"] == 0


async def test_uppercase_hex_is_accepted(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        doc = mine_body("upper", EASY["cpu-fast"], header="AB" * 32)
        doc["nonce_end"] = doc["nonce_end"].upper()
        assert (await miner.client.post("/mine", json=doc)).status_code == 200
        assert (await miner.wait_status("upper", "completed"))["status"] == "completed"


async def test_unknown_paths_wrong_methods_and_big_bodies_get_json_errors(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        assert_error_shape(await miner.client.get("/nope"), 404)
        assert_error_shape(await miner.client.get("/mine"), 405)
        assert_error_shape(await miner.client.delete("/result/x"), 405)
        assert_error_shape(await miner.client.post("/mine", content=b"x" * 70_000), 413)


async def test_too_many_running_jobs_is_refused_with_a_json_error(start_miner):
    with trio.fail_after(30):
        miner = await start_miner(max_jobs=2)
        for i in range(2):
            assert (await miner.mine(f"j{i}", 0)).status_code == 200
        body = assert_error_shape(await miner.mine("j2", 0), 429, "j2")
        assert body["message"] == "too many running jobs (max 2); cancel one first"
        await miner.client.post("/cancel/j0")
        assert (await miner.mine("j2", 0)).status_code == 200


async def test_two_concurrent_jobs_both_progress(start_miner):
    with trio.fail_after(30):
        miner = await start_miner(progress_chunk_ms=100)
        await miner.mine("a", 0)
        await miner.mine("b", 0)
        while True:
            a, b = await miner.result("a"), await miner.result("b")
            if a["hash_count"] > 0 and b["hash_count"] > 0:
                break
            await trio.sleep(0.02)
        assert a["status"] == b["status"] == "running"


async def test_job_longer_than_retention_is_still_reported_after_it_ends(start_miner):
    with trio.fail_after(60):
        # the baseline engine scans a few k nonces/s per core (256-bit exponents): ~1 s, then it fails
        miner = await start_miner(job_retention_s=0.3, progress_chunk_ms=100, engine="cpu-baseline")
        await miner.mine("slow", 0, start=1, end=12_000, header="ab" * 32)
        body = await miner.wait_status("slow", "failed", "not_found")
        assert body["status"] == "failed"
        assert body["elapsed_time"] > 0.3  # it started longer ago than the retention period
        assert body["hash_count"] == 12_000
        while (await miner.result("slow"))["status"] != "not_found":  # forgotten once retention has passed
            await trio.sleep(0.05)


def thread_nices() -> dict[int, int]:
    """nice value of every thread of this process, from /proc (field 19; comm may hold spaces)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        out[int(tid)] = int(fields[16])
    return out


async def test_mining_threads_run_at_the_configured_nice_and_the_event_loop_does_not(start_miner):
    with trio.fail_after(30):
        miner = await start_miner(worker_nice=7, progress_chunk_ms=100)
        await miner.mine("nice", 0)
        while 7 not in thread_nices().values():  # a worker thread is inside a chunk
            await trio.sleep(0.01)
        assert thread_nices()[threading.get_native_id()] == 0
        await miner.client.post("/cancel/nice")
        await miner.runtime.wait_settled("nice")
        assert set(thread_nices().values()) == {0}  # priorities were put back after each chunk
