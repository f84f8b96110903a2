"""A hostile (authenticated) node cannot end `connect`: ids, repeats, floods, bad frames, resets.

Test charter: the real `connect_miner` (runtime, cpu-fast-v2 engine, 1 core) against the QUIC node
simulator over real UDP on 127.0.0.1, scripted to misbehave: frames are written raw where the
simulator's own encoder would refuse them (a lone surrogate). Only the node is simulated (it is
outside this project). After each misbehaviour the test hands out a valid job and requires a
verified seal for it: the miner is still alive and mining. Order comes from the simulator's and
the recorder's change events, never from sleeps; every test has an absolute `trio.fail_after`.
The last test runs the `quantus-miner connect` process itself and checks it never dies of it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import struct
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from quantus_miner.core.config import ServiceConfig
from quantus_miner.core.jobs import JobStatus
from quantus_miner.core.quic_messages import NewJob, encode_frame
from quantus_miner.devnet.quic_node import NodeSim
from quantus_miner.service.node_client import connect_miner

from ..support import STARTUP_S, LineReader, Recorder

DEADLINE = 30
FAST = dict(backoff=(0.05, 0.4))
EASY = 3000
NEVER = 1 << 400
HASH = "11" * 32
ROOT = Path(__file__).resolve().parents[2]


def header(n: int) -> bytes:
    return bytes([n]) * 32


def raw_new_job(job_id_json: str, difficulty: str = "3000") -> bytes:
    """A NewJob frame whose job_id is given as raw JSON text (escapes included verbatim)."""
    payload = ('{"NewJob":{"job_id":' + job_id_json + ',"mining_hash":"' + HASH
               + '","difficulty":"' + difficulty + '"}}').encode()
    return struct.pack(">I", len(payload)) + payload


def miner_config(sim: NodeSim, files: Path, **kw) -> ServiceConfig:
    files.mkdir(exist_ok=True)
    pin, token = sim.write_files(files)
    return ServiceConfig(**{"node_addr": ("127.0.0.1", sim.port), "auth_token_file": str(token),
                            "tls_cert_sha256_file": str(pin), "engine": "cpu-fast-v2", "cores": 1,
                            "progress_chunk_ms": 50, **kw})


async def start_miner(nursery: trio.Nursery, sim: NodeSim, files: Path, rec: Recorder | None = None):
    return await nursery.start(partial(connect_miner, miner_config(sim, files), registry=CollectorRegistry(),
                                       on_status=rec, **FAST))


async def authed(sim: NodeSim, count: int = 1) -> None:
    await sim.wait_for(lambda: sum(m.authed and not m.ended for m in sim.miners) >= 1
                       and sum(m.authed for m in sim.miners) >= count)


async def still_mines(sim: NodeSim, job_id: str, n: int) -> None:
    sim.set_job(NewJob(job_id, header(n), EASY))
    await sim.wait_for(lambda: job_id in sim.accepted)


@pytest.mark.parametrize("job_id_json, difficulty, why", [
    ('"\\ud800"', "3000", "lone surrogate"),
    ('"' + "\\u0001" * 128 + '"', "3000", "1024-byte frame limit"),
    ('"' + "a" * 700 + '"', "3000", "1024-byte frame limit"),
    ('"\\udfff"', "0", "lone surrogate"),  # invalid input too: the `failed` answer takes the same check
    ('"' + "\\u0001" * 128 + '"', "zz", "1024-byte frame limit"),
    ('17', "3000", "no job id to echo"),
], ids=["lone surrogate", "128 x U+0001", "700 chars", "surrogate, difficulty 0", "controls, bad difficulty",
        "number id"])
async def test_a_job_id_that_cannot_be_echoed_is_skipped_with_one_warning(tmp_path, caplog, job_id_json,
                                                                          difficulty, why):
    caplog.set_level(logging.WARNING, "quantus_miner")
    sim = NodeSim()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            rec = Recorder()
            running = await start_miner(n, sim, tmp_path, rec)
            await authed(sim)
            sim.send_raw_to_all(raw_new_job(job_id_json, difficulty))
            await still_mines(sim, "2", 2)
            assert [r.job_id for r in sim.miners[0].results] == ["2"]  # nothing sent for the bad id
            assert [s.job_id for s in running.runtime.snapshots()] == ["2"]  # and nothing mined
            assert sim.stats.connections_created == 1  # the connection survived it
            warnings = [r.getMessage() for r in caplog.records if why in r.getMessage()]
            assert len(warnings) == 1, caplog.text
            assert "\n" not in warnings[0] and "\x01" not in warnings[0]
            n.cancel_scope.cancel()


@pytest.mark.parametrize("job_id", ["line\nquantus_miner ERROR forged", "", "é" * 40, "c~1", "a b/c"],
                         ids=["newline", "empty", "non-ASCII", "tilde", "space and slash"])
async def test_odd_but_echoable_ids_are_mined_and_echoed_exactly(tmp_path, caplog, job_id):
    caplog.set_level(logging.DEBUG, "quantus_miner")
    sim = NodeSim()
    sim.set_job(NewJob(job_id, header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            running = await start_miner(n, sim, tmp_path)
            await sim.wait_for(lambda: job_id in sim.accepted)
            (snap,) = running.runtime.snapshots()
            assert snap.status is JobStatus.COMPLETED and snap.nonce == sim.accepted[job_id].nonce
            n.cancel_scope.cancel()
    for record in caplog.records:  # control characters from the node never reach a log line raw
        assert "\n" not in record.getMessage() and "forged" not in record.getMessage().split("'")[0]


async def test_aliases_never_collide_with_node_ids(tmp_path):
    """`c` is retained by the runtime; the node then sends `c~1` and `c` again: both are mined."""
    sim, rec = NodeSim(), Recorder()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            running = await start_miner(n, sim, tmp_path, rec)
            for i, job_id in enumerate(["c", "c~1", "c", "c~1", "c~2"]):
                sim.set_job(NewJob(job_id, header(i), NEVER))
                await rec.wait_for(lambda: len(rec.of("job")) == i + 1)
                await trio.testing.wait_all_tasks_blocked()  # submitted to the runtime
                assert len(running.runtime.snapshots()) == i + 1
            await still_mines(sim, "c", 9)  # the same id a fourth time, now solvable
            statuses = {s.job_id: s.status for s in running.runtime.snapshots()}
            assert len(statuses) == 6 and list(statuses.values()).count(JobStatus.COMPLETED) == 1
            assert not any(e["status"] == "error" for e in rec.of("result_sent"))
            n.cancel_scope.cancel()


async def test_a_job_repeated_after_a_reconnect_gets_its_stored_result_once(tmp_path):
    sim, rec = NodeSim(), Recorder()
    sim.set_job(NewJob("r", header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            running = await start_miner(n, sim, tmp_path, rec)
            await sim.wait_for(lambda: "r" in sim.accepted)
            first = sim.accepted["r"]
            results = lambda: [r for m in sim.miners for r in m.results]  # noqa: E731
            sim.miners[-1].conn.close("node restarting")  # on reconnect the node repeats job r
            await sim.wait_for(lambda: len(results()) == 2)
            sim.miners[-1].conn.close("node restarting")  # and again: now ignored
            await rec.wait_for(lambda: rec.of("job_repeat_ignored"))
            assert results() == [first, first]  # re-sent once, same seal
            assert len(rec.of("job_repeat_ignored")) == 1
            assert [s.job_id for s in running.runtime.snapshots()] == ["r"]  # never mined again
            await still_mines(sim, "s", 2)
            n.cancel_scope.cancel()


async def test_a_restarted_node_reusing_an_id_for_a_new_job_gets_it_mined(tmp_path):
    """The node numbers jobs per process ("1", "2", ...): after a restart an answered id comes back with
    a new header. That is a new job: mined and sealed, not answered from memory."""
    sim, rec = NodeSim(), Recorder()
    sim.set_job(NewJob("1", header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            await start_miner(n, sim, tmp_path, rec)
            await sim.wait_for(lambda: "1" in sim.accepted)
            sim.seals.clear()  # the node restarts: it forgets its seals, its counter starts again
            sim.accepted.clear()
            sim.set_job(NewJob("1", header(2), EASY))  # the restarted node's first job
            sim.miners[-1].conn.close("node restarting")
            await sim.wait_for(lambda: "1" in sim.accepted)  # judged against header(2): a new seal
            assert not rec.of("job_repeat_ignored")
            n.cancel_scope.cancel()


async def test_floods_of_jobs_and_unexpected_messages_leave_the_miner_mining(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "quantus_miner")
    sim, rec = NodeSim(), Recorder()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            running = await start_miner(n, sim, tmp_path, rec)
            await authed(sim)
            bogus = encode_frame({"JobResult": {"status": "completed", "job_id": "x"}})
            sim.send_raw_to_all(bogus * 40)  # 40 unexpected messages: one warning line
            sim.send_raw_to_all(raw_new_job('"\\ud800"') * 50)  # 50 unanswerable jobs: one warning line
            jobs = b"".join(encode_frame(NewJob(f"f{i}", header(i % 250), NEVER).to_msg()) for i in range(200))
            sim.send_raw_to_all(jobs)  # 200 jobs at once: past the 64-message receive queue
            await still_mines(sim, "after", 3)
            unexpected = [r for r in caplog.records if "unexpected JobResult" in r.getMessage()]
            assert 1 <= len(unexpected) <= sim.stats.connections_created
            skipped = [r for r in caplog.records if "lone surrogate" in r.getMessage()]
            assert 1 <= len(skipped) <= sim.stats.connections_created
            assert len(running.runtime.snapshots()) <= running.runtime.config.max_finished_jobs + 1
            assert all(s.status is not JobStatus.RUNNING for s in running.runtime.snapshots()
                       if s.job_id != "after")
            n.cancel_scope.cancel()


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff",  # a length far past the limit
    b"\x00\x00\x00\x05hello",  # not JSON
    struct.pack(">I", 2) + b"[]",  # not an object
    encode_frame({"Cancel": {}}),  # unknown tag
], ids=["oversized", "not json", "array", "unknown tag"])
async def test_bad_frames_reset_the_connection_and_mining_resumes(tmp_path, garbage):
    sim, rec = NodeSim(), Recorder()
    sim.set_job(NewJob("1", header(1), NEVER))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            await start_miner(n, sim, tmp_path, rec)
            await rec.wait_for(lambda: rec.of("job"))
            sim.send_raw_to_all(garbage)
            await rec.wait_for(lambda: rec.of("disconnected"))
            await still_mines(sim, "2", 2)
            assert "bad frame" in rec.of("disconnected")[0]["reason"]
            n.cancel_scope.cancel()


NODE_SCRIPT = """
import sys, trio
from quantus_miner.core.quic_messages import NewJob
from quantus_miner.devnet.quic_node import NodeSim

