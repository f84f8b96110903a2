"""What an operator sees in a terminal: status lines, Ctrl-C, SIGTERM, the periodic speed line.

The commands run as real subprocesses on a real pseudo-terminal (the pty is their controlling
terminal, so writing Ctrl-C, byte 0x03, makes the line discipline send SIGINT as a shell's would);
every read is bounded by a deadline and every process wait by a timeout.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core.config import ServiceConfig
from quantus_miner.service.server import serve_miner

from ..support import MAX, MINER, LineReader, mine_body

ZERO = "00" * 32
# The promise is a second and a stop takes ~30 ms here; the bound leaves room for this shared 2-core VM
# (under load 10 a devnet stop was once seen to take 2 s: the halt ran after one more node poll).
STOP_S = 3.0
STATUS = re.compile(rb"\r\x1b\[K(mine|bench): ([\d,]+) nonces  ([\d.]+|n/a) M/s  \d+:\d\d")


class Terminal:
    """A command whose stdin, stdout and stderr are one pseudo-terminal, its controlling terminal."""

    def __init__(self, *args: str, env: dict | None = None):
        master, slave = os.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [*MINER, *args], stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0), env={**os.environ, **(env or {})})
        os.close(slave)
        self.output = b""

    def read_until(self, pattern: bytes | re.Pattern, timeout: float, count: int = 1) -> list[re.Match]:
        """Read until `pattern` has matched `count` times in the output (or fail after `timeout` s)."""
        regex = re.compile(re.escape(pattern) if isinstance(pattern, bytes) else pattern)
        deadline = time.monotonic() + timeout
        while len(matches := list(regex.finditer(self.output))) < count:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"{pattern!r} x{count} not seen; output: {self.output[-3000:]!r}")
        return matches

    def read_to_end(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        return self.output

    def _read(self, timeout: float) -> bool:
        if timeout <= 0 or not select.select([self.master], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed (the process exited)
            return False
        self.output += chunk
        return bool(chunk)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def open_(*args, env=None) -> Terminal:
        opened.append(Terminal(*args, env=env))
        return opened[-1]

    yield open_
    for t in opened:
        t.close()


def nonces_of(match: re.Match) -> int:
    return int(match.group(2).replace(b",", b""))


def test_mine_shows_an_updating_status_line_and_ctrl_c_says_where_to_resume(terminal):
    end = 1 << 40  # finite: the status line shows the share done
    term = terminal("mine", "--header", ZERO, "--threshold", "1", "--end", format(end, "x"), "--cores", "2")
    frames = term.read_until(STATUS, timeout=30, count=3)
    counts = [nonces_of(m) for m in frames]
    assert counts == sorted(counts) and counts[-1] > counts[0] > 0  # it updates, in place (\r, erase line)
    assert b"% of the range" in term.output[frames[-1].start():]
    term.ctrl_c()
    t0 = time.monotonic()
    assert term.wait(timeout=5) == 130 and time.monotonic() - t0 < STOP_S
    out = term.read_to_end(timeout=2).decode()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    summary = re.search(r"stopped by SIGINT: ([\d,]+) nonces in [\d.]+ s \(([\d.]+) M/s\), no valid nonce yet; "
                        r"every nonce below ([0-9a-f]+) tested: resume with --start ([0-9a-f]+)", out)
    assert summary, out
    tested, resume = int(summary.group(1).replace(",", "")), int(summary.group(4), 16)
    assert summary.group(3) == summary.group(4)
    assert 1 < resume <= 1 + tested  # everything below it was tested; at most the in-flight chunks again
    assert tested >= counts[-1]


def test_bench_shows_its_status_line_and_ctrl_c_reports_what_it_measured(terminal):
    term = terminal("bench", "--seconds", "60", "--cores", "1")
    frames = term.read_until(STATUS, timeout=30, count=2)
    assert frames[0].group(1) == b"bench" and nonces_of(frames[1]) > nonces_of(frames[0])
    term.ctrl_c()
    t0 = time.monotonic()
    assert term.wait(timeout=5) == 130 and time.monotonic() - t0 < STOP_S
    out = term.read_to_end(timeout=2).decode()
    assert "Traceback" not in out
    assert re.search(r"stopped by SIGINT after [\d.]+ of 60 s: cpu-fast \(\S+\) on 1 core\(s\): [\d.]+ M nonces/s "
                     r"\([\d,]+ nonces in [\d.]+ s\); warm-up [\d.]+ s; cancel latency not measured", out), out


def test_ctrl_c_stops_serve_with_one_summary_and_130(terminal):
    term = terminal("serve", "--port", "0", "--progress-chunk-ms", "200", "--cores", "2")
    line = term.read_until(re.compile(rb"ready: [^\n]*API (http://[\d.:]+)"), timeout=30)[0]
    assert b"warm-up probe" in line.group(0) and b"not the mining rate" in line.group(0)
    with httpx.Client(base_url=line.group(1).decode(), timeout=5) as client:
        assert client.post("/mine", json=mine_body("j", 0)).status_code == 200
        deadline = time.monotonic() + 20
        while client.get("/result/j").json()["hash_count"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    term.ctrl_c()
    t0 = time.monotonic()
    assert term.wait(timeout=5) == 130 and time.monotonic() - t0 < STOP_S
    out = term.read_to_end(timeout=2).decode()
    assert "Traceback" not in out and "Error" not in out
    assert len(re.findall(r"stopped by SIGINT: 1 job\(s\) \(0 completed\), [\d,]+ nonces \([\d.]+ M/s over the "
                          r"uptime\), uptime \d+:\d\d", out)) == 1, out
    assert "job j cancelled: shutdown" in out


def test_ctrl_c_stops_devnet_with_blocks_nonces_rate_and_elapsed(terminal):
    term = terminal("devnet", "--block-time", "0.5", "--cores", "2")
    term.read_until(rb"block    1 by miner", timeout=40)
    term.ctrl_c()
    t0 = time.monotonic()
    assert term.wait(timeout=5) == 130 and time.monotonic() - t0 < STOP_S
    out = term.read_to_end(timeout=2).decode()
    assert "Traceback" not in out
    assert re.search(r"devnet stopped by SIGINT: \d+ block\(s\) \(\d+ mined, 0 from the network\), [\d,]+ nonces, "
                     r"[\d.]+ M/s on average, elapsed \d+:\d\d", out), out


STUCK = """
import sys, time
from quantus_miner.cli.signals import SignalStop
with SignalStop(on_signal=lambda signum: None):  # a first stop that never finishes
    print("armed", flush=True)
    time.sleep(30)
