"""The micro-batcher: gathering, limits, routing of results, the worker thread, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.batching import MicroBatcher
from service.errors import NotReadyError
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
