"""Work for a client that is still there: a request's work is cancelled when its client disconnects.

Uvicorn does not cancel a handler whose client went away; it only answers the app's next `receive()`
with `http.disconnect`. A handler that waits for the model therefore watches `receive()` (its body has
been read already) and cancels its own work on a disconnect, so that a queued model job is taken out
of its batcher's queue before any compute (`MicroBatcher.submit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

from service.errors import ClientDisconnectedError

T = TypeVar("T")


async def _disconnected(receive: Receive) -> None:
    """Return once the server reports that the client closed the connection."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`; ClientDisconnectedError (and `work` cancelled) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request itself is cancelled
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    await asyncio.gather(task, watcher, return_exceptions=True)  # let the cancelled work unwind
    raise ClientDisconnectedError("the client closed the connection before its answer was ready")
