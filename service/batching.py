"""Dynamic micro-batching: concurrent requests are gathered and run as one batch in the model's worker thread.

A batch closes when it holds `max_batch` jobs or when its oldest job has waited `max_wait_s`,
whichever comes first; it then runs on the given executor (one thread, shared by every task,
because the inference engine is not thread-safe), so the event loop never blocks on the model.

Overload is shed, not queued: at most `max_queue` jobs wait per batcher (more are refused at once
with OverloadedError), and a job has `timeout_s` from its HTTP request's arrival (`service.arrival`;
from its submission outside a request) to its answer, else DeadlineExceededError at that moment. A
job whose deadline has passed, or would pass before a batch of its task typically finishes (the
recent average, at most half the deadline), or whose caller has gone (its `submit` cancelled) is
taken out of the queue before any compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.arrival import ARRIVAL
from service.errors import DeadlineExceededError, NotReadyError, OverloadedError
from service.metrics import ServiceMetrics, ShedReason

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")

log = logging.getLogger(__name__)
# weight of the newest batch in the moving average of batch durations (the "will it make it" estimate)
DURATION_SMOOTHING = 0.3


@dataclass
class _Pending(Generic[JobT, ResultT]):
    job: JobT
    future: asyncio.Future[ResultT]
    deadline: float | None  # event-loop time (loop.time()); None = no deadline
    enqueued: float = field(default_factory=time.perf_counter)
    started: bool = False  # taken into a batch: from then on it is computed


class MicroBatcher(Generic[JobT, ResultT]):
    """Collects jobs of one task and runs `run_batch(jobs) -> results` (same length, same order).

    If a batch raises, its jobs are retried one by one so that one bad job fails alone.
    `max_queue` and `timeout_s` None = unbounded (no admission limit, no deadline).
    """

    def __init__(
        self,
        task: str,
        run_batch: Callable[[list[JobT]], Sequence[ResultT]],
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        metrics: ServiceMetrics | None = None,
        max_queue: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue is not None and max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.task = task
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.batch_seconds = 0.0  # moving average of recent batch durations (queue for the thread + model)
        self._pending: deque[_Pending[JobT, ResultT]] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        if metrics is not None:
            metrics.init_task(task)

    @property
    def depth(self) -> int:
        """Jobs waiting for a batch (not yet computing)."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        """Start collecting (call from the running event loop)."""
        if self._worker is None:
            loop = asyncio.get_running_loop()
            self._worker = loop.create_task(self._collect(), name=f"batcher-{self.task}")

    async def stop(self) -> None:
        """Stop collecting; jobs still waiting fail with NotReadyError."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._pending:
            _fail(self._take().future, NotReadyError("the service is shutting down"))

    async def submit(self, job: JobT) -> ResultT:
        """Queue `job` and wait for its result (the job's own exception if it failed).

        Raises OverloadedError at once when `max_queue` jobs are already waiting, and
        DeadlineExceededError when no answer came within `timeout_s` of the arrival. Cancelling the caller
        (a client that went away) takes a job that has not started out of the queue.
        """
        if self._closed or not self.running:
            raise NotReadyError(f"the {self.task} batcher is not running")
        if self.max_queue is not None and len(self._pending) >= self.max_queue:
            self._shed("queue_full")
            raise OverloadedError(
                f"overloaded: {len(self._pending)} {self.task} requests are already waiting for the model "
                f"(ELMREC_MAX_QUEUE={self.max_queue}); retry later", reason="queue_full")
        loop = asyncio.get_running_loop()
        arrived = ARRIVAL.get()  # the HTTP request's arrival; None outside a request: now
        start = loop.time() if arrived is None else arrived
        deadline = None if self.timeout_s is None else start + self.timeout_s
        pending: _Pending[JobT, ResultT] = _Pending(job, loop.create_future(), deadline)
        self._pending.append(pending)
        self._gauge(+1)
        self._wakeup.set()
        try:
            async with asyncio.timeout_at(deadline):
                return await pending.future
        except TimeoutError:
            if pending.future.done() and not pending.future.cancelled():  # settled at the deadline itself
                return pending.future.result()
            self._withdraw(pending)
            raise self._expired() from None
        except asyncio.CancelledError:
            if self._withdraw(pending):
                self._shed("client_gone")
            raise

    def _take(self) -> _Pending[JobT, ResultT]:
        self._gauge(-1)
        return self._pending.popleft()

    def _withdraw(self, pending: _Pending[JobT, ResultT]) -> bool:
        """Take a job that has not started out of the queue; False when it is computing (or done)."""
        if pending.started or pending not in self._pending:
            return False
        self._pending.remove(pending)
        self._gauge(-1)
        return True

    def _gauge(self, delta: int) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(task=self.task).inc(delta)

    def _shed(self, reason: ShedReason) -> None:
        if self.metrics is not None:
            self.metrics.requests_shed.labels(task=self.task, reason=reason).inc()

    def _expired(self) -> DeadlineExceededError:
        self._shed("deadline")
        assert self.timeout_s is not None
        return DeadlineExceededError(
            f"deadline exceeded: no {self.task} answer within {1000 * self.timeout_s:g} ms of the request's "
            "arrival (ELMREC_REQUEST_TIMEOUT_MS); the service is overloaded, retry later", reason="deadline")

    def _expected_batch_seconds(self) -> float:
        """How long a batch is expected to take: the recent average, but never more than half the
        deadline, so that a job with half its time left is always computed (and the average keeps
        learning: a slow past cannot refuse every job forever)."""
        return self.batch_seconds if self.timeout_s is None else min(self.batch_seconds, self.timeout_s / 2)

    def _admit(self, pending: _Pending[JobT, ResultT], now: float) -> bool:
        """Whether a job taken from the queue is computed; one that cannot make its deadline fails now."""
        if pending.future.done():  # already answered (shutdown) or cancelled
            return False
        if pending.deadline is not None and pending.deadline - now < self._expected_batch_seconds():
            pending.future.set_exception(self._expired())
            return False
        pending.started = True
        return True

    async def _collect(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0].enqueued + self.max_wait_s
            while len(self._pending) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._wakeup.wait()
                except TimeoutError:
                    break
            batch: list[_Pending[JobT, ResultT]] = []
            now = asyncio.get_running_loop().time()
            while self._pending and len(batch) < self.max_batch:
                pending = self._take()
                if self._admit(pending, now):
                    batch.append(pending)
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Pending[JobT, ResultT]], retry: bool = False) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self._observe_start(batch, started, retry)
        error: Exception | None = None
        results: list[ResultT] = []
        try:
            results = await loop.run_in_executor(self.executor, self._checked, [p.job for p in batch])
        except asyncio.CancelledError:
            for pending in batch:
                _fail(pending.future, NotReadyError("the service is shutting down"))
            raise
        except Exception as exc:
            error = exc
        took = time.perf_counter() - started
        self.batch_seconds += DURATION_SMOOTHING * (took - self.batch_seconds)
        if self.metrics is not None:
            self.metrics.inference_duration.labels(task=self.task).observe(took)
        if error is None:
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
        elif len(batch) == 1:
            _fail(batch[0].future, error)
        else:
            log.warning("%s batch of %d failed (%s: %s); retrying its jobs one by one", self.task,
                        len(batch), type(error).__name__, error)
            for pending in batch:
                await self._run([pending], retry=True)

    def _observe_start(self, batch: list[_Pending[JobT, ResultT]], started: float, retry: bool) -> None:
        """Batch size, and each request's queue wait (first try only)."""
        if self.metrics is None:
            return
        self.metrics.inference_batch_size.labels(task=self.task).observe(len(batch))
        if not retry:
            for pending in batch:
                self.metrics.queue_wait.labels(task=self.task).observe(started - pending.enqueued)

    def _checked(self, jobs: list[JobT]) -> list[ResultT]:
        results = list(self.run_batch(jobs))
        if len(results) != len(jobs):
            raise RuntimeError(f"{self.task} batch returned {len(results)} results for {len(jobs)} jobs")
        return results


def _fail(future: asyncio.Future[ResultT], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
