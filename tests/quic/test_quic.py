"""End-to-end tests on real UDP (127.0.0.1, port 0). Every test has an absolute deadline;
synchronisation uses events (NodeSim.wait_for / Recorder.wait_for), never sleeps. The only
sleeps are in the keep-alive tests, where letting time pass is the thing under test."""

from __future__ import annotations

import logging
import os
import stat
from functools import partial
from typing import Any

import pytest
import trio

from quantus_miner.core.quic_messages import FrameDecoder, FrameError, NewJob, Ready, encode_frame
from quantus_miner.devnet.quic_node import NodeSim
from quantus_miner.quic import tls
from quantus_miner.quic.client import AuthFailed, JobOutcome, run_miner_client
from quantus_miner.quic.transport import MAX_QUEUED_MESSAGES, ConnectError, PinMismatch, connect

from ..support import Recorder



def fake_verify(header: bytes, nonce: int, difficulty: int) -> bool:
    """FAKE seal check, for the protocol tests in this file only: their stand-in engine
    (`FakeEngine`) answers a fixed nonce at once so message order is deterministic, and this
    accepts nonces whose low byte is 0x2a. The real QPoW v2 check (the simulator's default)
    and the real engine are exercised end to end in tests/service/test_connect.py."""
    return nonce & 0xFF == 0x2A


DEADLINE = 15  # seconds; generous for a loaded 2-core machine, tests take ~0.1-2 s
FAST = dict(backoff=(0.05, 0.4), handshake_timeout=2.0)


def job(job_id: str, difficulty: int = 131072) -> NewJob:
    return NewJob(job_id, bytes([int(job_id) % 256]) * 32, difficulty)


class FakeEngine:
    """Stands in for the mining engine: returns `nonce` at once, or blocks on job ids in
    `block` until cancelled (the client cancels a job when a new one arrives)."""

    def __init__(self, rec: Recorder, nonce: int = 0x12A, block: frozenset[str] = frozenset()):
        self.rec, self.nonce, self.block = rec, nonce, block

    async def __call__(self, j: NewJob) -> JobOutcome:
        self.rec("engine_start", {"job_id": j.job_id})
        try:
            if j.job_id in self.block:
                await trio.sleep_forever()
            await trio.lowlevel.checkpoint()
            return JobOutcome("completed", self.nonce, hash_count=7, elapsed_time=0.01)
        except trio.Cancelled:
            self.rec("engine_cancelled", {"job_id": j.job_id})
            raise


def start_miner(nursery: trio.Nursery, sim: NodeSim, rec: Recorder, engine=None, *,
                token: str | None = None, pin: str | None = None, **kw: Any) -> None:
    opts = {**FAST, **kw}
    nursery.start_soon(partial(
        run_miner_client, ("127.0.0.1", sim.port), token or sim.token, pin or sim.pin,
        engine or FakeEngine(rec), on_status=rec, **opts))


# --- end to end ------------------------------------------------------------------------


async def test_good_token_job_result_accepted_and_repeat_answered_from_memory():
    sim, rec = NodeSim(fake_verify), Recorder()
    sim.set_job(job("1"))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            start_miner(n, sim, rec)
            await sim.wait_for(lambda: "1" in sim.seals)
            assert sim.miners[0].tokens_seen == [sim.token]
            assert sim.verdicts[0].verdict == "accepted"
            # The node repeats the answered job: the stored result goes out again, once; no mining.
            sim.set_job(job("1"))
            await sim.wait_for(lambda: len(sim.verdicts) == 2)
            assert sim.miners[0].results[1] == sim.miners[0].results[0]
            sim.set_job(job("1"))  # a third time: ignored
            await rec.wait_for(lambda: len(rec.of("job_repeat_ignored")) == 1)
            sim.set_job(job("2"))  # stream order: a third "1" result would arrive first
            await sim.wait_for(lambda: "2" in sim.seals)
            assert [(v.job_id, v.verdict) for v in sim.verdicts] == [("1", "accepted"), ("1", "late"),
                                                                     ("2", "accepted")]
            assert [e["job_id"] for e in rec.of("engine_start")] == ["1", "2"]
            assert len(rec.of("connecting")) == 1
            n.cancel_scope.cancel()