"""


def test_a_second_signal_exits_at_once_even_when_the_first_stop_hangs():
    """The commands' own `SignalStop`; the wedged stop is simulated, since every real stop finishes in ms
    (and two Ctrl-C in one instant reach a process as one pending SIGINT)."""
    proc = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert LineReader(proc, "stdout").line_matching(r"", timeout=30) == "armed"
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)  # the first only asked the command to stop
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        assert proc.wait(timeout=5) == 130 and time.monotonic() - t0 < 2.0  # not the 30 s the stop would take
        assert proc.stderr.read().decode().strip().endswith("SIGINT again: exiting at once")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_without_a_terminal_progress_is_plain_lines_and_json_stays_one_object():
    run = subprocess.run([*MINER, "bench", "--seconds", "1.6", "--cores", "1", "--progress-log-s", "0.5", "--json"],
                         capture_output=True, timeout=60)
    assert run.returncode == 0
    assert json.loads(run.stdout)["hashes"] > 0 and run.stdout.count(b"\n") == 1
    lines = run.stderr.decode().splitlines()
    plain = [ln for ln in lines if re.fullmatch(r"\S+ \S+ bench: [\d,]+ nonces  [\d.]+ M/s  0:0\d", ln)]
    assert len(plain) >= 2, lines  # every 0.5 s, not redrawn
    assert "\r" not in run.stderr.decode() and "\x1b" not in run.stderr.decode()

    quiet = subprocess.run([*MINER, "bench", "--seconds", "0.8", "--cores", "1", "--progress-log-s", "0.2",
                            "--quiet"], capture_output=True, timeout=60)
    assert quiet.returncode == 0 and b"nonces  " not in quiet.stderr
    assert b"M nonces/s" in quiet.stdout


def test_sigterm_stops_mine_with_143_and_a_resumable_json_report():
    proc = subprocess.Popen([*MINER, "mine", "--header", ZERO, "--threshold", "1", "--cores", "2", "--json",
                             "--progress-log-s", "0.3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        err = LineReader(proc)
        first = err.line_matching(r"", timeout=60)  # the first plain progress line: mining is under way
        assert "mine: " in first
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=5) == 143 and time.monotonic() - t0 < STOP_S
        report = json.loads(proc.stdout.read())
        assert report["status"] == "stopped" and report["nonce"] is None
        assert 1 < int(report["resume_start"], 16) <= 1 + report["hash_count"]
        assert b"Traceback" not in err.seen + proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=10)


class Lines(logging.Handler):
    """Speed lines with the trio time they were logged at."""

    def __init__(self):
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def emit(self, record):
        self.lines.append((trio.current_time(), record.getMessage()))


async def test_speed_line_windows_agree_with_result_hash_counts(nursery):
    windows = (2.0, 4.0, 8.0)  # the real line's 10 s / 60 s / 15 min, shortened
    handler = Lines()
    speed_log = logging.getLogger("quantus_miner.speed")
    speed_log.addHandler(handler)
    speed_log.setLevel(logging.INFO)
    try:
        with trio.fail_after(60):
            config = ServiceConfig(port=0, cores=2, progress_chunk_ms=50, log_speed_s=1.0)
            running = await nursery.start(lambda task_status: serve_miner(
                config, registry=CollectorRegistry(), speed_windows=windows, speed_sample_s=0.1,
                task_status=task_status))
            samples: list[tuple[float, int]] = []
            async with httpx.AsyncClient(base_url=running.api_url) as client:
                assert (await client.post("/mine", json=mine_body("s", 0, end=MAX))).status_code == 200
                started = trio.current_time()
                while trio.current_time() - started < max(windows) + 1.5:
                    body = (await client.get("/result/s")).json()
                    samples.append((trio.current_time(), body["hash_count"]))
                    await trio.sleep(0.05)
    finally:
        speed_log.removeHandler(handler)
        speed_log.setLevel(logging.NOTSET)

    def count_at(t: float) -> float:  # /result's hash count at time t, interpolated between polls
        for (t0, n0), (t1, n1) in zip(samples, samples[1:]):
            if t0 <= t <= t1:
                return n0 + (n1 - n0) * (t - t0) / (t1 - t0)
        raise AssertionError(f"no /result samples around {t}")

    at, line = [(t, ln) for t, ln in handler.lines if t <= samples[-1][0]][-1]
    match = re.fullmatch(r"speed 2s/4s/8s ([\d.]+) ([\d.]+) ([\d.]+) M nonces/s; 1 active job\(s\), "
                         r"0 completed of 0 ended", line)
    assert match, line
    for window, figure in zip(windows, match.groups()):
        from_result = (count_at(at) - count_at(at - window)) / window / 1e6
        assert float(figure) == pytest.approx(from_result, rel=0.10), (window, line)
