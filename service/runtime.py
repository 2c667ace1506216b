"""The loaded service: bundle, engine on its device, model worker thread, batchers, history store, warm-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_store.bundle import Bundle, load_bundle
from model_store.device import resolve_device as torch_device
from model_store.engine import InferenceEngine, Scored
from model_store.errors import BundleError, DataError
from model_store.omega import fold_in
from service.batching import JobT, MicroBatcher, ResultT
from service.errors import BadRequestError, ServiceError, StartupError, StoreUnavailableError
from service.metrics import ServiceMetrics
from service.recommender import (
    MIN_BEAM,
    DirectJob,
    Recommender,
    SequentialJob,
    run_direct_batch,
    run_sequential_batch,
)
from service.schemas import ReadyResponse
from service.settings import Settings
from service.store import HistoryStore, make_store

log = logging.getLogger(__name__)


def resolve_device(choice: str) -> str:
    """ELMREC_DEVICE -> "cpu" / "cuda" (`model_store.device`); a bad choice is a startup error."""
    try:
        return str(torch_device(choice))
    except DataError as exc:
        raise StartupError(f"ELMREC_DEVICE: {exc}") from exc


def warm_up(engine: InferenceEngine, bundle: Bundle, beam: int) -> float:
    """Run every model path once (known and cold users, both tasks); returns the seconds it took."""
    start = time.perf_counter()
    items = bundle.config.popular_items[:5] or [0]
    history = bundle.data.sequences[0] if bundle.data.sequences else items
    row = fold_in(bundle.omega, np.asarray(history, dtype=np.int64), side="user")
    run_direct_batch(engine, [DirectJob(0, tuple(items), 1, history=tuple(history)),
                              DirectJob(None, tuple(items), 1, row, tuple(history))])
    run_sequential_batch(engine, [SequentialJob(0, tuple(history), 1, 0, True, beam),
                                  SequentialJob(None, tuple(history), 1, 0, True, beam)])
    return time.perf_counter() - start


class ReloadRefusedError(BadRequestError):
    """The new bundle cannot be loaded (corrupt, incompatible, missing): refused; the old one serves on."""


class ReloadBusyError(ServiceError):
    """Another reload is running (409)."""

    status_code = 409


@dataclass(eq=False)
class ServedModel:
    """One bundle version and all that serves it (engine, batchers, recommender), swapped as one reference.

    A request leases the served model for its whole life (`lease`), so it uses one version from start
    to end; a retired model stops its batchers only once its last lease is returned.
    """

    bundle: Bundle
    engine: InferenceEngine
    recommender: Recommender
    direct: MicroBatcher[DirectJob, list[Scored]]
    sequential: MicroBatcher[SequentialJob, list[Scored]]
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    leases: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def version(self) -> str:
        return self.bundle.config.model_version

    def start(self) -> None:
        self.direct.start()
        self.sequential.start()

    @contextlib.contextmanager
    def lease(self) -> Iterator[Recommender]:
        """Hold this version while a request uses it (event-loop thread only)."""
        self.leases += 1
        self._idle.clear()
        try:
            yield self.recommender
        finally:
            self.leases -= 1
            if self.leases == 0:
                self._idle.set()

    async def retire(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) for the requests using this version, then stop its batchers.

        Returns False when requests were still running at the deadline (they then get 503).
        """
        drained = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            drained = False
        await self.stop()
        return drained

    async def stop(self) -> None:
        await self.direct.stop()
        await self.sequential.stop()


def make_batcher(
    task: str, run: Callable[[list[JobT]], Sequence[ResultT]], executor: ThreadPoolExecutor,
    settings: Settings, metrics: ServiceMetrics,
) -> MicroBatcher[JobT, ResultT]:
    """A task's batcher with the settings' batching, admission-queue and deadline limits."""
    return MicroBatcher(task, run, executor, settings.MAX_BATCH, settings.MAX_WAIT_MS / 1000.0, metrics,
                        max_queue=settings.max_queue, timeout_s=settings.REQUEST_TIMEOUT_MS / 1000.0)


def serve_bundle(
    bundle: Bundle, engine: InferenceEngine, store: HistoryStore, executor: ThreadPoolExecutor,
    settings: Settings, metrics: ServiceMetrics,
) -> ServedModel:
    """Batchers (on the shared model thread) and the recommender of one bundle version (not started yet)."""
    direct: MicroBatcher[DirectJob, list[Scored]] = make_batcher(
        "direct", lambda jobs: run_direct_batch(engine, jobs), executor, settings, metrics)
    sequential: MicroBatcher[SequentialJob, list[Scored]] = make_batcher(
        "sequential", lambda jobs: run_sequential_batch(engine, jobs), executor, settings, metrics)
    recommender = Recommender(bundle, store, direct, sequential, metrics, settings.MAX_CANDIDATES,
                              settings.HISTORY_MAX_LEN, settings.RERANK_EXTRA)
    return ServedModel(bundle, engine, recommender, direct, sequential)


def load_engine(path: Path, device: str, backend: str) -> tuple[Bundle, InferenceEngine]:
    """Load and verify a bundle and build its engine (startup and reload: one way to load)."""
    bundle = load_bundle(path)
    return bundle, bundle.engine(device, backend)


def load_and_warm(path: Path, device: str, backend: str) -> tuple[Bundle, InferenceEngine]:
    """`load_engine`, then the warm-up (a reload, in a thread of its own)."""
    bundle, engine = load_engine(path, device, backend)
    warm_up(engine, bundle, max(MIN_BEAM, bundle.config.beam))
    return bundle, engine


