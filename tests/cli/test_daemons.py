"""The signal and exit-status policy of every command, and the systemd units that rely on it.

Daemons (`serve`, `connect`, `worker`) exit 0 after a graceful SIGTERM stop and 130 after SIGINT;
one-shot commands (`mine`, `bench`, `devnet`) 130/143 (tests/cli/test_terminal.py); each prints one
summary line. Test charter: the commands run as real processes; `connect` talks to the QUIC node
simulator over 127.0.0.1 (the node is outside this project), `worker` to a real Dask scheduler.
Readiness comes from the processes' own output lines, each read with a deadline. The units in
contrib/systemd are checked by `systemd-analyze verify` where that tool is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from quantus_miner.cli.signals import DAEMONS, ONE_SHOT, stop_status

from ..support import MINER, STARTUP_S, Cluster, read_line_matching

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "contrib" / "systemd").glob("*.service"))

NODE = """
import sys, trio
from quantus_miner.core.quic_messages import NewJob
from quantus_miner.devnet.quic_node import NodeSim

async def main(files):
    sim = NodeSim()
    sim.set_job(NewJob("1", bytes(32), 1 << 400))  # never solved: the miner is mining when stopped
    async with trio.open_nursery() as n:
        port = await n.start(sim.run)
        sim.write_files(files)
        print(port, flush=True)
        await trio.sleep_forever()

trio.run(main, sys.argv[1])
"""


def test_the_policy_table_covers_every_command():
    from quantus_miner.cli import COMMANDS

    assert DAEMONS | ONE_SHOT == set(COMMANDS) and not DAEMONS & ONE_SHOT
    assert {c: (stop_status(c, signal.SIGTERM), stop_status(c, signal.SIGINT)) for c in COMMANDS} == {
        "serve": (0, 130), "connect": (0, 130), "worker": (0, 130),
        "mine": (143, 130), "bench": (143, 130), "devnet": (143, 130)}
    readme = (ROOT / "README.md").read_text()
    for command in COMMANDS:  # the README's table names every command with its statuses
        assert re.search(rf"\| `{command}`[^\n]*\| {stop_status(command, signal.SIGTERM)} \| 130 \|", readme), command


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_connect_stops_with_its_status_and_one_summary_line(tmp_path, sig, status):
    node = subprocess.Popen([sys.executable, "-c", NODE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(read_line_matching(node, r"^\d+$", timeout=STARTUP_S, stream="stdout"))
        miner = subprocess.Popen(
            [*MINER, "connect", "--node-addr", f"127.0.0.1:{port}", "--cores", "1",
             "--auth-token-file", str(tmp_path / "miner-auth-token"),
             "--tls-cert-sha256-file", str(tmp_path / "miner-tls-cert-sha256")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            read_line_matching(miner, r"job 1 accepted", timeout=60)
            miner.send_signal(sig)
            _, err = miner.communicate(timeout=10)
        finally:
            miner.kill()
        assert miner.returncode == status, err
        assert "Traceback" not in err
        name = signal.Signals(sig).name
        summaries = re.findall(rf"stopped by {name}: 1 job\(s\), 0 seal\(s\) sent \(0 result\(s\) in all\), "
                               r"[\d,]+ nonces \([\d.]+ M/s over the uptime\), uptime \d+:\d\d", err)
        assert len(summaries) == 1, err
    finally:
        node.kill()
        node.wait(timeout=10)


def test_worker_stops_on_sigterm_with_0_and_a_summary(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_scheduler()
        worker = subprocess.Popen([*MINER, "worker", cluster.address, "--nthreads", "1", "--name", "w",
                                   "--cluster-timeout-s", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            read_line_matching(worker, r"worker w .* registered with", timeout=60)
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=20)
        finally:
            worker.kill()
        assert worker.returncode == 0, err
        assert "Traceback" not in err
        assert re.search(r"stopped by SIGTERM: 0 chunk\(s\), 0 nonces \([\d.]+ M/s over the uptime\), "
                         r"uptime \d+:\d\d", err), err
    finally:
        cluster.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed "
                    "(Debian: apt-get install systemd)")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_unit_verifies(tmp_path, unit):
    # verify resolves ExecStart's binary: point it at a stand-in so the check is about the unit itself
    text = unit.read_text().replace("/usr/local/bin/quantus-miner", str(tmp_path / "quantus-miner"))
    (tmp_path / "quantus-miner").write_text("#!/bin/sh\n")
    (tmp_path / "quantus-miner").chmod(0o755)
    (tmp_path / unit.name).write_text(text)
    run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / unit.name)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    # a container without systemd as PID 1 may warn about its own units; only ours must be clean
    ours = [line for line in run.stderr.splitlines() if unit.name in line]
    assert run.returncode == 0 and not ours, run.stderr


def test_systemd_units_run_the_daemons_with_the_hardening_the_readme_promises():
    assert [u.name for u in UNITS] == ["quantus-miner-connect.service", "quantus-miner-serve.service",
                                       "quantus-miner-worker.service"]
    for unit in UNITS:
        text = unit.read_text()
        command = unit.stem.removeprefix("quantus-miner-")
        assert re.search(rf"^ExecStart=/usr/local/bin/quantus-miner {command}\b", text, re.M), unit.name
        for option in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
                       "EnvironmentFile=-/etc/quantus-miner/", "KillSignal=SIGTERM", "Restart=on-failure"):
            assert option in text, (unit.name, option)
        assert not re.search(r"^SuccessExitStatus=", text, re.M)  # exit 0 after SIGTERM needs no exception