async def test_wrong_token_stops_permanently():
    sim, rec = NodeSim(fake_verify), Recorder()
    sim.set_job(job("1"))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            with pytest.raises(AuthFailed, match="auth failed"):
                await run_miner_client(("127.0.0.1", sim.port), "ff" * 32, sim.pin,
                                       FakeEngine(rec), on_status=rec, **FAST)
            assert len(rec.of("connecting")) == 1  # no retry
            assert sim.stats.connections_created == 1
            assert sim.miners[0].close_reason == "auth failed"
            assert rec.of("engine_start") == []
            n.cancel_scope.cancel()


async def test_auth_timeout_closes_with_reason():
    sim = NodeSim(fake_verify, auth_timeout=0.3)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            async with connect("127.0.0.1", sim.port, pin_sha256=sim.pin) as conn:
                async for _ in conn:  # send nothing; iteration ends when the node closes
                    pass
                assert conn.peer_close_reason == "auth timeout"
            n.cancel_scope.cancel()


async def test_wrong_pin_sends_nothing():
    sim, rec = NodeSim(fake_verify), Recorder()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            with pytest.raises(PinMismatch):
                await run_miner_client(("127.0.0.1", sim.port), sim.token, "ab" * 32,
                                       FakeEngine(rec), on_status=rec, **FAST)
            assert len(rec.of("connecting")) == 1
            # the handshake reached the node, and the connection is over on its side too
            await sim.wait_for(lambda: sim.stats.connections_created == 1 and sim.stats.active == 0)
            assert sim.stats.stream_bytes_received == 0
            assert all(not m.tokens_seen and m.first_message is None for m in sim.miners)
            n.cancel_scope.cancel()


async def test_new_job_mid_search_only_new_result_sent():
    sim, rec = NodeSim(fake_verify), Recorder()
    sim.set_job(job("1"))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            start_miner(n, sim, rec, FakeEngine(rec, block=frozenset({"1"})))
            await rec.wait_for(lambda: rec.of("engine_start") == [{"job_id": "1"}])
            sim.set_job(job("2"))
            await sim.wait_for(lambda: "2" in sim.seals)
            assert rec.of("engine_cancelled") == [{"job_id": "1"}]
            assert [r.job_id for r in sim.miners[0].results] == ["2"]
            assert [i["job_id"] for i in rec.of("result_sent")] == ["2"]
            n.cancel_scope.cancel()


async def test_invalid_job_answered_failed():
    sim, rec = NodeSim(fake_verify), Recorder()
    sim.set_job_msg({"NewJob": {"job_id": "9", "mining_hash": "00" * 32, "difficulty": "0"}})
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            start_miner(n, sim, rec)
            await sim.wait_for(lambda: sim.verdicts)
            assert sim.miners[0].results[0].status == "failed"
            assert sim.verdicts[0].verdict == "ignored"
            assert rec.of("engine_start") == []
            n.cancel_scope.cancel()


@pytest.mark.parametrize("ping_interval, survives", [(0.1, True), (None, False)])
async def test_idle_timeout_and_keepalive(ping_interval, survives):
    sim, rec = NodeSim(fake_verify, idle_timeout=0.5), Recorder()
    sim.set_job(job("1"))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            start_miner(n, sim, rec, ping_interval=ping_interval)
            await sim.wait_for(lambda: "1" in sim.seals)
            if survives:
                await trio.sleep(1.5)  # 3x the idle timeout with no application traffic
                sim.set_job(job("2"))
                await sim.wait_for(lambda: "2" in sim.seals)
                assert sim.stats.connections_created == 1
                assert rec.of("disconnected") == []
            else:  # control: without pings the idle timeout does drop the connection
                await rec.wait_for(lambda: rec.of("disconnected"))
                assert "Idle timeout" in rec.of("disconnected")[0]["reason"]
            n.cancel_scope.cancel()


