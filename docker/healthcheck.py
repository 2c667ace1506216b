"""Container healthcheck: exit 0 when the service answers 200 on /health/ready, else 1.

Standard library only (no curl in the image). The port follows ELMREC_PORT (default 8000);
HEALTHCHECK_URL overrides the whole URL.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(url: str, timeout: float = 4.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"{response.status}"
    except urllib.error.HTTPError as exc:  # 503 with the reason while not ready
        body = exc.read(300).decode("utf-8", "replace")
        return False, f"{exc.code} {body}"
    except (OSError, ValueError) as exc:  # refused, timeout, bad URL
        return False, str(exc)


def main() -> int:
    port = os.environ.get("ELMREC_PORT") or "8000"
    url = os.environ.get("HEALTHCHECK_URL") or f"http://127.0.0.1:{port}/health/ready"
    ok, detail = check(url)
    if not ok:
        print(f"not ready: {url}: {detail}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
