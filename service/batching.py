"""Dynamic micro-batching: concurrent requests are gathered and run as one batch in the model's worker thread.

A batch closes when it holds `max_batch` jobs or when its oldest job has waited `max_wait_s`,
whichever comes first; it then runs on the given executor (one thread, shared by every task,
because the inference engine is not thread-safe), so the event loop never blocks on the model.
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

from service.errors import NotReadyError
from service.metrics import ServiceMetrics

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")

log = logging.getLogger(__name__)


@dataclass
class _Pending(Generic[JobT, ResultT]):
    job: JobT
    future: asyncio.Future[ResultT]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[JobT, ResultT]):
    """Collects jobs of one task and runs `run_batch(jobs) -> results` (same length, same order).

    If a batch raises, its jobs are retried one by one so that one bad job fails alone.
    """

    def __init__(
        self,
        task: str,
        run_batch: Callable[[list[JobT]], Sequence[ResultT]],
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.task = task
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self._pending: deque[_Pending[JobT, ResultT]] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

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
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(NotReadyError("the service is shutting down"))

    async def submit(self, job: JobT) -> ResultT:
        """Queue `job` and wait for its result (the job's own exception if it failed)."""
        if self._closed or not self.running:
            raise NotReadyError(f"the {self.task} batcher is not running")
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(job, future))
        self._wakeup.set()
        return await future

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
            while self._pending and len(batch) < self.max_batch:
                pending = self._pending.popleft()
                if not pending.future.done():  # a cancelled request (client gone) is dropped
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
        if self.metrics is not None:
            self.metrics.inference_duration.labels(task=self.task).observe(time.perf_counter() - started)
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
