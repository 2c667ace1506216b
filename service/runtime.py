"""The loaded service: bundle, engine on its device, model worker thread, batchers, history store, warm-up."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from model_store.bundle import Bundle, load_bundle
from model_store.engine import InferenceEngine, Scored
from model_store.errors import BundleError
from model_store.omega import fold_in
from service.batching import MicroBatcher
from service.errors import StartupError, StoreUnavailableError
from service.metrics import ServiceMetrics
from service.recommender import (
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
    """auto -> cuda when a GPU is visible, else cpu; cuda without a GPU is a startup error."""
    has_cuda = torch.cuda.is_available()
    if choice == "auto":
        return "cuda" if has_cuda else "cpu"
    if choice == "cuda" and not has_cuda:
        raise StartupError("ELMREC_DEVICE=cuda but torch sees no CUDA device; use ELMREC_DEVICE=auto or cpu")
    return choice


def warm_up(engine: InferenceEngine, bundle: Bundle, beam: int) -> float:
    """Run every model path once (known and cold users, both tasks); returns the seconds it took."""
    start = time.perf_counter()
    items = bundle.config.popular_items[:5] or [0]
    history = bundle.data.sequences[0] if bundle.data.sequences else items
    row = fold_in(bundle.omega, np.asarray(history, dtype=np.int64), side="user")
    run_direct_batch(engine, [DirectJob(0, tuple(items), 1), DirectJob(None, tuple(items), 1, row)])
    run_sequential_batch(engine, [SequentialJob(0, tuple(history), 1, 0, True, beam),
                                  SequentialJob(None, tuple(history), 1, 0, True, beam)])
    return time.perf_counter() - start


@dataclass
class Runtime:
    """Everything made at startup; `ready` turns true after the warm-up."""

    bundle: Bundle
    engine: InferenceEngine
    store: HistoryStore
    recommender: Recommender
    direct: MicroBatcher[DirectJob, list[Scored]]
    sequential: MicroBatcher[SequentialJob, list[Scored]]
    executor: ThreadPoolExecutor
    device: str
    backend: str
    ready: bool = False

    async def close(self) -> None:
        self.ready = False
        await self.direct.stop()
        await self.sequential.stop()
        await self.store.close()
        self.executor.shutdown(wait=True, cancel_futures=True)


async def start_runtime(settings: Settings, metrics: ServiceMetrics) -> Runtime:
    """Load the bundle and the engine in the model thread, connect the store, start batchers, warm up."""
    if settings.BACKEND == "onnx":
        raise StartupError("ELMREC_BACKEND=onnx: the ONNX backend is not available yet; "
                           "use ELMREC_BACKEND=torch")
    if settings.MODEL_DIR is None:
        raise StartupError("ELMREC_MODEL_DIR is not set: point it at a bundle folder written by "
                           "`python -m training train --out DIR`")
    device = resolve_device(settings.DEVICE)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elmrec-model")
    loop = asyncio.get_running_loop()
    try:
        try:
            bundle = await loop.run_in_executor(executor, load_bundle, settings.MODEL_DIR)
        except BundleError as exc:
            raise StartupError(f"cannot load the bundle (ELMREC_MODEL_DIR): {exc}") from exc
        engine = await loop.run_in_executor(executor, bundle.engine, device)
        try:
            store = make_store(settings.REDIS_URL, settings.REDIS_PREFIX, settings.HISTORY_MAX_LEN,
                               settings.REDIS_TIMEOUT_S, metrics)
        except ValueError as exc:
            raise StartupError(f"ELMREC_REDIS_URL is not a valid Redis URL: {exc}") from exc
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    wait_s = settings.MAX_WAIT_MS / 1000.0
    direct: MicroBatcher[DirectJob, list[Scored]] = MicroBatcher(
        "direct", lambda jobs: run_direct_batch(engine, jobs), executor, settings.MAX_BATCH, wait_s, metrics)
    sequential: MicroBatcher[SequentialJob, list[Scored]] = MicroBatcher(
        "sequential", lambda jobs: run_sequential_batch(engine, jobs), executor, settings.MAX_BATCH, wait_s,
        metrics)
    recommender = Recommender(bundle, store, direct, sequential, metrics, settings.MAX_CANDIDATES,
                              settings.HISTORY_MAX_LEN, settings.RERANK_EXTRA)
    runtime = Runtime(bundle, engine, store, recommender, direct, sequential, executor, device,
                      settings.BACKEND)
    direct.start()
    sequential.start()
    try:
        seconds = await loop.run_in_executor(executor, warm_up, engine, bundle, recommender.min_beam)
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
