"""The micro-batcher: gathering, limits, routing of results, the worker thread, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.errors import DeadlineExceededError, NotReadyError, OverloadedError
from service.metrics import ServiceMetrics


class Recorder:
    """A fake model: doubles numbers, remembers its batches and the thread it ran on; -1 fails."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.delay = delay

    def __call__(self, jobs: list[int]) -> list[int]:
        self.batches.append(list(jobs))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if -1 in jobs:
            raise ValueError("job -1 is poison")
        return [2 * j for j in jobs]


@pytest.fixture()
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


Make = Callable[..., MicroBatcher[int, int]]


@pytest.fixture()
async def make(executor: ThreadPoolExecutor) -> AsyncIterator[Make]:
    made: list[MicroBatcher[int, int]] = []

    def build(model: Recorder, max_batch: int = 4, max_wait_s: float = 0.05,
              metrics: ServiceMetrics | None = None) -> MicroBatcher[int, int]:
        batcher: MicroBatcher[int, int] = MicroBatcher("test", model, executor, max_batch, max_wait_s,
                                                       metrics)
        batcher.start()
        made.append(batcher)
        return batcher

    yield build
    for batcher in made:
        await batcher.stop()


async def test_concurrent_jobs_are_batched_up_to_max_batch(make: Make) -> None:
    model = Recorder()
    batcher = make(model, max_batch=4, max_wait_s=0.2)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert [len(b) for b in model.batches] == [4, 4, 2]
    assert sorted(j for b in model.batches for j in b) == list(range(10))


async def test_runs_in_one_worker_thread_not_the_event_loop(make: Make) -> None:
    model = Recorder()
    batcher = make(model, max_batch=2, max_wait_s=0.0)
    await asyncio.gather(*(batcher.submit(i) for i in range(6)))
    assert len(model.threads) == 1
    assert threading.get_ident() not in model.threads


async def test_event_loop_stays_free_while_the_model_runs(make: Make) -> None:
    model = Recorder(delay=0.3)
    batcher = make(model, max_wait_s=0.0)
    job = asyncio.create_task(batcher.submit(1))
    ticks = 0
    while not job.done():
        ticks += 1
        await asyncio.sleep(0.01)
    assert await job == 2
    assert ticks >= 10  # the loop kept turning during the 0.3 s model call


async def test_a_lone_job_waits_at_most_max_wait(make: Make) -> None:
    batcher = make(Recorder(), max_batch=64, max_wait_s=0.05)
    start = time.perf_counter()
    assert await batcher.submit(3) == 6
    assert 0.04 <= time.perf_counter() - start < 1.0


async def test_jobs_waiting_while_a_batch_runs_form_the_next_batch(make: Make) -> None:
    model = Recorder(delay=0.2)
    batcher = make(model, max_batch=8, max_wait_s=0.0)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.05)  # batch [0] is running
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.gather(first, *rest)
    assert model.batches == [[0], [1, 2, 3, 4, 5]]


async def test_a_failing_job_fails_alone(make: Make) -> None:
    model = Recorder()
    batcher = make(model, max_batch=8, max_wait_s=0.1)
    outcomes = await asyncio.gather(*(batcher.submit(j) for j in (1, -1, 3)), return_exceptions=True)
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], ValueError)


async def test_wrong_result_count_is_an_error(executor: ThreadPoolExecutor) -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher("test", lambda jobs: [], executor, 4, 0.0)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="0 results for 1 jobs"):
            await batcher.submit(1)
    finally:
        await batcher.stop()


async def test_stop_fails_waiting_jobs_and_refuses_new_ones(make: Make) -> None:
    batcher = make(Recorder(), max_batch=8, max_wait_s=5.0)
    waiting = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    await batcher.stop()
    with pytest.raises(NotReadyError):
        await waiting
    with pytest.raises(NotReadyError):
        await batcher.submit(2)


async def test_cancelled_jobs_are_dropped(make: Make) -> None:
    model = Recorder()
    batcher = make(model, max_batch=8, max_wait_s=0.1)
    gone = asyncio.create_task(batcher.submit(7))
    kept = asyncio.create_task(batcher.submit(8))
    await asyncio.sleep(0.01)
    gone.cancel()
    assert await kept == 16
    assert model.batches == [[8]]