@dataclass(frozen=True)
class ReloadResult:
    model_version: str
    previous_version: str
    model_dir: str
    seconds: float
    drained: bool


@dataclass(eq=False)
class Runtime:
    """Everything made at startup; `ready` turns true after the warm-up; `served` changes on reload."""

    served: ServedModel
    store: HistoryStore
    executor: ThreadPoolExecutor
    device: str
    backend: str
    ready: bool = False
    reloads: int = 0
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def lease(self) -> contextlib.AbstractContextManager[Recommender]:
        """The served version, held for one request (see ServedModel.lease)."""
        return self.served.lease()

    async def reload(
        self, path: Path, settings: Settings, metrics: ServiceMetrics, drain_timeout_s: float = 30.0
    ) -> ReloadResult:
        """Load, verify and warm up the bundle at `path` off the event loop while the old one serves,
        then swap it in as one reference and retire the old one after its requests finish.

        A bundle that cannot be loaded raises ReloadRefusedError and changes nothing.
        """
        if self._reload_lock.locked():
            metrics.reloaded("busy")
            raise ReloadBusyError("a model reload is already running; retry when it has finished")
        async with self._reload_lock:
            started = time.perf_counter()
            try:
                bundle, engine = await asyncio.to_thread(load_and_warm, path, self.device, self.backend)
            except Exception as exc:
                metrics.reloaded("refused")
                reason = str(exc) if isinstance(exc, BundleError) else f"{path}: {type(exc).__name__}: {exc}"
                log.warning("model reload refused, %s keeps serving: %s", self.served.version, reason)
                raise ReloadRefusedError(f"bundle refused, the current model keeps serving: {reason}",
                                         model_version=self.served.version) from exc
            new = serve_bundle(bundle, engine, self.store, self.executor, settings, metrics)
            new.start()
            old, self.served = self.served, new  # one assignment: later requests lease the new version
            self.reloads += 1
            metrics.set_model(new.version, bundle.config.preset, self.device, self.backend)
            metrics.reloaded("success")
            log.info("model %s swapped in for %s (from %s)", new.version, old.version, path)
            drained = await old.retire(drain_timeout_s)
            return ReloadResult(new.version, old.version, str(path), time.perf_counter() - started, drained)

    async def close(self) -> None:
        self.ready = False
        await self.served.stop()
        await self.store.close()
        self.executor.shutdown(wait=True, cancel_futures=True)


async def start_runtime(settings: Settings, metrics: ServiceMetrics) -> Runtime:
    """Load the bundle and the engine in the model thread, connect the store, start batchers, warm up."""
    if settings.BACKEND == "onnx":
        from model_store.onnx_backend import missing_onnx  # an optional extra: checked before loading

        if (why := missing_onnx(resolve_device(settings.DEVICE))) is not None:
            raise StartupError(f"ELMREC_BACKEND=onnx: {why}; or use ELMREC_BACKEND=torch")
    if settings.MODEL_DIR is None:
        raise StartupError("ELMREC_MODEL_DIR is not set: point it at a bundle folder written by "
                           "`python -m training train --out DIR`")
    device = resolve_device(settings.DEVICE)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elmrec-model")
    loop = asyncio.get_running_loop()
    try:
        try:
            bundle, engine = await loop.run_in_executor(executor, load_engine, settings.MODEL_DIR, device,
                                                        settings.BACKEND)
        except BundleError as exc:
            raise StartupError(f"cannot load the bundle (ELMREC_MODEL_DIR): {exc}") from exc
        try:
            store = make_store(settings.REDIS_URL, settings.REDIS_PREFIX, settings.HISTORY_MAX_LEN,
                               settings.REDIS_TIMEOUT_S, metrics, cluster=settings.REDIS_CLUSTER)
        except ValueError as exc:
            raise StartupError(f"ELMREC_REDIS_URL is not a valid Redis URL: {exc}") from exc
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    metrics.init_store(store.backend)
    served = serve_bundle(bundle, engine, store, executor, settings, metrics)
    runtime = Runtime(served, store, executor, device, settings.BACKEND)
    served.start()
    try:
        seconds = await loop.run_in_executor(executor, warm_up, engine, bundle, served.recommender.min_beam)
    except BaseException:
        await runtime.close()
        raise
    metrics.set_model(bundle.config.model_version, bundle.config.preset, device, settings.BACKEND)
    runtime.ready = True
    log.info("model %s (%s) ready on %s after a %.2fs warm-up; history store: %s",
             bundle.config.model_version, bundle.config.preset, device, seconds, store.backend)
    return runtime


async def readiness(runtime: Runtime | None) -> ReadyResponse:
    """Ready = model loaded and warmed up, and the history store answers a ping; else the reason."""
    if runtime is None or not runtime.ready:
        return ReadyResponse(status="not_ready", checks={"model": "loading", "store": "unknown"},
                             reason="the model is not loaded and warmed up yet")
    try:
        await runtime.store.ping()
    except StoreUnavailableError as exc:
        return ReadyResponse(status="not_ready", checks={"model": "ok", "store": "unavailable"},
                             reason=f"history store ({runtime.store.backend}) unreachable: {exc.reason}")
    return ReadyResponse(status="ready", checks={"model": "ok", "store": "ok"})
