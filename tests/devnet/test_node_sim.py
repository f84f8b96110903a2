"""The 2026 node simulator judges results exactly as the node does, and runs alone (`devnet --no-miner`).

What the node does (chain `node/src/miner_server.rs`, `node/src/service.rs::parse_mining_result`,
quantus-miner-api's `MiningResult`): a message that does not deserialize ends its read loop (the
miner is disconnected); a result for another job id or with a status other than `completed` is
ignored; `work` must hex-decode to exactly 64 bytes and is the seal (`nonce` is never read); an
invalid seal is refused and the node keeps waiting. Test charter: a raw QUIC client over real UDP on
127.0.0.1 plays the miner (the transport is this project's; the client sends what a test scripts),
and the command runs as real processes; each wait has an absolute deadline.
"""

from __future__ import annotations

import os
import re
import select
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import trio

from quantus_miner.core.quic_messages import NewJob, Ready
from quantus_miner.devnet.quic_node import NodeSim
from quantus_miner.quic import tls
from quantus_miner.quic.transport import connect

from ..support import MINER

DEADLINE = 20
NONCE = 5
WORK = NONCE.to_bytes(64, "big").hex()


def result(**fields) -> dict:
    body = {"status": "completed", "job_id": "1", "nonce": format(NONCE, "x"), "work": WORK,
            "hash_count": 7, "elapsed_time": 0.5}
    body.update(fields)
    return {"JobResult": {k: v for k, v in body.items() if v is not ...}}


CASES = {
    "valid": (result(), "accepted"),
    "nonce contradicts work": (result(nonce="1"), "accepted"),
    "no nonce": (result(nonce=...), "accepted"),
    "null nonce": (result(nonce=None), "accepted"),
    "upper-case work": (result(work=WORK.upper()), "accepted"),
    "integer elapsed": (result(elapsed_time=1), "accepted"),
    "unknown field": (result(extra=[1, 2]), "accepted"),
    "miner_id set": (result(miner_id=99), "accepted"),
    "other job": (result(job_id="0"), "stale"),
    "failed": (result(status="failed", work=None), "ignored"),
    "cancelled with work": (result(status="cancelled"), "ignored"),
    "no work": (result(work=...), "invalid"),
    "null work": (result(work=None), "invalid"),
    "short work": (result(work=WORK[:-2]), "invalid"),
    "odd work": (result(work=WORK[:-1]), "invalid"),
    "non-hex work": (result(work="zz" * 64), "invalid"),
    "0x work": (result(work="0x" + WORK[2:]), "invalid"),
    "zero nonce": (result(work="00" * 64), "invalid"),
    "unknown status": (result(status="done"), "dropped"),
    "numeric job id": (result(job_id=1), "dropped"),
    "numeric nonce": (result(nonce=5), "dropped"),
    "numeric work": (result(work=5), "dropped"),
    "no hash_count": (result(hash_count=...), "dropped"),
    "negative hash_count": (result(hash_count=-1), "dropped"),
    "float hash_count": (result(hash_count=1.0), "dropped"),
    "hash_count past u64": (result(hash_count=1 << 64), "dropped"),
    "boolean hash_count": (result(hash_count=True), "dropped"),
    "no elapsed_time": (result(elapsed_time=...), "dropped"),
    "string elapsed_time": (result(elapsed_time="1"), "dropped"),
    "elapsed_time past f64 (10**400)": (result(elapsed_time=10**400), "dropped"),
    "negative miner_id": (result(miner_id=-1), "dropped"),
    "Ready again": ({"Ready": {"token": "x"}}, "unexpected"),
    "Ready without token": ({"Ready": {}}, "dropped"),
    "NewJob from a miner": ({"NewJob": {"job_id": "1", "mining_hash": "00", "difficulty": "1"}}, "unexpected"),
}