async def test_metrics_are_recorded(make: Make) -> None:
    metrics = ServiceMetrics(process=False)
    batcher = make(Recorder(), max_batch=4, max_wait_s=0.1, metrics=metrics)
    await asyncio.gather(*(batcher.submit(i) for i in range(4)))
    value = metrics.registry.get_sample_value
    assert value("elmrec_inference_batch_size_count", {"task": "test"}) == 1
    assert value("elmrec_inference_batch_size_sum", {"task": "test"}) == 4
    assert value("elmrec_queue_wait_seconds_count", {"task": "test"}) == 4
    assert value("elmrec_inference_duration_seconds_count", {"task": "test"}) == 1


def test_limits_are_checked() -> None:
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="max_batch"):
            MicroBatcher("t", lambda jobs: jobs, pool, 0, 0.0)
        with pytest.raises(ValueError, match="max_wait_s"):
            MicroBatcher("t", lambda jobs: jobs, pool, 1, -1.0)
        with pytest.raises(ValueError, match="max_queue"):
            MicroBatcher("t", lambda jobs: jobs, pool, 1, 0.0, max_queue=0)
        with pytest.raises(ValueError, match="timeout_s"):
            MicroBatcher("t", lambda jobs: jobs, pool, 1, 0.0, timeout_s=0.0)


# -- overload: bounded admission queue, deadlines, callers that went away ------------------------


def shed(metrics: ServiceMetrics, reason: str) -> float:
    labels = {"task": "test", "reason": reason}
    return metrics.registry.get_sample_value("elmrec_requests_shed_total", labels) or 0.0


async def test_a_full_queue_refuses_at_once(executor: ThreadPoolExecutor) -> None:
    metrics = ServiceMetrics(process=False)
    model = Recorder(delay=0.3)
    batcher: MicroBatcher[int, int] = MicroBatcher("test", model, executor, 1, 0.0, metrics, max_queue=2)
    batcher.start()
    try:
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)  # job 0 is computing: it no longer counts against the queue
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        assert batcher.depth == 2
        started = time.perf_counter()
        with pytest.raises(OverloadedError, match="ELMREC_MAX_QUEUE=2") as refused:
            await batcher.submit(3)
        assert time.perf_counter() - started < 0.05  # refused without waiting
        assert refused.value.status_code == 503 and refused.value.body()["reason"] == "queue_full"
        assert await asyncio.gather(running, *queued) == [0, 2, 4]
        assert 3 not in [j for b in model.batches for j in b]
        assert shed(metrics, "queue_full") == 1
        assert metrics.registry.get_sample_value("elmrec_queue_depth", {"task": "test"}) == 0
    finally:
        await batcher.stop()


async def test_a_job_past_its_deadline_is_answered_503_at_the_deadline_and_never_computed(
        executor: ThreadPoolExecutor) -> None:
    metrics = ServiceMetrics(process=False)
    model = Recorder(delay=0.4)
    batcher: MicroBatcher[int, int] = MicroBatcher("test", model, executor, 1, 0.0, metrics, timeout_s=0.15)
    batcher.start()
    try:
        blocking = asyncio.create_task(batcher.submit(0))  # computes for 0.4 s, past its own deadline
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        with pytest.raises(DeadlineExceededError, match="within 150 ms"):
            await batcher.submit(1)  # waits behind job 0
        assert 0.1 < time.perf_counter() - started < 0.35  # at its deadline, not when the thread is free
        with pytest.raises(DeadlineExceededError):
            await blocking
        assert batcher.depth == 0
        await asyncio.sleep(0.5)  # the model thread is free again
        assert model.batches == [[0]]  # job 1 was taken out of the queue before any compute
        assert shed(metrics, "deadline") == 2
    finally:
        await batcher.stop()


