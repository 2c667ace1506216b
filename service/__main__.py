"""`python -m service`: serve the API with uvicorn on ELMREC_HOST:ELMREC_PORT (default 0.0.0.0:8000)."""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app
from service.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.HOST, port=settings.PORT,
                log_level=settings.LOG_LEVEL.lower(), proxy_headers=True)


if __name__ == "__main__":
    main()
