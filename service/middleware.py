"""ASGI middleware guarding the app's input: the request body size limit (413 with a JSON detail)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimitMiddleware:
    """Refuses bodies over `max_bytes` (declared by Content-Length or counted while streaming) with 413.

    A body without Content-Length (chunked) is read up to the limit before the app sees it, so the app
    never parses more than `max_bytes`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await self._refuse(send, "Content-Length header is not a valid non-negative integer", 400)
            return
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, self._too_large(f"{declared} bytes"), 413)
            return
        if declared is not None:  # the server (h11/httptools) never delivers more than declared
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        total = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(send, self._too_large(f"more than {self.max_bytes} bytes"), 413)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: str) -> str:
        return (f"request body too large: {size}, the limit is {self.max_bytes} bytes "
                "(ELMREC_MAX_BODY_BYTES)")

    @staticmethod
    async def _refuse(send: Send, detail: str, status: int) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent, -1 when malformed."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                size = int(value)
            except ValueError:
                return -1
            return size if size >= 0 else -1
    return None