async def test_a_job_that_cannot_make_its_deadline_is_dropped_before_compute(
        executor: ThreadPoolExecutor) -> None:
    metrics = ServiceMetrics(process=False)
    model = Recorder(delay=0.5)
    batcher: MicroBatcher[int, int] = MicroBatcher("test", model, executor, 1, 0.0, metrics, timeout_s=0.8)
    batcher.start()
    try:
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        batcher.batch_seconds = 10.0  # as if batches took 10 s: counted as half the deadline, 0.4 s
        started = time.perf_counter()
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(1)  # its turn comes after 0.45 s, with 0.35 s left: dropped then
        assert time.perf_counter() - started < 0.7  # before its deadline (0.8 s)
        assert await running == 0
        assert model.batches == [[0]]  # job 1 never computed
        assert shed(metrics, "deadline") == 1
    finally:
        await batcher.stop()


async def test_a_slow_past_does_not_refuse_every_job(executor: ThreadPoolExecutor) -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher("test", Recorder(), executor, 1, 0.0, timeout_s=1.0)
    batcher.start()
    try:
        batcher.batch_seconds = 10.0  # longer than the deadline: a fresh job is still computed
        assert await batcher.submit(4) == 8
        assert batcher.batch_seconds < 10.0  # and the average learns
    finally:
        await batcher.stop()


async def test_a_caller_that_goes_away_leaves_the_queue_at_once(executor: ThreadPoolExecutor) -> None:
    metrics = ServiceMetrics(process=False)
    model = Recorder(delay=0.3)
    batcher: MicroBatcher[int, int] = MicroBatcher("test", model, executor, 1, 0.0, metrics, max_queue=1)
    batcher.start()
    try:
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        assert batcher.depth == 1
        gone.cancel()
        await asyncio.sleep(0.01)
        assert batcher.depth == 0  # its place is free again before job 0 finishes
        assert await batcher.submit(2) == 4
        assert await running == 0
        assert model.batches == [[0], [2]]
        assert shed(metrics, "client_gone") == 1
    finally:
        await batcher.stop()


async def _open_loop(batcher: MicroBatcher[int, int], rate: float, seconds: float) -> dict[str, list[float]]:
    """Jobs submitted at `rate` per second for `seconds` regardless of answers; latencies by outcome."""
    out: dict[str, list[float]] = {"ok": [], "queue_full": [], "deadline": []}

    async def one(i: int) -> None:
        started = time.perf_counter()
        try:
            await batcher.submit(i)
            kind = "ok"
        except OverloadedError:
            kind = "queue_full"
        except DeadlineExceededError:
            kind = "deadline"
        out[kind].append(time.perf_counter() - started)

    jobs = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        jobs.append(asyncio.create_task(one(i)))
    await asyncio.gather(*jobs)
    return out


async def test_four_times_capacity_sheds_load_and_bounds_latency(executor: ThreadPoolExecutor) -> None:
    """A model of 4 jobs per 20 ms (200 jobs/s) offered 800 jobs/s: bounded vs unbounded batcher."""
    deadline_s = 0.25
    bounded: MicroBatcher[int, int] = MicroBatcher("test", Recorder(delay=0.02), executor, 4, 0.0,
                                                   max_queue=16, timeout_s=deadline_s)
    unbounded: MicroBatcher[int, int] = MicroBatcher("test", Recorder(delay=0.02), executor, 4, 0.0)
    for batcher in (bounded, unbounded):
        batcher.start()
    try:
        shedding = await _open_loop(bounded, rate=800, seconds=0.6)
        after = time.perf_counter()
        assert await bounded.submit(7) == 14
        recovery = time.perf_counter() - after
        queueing = await _open_loop(unbounded, rate=800, seconds=0.6)
    finally:
        for batcher in (bounded, unbounded):
            await batcher.stop()
    ok = np.asarray(shedding["ok"])
    assert ok.size > 0.1 * 480 and shedding["queue_full"]  # served what it could, refused the rest
    assert np.percentile(ok, 99) <= deadline_s
    assert max(shedding["queue_full"]) < 0.05  # refusals are immediate
    assert recovery < 0.2  # the queue held at most 16 jobs: drained in a few batches
    # the same load without the limits: the queue only grows, latency far past the deadline
    assert np.percentile(np.asarray(queueing["ok"]), 99) > 2 * deadline_s