async def _run_node(sim: NodeSim, port: int, *, task_status=trio.TASK_STATUS_IGNORED):
    """Run a node in its own cancel scope; task_status reports the scope to stop it."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as n:
            await n.start(partial(sim.run, port=port))
            task_status.started(scope)


async def test_node_restart_reconnects_and_gets_current_job():
    sim1, rec = NodeSim(fake_verify), Recorder()
    sim1.set_job(job("1"))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            node1 = await n.start(_run_node, sim1, 0)
            start_miner(n, sim1, rec)
            await sim1.wait_for(lambda: "1" in sim1.seals)

            node1.cancel()  # node goes away (closes connections: "server shutting down")
            # let the miner fail a few reconnects against the dead port: back-off doubles
            await rec.wait_for(lambda: len(rec.of("backoff")) >= 3)
            sim2 = NodeSim(fake_verify, token=sim1.token, cert=sim1.cert, key=sim1.key)
            sim2.set_job(job("2"))
            node2 = await n.start(_run_node, sim2, sim1.port)
            await sim2.wait_for(lambda: "2" in sim2.seals)
            delays = [i["delay"] for i in rec.of("backoff")]
            assert delays[:3] == [0.05, 0.1, 0.2]

            node2.cancel()  # a successful session resets the back-off
            await rec.wait_for(lambda: len(rec.of("backoff")) > len(delays))
            assert rec.of("backoff")[len(delays)]["delay"] == 0.05
            n.cancel_scope.cancel()


async def test_two_miners_exactly_one_seal():
    sim, rec_a, rec_b = NodeSim(fake_verify), Recorder(), Recorder()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            start_miner(n, sim, rec_a, FakeEngine(rec_a, nonce=0x12A))
            start_miner(n, sim, rec_b, FakeEngine(rec_b, nonce=0x22A))
            await sim.wait_for(lambda: sum(m.authed for m in sim.miners) == 2)
            sim.set_job(job("5"))
            await sim.wait_for(lambda: len(sim.verdicts) == 2)
            assert sorted(v.verdict for v in sim.verdicts) == ["accepted", "late"]
            assert len(sim.seals) == 1
            n.cancel_scope.cancel()


BAD_FRAMES = [
    ("oversized", (2000).to_bytes(4, "big") + b"x" * 2000),
    ("bad json", (5).to_bytes(4, "big") + b"{bad}"),
    ("not an object", encode_frame([1, 2])),  # type: ignore[arg-type]
    ("unknown type", encode_frame({"Cancel": {"job_id": "1"}})),
]


async def test_bad_frames_from_node_close_cleanly_and_reconnect(caplog):
    caplog.set_level(logging.WARNING)
    sim, rec = NodeSim(fake_verify), Recorder()
    sim.set_job(job("1"))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            start_miner(n, sim, rec)
            for i, (_, data) in enumerate(BAD_FRAMES):
                await sim.wait_for(lambda: len([m for m in sim.miners if m.authed and m.jobs_sent]) == i + 1)
                sim.send_raw_to_all(data)
                await rec.wait_for(lambda: len(rec.of("disconnected")) == i + 1)
            await sim.wait_for(lambda: len([m for m in sim.miners if m.authed]) == len(BAD_FRAMES) + 1)
            n.cancel_scope.cancel()
    reasons = [d["reason"] for d in rec.of("disconnected")]
    assert all(r.startswith("bad frame from node") for r in reasons), reasons
    assert "exceeds the 1024-byte limit" in reasons[0]
    # the job that preceded each bad frame was still delivered, so every session counted
    # as successful and the back-off never grew
    assert {b["delay"] for b in rec.of("backoff")} == {0.05}
    logged = [r.getMessage() for r in caplog.records if "malformed frame" in r.getMessage()]
    assert len(logged) == len(BAD_FRAMES)
    # the miner closed each connection itself, with a frame-error reason the node saw
    assert all("frame error" in (m.end_reason or "") for m in sim.miners[: len(BAD_FRAMES)])


async def test_oversized_frame_from_miner_ends_connection():
    sim = NodeSim(fake_verify)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            async with connect("127.0.0.1", sim.port, pin_sha256=sim.pin) as conn:
                conn.send_raw((1025).to_bytes(4, "big"))
                async for _ in conn:
                    pass
                assert conn.peer_close_reason.startswith("frame error")
            n.cancel_scope.cancel()


# --- pure parts ------------------------------------------------------------------------


def test_decoder_byte_by_byte_and_errors():
    data = encode_frame(job("3").to_msg()) * 2
    dec = FrameDecoder()
    got = [m for b in data for m in dec.feed(bytes([b]))]
    # a good frame followed by a bad one in the same chunk: the good one still comes out
    msgs = FrameDecoder().feed(data[: len(data) // 2] + (5000).to_bytes(4, "big"))
    assert next(msgs) == job("3").to_msg()
    with pytest.raises(FrameError, match="exceeds"):
        next(msgs)
    assert [NewJob.from_msg(m) for m in got] == [job("3")] * 2
    with pytest.raises(FrameError):
        encode_frame({"Ready": {"token": "x" * 1100}})
    with pytest.raises(FrameError, match="not valid JSON"):
        list(FrameDecoder().feed(b"\x00\x00\x00\x02\xff\xfe"))


def test_token_and_pin_files(tmp_path):
    cert, _ = tls.make_self_signed()
    pin = tls.write_pin_file(tmp_path / "pin", cert)
    token = tls.write_token_file(tmp_path / "token")
    assert stat.S_IMODE(os.stat(tmp_path / "token").st_mode) == 0o600
    assert (tmp_path / "token").read_text() == token + "\n"
    assert tls.read_pin_file(tmp_path / "pin") == pin == tls.cert_sha256(cert)
    assert tls.read_token_file(tmp_path / "token") == token
    with pytest.raises(tls.CredentialError, match="does not exist"):
        tls.read_token_file(tmp_path / "missing")
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(tls.CredentialError, match="64 hex characters, got 3"):
        tls.read_pin_file(tmp_path / "short")
    (tmp_path / "nothex").write_text("g" * 64 + "\n")  # tokens are the node's business: any text
    assert tls.read_token_file(tmp_path / "nothex") == "g" * 64


# --- limits ----------------------------------------------------------------------------


async def test_server_connection_limit_refuses_the_next_handshake():
    sim = NodeSim(fake_verify, max_connections=1)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            async with connect("127.0.0.1", sim.port, pin_sha256=sim.pin):
                with pytest.raises(ConnectError, match="failed: timeout"):
                    async with connect("127.0.0.1", sim.port, pin_sha256=sim.pin, handshake_timeout=0.5):
                        pass  # pragma: no cover
                assert sim.stats.initials_dropped_full >= 1 and sim.stats.active == 1
            n.cancel_scope.cancel()


async def test_a_peer_flooding_an_unread_connection_is_disconnected():
    sim = NodeSim(fake_verify)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            async with connect("127.0.0.1", sim.port, pin_sha256=sim.pin) as conn:
                await conn.send(Ready(sim.token).to_msg())
                await sim.wait_for(lambda: sim.miners and sim.miners[0].authed)
                frame = encode_frame(job("1").to_msg())
                sim.send_raw_to_all(frame * (MAX_QUEUED_MESSAGES + 1))  # nobody reads on our side
                await conn.wait_closed()
                assert conn.local_close_reason == "receive queue overflow"
            n.cancel_scope.cancel()
