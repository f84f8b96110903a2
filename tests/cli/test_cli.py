"""The command line as users run it: real subprocesses, real signals, real ports on 127.0.0.1.

Every test is bounded by `trio.fail_after`; servers are found through their "ready" log line.
"""

import json
import os
import signal
import socket
import sys

import httpx
import pytest
import trio

from quantus_miner.core import qpow
from quantus_miner.core.config import ConfigError, resolve

from ..support import MAX, free_port, mine_body, run

@pytest.mark.parametrize("args, env, message", [
    (["--progress-chunk-ms", "0"], {}, "--progress-chunk-ms='0' must be a positive integer"),
    ([], {"MINER_RATE_EMA_ALPHA": "0"}, "MINER_RATE_EMA_ALPHA='0' must be in (0, 1]"),
    (["--engine", "gpu"], {}, "--engine='gpu' must be one of cpu-fast, cpu-baseline"),
    (["--port", "70000"], {}, "--port='70000' must be a port number 0-65535"),
    ([], {"MINER_CORES": "two"}, "MINER_CORES='two' has the wrong format"),
    (["--job-retention-s", "0"], {}, "--job-retention-s='0' must be a number of seconds >= 5"),
    ([], {"MINER_JOB_RETENTION_S": "1"}, "MINER_JOB_RETENTION_S='1' must be a number of seconds >= 5"),
    ([], {"MINER_KERNEL": "bogus"}, "MINER_KERNEL='bogus' must be one of auto, ifma8, avx2x8, lanes8, v2-avx512, v2-avx2, v2-lanes8"),
    (["--kernel", "avx9"], {}, "--kernel='avx9' must be one of auto, ifma8, avx2x8, lanes8, v2-avx512, v2-avx2, v2-lanes8"),
    (["--max-connections", "0"], {}, "--max-connections='0' must be an integer 1-65536"),
    ([], {"MINER_IDLE_TIMEOUT_S": "0"}, "MINER_IDLE_TIMEOUT_S='0' must be a number of seconds 0.1-3600"),
    (["--cores", "0"], {}, "--cores='0' must be a positive integer (0, GPUs only, needs a GPU engine)"),
])
async def test_invalid_configuration_exits_2_with_a_clear_message(args, env, message):
    result = await run("serve", *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize("command, args", [("mine", ["--header", "00" * 32, "--threshold", "1"]), ("bench", []),
                                           ("devnet", [])])
async def test_every_command_validates_the_kernel_like_any_setting(command, args):
    result = await run(command, "--help")
    assert "--kernel MINER_KERNEL" in result.stdout.decode()
    result = await run(command, *args, env={"MINER_KERNEL": "bogus"})
    assert result.returncode == 2 and "MINER_KERNEL='bogus' must be one of auto, ifma8, avx2x8, lanes8, v2-avx512, v2-avx2, v2-lanes8" in result.stderr.decode()


def test_cores_beside_a_gpu_engine_are_cpu_threads_given_explicitly_else_none():
    # a GPU engine mines on its devices only, as before, unless --cores / MINER_CORES names CPU threads to add
    assert resolve({"engine": "gpu-cuda"}, {}, command="mine").cpu_threads == 0
    assert resolve({"engine": "gpu-cuda", "cores": "0"}, {}, command="mine").cpu_threads == 0
    assert resolve({"engine": "gpu-cuda-v2"}, {"MINER_CORES": "3"}, command="bench").cpu_threads == 3
    assert resolve({"engine": "gpu-cuda", "cores": "2"}, {"MINER_CORES": "3"}).cpu_threads == 2
    assert resolve({"cores": "2"}, {}).cores == 2 and resolve({"cores": "2"}, {}).cpu_threads == 0
    with pytest.raises(ConfigError, match=r"^MINER_CORES='0' must be a positive integer \(0, GPUs only"):
        resolve({}, {"MINER_CORES": "0"}, command="bench")


def test_flag_beats_env_beats_default():
    assert resolve({}, {}).progress_chunk_ms == 2000
    assert resolve({}, {"MINER_PROGRESS_CHUNK_MS": "250"}).progress_chunk_ms == 250
    assert resolve({"progress_chunk_ms": "100"}, {"MINER_PROGRESS_CHUNK_MS": "250"}).progress_chunk_ms == 100
    assert resolve({}, {"MINER_RATE_EMA_ALPHA": "0.5"}).rate_ema_alpha == 0.5
    assert resolve({"rate_ema_alpha": "1"}, {}).rate_ema_alpha == 1.0
    assert resolve({}, {}).cores == len(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match=r"^--rate-ema-alpha='1.5' must be in \(0, 1\]$"):
        resolve({"rate_ema_alpha": "1.5"}, {})


@pytest.mark.parametrize("which", ["--port", "--metrics-port"])
async def test_port_in_use_exits_2_and_starts_nothing(which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = ["--metrics-port", "0"] if which == "--port" else ["--port", "0"]
        result = await run("serve", which, str(port), *other)
    assert result.returncode == 2
    assert "cannot bind the" in result.stderr.decode() and "ready:" not in result.stderr.decode()


async def test_sigterm_during_mining_cancels_and_exits_0_within_2_s(spawn_server):
    with trio.fail_after(60):
        server = await spawn_server("--port", "0", "--progress-chunk-ms", "200")
        async with httpx.AsyncClient(base_url=server.api_url) as client:
            assert (await client.post("/mine", json=mine_body("j", 0))).status_code == 200
            while (await client.get("/result/j")).json()["hash_count"] == 0:
                await trio.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(2):
            assert await server.proc.wait() == 0  # a daemon's graceful SIGTERM stop is a success


async def test_sigkill_then_restart_serves_again_on_the_same_port(spawn_server):
    with trio.fail_after(60):
        port = free_port()
        server = await spawn_server("--port", str(port))
        async with httpx.AsyncClient(base_url=server.api_url) as client:
            await client.post("/mine", json=mine_body("j", 0))
        server.proc.kill()
        await server.proc.wait()
        again = await spawn_server("--port", str(port))
        async with httpx.AsyncClient(base_url=again.api_url) as client:
            assert (await client.get("/health")).json()["active_jobs"] == 0
        again.proc.send_signal(signal.SIGTERM)
        assert await again.proc.wait() == 0


async def test_mine_json_completed_failed_and_bad_arguments():
    threshold = MAX // 5000
    result = await run("mine", "--header", "00" * 32, "--threshold", str(threshold), "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert list(report) == ["status", "nonce", "work", "distance", "hash_count", "elapsed_time", "engine", "cores"]
    assert report["status"] == "completed" and report["engine"] == "cpu-fast"
    nonce = int(report["work"], 16)
    assert report["nonce"] == format(nonce, "x") and len(report["work"]) == len(report["distance"]) == 128
    assert qpow.is_valid(qpow.JobContext.from_header(bytes(32)), nonce, threshold)
    assert int(report["distance"], 16) == qpow.distance(qpow.JobContext.from_header(bytes(32)), nonce)

    result = await run("mine", "--header", "00" * 32, "--threshold", "0", "--end", "3e8", "--json",
                       "--engine", "cpu-baseline", "--cores", "1")
    assert result.returncode == 1
    assert json.loads(result.stdout) | {"elapsed_time": 0} == {
        "status": "failed", "nonce": None, "work": None, "distance": None, "hash_count": 1000,
        "elapsed_time": 0, "engine": "cpu-baseline", "cores": 1}

    for bad, message in ((["--header", "zz"], "--header must be exactly 64 hex characters"),
                         (["--threshold", str(2**512)], "--threshold must be a decimal integer below 2^512"),
                         (["--start", "5", "--end", "4"], "--start must be <= --end")):
        args = {"--header": "00" * 32, "--threshold": "1"}
        args.update(dict(zip(bad[::2], bad[1::2])))
        result = await run("mine", *[x for kv in args.items() for x in kv])
        assert result.returncode == 2 and f"quantus-miner mine: error: {message}" in result.stderr.decode(), bad


async def test_bench_json_names_the_kernel_that_ran_and_profiles_its_halves():
    result = await run("bench", "--seconds", "0.3", "--cores", "1", "--json", "--profile")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert set(report["profile"]) == {"hash_rate", "step_rate", "kernel_rate"}
    assert all(rate > 0 for rate in report["profile"].values())
    assert {"engine", "cores", "seconds", "hashes", "hash_rate", "cpu_seconds", "cpu_hash_rate", "kernel", "warmup_s",
            "cancel_latency_ms"} <= set(report)
    assert 0 < report["cpu_seconds"] <= 1.5 * report["seconds"]
    assert report["engine"] == "cpu-fast" and report["cores"] == 1 and report["hashes"] > 0
    assert report["kernel"].startswith(("ifma8", "lanes8"))


async def test_bench_profile_of_an_engine_without_halves_exits_2():
    result = await run("bench", "--engine", "cpu-baseline", "--profile", "--seconds", "0.1")
    assert result.returncode == 2
    assert "--profile: engine cpu-baseline has no separate halves to measure" in result.stderr.decode()


@pytest.mark.parametrize("args", [
    ["bench", "--engine", "cpu-fast-v2"],
    ["devnet", "--network", "2026"],
    ["connect", "--node-addr", "127.0.0.1:1", "--auth-token-file", "/nonexistent", "--tls-cert-sha256-file", "/x"],
])
async def test_the_cluster_takes_v2_work_and_an_unreachable_scheduler_exits_2(args, tmp_path):
    # QPoW v2 on the cluster (issue 18): no longer refused; the scheduler's absence is the error
    if args[0] == "connect":  # readable credentials, so the scheduler is what fails
        (tmp_path / "t").write_text("cd" * 32 + "\n")
        (tmp_path / "p").write_text("ab" * 32 + "\n")
        args = [*args[:3], "--auth-token-file", str(tmp_path / "t"), "--tls-cert-sha256-file", str(tmp_path / "p")]
    address = f"tcp://127.0.0.1:{free_port()}"
    with trio.fail_after(90):
        result = await run(*args, "--cluster", address, "--cluster-timeout-s", "1", timeout=80)
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert f"quantus-miner: error: cannot reach the Dask scheduler at {address} within 1 s" in result.stderr.decode()


async def test_a_command_imports_only_what_it_runs():
    # cli/__init__ imports a command's module when it runs: `mine` loads no web, QUIC or Dask stack
    with trio.fail_after(60):
        done = await trio.run_process([sys.executable, "-X", "importtime", "-m", "quantus_miner", "mine", "--help"],
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.decode().splitlines()
              if line.startswith("import time:")}
    assert not loaded & {"quart", "quart_trio", "hypercorn", "aioquic", "httpx", "distributed"}, loaded


@pytest.mark.parametrize("kind, good, bad, expected", [
    ("positive_int", {"1": 1, "12": 12}, ("0", "-3", "1.5", "x"), "a positive integer"),
    ("positive_float", {"0.5": 0.5, "2": 2.0}, ("0", "-1", "nan", "inf", "x"), "a positive number"),
    ("port_number", {"0": 0, "65535": 65535}, ("-1", "65536", "x"), "a port number 0-65535"),
])
def test_argument_types_accept_their_range_and_name_the_refused_text(kind, good, bad, expected):
    import argparse

    from quantus_miner.cli import args
    parse = getattr(args, kind)
    assert {text: parse(text) for text in good} == good
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"^expected {expected}, got {text!r}$"):
            parse(text)