async def main(files, frames):
    sim = NodeSim()
    async with trio.open_nursery() as n:
        port = await n.start(sim.run)
        sim.write_files(files)
        print(port, flush=True)
        await sim.wait_for(lambda: any(m.authed for m in sim.miners))
        for frame in frames:
            sim.send_raw_to_all(bytes.fromhex(frame))
        sim.set_job(NewJob("line\\nforged", bytes(32), 3000))
        await sim.wait_for(lambda: sim.accepted)
        print("accepted", flush=True)
        await trio.sleep_forever()

trio.run(main, sys.argv[1], sys.argv[2:])
"""


def test_connect_process_survives_a_hostile_node_and_stops_cleanly(tmp_path):
    """The real command: hostile ids, a seal for the next job, then SIGTERM -> exit 0 and a summary."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    frames = [raw_new_job('"\\ud800"'), raw_new_job('"' + "\\u0001" * 128 + '"', "0"),
              raw_new_job('"' + "a" * 700 + '"')]
    node = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(tmp_path), *(f.hex() for f in frames)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        node_out = LineReader(node, "stdout")  # every read with a deadline: a wedged node fails fast
        port = int(node_out.line_matching(r"^\d+$", timeout=STARTUP_S))
        miner = subprocess.Popen(
            [sys.executable, "-m", "quantus_miner", "connect", "--node-addr", f"127.0.0.1:{port}",
             "--auth-token-file", str(tmp_path / "miner-auth-token"),
             "--tls-cert-sha256-file", str(tmp_path / "miner-tls-cert-sha256"), "--cores", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            # the miner starts (kernels from the cache, or compiled: ~10-30 s), survives the frames, finds a seal
            try:
                line = node_out.line_matching(r"", timeout=2 * STARTUP_S)  # the node's next line, whatever it is
            except AssertionError as exc:
                if miner.poll() is None:
                    raise
                raise AssertionError(f"{exc}; the miner exited with {miner.returncode}: "
                                     f"{miner.communicate(timeout=10)[1][-3000:]}") from None
            assert line == "accepted"
            assert miner.poll() is None  # still running after everything the node sent
            miner.send_signal(signal.SIGTERM)
            out, err = miner.communicate(timeout=30)
        finally:
            miner.kill()
        assert miner.returncode == 0, err
        assert "Traceback" not in err and "\nforged" not in err
        assert "1 seal(s) sent" in err.splitlines()[-1], err
    finally:
        node.kill()
        node.wait(timeout=10)
