"""`connect` end to end: the real runtime and cpu-fast-v2 engine against the QUIC node simulator.

Test charter: real UDP on 127.0.0.1 (the simulator binds port 0 and hands the port back through
`nursery.start`); the simulator re-verifies every seal with the real QPoW v2 check and the tests
check it again with `core.qpow2`. Difficulties are low (a few thousand tries: milliseconds) except
where a job must never finish. Every test has an absolute `trio.fail_after`; order comes from the
simulator's and the recorder's change events, never from sleeps (the keep-alive test lets time
pass on purpose: that is what it tests). The whole file takes ~10-20 s on 2 busy cores.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from quantus_miner.core import qpow2
from quantus_miner.core.config import ServiceConfig
from quantus_miner.core.jobs import Cause, JobStatus
from quantus_miner.core.quic_messages import NewJob
from quantus_miner.devnet.quic_node import NodeSim, mine_chain
from quantus_miner.service.node_client import AuthFailed, PinMismatch, connect_miner

from ..support import Recorder

DEADLINE = 30
FAST = dict(backoff=(0.05, 0.4))
ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "data" / "qpow2_vectors_public.json").read_text())
EASY = 3000  # expected tries per block: milliseconds for cpu-fast-v2
NEVER = 1 << 400  # a difficulty no test finishes


def header(n: int) -> bytes:
    return bytes([n]) * 32


def miner_config(sim: NodeSim, files: Path, **kw) -> ServiceConfig:
    files.mkdir(exist_ok=True)
    pin, token = sim.write_files(files)
    return ServiceConfig(**{"node_addr": ("127.0.0.1", sim.port), "auth_token_file": str(token),
                            "tls_cert_sha256_file": str(pin), "engine": "cpu-fast-v2", "cores": 1,
                            "progress_chunk_ms": 50, **kw})


async def start_miner(nursery: trio.Nursery, config: ServiceConfig, rec: Recorder | None = None, **kw):
    return await nursery.start(partial(connect_miner, config, registry=CollectorRegistry(), on_status=rec,
                                       **{**FAST, **kw}))


def assert_valid_seal(sim: NodeSim, job_id: str, job_header: bytes, difficulty: int) -> None:
    nonce, _ = sim.seals[job_id]
    assert nonce != 0 and qpow2.pow_hash(job_header, nonce) < qpow2.target_of(difficulty)


async def test_good_token_mines_a_verified_block(tmp_path):
    sim = NodeSim()
    sim.set_job(NewJob("1", header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            running = await start_miner(n, miner_config(sim, tmp_path, metrics_port=0))
            await sim.wait_for(lambda: "1" in sim.accepted)
            assert_valid_seal(sim, "1", header(1), EASY)
            result = sim.accepted["1"]
            assert result.status == "completed" and result.hash_count > 0 and result.elapsed_time > 0
            assert sim.miners[0].tokens_seen == [sim.token]
            snap = running.runtime.result("1")
            assert snap.status is JobStatus.COMPLETED and snap.engine == "cpu-fast-v2"
            assert snap.nonce == result.nonce and snap.distance == qpow2.pow_hash(header(1), result.nonce)
            sample = running.registry.get_sample_value
            assert sample("miner_jobs_by_engine_total", {"engine": "cpu-fast-v2", "status": "completed"}) == 1
            async with httpx.AsyncClient() as http:  # the same metrics port as serve's, over HTTP
                scraped = (await http.get(running.metrics_url)).text
            assert 'miner_job_hashes_total{engine="cpu-fast-v2",job_id="1"}' in scraped
            n.cancel_scope.cancel()


async def test_wrong_token_stops_without_retry(tmp_path):
    sim, rec = NodeSim(), Recorder()
    sim.set_job(NewJob("1", header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            config = miner_config(sim, tmp_path)
            Path(config.auth_token_file).write_text("ff" * 32 + "\n")
            with pytest.raises(AuthFailed, match="auth failed"):
                await connect_miner(config, registry=CollectorRegistry(), on_status=rec, **FAST)
            assert len(rec.of("connecting")) == 1 and sim.stats.connections_created == 1
            assert sim.accepted == {}
            n.cancel_scope.cancel()


async def test_wrong_pin_never_sends_the_token(tmp_path):
    sim, rec = NodeSim(), Recorder()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            config = miner_config(sim, tmp_path)
            Path(config.tls_cert_sha256_file).write_text("ab" * 32 + "\n")
            with pytest.raises(PinMismatch):
                await connect_miner(config, registry=CollectorRegistry(), on_status=rec, **FAST)
            await sim.wait_for(lambda: sim.stats.connections_created == 1 and sim.stats.active == 0)
            assert sim.stats.stream_bytes_received == 0  # the simulator saw no stream data at all
            assert all(m.first_message is None for m in sim.miners)
            assert len(rec.of("connecting")) == 1
            n.cancel_scope.cancel()


async def test_new_job_mid_search_replaces_the_running_job(tmp_path):
    sim, rec = NodeSim(), Recorder()
    sim.set_job(NewJob("1", header(1), NEVER))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            running = await start_miner(n, miner_config(sim, tmp_path), rec)
            runtime = running.runtime
            await rec.wait_for(lambda: rec.of("job"))
            await trio.testing.wait_all_tasks_blocked()
            assert runtime.result("1").status is JobStatus.RUNNING
            sim.set_job(NewJob("2", header(2), EASY))
            await sim.wait_for(lambda: "2" in sim.accepted)
            old = runtime.result("1")
            assert (old.status, old.cause, old.reason) == (JobStatus.CANCELLED, Cause.REPLACED, "replaced by a newer job")
            with trio.fail_after(1):  # the old job's kernels stopped (flag set), not left spinning
                await runtime.wait_settled("1")
            assert [r.job_id for r in sim.miners[0].results] == ["2"]
            assert_valid_seal(sim, "2", header(2), EASY)
            n.cancel_scope.cancel()


@pytest.mark.parametrize("body", [
    {"job_id": "9", "mining_hash": "00" * 32, "difficulty": "0"},
    {"job_id": "9", "mining_hash": "zz" * 32, "difficulty": "5000"},
], ids=["difficulty 0", "bad hash"])
async def test_invalid_job_input_is_answered_failed_and_the_next_job_mined(tmp_path, body):
    sim = NodeSim()
    sim.set_job_msg({"NewJob": body})
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            running = await start_miner(n, miner_config(sim, tmp_path))
            await sim.wait_for(lambda: sim.verdicts)
            (result,) = sim.miners[0].results
            assert (result.status, result.job_id, result.nonce) == ("failed", "9", None)
            assert running.runtime.result("9") is None  # never reached the runtime
            sim.set_job(NewJob("10", header(10), EASY))
            await sim.wait_for(lambda: "10" in sim.accepted)
            n.cancel_scope.cancel()


async def test_idle_longer_than_the_idle_timeout_survives_by_pings(tmp_path):
    sim, rec = NodeSim(idle_timeout=0.5), Recorder()
    sim.set_job(NewJob("1", header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            await start_miner(n, miner_config(sim, tmp_path), rec, ping_interval=0.1, idle_timeout=0.5)
            await sim.wait_for(lambda: "1" in sim.accepted)
            await trio.sleep(1.5)  # 3x the idle timeout with no application traffic
            sim.set_job(NewJob("2", header(2), EASY))
            await sim.wait_for(lambda: "2" in sim.accepted)
            assert sim.stats.connections_created == 1 and rec.of("disconnected") == []
            n.cancel_scope.cancel()


async def _run_node(sim: NodeSim, port: int, *, task_status=trio.TASK_STATUS_IGNORED):
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as n:
            await n.start(partial(sim.run, port=port))
            task_status.started(scope)


async def test_node_restart_reconnects_with_backoff_and_mines_the_current_job(tmp_path):
    sim1, rec = NodeSim(), Recorder()
    sim1.set_job(NewJob("1", header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            node1 = await n.start(_run_node, sim1, 0)
            await start_miner(n, miner_config(sim1, tmp_path), rec)
            await sim1.wait_for(lambda: "1" in sim1.accepted)
            node1.cancel()
            await rec.wait_for(lambda: len(rec.of("backoff")) >= 3)
            sim2 = NodeSim(token=sim1.token, cert=sim1.cert, key=sim1.key)
            sim2.set_job(NewJob("2", header(2), EASY))
            await n.start(_run_node, sim2, sim1.port)
            await sim2.wait_for(lambda: "2" in sim2.accepted)
            assert [i["delay"] for i in rec.of("backoff")][:3] == [0.05, 0.1, 0.2]
            assert_valid_seal(sim2, "2", header(2), EASY)
            n.cancel_scope.cancel()


async def test_a_lost_connection_cancels_the_running_job_as_cancelled_not_replaced(tmp_path):
    sim, rec = NodeSim(), Recorder()
    sim.set_job(NewJob("1", header(1), NEVER))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            node = await n.start(_run_node, sim, 0)
            running = await start_miner(n, miner_config(sim, tmp_path), rec)
            await rec.wait_for(lambda: rec.of("job"))
            node.cancel()
            await rec.wait_for(lambda: rec.of("disconnected"))
            with trio.fail_after(1):  # its kernels stopped too
                await running.runtime.wait_settled("1")
            old = running.runtime.result("1")
            assert (old.status, old.cause, old.reason) == (JobStatus.CANCELLED, Cause.CANCELLED, None)
            n.cancel_scope.cancel()


async def test_two_miners_exactly_one_seal_accepted(tmp_path):
    sim = NodeSim()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            await start_miner(n, miner_config(sim, tmp_path / "a"))
            await start_miner(n, miner_config(sim, tmp_path / "b"))
            await sim.wait_for(lambda: sum(m.authed for m in sim.miners) == 2)
            sim.set_job(NewJob("5", header(5), EASY))
            await sim.wait_for(lambda: len(sim.verdicts) == 2)
            assert sorted(v.verdict for v in sim.verdicts) == ["accepted", "late"]
            assert list(sim.seals) == ["5"]
            assert_valid_seal(sim, "5", header(5), EASY)
            n.cancel_scope.cancel()


async def test_mine_chain_adjusts_difficulty_and_every_block_verifies(tmp_path):
    sim = NodeSim()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            await start_miner(n, miner_config(sim, tmp_path))
            blocks = await mine_chain(sim, blocks=3, difficulty=EASY, block_time=0.05)
            n.cancel_scope.cancel()
    assert [b.height for b in blocks] == [1, 2, 3]
    for b in blocks:
        doc = b.to_json()
        assert qpow2.is_valid(b.header, int(doc["nonce"], 16), b.difficulty)
        assert int(doc["hash"], 16) == qpow2.pow_hash(b.header, b.result.nonce)


def miner_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "quantus_miner", *args]


async def test_connect_subprocess_finds_a_block_and_stops_on_sigterm(tmp_path):
    sim = NodeSim()
    sim.set_job(NewJob("1", header(1), EASY))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            pin, token = sim.write_files(tmp_path)
            proc = await n.start(partial(
                trio.run_process,
                miner_cmd("connect", "--node-addr", f"127.0.0.1:{sim.port}", "--auth-token-file", str(token),
                          "--tls-cert-sha256-file", str(pin), "--cores", "1"),
                check=False, stderr=subprocess.DEVNULL))
            await sim.wait_for(lambda: "1" in sim.accepted)
            assert_valid_seal(sim, "1", header(1), EASY)
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            n.cancel_scope.cancel()


async def test_connect_subprocess_exits_non_zero_on_auth_failure(tmp_path):
    sim = NodeSim()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            pin, token = sim.write_files(tmp_path)
            token.write_text("00" * 32 + "\n")
            done = await trio.run_process(
                miner_cmd("connect", "--node-addr", f"127.0.0.1:{sim.port}", "--auth-token-file", str(token),
                          "--tls-cert-sha256-file", str(pin), "--cores", "1", "--engine", "cpu-baseline-v2"),
                check=False, capture_stderr=True)
            assert done.returncode == 1
            assert b"stopped: the node refused the auth token" in done.stderr
            n.cancel_scope.cancel()


@pytest.mark.parametrize("case", VECTORS["mining"], ids=lambda c: c["label"])
def test_mine_v2_returns_the_first_valid_nonce_of_a_public_vector(case, capsys):
    from quantus_miner.cli import main

    assert main(["mine", "--engine", "cpu-fast-v2", "--header", case["header"], "--difficulty",
                 case["difficulty"], "--start", case["start_nonce"], "--cores", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "completed" and report["engine"] == "cpu-fast-v2" and report["cores"] == 1
    assert int(report["nonce"], 16) == int(case["nonce"], 16) and report["work"] == case["nonce"]
    assert report["hash"] == case["hash"] and report["hash_count"] == case["tested"]


@pytest.mark.parametrize("argv, message", [
    (["mine", "--engine", "cpu-fast", "--header", "00" * 32, "--difficulty", "5"],
     "--engine=cpu-fast mines QPoW v1"),
    (["mine", "--engine", "cpu-fast-v2", "--header", "00" * 32, "--threshold", "5"],
     "--engine=cpu-fast-v2 mines QPoW v2"),
    (["serve", "--engine", "cpu-fast-v2"], "serve needs a QPoW v1 engine"),
    (["connect", "--engine", "cpu-fast", "--node-addr", "127.0.0.1:9833", "--auth-token-file", "t",
      "--tls-cert-sha256-file", "p"], "connect needs a QPoW v2 engine"),
    (["connect", "--node-addr", "127.0.0.1:9833"], "--auth-token-file (or MINER_AUTH_TOKEN_FILE) is required"),
    (["connect", "--node-addr", "nohost", "--auth-token-file", "t", "--tls-cert-sha256-file", "p"],
     "--node-addr='nohost' must be HOST:PORT"),
    (["mine", "--header", "00" * 32, "--difficulty", "0"], "--difficulty must be a decimal integer"),
])
def test_engine_and_pow_mismatches_exit_2(argv, message, capsys):
    from quantus_miner.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_connect_reads_its_settings_from_the_environment():
    from quantus_miner.core.config import resolve

    config = resolve({}, {"MINER_NODE_ADDR": "10.0.0.2:9833", "MINER_AUTH_TOKEN_FILE": "/t",
                          "MINER_TLS_CERT_SHA256_FILE": "/p"}, command="connect")
    assert config.node_addr == ("10.0.0.2", 9833) and config.engine == "cpu-fast-v2"
    assert (config.auth_token_file, config.tls_cert_sha256_file) == ("/t", "/p")


def test_engines_say_which_proof_of_work_they_implement():
    from quantus_miner.core.config import ENGINE_NAMES, POW_OF_ENGINE
    from quantus_miner.engines import get_engine

    assert {name: get_engine(name).pow for name in ENGINE_NAMES} == POW_OF_ENGINE


def test_devnet_2026_mines_verified_blocks_end_to_end(capsys):
    from quantus_miner.cli import main

    assert main(["devnet", "--network", "2026", "--blocks", "2", "--block-time", "0.05", "--json",
                 "--cores", "1"]) == 0
    blocks = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [b["height"] for b in blocks] == [1, 2]
    for b in blocks:
        header, nonce = bytes.fromhex(b["header"]), int(b["nonce"], 16)
        assert qpow2.is_valid(header, nonce, int(b["difficulty"]))
        assert b["hash"] == qpow2.pow_hash(header, nonce).to_bytes(64, "big").hex()
