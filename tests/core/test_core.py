"""The sans-I/O core driven directly, synchronously, without sockets or sleeps (as h11 tests its state machine)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantus_miner.core.jobs import END_STATUSES, RANGE_EXHAUSTED, Cause, Ending, JobStatus, JobTable, Progress
from quantus_miner.core.outcomes import Found
from quantus_miner.core.partition import Frontier, next_chunk
from quantus_miner.core.rates import (MAX_CHUNK, MAX_GROWTH, MIN_SEED_CHUNK, MIN_TAIL_CHUNK, ChunkSizer, ema,
                                      next_chunk_size, seed_chunk, tail_capped)
from quantus_miner.core.speed import SpeedMeter, speed_line, status_line
from quantus_miner.core.requests import (DuplicateJob, InvalidRequest, MineRequest, Refused, TooManyJobs,
                                         parse_mine_request)

MAX = (1 << 512) - 1


def request(job_id="j", start=1, end=100) -> MineRequest:
    return MineRequest(job_id, bytes(32), 0, start, end)


# -- the job state machine ---------------------------------------------------------------------


def test_reports_accumulate_and_a_found_nonce_completes_the_job():
    table = JobTable(retention_s=10, max_finished=5)
    job = table.add(request(), "cpu-fast", workers=2, now=0.0)
    assert job.apply(Progress(0, 0, tested=10, t=1.0), alpha=0.5) == (10, None)
    assert job.apply(Progress(0, 1, tested=30, t=1.0), alpha=0.5) == (30, None)
    assert job.apply(Progress(0, 0, tested=20, t=2.0), alpha=0.5) == (20, None)
    snap = job.snapshot(now=2.5)
    assert snap.status is JobStatus.RUNNING and snap.hash_count == 60 and snap.elapsed_time == 2.5
    assert [w.rate for w in snap.workers] == [0.5 * 20 + 0.5 * 10, 30.0]  # EMA of each worker's delta rate
    assert snap.rate == 45.0
    counted, ending = job.apply(Progress(0, 1, tested=5, t=3.0, found=Found(7, 1)), alpha=0.5)
    assert (counted, ending, ending.status, ending.reason) == (5, Ending(Cause.FOUND), JobStatus.COMPLETED, None)
    table.end(job, ending, 3.0)
    snap = job.snapshot(now=99.0)
    assert (snap.status, snap.nonce, snap.hash_count, snap.elapsed_time, snap.rate) == ("completed", 7, 65, 3.0, 0.0)


def test_an_ended_job_counts_nothing_more_and_cannot_end_twice():
    table = JobTable(retention_s=10, max_finished=5)
    job = table.add(request(), "cpu-fast", workers=1, now=0.0)
    table.end(job, Ending(Cause.CANCELLED), now=1.0)
    assert job.apply(Progress(0, 0, tested=10, t=1.5), alpha=0.2) == (0, None)  # a chunk that raced the cancel
    assert job.hash_count == 0
    with pytest.raises(ValueError, match=r"^job j already ended as cancelled$"):
        table.end(job, Ending.failed("late"), now=2.0)


def test_every_cause_ends_in_an_end_status_with_its_reason():
    # the core decides every ending: each typed cause maps to exactly one end status (never running)
    assert {c: (Ending(c, "x").status, Ending(c, "x").reason) for c in Cause} == {
        Cause.FOUND: (JobStatus.COMPLETED, "x"), Cause.EXHAUSTED: (JobStatus.FAILED, RANGE_EXHAUSTED),
        Cause.FAILED: (JobStatus.FAILED, "x"), Cause.CANCELLED: (JobStatus.CANCELLED, "x"),
        Cause.SHUTDOWN: (JobStatus.CANCELLED, "shutdown"), Cause.REPLACED: (JobStatus.CANCELLED, "replaced by a newer job")}
    assert {Ending(c).status for c in Cause} == set(END_STATUSES)


def test_a_replaced_job_is_cancelled_and_says_so_unlike_a_plain_cancel():
    table = JobTable(retention_s=300, max_finished=10)
    replaced, dropped = (table.add(MineRequest(i, bytes(32), 0, 1, 10), "e", workers=1, now=0.0) for i in "ab")
    table.end(replaced, Ending(Cause.REPLACED), now=1.0)
    table.end(dropped, Ending(Cause.CANCELLED), now=1.0)
    assert [(j.snapshot(2.0).status, j.snapshot(2.0).cause, j.snapshot(2.0).reason) for j in (replaced, dropped)] == [
        (JobStatus.CANCELLED, Cause.REPLACED, "replaced by a newer job"), (JobStatus.CANCELLED, Cause.CANCELLED, None)]


def test_the_range_is_exhausted_only_when_every_nonce_was_counted():
    job = JobTable(10, 5).add(request(), "cpu-fast", workers=2, now=0.0)
    assert job.apply(Progress(0, 0, tested=50, t=1.0, finished=True), alpha=0.2) == (50, None)
    assert job.apply(Progress(0, 1, tested=50, t=1.0, finished=True), alpha=0.2) == \
        (50, Ending(Cause.EXHAUSTED))
    assert job.snapshot(1.0).rate == 0.0  # finished workers carry no live rate


def test_a_worker_error_fails_the_job_with_its_reason():
    job = JobTable(10, 5).add(request(), "cpu-fast", workers=1, now=0.0)
    counted, ending = job.apply(Progress(0, 0, tested=0, t=1.0, error="worker crashed: boom"), alpha=0.2)
    assert (counted, ending.status, ending.reason) == (0, JobStatus.FAILED, "worker crashed: boom")


def test_duplicate_ids_are_refused_while_the_job_is_retained():
    table = JobTable(retention_s=10, max_finished=5)
    job = table.add(request(), "cpu-fast", workers=1, now=0.0)
    with pytest.raises(DuplicateJob, match=r"^job j already exists$"):
        table.add(request(), "cpu-fast", workers=1, now=0.0)
    table.end(job, Ending(Cause.EXHAUSTED), now=1.0)
    with pytest.raises(DuplicateJob):
        table.add(request(), "cpu-fast", workers=1, now=5.0)
    assert table.expire(now=11.0) == [job]
    table.add(request(), "cpu-fast", workers=1, now=11.0)  # forgotten: the id is free again


def test_retention_counts_from_the_end_and_never_drops_running_jobs():
    table = JobTable(retention_s=10, max_finished=5)
    long_job = table.add(request("long"), "cpu-fast", workers=1, now=0.0)
    running = table.add(request("running"), "cpu-fast", workers=1, now=0.0)
    table.end(long_job, Ending(Cause.FOUND), now=100.0)  # ran 100 s, far longer than retention
    assert table.expire(now=109.9) == []
    assert table.get("long") is long_job
    assert table.expire(now=110.0) == [long_job]
    assert table.get("long") is None and table.get("running") is running
    assert table.expire(now=1e9) == [] and table.running() == [running]


def test_the_finished_job_cap_forgets_the_oldest_first():
    table = JobTable(retention_s=1e9, max_finished=2)
    jobs = [table.add(request(f"j{i}"), "cpu-fast", workers=1, now=0.0) for i in range(4)]
    assert table.end(jobs[0], Ending(Cause.EXHAUSTED), now=1.0) == []
    assert table.end(jobs[1], Ending(Cause.EXHAUSTED), now=2.0) == []
    assert table.end(jobs[2], Ending(Cause.EXHAUSTED), now=3.0) == [jobs[0]]
    assert [j.job_id for j in table] == ["j1", "j2", "j3"]  # j3 runs on, whatever the cap


def test_statuses_are_strings_with_the_protocol_spelling():
    assert [str(s) for s in JobStatus] == ["running", "completed", "failed", "cancelled"]
    assert json.dumps({"status": JobStatus.CANCELLED}) == '{"status": "cancelled"}'
    assert JobStatus.RUNNING not in END_STATUSES


# -- request parsing: every 400 ------------------------------------------------------------------

GOOD = {"job_id": "a", "mining_hash": "00" * 32, "distance_threshold": "5",
        "nonce_start": "0" * 128, "nonce_end": "f" * 128}


def body(**changes) -> bytes:
    doc = {**GOOD, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_a_valid_body_parses_with_either_hex_case():
    req = parse_mine_request(body(mining_hash="AB" * 32))
    assert req == MineRequest("a", bytes([0xAB]) * 32, 5, 0, MAX)


@pytest.mark.parametrize("raw, message, job_id", [
    (b"\xff", "body is not valid UTF-8", ""),
    (b"{", "body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", ""),
    (b"[" * 100_000, "body is not valid JSON: nested too deeply", ""),
    (b"[]", "body must be a JSON object", ""),
    (body(job_id=...), "missing field(s): job_id", ""),
    (body(nonce_end=..., nonce_start=...), "missing field(s): nonce_start, nonce_end", "a"),
    (body(extra=1), "unknown field(s): extra", "a"),
    (body(job_id=5), "job_id must be a string", ""),
    (body(job_id=""), "job_id must be 1 to 128 characters", ""),
    (body(job_id="x" * 129), "job_id must be 1 to 128 characters", ""),
    (body(job_id="a b"), "job_id may contain only letters, digits and . _ : -", ""),
    (body(mining_hash="00" * 31), "mining_hash must be exactly 64 hex characters", "a"),
    (body(mining_hash="0x" + "00" * 31), "mining_hash must contain only hex characters 0-9a-f", "a"),
    (body(mining_hash=5), "mining_hash must be a string", "a"),
    (body(distance_threshold=5), "distance_threshold must be a string", "a"),
    (body(distance_threshold="-1"), "distance_threshold must be a decimal integer below 2^512", "a"),
    (body(distance_threshold=str(1 << 512)), "distance_threshold must be a decimal integer below 2^512", "a"),
    (body(nonce_start="1"), "nonce_start must be exactly 128 hex characters", "a"),
    (body(nonce_end="g" * 128), "nonce_end must contain only hex characters 0-9a-f", "a"),
    (body(nonce_start="f" * 128, nonce_end="0" * 128), "nonce_start must be <= nonce_end", "a"),
])
def test_every_invalid_body_is_a_400_with_an_exact_message(raw, message, job_id):
    with pytest.raises(InvalidRequest) as info:
        parse_mine_request(raw)
    assert (info.value.message, info.value.job_id, info.value.status) == (message, job_id, 400)


def test_refusals_share_one_base_that_carries_the_http_status():
    assert [c("m").status for c in (InvalidRequest, DuplicateJob, TooManyJobs)] == [400, 409, 429]
    assert all(issubclass(c, Refused) for c in (InvalidRequest, DuplicateJob, TooManyJobs))


# -- partitioning and chunk sizing ---------------------------------------------------------------


@given(st.integers(0, MAX), st.integers(0, 1 << 70), st.integers(1, 64), st.integers(1, 1 << 40))
def test_the_one_cursor_hands_out_the_range_exactly_once(start, length, lanes, size):
    # every executor's slots cut their chunks from one Frontier, sized by the one sizer
    end = min(MAX, start + length)
    f = Frontier(start, end)
    pieces = []
    while (chunk := f.take(tail_capped(size, f.remaining, lanes))) is not None:
        pieces.append(chunk)
        if len(pieces) > 200:
            break
    assert pieces[0][0] == start and all(lo <= hi for lo, hi in pieces)
    assert all(a[1] + 1 == b[0] for a, b in zip(pieces, pieces[1:]))  # in order, no gap, no overlap
    assert f.exhausted == (pieces[-1][1] == end) and f.remaining == end - pieces[-1][1]


def test_the_frontier_refuses_empty_ranges_and_chunks_shrink_near_the_end():
    with pytest.raises(ValueError, match=r"^nonce_start must be <= nonce_end$"):
        Frontier(5, 4)
    assert tail_capped(10**9, 10**12, 4) == 10**9  # far from the end: the sizer's size
    assert tail_capped(10**9, 8 * 10**6, 4) == 10**6  # near it: a share of what is left
    assert tail_capped(10**9, 10, 4) == MIN_TAIL_CHUNK and tail_capped(7, 10, 4) == 7


def test_a_slot_sizer_starts_from_a_measured_rate_else_the_seed():
    assert ChunkSizer.start(2000).size == seed_chunk(2000)
    assert ChunkSizer.start(2000, probe=3000.0).size == 6000
    assert ChunkSizer.start(500, rate=10**7, probe=3000.0).size == 5 * 10**6  # a worker's measured rate wins
    s = ChunkSizer.start(100, rate=1000.0)
    s.update(100, 0.05)
    assert s.size == 200


def test_next_chunk_stops_at_the_end():
    assert next_chunk(10, 100, 50) == (10, 59)
    assert next_chunk(90, 100, 50) == (90, 100)
    assert next_chunk(MAX, MAX, 1 << 40) == (MAX, MAX)


def test_the_first_chunk_is_seeded_then_capped_by_the_measured_rate():
    assert seed_chunk(2000) == 200_000  # 100 000 nonces/s x 2 s
    assert seed_chunk(1) == MIN_SEED_CHUNK
    assert seed_chunk(2000, measured_rate=3000.0) == 6000  # a slow engine reports on time, not 50x late


def test_chunks_are_sized_from_measured_throughput_within_bounds():
    assert next_chunk_size(1000, nonces=1000, busy_s=0.1, progress_chunk_ms=200) == 2000
    assert next_chunk_size(1000, nonces=1000, busy_s=0.001, progress_chunk_ms=2000) == 1000 * MAX_GROWTH
    assert next_chunk_size(MAX_CHUNK, nonces=MAX_CHUNK, busy_s=0.001, progress_chunk_ms=2000) == MAX_CHUNK
    assert next_chunk_size(1000, nonces=0, busy_s=0.0, progress_chunk_ms=2000) == 1000 * MAX_GROWTH
    assert next_chunk_size(1000, nonces=1, busy_s=10.0, progress_chunk_ms=1) == 1  # never below one nonce


def test_ema_starts_at_the_first_value():
    assert ema(None, 10.0, 0.2) == 10.0
    assert ema(10.0, 20.0, 0.5) == 15.0


# -- the frontier of a local search, and its resume point --------------------------------------


@given(sizes=st.lists(st.integers(1, 50), min_size=1, max_size=30), stop_after=st.lists(st.integers(0, 50)))
def test_everything_below_the_resume_point_was_tested(sizes, stop_after):
    f = Frontier(7, 7 + 400)
    tested = set()
    chunks = [c for c in (f.take(n) for n in sizes) if c is not None]
    for i, (lo, hi) in enumerate(chunks):  # some chunks run to their end, some stop early, some never return
        if i % 3 == 2:
            continue
        n = min(hi - lo + 1, stop_after[i]) if i < len(stop_after) else hi - lo + 1
        f.done((lo, hi), n)
        tested.update(range(lo, lo + n))
    assert set(range(7, f.resume_point())) <= tested
    assert f.tested == len(tested)


def test_a_fully_tested_range_resumes_past_its_end():
    f = Frontier(1, 10)
    while (chunk := f.take(3)) is not None:
        f.done(chunk, chunk[1] - chunk[0] + 1)
    assert f.resume_point() == 11 and f.share() == 1.0


# -- hash rates over windows -------------------------------------------------------------------


def test_speed_windows_read_na_until_they_have_that_much_history():
    m = SpeedMeter(windows=(10, 60, 900))
    for t in range(0, 61):
        m.add(float(t), 2_000_000 * t)
    assert m.rates() == (2e6, 2e6, None)
    assert speed_line(m.rates(), m.windows, active_jobs=2, jobs_completed=5, jobs_ended=7) == (
        "speed 10s/60s/15m 2.000 2.000 n/a M nonces/s; 2 active job(s), 5 completed of 7 ended")


def test_each_window_sees_only_its_own_span():
    m = SpeedMeter(windows=(10, 60))
    total = 0
    for t in range(0, 121):  # 1 M/s for 110 s, then 3 M/s for the last 10 s
        m.add(float(t), total)
        total += 3_000_000 if t >= 110 else 1_000_000
    assert m.rate(10) == 3e6
    assert m.rate(60) == pytest.approx((50 * 1e6 + 10 * 3e6) / 60)


def test_the_sample_ring_is_bounded_whatever_the_sampling_rate():
    m = SpeedMeter(windows=(10, 900), resolution=1.0)
    for i in range(20_000):  # 10 samples a second for 2000 s
        m.add(i / 10, 5 * i)  # 50 nonces/s
    assert len(m) == m.capacity == 903
    assert m.rate(900) == pytest.approx(50.0) and m.rate(10) == pytest.approx(50.0)


def test_status_line_shows_the_share_only_when_given():
    assert status_line(1_500_000, 3e6, 3725.0) == "1,500,000 nonces  3.000 M/s  1:02:05"
    assert status_line(10, 1e3, 1.0, share=0.5) == "10 nonces  0.001 M/s  0:01  50.00 % of the range"
