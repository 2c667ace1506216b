"""`python -m service`: serve the API with uvicorn on ELMREC_HOST:ELMREC_PORT (default 0.0.0.0:8000)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
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


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    given: dict[str, Any] = {"HOST": args.host, "PORT": args.port, "LOG_LEVEL": args.log_level}
    settings = Settings(**{name: value for name, value in given.items() if value is not None})
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.HOST, port=settings.PORT,
                log_level=settings.LOG_LEVEL.lower(), proxy_headers=True)


if __name__ == "__main__":
    main()
