"""`python -m service`: serve the API with uvicorn on ELMREC_HOST:ELMREC_PORT (default 0.0.0.0:8000)."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from types import FrameType
from typing import Any, get_args

import uvicorn

from service.app import create_app
from service.settings import LogLevel, Settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the ELMRec API. Settings come from ELMREC_* environment variables "
                    "(see docs/SERVICE.md); these options override the few that concern the server.")
    p.add_argument("--host", default=None, help="bind address (ELMREC_HOST, default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (ELMREC_PORT, default 8000)")
    p.add_argument("--log-level", default=None, type=str.upper, choices=list(get_args(LogLevel)),
                   help="ELMREC_LOG_LEVEL (default INFO)")
    return p


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's handling: before it serves, or re-raised by it after a graceful shutdown."""
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    given: dict[str, Any] = {"HOST": args.host, "PORT": args.port, "LOG_LEVEL": args.log_level}
    settings = Settings(**{name: value for name, value in given.items() if value is not None})
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:  # on SIGTERM uvicorn stops accepting, lets in-flight requests finish, then shuts the app down
        uvicorn.run(create_app(settings), host=settings.HOST, port=settings.PORT,
                    log_level=settings.LOG_LEVEL.lower(), proxy_headers=True,
                    timeout_graceful_shutdown=settings.SHUTDOWN_TIMEOUT_S)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