@pytest.mark.parametrize("message, verdict", CASES.values(), ids=CASES.keys())
async def test_results_are_judged_as_the_node_judges_them(message, verdict):
    sim = NodeSim()  # difficulty 1: every nonce but 0 is a valid seal
    sim.set_job(NewJob("1", bytes(32), 1))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            async with connect("127.0.0.1", sim.port, pin_sha256=sim.pin) as conn:
                await conn.send(Ready(sim.token).to_msg())
                assert "NewJob" in await conn.receive()
                await conn.send(message)
                await sim.wait_for(lambda: sim.verdicts)
                (v,) = sim.verdicts
                assert v.verdict == verdict, v
                if verdict == "accepted":
                    assert sim.accepted["1"].nonce == NONCE
                if verdict == "dropped":  # the node ends the connection; the miner sees it go
                    await conn.closed.wait()
                    assert sim.rejected == 1
                else:
                    await conn.send(result())  # still connected: a valid seal is still taken
                    await sim.wait_for(lambda: len(sim.verdicts) == 2)
                    assert sim.verdicts[1].verdict == ("late" if verdict == "accepted" else "accepted")
            n.cancel_scope.cancel()


def test_the_node_directory_persists_token_and_certificate_like_the_node(tmp_path):
    from quantus_miner.cli.devnet import node_sim_in

    first = node_sim_in(tmp_path)
    first.write_files(tmp_path)
    again = node_sim_in(tmp_path)
    assert (again.token, again.pin) == (first.token, first.pin)
    assert tls.read_pin_file(tmp_path / "miner-tls-cert-sha256") == first.pin
    for name in ("miner-auth-token", "miner-tls-cert.der", "miner-tls-key.der"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    (tmp_path / "miner-auth-token").write_text("operator-chosen-token-1234\n")
    assert node_sim_in(tmp_path).token == "operator-chosen-token-1234"


def read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> re.Match:
    seen, deadline, fd = b"", time.monotonic() + timeout, proc.stderr.fileno()
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], deadline - time.monotonic())[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
        if m := re.search(pattern, seen.decode(errors="replace")):
            return m
    raise AssertionError(f"{pattern!r} not seen in {seen.decode(errors='replace')[-3000:]}")


def test_no_miner_devnet_mines_with_a_separate_connect_process(tmp_path):
    node = subprocess.Popen([*MINER, "devnet", "--network", "2026", "--no-miner", "--node-port", "0",
                             "--node-dir", str(tmp_path), "--start-difficulty", "3000", "--blocks", "2",
                             "--block-time", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    miner = None
    try:
        m = read_until(node, r"on 127\.0\.0\.1:(\d+) \(UDP\)[\s\S]*certificate pin file: (\S+)", timeout=30)
        assert Path(m.group(2)) == tmp_path / "miner-tls-cert-sha256"
        assert (tmp_path / "miner-auth-token").exists()
        miner = subprocess.Popen([*MINER, "connect", "--node-addr", f"127.0.0.1:{m.group(1)}", "--cores", "1",
                                  "--auth-token-file", str(tmp_path / "miner-auth-token"),
                                  "--tls-cert-sha256-file", m.group(2)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, err = node.communicate(timeout=90)
        assert node.returncode == 0, err
        assert len(re.findall(rb"^block +\d+ in", out, re.M)) == 2
        assert re.search(rb"devnet: 2 block\(s\) \(2 mined, 0 from the network\), [\d,]+ nonces, [\d.]+ M/s on "
                         rb"average, elapsed \d+:\d\d, mean block time [\d.]+ s, 0 cancel\(s\), 0 rejected", out), out
    finally:
        node.kill()
        if miner is not None:
            miner.kill()
            miner.wait(timeout=10)


def test_no_miner_devnet_stopped_by_ctrl_c_prints_its_summary_and_130(tmp_path):
    node = subprocess.Popen([*MINER, "devnet", "--network", "2026", "--no-miner", "--node-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_until(node, r"waiting for miners", timeout=30)
        node.send_signal(signal.SIGINT)
        out, err = node.communicate(timeout=10)
        assert node.returncode == 130, err
        assert b"Traceback" not in err
        assert re.search(rb"devnet stopped by SIGINT: 0 block\(s\) \(0 mined, 0 from the network\), 0 nonces", out)
    finally:
        node.kill()
